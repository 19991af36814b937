// Opens a viewer link in Debian's Chromium and reports what the page made of it: its state
// and message once it has given up (or connected), and the page's security-policy header.
//   node crafted-link.mjs <absolute viewer URL>
// Prints one JSON line.
import { chromium } from 'playwright-core';

const [, , url] = process.argv;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let code = 0;
try {
  const page = await browser.newPage();
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  page.on('websocket', (w) => requests.push(w.url()));
  const response = await page.goto(url);
  await page.waitForFunction(
    () => window.hpcdesk && ['failed', 'connected'].includes(window.hpcdesk.status),
    null, { timeout: 20000 });
  const state = await page.evaluate(() => ({ status: window.hpcdesk.status, message: window.hpcdesk.message }));
  console.log(JSON.stringify({
    ...state,
    csp: response.headers()['content-security-policy'] || '',
    requests,
  }));
} catch (e) {
  console.error(String(e && e.stack || e));
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
