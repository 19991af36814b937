// Drives hpcdesk's portal page (/) in Debian's Chromium: uses a token, creates a desktop with
// a chosen desktop and screen size, waits for its card's live thumbnail, opens a view-only
// link from "Share view-only link" and types into it, opens the desktop itself and types
// into it, then deletes it.
//   node portal.mjs <base URL> <token> <desktop> <geometry> <view-only command> <command> [portal.png]
// Prints one JSON line; the caller checks what the commands did.
import { connected, run, typeIntoXterm } from './chromium.mjs';

const [, , base, token, desktop, geometry, viewOnlyCommand, command, shot] = process.argv;

// Opens `url` in a new page of `context`, waits for the viewer, types `text` and Enter into
// the xterm at +20+20; returns what the viewer page says about itself.
async function typeIn(context, url, text) {
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`pageerror: ${e.message}`));
  await page.goto(url);
  await connected(page);
  await page.waitForTimeout(1500);
  await typeIntoXterm(page, text);
  const seen = await page.evaluate(() => ({
    viewOnly: window.hpcdesk.viewOnly,
    badge: !document.getElementById('badge-view-only').hidden,
  }));
  await page.close();
  return seen;
}

await run(async (browser) => {
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  const page = await context.newPage();
  page.on('dialog', (d) => d.accept());
  page.on('pageerror', (e) => console.error(`pageerror: ${e.message}`));
  await page.goto(base + '/');
  await page.fill('#token', token);
  await page.click('#token-form button[type=submit]');
  await page.locator(`#desktop option[value="${desktop}"]`).waitFor({ state: 'attached', timeout: 10000 });
  const offered = await page.$$eval('#desktop option', (os) => os.map((o) => o.value));
  await page.selectOption('#desktop', desktop);
  await page.selectOption('#geometry', geometry);
  await page.click('#create');
  const card = page.locator('#sessions .card[data-status="running"]');
  await card.waitFor({ timeout: 30000 });
  const id = await card.getAttribute('data-session');
  const kind = await card.locator('.kind').textContent();
  const screen = await card.locator('.geometry').textContent();
  const ends = await card.locator('.ends').textContent();
  const extendShown = await card.locator('button.extend').isVisible();
  // The thumbnail: a real picture, loaded from the screenshot endpoint.
  await page.waitForFunction(() => {
    const img = document.querySelector('#sessions .card .thumb');
    return img && !img.hidden && img.complete && img.naturalWidth > 0;
  }, null, { timeout: 20000 });
  const thumb = await card.locator('.thumb').evaluate((img) => ({ w: img.naturalWidth, h: img.naturalHeight }));
  // Live: the picture is fetched again every few seconds, and shows the desktop as it draws
  // (the xterm appears on twm's black screen).
  const first = await card.locator('.thumb').getAttribute('src');
  await page.waitForFunction((src) => {
    const img = document.querySelector('#sessions .card .thumb');
    if (!img || img.getAttribute('src') === src || !img.complete || img.naturalWidth === 0) return false;
    const c = document.createElement('canvas');
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    for (let i = 4; i < d.length; i += 4) {
      if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2]) return true;
    }
    return false;
  }, first, { timeout: 20000 });
  thumb.refreshed = true;
  if (shot) await page.screenshot({ path: shot });

  await card.locator('button.share').click();
  const link = card.locator('.share-link');
  await page.waitForFunction(() => {
    const i = document.querySelector('#sessions .card .share-link');
    return i && i.value.length > 0;
  }, null, { timeout: 10000 });
  const viewOnlyUrl = await link.inputValue();
  const viewOnly = await typeIn(context, viewOnlyUrl, viewOnlyCommand);

  const [opened] = await Promise.all([
    context.waitForEvent('page'),
    card.locator('button.open').click(),
  ]);
  const openUrl = opened.url();
  await opened.close();
  const full = await typeIn(context, openUrl, command);

  // On a phone's screen the page fits its width (nothing to scroll sideways).
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  const phone = await page.evaluate(() => ({
    fits: document.documentElement.scrollWidth <= window.innerWidth,
    scrollWidth: document.documentElement.scrollWidth,
  }));
  if (shot) await page.screenshot({ path: shot.replace(/\.png$/, '-phone.png'), fullPage: true });
  await page.setViewportSize({ width: 1200, height: 800 });

  await card.locator('button.delete').click();
  await page.locator(`#sessions .card[data-session="${id}"]`).waitFor({ state: 'detached', timeout: 20000 });
  return { created: id, offered, kind, screen, ends, extendShown, thumb, viewOnlyUrl, viewOnly, full, phone, deleted: true };
});
