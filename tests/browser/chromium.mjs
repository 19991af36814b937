// The one way the browser tests start Chromium, and end: Debian's Chromium, headless, reaching
// nothing but loopback (every other name resolves to nothing) and calling no Google service;
// the script's result is one JSON line on stdout, or its error on stderr and exit status 1.
import { chromium } from 'playwright-core';

export const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

// Runs `body(browser)` and prints what it returns.
export async function run(body) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ARGS,
  });
  let code = 0;
  try {
    console.log(JSON.stringify(await body(browser)));
  } catch (e) {
    console.error(String(e && e.stack || e));
    code = 1;
  } finally {
    await browser.close();
  }
  process.exit(code);
}

// Waits for hpcdesk's viewer on `page` to connect; throws with the viewer's own words if not.
export async function connected(page, timeout = 20000) {
  try {
    await page.waitForFunction(() => window.hpcdesk && window.hpcdesk.status === 'connected',
      null, { timeout });
  } catch (e) {
    const s = await page.evaluate(() => window.hpcdesk && [window.hpcdesk.status, window.hpcdesk.message]);
    throw new Error(`viewer did not connect: ${JSON.stringify(s)}`);
  }
}

// Clicks into the desktop's xterm (at +20+20 on the desktop) and types `text` and Enter.
export async function typeIntoXterm(page, text) {
  const box = await page.locator('#screen canvas').first().boundingBox();
  await page.mouse.click(box.x + 200, box.y + 150);
  await page.waitForTimeout(300);
  await page.keyboard.type(text, { delay: 20 });
  await page.keyboard.press('Enter');
  await page.waitForTimeout(800);
  return box;
}
