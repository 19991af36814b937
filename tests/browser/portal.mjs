// Drives hpcdesk's portal page (/) in Debian's Chromium: uses a token, creates a desktop,
// opens it (the viewer must connect in the new tab), then deletes it.
//   node portal.mjs <base URL> <token>
import { chromium } from 'playwright-core';

const [, , base, token] = process.argv;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let code = 0;
try {
  const context = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  const page = await context.newPage();
  page.on('dialog', (d) => d.accept());
  page.on('pageerror', (e) => console.error(`pageerror: ${e.message}`));
  await page.goto(base + '/');
  await page.fill('#token', token);
  await page.click('#token-form button[type=submit]');
  await page.click('#create');
  const row = page.locator('#sessions tbody tr[data-status="running"]');
  await row.waitFor({ timeout: 30000 });
  const id = await row.getAttribute('data-session');
  const [viewer] = await Promise.all([
    context.waitForEvent('page'),
    row.locator('button.open').click(),
  ]);
  await viewer.waitForFunction(() => window.hpcdesk && window.hpcdesk.status === 'connected',
    null, { timeout: 20000 });
  await viewer.close();
  await row.locator('button.delete').click();
  await page.locator(`#sessions tbody tr[data-session="${id}"]`).waitFor({ state: 'detached', timeout: 20000 });
  console.log(JSON.stringify({ created: id, opened: true, deleted: true }));
} catch (e) {
  console.error(String(e && e.stack || e));
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
