// Opens a launch URL in Debian's Chromium and checks what the viewer shows and keeps:
//   node viewer-settings.mjs <absolute launch URL> <clipboard text> [viewer.png]
// 1. Waits until the desktop has drawn a panel: the mean colour of the top band of the screen
//    (rows 2-20) differs from the middle's (the background). Reports both.
// 2. Moves the image-quality control to 2 and compression to 7 (applied live: the gateway
//    sees the viewer's new SetEncodings), reloads, and reports the controls' values then.
// 3. With the browser's clipboard permission: puts <clipboard text> in the browser's clipboard
//    and gives the page the focus back (the viewer sends it to the desktop, which the caller
//    checks), then reports what the browser's clipboard holds after the desktop's clipboard
//    changed (the caller changes it while this waits for `<clipboard text>-back`).
// Prints one JSON line.
import { connected, run } from './chromium.mjs';

const [, , url, clip, shot] = process.argv;

// Mean RGB of rows [y0, y1) of the noVNC canvas, and of the middle band.
const bands = (page) => page.evaluate(() => {
  const c = document.querySelector('#screen canvas');
  const g = c.getContext('2d');
  const mean = (y0, y1) => {
    const d = g.getImageData(0, y0, c.width, y1 - y0).data;
    const s = [0, 0, 0];
    for (let i = 0; i < d.length; i += 4) { s[0] += d[i]; s[1] += d[i + 1]; s[2] += d[i + 2]; }
    const n = d.length / 4;
    return s.map((v) => Math.round(v / n));
  };
  const h = c.height;
  return { width: c.width, height: h, top: mean(2, 20), middle: mean(Math.floor(h * 0.45), Math.floor(h * 0.55)) };
});
const distance = (a, b) => Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);

await run(async (browser) => {
  const context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(url).origin });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`pageerror: ${e.message}`));
  await page.goto(url);
  await connected(page);
  let b = await bands(page);
  const until = Date.now() + 20000;
  while (distance(b.top, b.middle) < 40 && Date.now() < until) {
    await page.waitForTimeout(500);
    b = await bands(page);
  }
  await page.waitForTimeout(1000);
  if (shot) await page.screenshot({ path: shot });

  await page.click('#btn-settings');
  for (const [id, v] of [['quality', 2], ['compression', 7]]) {
    await page.locator(`#${id}`).evaluate((el, value) => {
      el.value = String(value);
      el.dispatchEvent(new Event('input', { bubbles: true }));
    }, v);
  }
  await page.waitForTimeout(1500);
  const live = await page.evaluate(() => ({ quality: window.hpcdesk.rfb.qualityLevel, compression: window.hpcdesk.rfb.compressionLevel }));
  await page.reload();
  await connected(page);
  const kept = await page.evaluate(() => ({
    quality: Number(document.getElementById('quality').value),
    compression: Number(document.getElementById('compression').value),
    rfbQuality: window.hpcdesk.rfb.qualityLevel,
  }));
  // Clipboard: the browser's → the desktop's on focus; the desktop's → the browser's when it
  // changes.
  await page.evaluate((text) => navigator.clipboard.writeText(text), clip);
  await page.evaluate(() => window.dispatchEvent(new Event('focus')));
  let back = '';
  const untilBack = Date.now() + 20000;
  while (Date.now() < untilBack && back !== `${clip}-back`) {
    await page.waitForTimeout(250);
    back = await page.evaluate(() => navigator.clipboard.readText());
  }
  const panel = await page.evaluate(() => document.getElementById('clip-text').value);
  return { bands: b, distance: distance(b.top, b.middle), live, kept, clipboard: { back, panel } };
});
