// Opens a launch URL of a desktop with a short time limit in Debian's Chromium: waits for the
// viewer's countdown and warning, then presses its Extend button and waits for the new end.
//   node time-limit.mjs <absolute launch URL> [viewer.png|-] [ended]
// With `ended`, it instead waits for the desktop to reach its limit and reports what the
// viewer then says. Prints one JSON line.
import { connected, run } from './chromium.mjs';

const [, , url, shotArg, mode] = process.argv;
const shot = shotArg && shotArg !== '-' ? shotArg : null;
await run(async (browser) => {
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  page.on('pageerror', (e) => console.error(`pageerror: ${e.message}`));
  await page.goto(url);
  await connected(page);
  if (mode === 'ended') {
    await page.waitForFunction(() => window.hpcdesk.status === 'failed', null, { timeout: 60000 });
    return page.evaluate(() => ({ status: window.hpcdesk.status, message: window.hpcdesk.message }));
  }
  await page.locator('#time-left').waitFor({ state: 'visible', timeout: 30000 });
  await page.locator('#limit-banner').waitFor({ state: 'visible', timeout: 30000 });
  const countdown = await page.locator('#time-left').textContent();
  const warning = await page.locator('#limit-text').textContent();
  const button = await page.locator('#btn-extend').textContent();
  if (shot) await page.screenshot({ path: shot });
  const before = await page.evaluate(() => window.hpcdesk.limit.end);
  await page.click('#btn-extend');
  await page.waitForFunction((b) => window.hpcdesk.limit.end > b, before, { timeout: 15000 });
  const after = await page.evaluate(() => window.hpcdesk.limit.end);
  const bannerHidden = await page.locator('#limit-banner').isHidden();
  const status = await page.locator('#status').textContent();
  return { countdown, warning, button, before, after, bannerHidden, status };
});
