// Opens a viewer link in Debian's Chromium and reports what the page made of it: its state
// and message once it has given up (or connected), and the page's security-policy header.
//   node crafted-link.mjs <absolute viewer URL>
// Prints one JSON line.
import { run } from './chromium.mjs';

const [, , url] = process.argv;
await run(async (browser) => {
  const page = await browser.newPage();
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  page.on('websocket', (w) => requests.push(w.url()));
  const response = await page.goto(url);
  await page.waitForFunction(
    () => window.hpcdesk && ['failed', 'connected'].includes(window.hpcdesk.status),
    null, { timeout: 20000 });
  const state = await page.evaluate(() => ({ status: window.hpcdesk.status, message: window.hpcdesk.message }));
  return {
    ...state,
    csp: response.headers()['content-security-policy'] || '',
    requests,
  };
});
