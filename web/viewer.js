// hpcdesk viewer: opens the launch URL's desktop with noVNC's RFB module.
//
// The launch URL looks like /vnc.html?path=/vncws?token=<grant>&mm=<sealed>&resize=remote.
// The page never learns the VNC password: the gateway authenticates to the desktop itself.
// State is exposed as window.hpcdesk for tests and for embedding portals.
import RFB from './novnc/core/rfb.js';

const params = new URLSearchParams(location.search);
const path = params.get('path');
const mm = params.get('mm');
const viewOnly = params.get('view_only') === 'true';

// Image settings, kept per browser: JPEG quality and compression level (0-9, noVNC's defaults
// 6 and 2) and scaling (remote resize, scale, none). A saved choice wins over the link's
// `resize`.
const SETTINGS_KEY = 'hpcdesk.viewer';
const SCALINGS = ['remote', 'scale', 'off'];
function loadSettings() {
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(SETTINGS_KEY) || '{}') || {};
  } catch (e) {
    saved = {};
  }
  const level = (v, d) => (Number.isInteger(v) && v >= 0 && v <= 9 ? v : d);
  const linkResize = SCALINGS.includes(params.get('resize')) ? params.get('resize') : 'remote';
  return {
    quality: level(saved.quality, 6),
    compression: level(saved.compression, 2),
    scaling: SCALINGS.includes(saved.scaling) ? saved.scaling : linkResize,
  };
}
const settings = loadSettings();
function saveSettings() {
  try {
    localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
  } catch (e) { /* private mode: the settings last for this page */ }
}

const $ = (id) => document.getElementById(id);
const statusEl = $('status');
const overlay = $('overlay');
const overlayText = $('overlay-text');
const reconnectBtn = $('btn-reconnect');

const state = { status: 'starting', message: '', rfb: null, attempts: 0, connectedOnce: false, settings, viewOnly };
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
const extendUrl = () => {
  const p = gatewayPath();
  const q = p.indexOf('?');
  return `${location.origin}${p.slice(0, q)}/extend${p.slice(q)}`;
};

// Asks the gateway whether the link still opens a desktop; returns null if it does (and
// takes note of the desktop's time limit), or the reason in plain words if it does not.
// Network trouble is not a verdict (returns null).
async function linkProblem() {
  try {
    const r = await fetch(checkUrl(), { cache: 'no-store' });
    const body = await r.json().catch(() => ({}));
    if (r.ok && body.code === '0') {
      takeLimit(body.data || {});
      return null;
    }
    return body.msg || `the desktop link was refused (HTTP ${r.status})`;
  } catch (e) {
    return null;
  }
}

