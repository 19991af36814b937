// hpcdesk viewer: opens the launch URL's desktop with noVNC's RFB module.
//
// The launch URL looks like /vnc.html?path=/vncws?token=<grant>&mm=<sealed>&resize=remote.
// The page never learns the VNC password: the gateway authenticates to the desktop itself.
// State is exposed as window.hpcdesk for tests and for embedding portals.
import RFB from './novnc/core/rfb.js';

const params = new URLSearchParams(location.search);
const path = params.get('path');
const mm = params.get('mm');
const resize = params.get('resize') || 'remote';
const viewOnly = params.get('view_only') === 'true';

const $ = (id) => document.getElementById(id);
const statusEl = $('status');
const overlay = $('overlay');
const overlayText = $('overlay-text');
const reconnectBtn = $('btn-reconnect');

const state = { status: 'starting', message: '', rfb: null, attempts: 0, connectedOnce: false };
window.hpcdesk = state;

const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000, 30000];
let retryTimer = null;

function show(status, message, kind) {
  state.status = status;
  state.message = message;
  statusEl.textContent = message;
  statusEl.className = kind || '';
  const blocking = status !== 'connected';
  overlay.hidden = !blocking;
  overlayText.textContent = message;
}

function fatal(message) {
  clearTimeout(retryTimer);
  show('failed', message, 'error');
  reconnectBtn.hidden = false;
}

// The gateway this page talks to is its own origin's, always: `path` is resolved against the
// page's own address and must stay on its origin. A link whose path names another host
// (`//elsewhere/…`, `http://elsewhere/…`) is refused, so no link can make this page hand the
// user's keystrokes and clipboard to someone else's server under hpcdesk's name.
function gatewayPath() {
  if (!path) return null;
  let target;
  try {
    target = new URL(path, location.href);
  } catch (e) {
    return null;
  }
  if (target.origin !== location.origin) return null;
  const query = target.search ? `${target.search}&` : '?';
  return `${target.pathname}${query}mm=${encodeURIComponent(mm)}`;
}

const wsUrl = () => `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}${gatewayPath()}`;
const checkUrl = () => `${location.origin}${gatewayPath()}`;

// Asks the gateway whether the link still opens a desktop; returns null if it does, or the
// reason in plain words if it does not. Network trouble is not a verdict (returns null).
async function linkProblem() {
  try {
    const r = await fetch(checkUrl(), { cache: 'no-store' });
    const body = await r.json().catch(() => ({}));
    if (r.ok && body.code === '0') return null;
    return body.msg || `the desktop link was refused (HTTP ${r.status})`;
  } catch (e) {
    return null;
  }
}

function scheduleRetry() {
  const delay = BACKOFF_MS[Math.min(state.attempts, BACKOFF_MS.length - 1)];
  state.attempts += 1;
  let left = Math.round(delay / 1000);
  const tick = () => {
    show('reconnecting', `Connection lost. Reconnecting in ${left} s…`, 'warn');
    if (left <= 0) { connect(); return; }
    left -= 1;
    retryTimer = setTimeout(tick, 1000);
  };
  tick();
}

async function connect() {
  clearTimeout(retryTimer);
  reconnectBtn.hidden = true;
  if (!path || !mm) {
    fatal('This page needs a desktop link from your portal (the link is incomplete).');
    return;
  }
  if (!gatewayPath()) {
    fatal('This desktop link points away from this site, so it was not opened. Open the desktop again from your portal.');
    return;
  }
  show('checking', 'Checking the desktop link…');
  const problem = await linkProblem();
  if (problem) {
    fatal(`Cannot open the desktop: ${problem}.`);
    return;
  }
  show('connecting', 'Connecting to your desktop…');
  if (state.rfb) {
    state.rfb.disconnect();
    state.rfb = null;
  }
  let rfb;
  try {
    rfb = new RFB($('screen'), wsUrl(), { shared: true, wsProtocols: ['binary'] });
  } catch (e) {
    fatal(`Cannot connect: ${e.message}`);
    return;
  }
  state.rfb = rfb;
  rfb.viewOnly = viewOnly;
  rfb.resizeSession = resize === 'remote';
  rfb.scaleViewport = resize === 'scale';
  rfb.clipViewport = resize === 'off';
  rfb.focusOnClick = true;
  rfb.background = '#2b2b2b';

  rfb.addEventListener('connect', () => {
    state.attempts = 0;
    state.connectedOnce = true;
    show('connected', viewOnly ? 'Connected (view only)' : 'Connected', 'ok');
    rfb.focus();
  });
  rfb.addEventListener('disconnect', async (e) => {
    if (state.rfb !== rfb) return;
    state.rfb = null;
    const problem = await linkProblem();
    if (problem) {
      fatal(`The desktop is no longer available: ${problem}.`);
    } else if (!e.detail.clean || state.connectedOnce) {
      scheduleRetry();
    } else {
      fatal('The desktop closed the connection.');
    }
  });
  rfb.addEventListener('securityfailure', (e) => {
    fatal(`The desktop refused the connection: ${e.detail.reason || 'authentication failed'}.`);
  });
  rfb.addEventListener('credentialsrequired', () => {
    fatal('The desktop asked for a password; hpcdesk links never need one. Open the desktop again from your portal.');
  });
  rfb.addEventListener('desktopname', (e) => {
    document.title = `${e.detail.name} — hpcdesk`;
    $('title').textContent = e.detail.name;
  });
  rfb.addEventListener('clipboard', (e) => {
    $('clip-text').value = e.detail.text;
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(e.detail.text).catch(() => {});
    }
  });
}

$('btn-clipboard').addEventListener('click', () => {
  $('clipboard').hidden = !$('clipboard').hidden;
});
$('btn-clip-send').addEventListener('click', () => {
  if (state.rfb) {
    state.rfb.clipboardPasteFrom($('clip-text').value);
    state.rfb.focus();
  }
});
$('btn-cad').addEventListener('click', () => {
  if (state.rfb) {
    state.rfb.sendCtrlAltDel();
    state.rfb.focus();
  }
});
$('btn-fullscreen').addEventListener('click', () => {
  if (document.fullscreenElement) {
    document.exitFullscreen();
  } else {
    document.documentElement.requestFullscreen().catch(() => {});
  }
});
reconnectBtn.addEventListener('click', () => {
  state.attempts = 0;
  connect();
});

connect();
