// Opens a launch URL in Debian's Chromium, waits for hpcdesk's viewer to connect, clicks into
// the desktop's xterm and types a command followed by Enter.
//   node type-in-desktop.mjs <absolute launch URL> <command> [screenshot.png]
// Prints one JSON line; exits non-zero (with the viewer's own message) if it cannot connect.
import { connected, run, typeIntoXterm } from './chromium.mjs';

const [, , url, command, shot] = process.argv;
if (!url || !command) {
  console.error('usage: node type-in-desktop.mjs <url> <command> [screenshot.png]');
  process.exit(2);
}

await run(async (browser) => {
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  page.on('console', (m) => console.error(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console.error(`pageerror: ${e.message}`));
  const t0 = Date.now();
  await page.goto(url);
  await connected(page);
  const connectMs = Date.now() - t0;
  // Let the desktop resize to the window and draw.
  await page.waitForTimeout(1500);
  const canvas = await typeIntoXterm(page, command);
  if (shot) await page.screenshot({ path: shot });
  const status = await page.evaluate(() => window.hpcdesk.status);
  return { status, connectMs, canvas };
});
