// hpcdesk's portal page: your desktops as cards with live thumbnails; create one (choosing the
// desktop and screen size), open it, share a view-only link, delete it. It uses the SCNet
// desktop API of this same server and hpcdesk's additions (/hpcdesk/v1/desktops, screenshots).
// The token stays in this browser tab (sessionStorage). Plain ES module, no build step.
const API = '/hpc/openapi/v2/desktop/vnc';
const EXTRA = '/hpcdesk/v1';
const THUMB_EVERY_MS = 5000;
const THUMB_WIDTH = 480;
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem('hpcdesk.token') || '';
let desktops = [];
const cards = new Map(); // sessionId → { el, session, thumbUrl }

function say(text, error) {
  $('message').textContent = text;
  $('message').className = error ? 'error' : '';
}

async function call(method, path, body) {
  const init = { method, headers: { token } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  let reply;
  try {
    reply = await r.json();
  } catch (e) {
    throw new Error(`the server answered HTTP ${r.status}`);
  }
  if (reply.code !== '0') throw new Error(`${reply.msg} (code ${reply.code})`);
  return reply.data;
}

async function loadDesktops() {
  try {
    desktops = await call('GET', `${EXTRA}/desktops`);
  } catch (e) {
    desktops = [];
  }
  const select = $('desktop');
  select.replaceChildren();
  if (desktops.length === 0) {
    select.append(new Option('Site default', ''));
  }
  for (const d of desktops) {
    select.append(new Option(d.title, d.name, d.default, d.default));
  }
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : '');
const kindOf = (name) => (desktops.find((d) => d.name === name) || {}).title || name || 'default';

function statusText(s) {
  switch (s.status) {
    case 'running': return 'Running';
    case 'starting': return 'Starting…';
    case 'pending': return 'Waiting for the cluster to start it…';
    case 'failed': return 'Failed';
    case 'stopped': return 'Stopped';
    default: return s.status;
  }
}

function newCard(id) {
  const el = $('card').content.firstElementChild.cloneNode(true);
  el.dataset.session = id;
  el.querySelector('.open').addEventListener('click', () => openDesktop(id));
  el.querySelector('.share').addEventListener('click', () => share(id));
  el.querySelector('.delete').addEventListener('click', () => remove(id));
  el.querySelector('.extend').addEventListener('click', () => extend(id));
  const card = { el, session: null, thumbUrl: null, thumbAt: 0 };
  cards.set(id, card);
  $('sessions').append(el);
  return card;
}

function fill(card, s) {
  const el = card.el;
  card.session = s;
  el.dataset.status = s.status;
  el.querySelector('.title').textContent = s.sessionId;
  const status = el.querySelector('.status');
  status.textContent = statusText(s);
  status.className = `status ${s.status}`;
  el.querySelector('.reason').textContent = s.statusReason || '';
  el.querySelector('.kind').textContent = kindOf(s.desktop);
  el.querySelector('.host').textContent = s.hostName ? `${s.hostName}:${s.displayNumber}` : '—';
  el.querySelector('.geometry').textContent = s.geometry || '';
  el.querySelector('.created').textContent = when(s.createTime);
  el.querySelector('.active').textContent = when(s.lastActiveTime);
  el.querySelector('.ends').textContent = s.endTime ? when(s.endTime) : 'no time limit';
  el.querySelector('.viewers').textContent = String(s.connections);
  const running = s.status === 'running';
  el.querySelector('.open').hidden = !running;
  el.querySelector('.share').hidden = !running;
  el.querySelector('.extend').hidden = !running || !s.endTime;
  if (!running) showThumb(card, null);
}

function render(items) {
  const seen = new Set();
  for (const s of items) {
    seen.add(s.sessionId);
    fill(cards.get(s.sessionId) || newCard(s.sessionId), s);
  }
  for (const [id, card] of cards) {
    if (!seen.has(id)) {
      showThumb(card, null);
      card.el.remove();
      cards.delete(id);
    }
  }
  $('empty').hidden = items.length > 0;
}

function showThumb(card, blob) {
  const img = card.el.querySelector('.thumb');
  if (card.thumbUrl) URL.revokeObjectURL(card.thumbUrl);
  card.thumbUrl = blob ? URL.createObjectURL(blob) : null;
  if (card.thumbUrl) {
    img.src = card.thumbUrl;
    img.alt = `The screen of ${card.session.sessionId}`;
  } else {
    img.removeAttribute('src');
  }
  img.hidden = !card.thumbUrl;
  card.el.querySelector('.thumb-none').hidden = !!card.thumbUrl;
}

// Thumbnails only while this page is visible: each one is a VNC connection on the server.
async function refreshThumbs(force) {
  if (document.visibilityState !== 'visible' || !token) return;
  const now = Date.now();
  for (const card of cards.values()) {
    const s = card.session;
    if (!s || s.status !== 'running') continue;
    if (!force && now - card.thumbAt < THUMB_EVERY_MS - 500) continue;
    card.thumbAt = now;
    try {
      const r = await fetch(`${EXTRA}/desktop/vnc/${encodeURIComponent(s.sessionId)}/screenshot?width=${THUMB_WIDTH}`,
        { headers: { token }, cache: 'no-store' });
      if ((r.headers.get('content-type') || '').startsWith('image/png')) {
        showThumb(card, await r.blob());
      }
    } catch (e) { /* the next round tries again */ }
  }
}

async function refresh() {
  try {
    render(await call('GET', API));
    if ($('message').className === 'error') say('');
  } catch (e) {
    say(e.message, true);
  }
}

function chosenGeometry() {
  const g = $('geometry').value;
  if (g !== 'window') return g || undefined;
  const even = (v, lo, hi) => Math.min(hi, Math.max(lo, Math.floor(v / 2) * 2));
  return `${even(window.innerWidth, 640, 7680)}x${even(window.innerHeight - 40, 480, 4320)}`;
}

async function create(e) {
  e.preventDefault();
  say('Starting your desktop…');
  $('create').disabled = true;
  const body = {};
  if ($('desktop').value) body.desktop = $('desktop').value;
  const geometry = chosenGeometry();
  if (geometry) body.geometry = geometry;
  try {
    const s = await call('PUT', API, body);
    say(s.status === 'running' ? 'Your desktop is running.' : `Your desktop is ${s.status}${s.statusReason ? `: ${s.statusReason}` : ''}.`);
  } catch (err) {
    say(`Could not create a desktop: ${err.message}`, true);
  } finally {
    $('create').disabled = false;
    await refresh();
    refreshThumbs(true);
  }
}

async function launchUrl(id, viewOnly) {
  const l = await call('GET', `${API}/${encodeURIComponent(id)}/launchurl${viewOnly ? '?viewOnly=true' : ''}`);
  return l.withDomain ? l.novncUrl : location.origin + l.novncUrl;
}

async function openDesktop(id) {
  try {
    window.open(await launchUrl(id, false), '_blank', 'noopener');
  } catch (e) {
    say(`Could not open ${id}: ${e.message}`, true);
  }
}

async function share(id) {
  const card = cards.get(id);
  const box = card.el.querySelector('.share-box');
  const input = card.el.querySelector('.share-link');
  const note = card.el.querySelector('.share-note');
  try {
    const url = await launchUrl(id, true);
    input.value = url;
    box.hidden = false;
    input.select();
    let copied = false;
    if (navigator.clipboard && navigator.clipboard.writeText && window.isSecureContext) {
      copied = await navigator.clipboard.writeText(url).then(() => true, () => false);
    }
    note.textContent = `${copied ? 'Copied. ' : 'Copy this link. '}Whoever opens it can watch, not type or click; it opens new views for a limited time.`;
  } catch (e) {
    say(`Could not make a link for ${id}: ${e.message}`, true);
  }
}

async function extend(id) {
  try {
    const s = await call('POST', `${EXTRA}/desktop/vnc/${encodeURIComponent(id)}/extend`, {});
    say(`Extended ${id}: it ends at ${when(s.endTime)}.`);
  } catch (e) {
    say(`Could not extend ${id}: ${e.message}`, true);
  }
  await refresh();
}

async function remove(id) {
  if (!confirm(`Delete ${id}? Unsaved work in the desktop is lost.`)) return;
  try {
    await call('DELETE', `${API}/${encodeURIComponent(id)}`);
    say(`Deleted ${id}.`);
  } catch (e) {
    say(`Could not delete ${id}: ${e.message}`, true);
  }
  await refresh();
}

async function start() {
  $('panel').hidden = false;
  await loadDesktops();
  await refresh();
  refreshThumbs(true);
}

$('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  token = $('token').value.trim();
  sessionStorage.setItem('hpcdesk.token', token);
  start();
});
$('create-form').addEventListener('submit', create);
$('refresh').addEventListener('click', () => { refresh(); refreshThumbs(true); });
document.addEventListener('visibilitychange', () => refreshThumbs(true));
if (token) {
  $('token').value = token;
  start();
}
setInterval(async () => {
  if (!token || $('panel').hidden || document.visibilityState !== 'visible') return;
  await refresh();
  refreshThumbs(false);
}, THUMB_EVERY_MS);
