// Opens a launch URL in Debian's Chromium, waits for hpcdesk's viewer to connect, clicks into
// the desktop's xterm and types a command followed by Enter.
//   node type-in-desktop.mjs <absolute launch URL> <command> [screenshot.png]
// Prints one JSON line; exits non-zero (with the viewer's own message) if it cannot connect.
import { chromium } from 'playwright-core';

const [, , url, command, shot] = process.argv;
if (!url || !command) {
  console.error('usage: node type-in-desktop.mjs <url> <command> [screenshot.png]');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let code = 0;
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  page.on('console', (m) => console.error(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console.error(`pageerror: ${e.message}`));
  const t0 = Date.now();
  await page.goto(url);
  try {
    await page.waitForFunction(() => window.hpcdesk && window.hpcdesk.status === 'connected',
      null, { timeout: 20000 });
  } catch (e) {
    const s = await page.evaluate(() => window.hpcdesk && [window.hpcdesk.status, window.hpcdesk.message]);
    throw new Error(`viewer did not connect: ${JSON.stringify(s)}`);
  }
  const connectMs = Date.now() - t0;
  // Let the desktop resize to the window and draw.
  await page.waitForTimeout(1500);
  const canvas = page.locator('#screen canvas').first();
  const box = await canvas.boundingBox();
  // The xterm sits at +20+20 on the desktop; click inside it to give it the focus.
  await page.mouse.click(box.x + 200, box.y + 150);
  await page.waitForTimeout(300);
  await page.keyboard.type(command, { delay: 20 });
  await page.keyboard.press('Enter');
  await page.waitForTimeout(800);
  if (shot) await page.screenshot({ path: shot });
  const status = await page.evaluate(() => window.hpcdesk.status);
  console.log(JSON.stringify({ status, connectMs, canvas: box }));
} catch (e) {
  console.error(String(e && e.stack || e));
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