// The desktop's time limit: the time left shows from `warnBefore` seconds before its end,
// with a warning then and again at 5 minutes, and an Extend button where the link may.
const limit = { end: null, warnBefore: 900, canExtend: false, extendBy: '1h', warned: new Set() };
state.limit = limit;
function takeLimit(d) {
  const end = d.endTime ? Date.parse(d.endTime) : null;
  limit.warnBefore = Number(d.warnBefore) || 900;
  if (end !== limit.end) {
    // A moved end (an extension) warns again at the thresholds still ahead of it, not at
    // once for those it is already past.
    const had = limit.end !== null;
    limit.warned.clear();
    if (had && end) {
      const left = end - Date.now();
      if (left <= limit.warnBefore * 1000) limit.warned.add('first');
      if (left <= 5 * 60 * 1000) limit.warned.add('five');
    }
  }
  limit.end = end;
  limit.canExtend = !!d.canExtend && !viewOnly;
  limit.extendBy = d.extendBy || '1h';
  tickLimit();
}
const mmss = (ms) => {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${r}` : `${m}:${r}`;
};
function warn(text) {
  $('limit-text').textContent = text;
  $('btn-extend').hidden = !limit.canExtend;
  $('btn-extend').textContent = `Extend by ${limit.extendBy}`;
  $('limit-banner').hidden = false;
  state.warning = text;
}
function tickLimit() {
  const badge = $('time-left');
  if (!limit.end) {
    badge.hidden = true;
    return;
  }
  const left = limit.end - Date.now();
  state.timeLeft = left;
  if (left <= 0) {
    badge.hidden = false;
    badge.textContent = 'Time is up';
    badge.className = 'badge urgent';
    if (!limit.warned.has('ended')) {
      limit.warned.add('ended');
      warn('This desktop has reached its time limit and is being ended.');
      $('btn-extend').hidden = true;
    }
    return;
  }
  const showFrom = limit.warnBefore * 1000;
  badge.hidden = left > showFrom;
  badge.textContent = `Ends in ${mmss(left)}`;
  badge.className = left <= 5 * 60 * 1000 ? 'badge urgent' : 'badge';
  for (const [key, at] of [['first', showFrom], ['five', 5 * 60 * 1000]]) {
    if (left <= at && !limit.warned.has(key)) {
      // A desktop that starts inside both gets one warning.
      limit.warned.add('first');
      if (left <= 5 * 60 * 1000) limit.warned.add('five');
      warn(`This desktop ends in ${mmss(left)} (its time limit). Save your work${limit.canExtend ? ', or extend it' : ''}.`);
      break;
    }
  }
}
setInterval(tickLimit, 1000);
// The end can move (an extension from the portal, a Slurm limit changed): look again now
// and then while connected.
setInterval(() => { if (state.status === 'connected') linkProblem(); }, 30000);

async function extendDesktop() {
  $('btn-extend').disabled = true;
  try {
    const r = await fetch(extendUrl(), { method: 'POST', cache: 'no-store' });
    const body = await r.json().catch(() => ({}));
    if (body.code === '0') {
      $('limit-banner').hidden = true;
      state.warning = '';
      const end = body.data && body.data.endTime;
      show(state.status, end ? `Extended: ends at ${new Date(Date.parse(end)).toLocaleTimeString()}` : 'Extended', 'ok');
      await linkProblem();
    } else {
      warn(`Cannot extend: ${body.msg || `HTTP ${r.status}`}`);
    }
  } catch (e) {
    warn(`Cannot extend: ${e.message}`);
  } finally {
    $('btn-extend').disabled = false;
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
  applySettings(rfb);
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
    } else if (limit.end && Date.now() >= limit.end - 2000) {
      // The scheduler ended it at its limit before hpcdesk recorded that: no reconnecting.
      fatal('The desktop has ended: it reached its time limit.');
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
    lastLocalClip = e.detail.text;
    if (navigator.clipboard && navigator.clipboard.writeText && window.isSecureContext) {
      navigator.clipboard.writeText(e.detail.text)
        .then(() => { $('clip-auto').textContent = 'Copied to your clipboard too.'; })
        .catch(() => { $('clip-auto').textContent = ''; });
    }
  });
}

// Applies the image settings to `rfb` (live: noVNC sends new encodings at once).
function applySettings(rfb) {
  if (!rfb) return;
  rfb.qualityLevel = settings.quality;
  rfb.compressionLevel = settings.compression;
  rfb.resizeSession = settings.scaling === 'remote';
  rfb.scaleViewport = settings.scaling === 'scale';
  rfb.clipViewport = settings.scaling === 'off';
}

function showSettings() {
  $('quality').value = settings.quality;
  $('quality-value').textContent = settings.quality;
  $('compression').value = settings.compression;
  $('compression-value').textContent = settings.compression;
  $('scaling').value = settings.scaling;
}

for (const key of ['quality', 'compression']) {
  $(key).addEventListener('input', () => {
    settings[key] = Number($(key).value);
    $(`${key}-value`).textContent = settings[key];
    saveSettings();
    applySettings(state.rfb);
  });
}
$('scaling').addEventListener('change', () => {
  settings.scaling = $('scaling').value;
  saveSettings();
  applySettings(state.rfb);
});
showSettings();

// Your clipboard → the desktop's, where the browser allows reading it (a secure context and
// the user's permission): whenever this page gets the focus back, e.g. after copying
// something in another window. Otherwise the clipboard panel does it by hand.
let lastLocalClip = null;
async function clipboardFromLocal() {
  if (viewOnly || !state.rfb || !navigator.clipboard || !navigator.clipboard.readText || !window.isSecureContext) return;
  try {
    const text = await navigator.clipboard.readText();
    if (text && text !== lastLocalClip) {
      lastLocalClip = text;
      state.rfb.clipboardPasteFrom(text);
      $('clip-text').value = text;
    }
  } catch (e) { /* not allowed: the panel remains */ }
}
window.addEventListener('focus', clipboardFromLocal);

function toggle(id) {
  $(id).hidden = !$(id).hidden;
}
function fullscreen() {
  if (document.fullscreenElement) {
    document.exitFullscreen();
  } else {
    document.documentElement.requestFullscreen().catch(() => {});
  }
}

// Shortcuts of the page itself, taken before noVNC sends the keys to the desktop.
window.addEventListener('keydown', (e) => {
  if (!(e.ctrlKey && e.altKey && e.shiftKey)) return;
  const action = { KeyF: fullscreen, KeyC: () => toggle('clipboard'), KeyS: () => toggle('settings'), KeyH: () => toggle('help') }[e.code];
  if (!action) return;
  e.preventDefault();
  e.stopPropagation();
  action();
}, true);

if (viewOnly) {
  $('badge-view-only').hidden = false;
  $('btn-cad').hidden = true;
  $('btn-clip-send').disabled = true;
}

$('btn-clipboard').addEventListener('click', () => toggle('clipboard'));
$('btn-extend').addEventListener('click', extendDesktop);
$('btn-limit-close').addEventListener('click', () => { $('limit-banner').hidden = true; });
$('btn-settings').addEventListener('click', () => toggle('settings'));
$('btn-help').addEventListener('click', () => toggle('help'));
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
$('btn-fullscreen').addEventListener('click', fullscreen);
reconnectBtn.addEventListener('click', () => {
  state.attempts = 0;
  connect();
});

connect();
