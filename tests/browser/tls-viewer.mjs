// Opens an https launch URL (the test's own certificate, so certificate errors are ignored),
// waits for the viewer to connect over wss, and keeps it open while the test replaces the
// server's certificate: it writes <dir>/connected, waits for <dir>/reloaded, then types a
// command into the desktop through the same connection.
//   node tls-viewer.mjs <https launch URL> <dir> <command>
// Prints one JSON line: the viewer's status afterwards and every status it had meanwhile.
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connected, run, typeIntoXterm } from './chromium.mjs';

const [, , url, dir, command] = process.argv;
if (!url || !dir || !command) {
  console.error('usage: node tls-viewer.mjs <url> <dir> <command>');
  process.exit(2);
}

await run(async (browser) => {
  const context = await browser.newContext({
    ignoreHTTPSErrors: true,
    viewport: { width: 1100, height: 800 },
  });
  const page = await context.newPage();
  page.on('console', (m) => console.error(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console.error(`pageerror: ${e.message}`));
  const sockets = [];
  page.on('websocket', (ws) => sockets.push(ws.url()));
  await page.goto(url);
  await connected(page);
  // Every status the viewer goes through from here on.
  await page.evaluate(() => {
    window.seenStatuses = [];
    setInterval(() => {
      const s = window.hpcdesk.status;
      if (window.seenStatuses[window.seenStatuses.length - 1] !== s) window.seenStatuses.push(s);
    }, 50);
  });
  await page.waitForTimeout(1000);
  writeFileSync(join(dir, 'connected'), '');
  const until = Date.now() + 60000;
  while (!existsSync(join(dir, 'reloaded'))) {
    if (Date.now() > until) throw new Error('the test never reloaded the certificate');
    await page.waitForTimeout(100);
  }
  await typeIntoXterm(page, command);
  return {
    status: await page.evaluate(() => window.hpcdesk.status),
    seen: await page.evaluate(() => window.seenStatuses),
    sockets,
  };
});
