// hpcdesk's portal page: list, create, open and delete your desktop with the SCNet desktop
// API of this same server. The token stays in this browser tab (sessionStorage).
const API = '/hpc/openapi/v2/desktop/vnc';
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem('hpcdesk.token') || '';

function say(text, error) {
  $('message').textContent = text;
  $('message').className = error ? 'error' : '';
}

async function call(method, path = '') {
  const r = await fetch(API + path, { method, headers: { token } });
  let body;
  try {
    body = await r.json();
  } catch (e) {
    throw new Error(`the server answered HTTP ${r.status}`);
  }
  if (body.code !== '0') throw new Error(`${body.msg} (code ${body.code})`);
  return body.data;
}

function cell(text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function render(items) {
  const tbody = $('sessions').querySelector('tbody');
  tbody.replaceChildren();
  $('empty').hidden = items.length > 0;
  for (const s of items) {
    const tr = document.createElement('tr');
    tr.dataset.session = s.sessionId;
    tr.dataset.status = s.status;
    tr.append(
      cell(s.sessionId),
      cell(s.status, `status-${s.status}`),
      cell(s.hostName),
      cell(`:${s.displayNumber}`),
      cell(String(s.connections)),
      cell(new Date(s.lastActiveTime).toLocaleString()),
    );
    const actions = document.createElement('td');
    if (s.status === 'running') {
      const open = document.createElement('button');
      open.textContent = 'Open';
      open.className = 'open';
      open.addEventListener('click', () => openDesktop(s.sessionId));
      actions.append(open);
    }
    const del = document.createElement('button');
    del.textContent = 'Delete';
    del.className = 'delete';
    del.addEventListener('click', () => remove(s.sessionId));
    actions.append(' ', del);
    tr.append(actions);
    if (s.statusReason) {
      const reason = document.createElement('tr');
      const td = cell(s.statusReason, 'reason');
      td.colSpan = 7;
      reason.append(td);
      tbody.append(tr, reason);
    } else {
      tbody.append(tr);
    }
  }
}

async function refresh() {
  try {
    render(await call('GET'));
    say('');
  } catch (e) {
    say(e.message, true);
  }
}

async function create() {
  say('Starting your desktop…');
  $('create').disabled = true;
  try {
    const s = await call('PUT');
    say(s.status === 'running' ? 'Your desktop is running.' : `Your desktop is ${s.status}: ${s.statusReason}`);
  } catch (e) {
    say(`Could not create a desktop: ${e.message}`, true);
  } finally {
    $('create').disabled = false;
    await refresh();
  }
}

async function openDesktop(id) {
  try {
    const l = await call('GET', `/${encodeURIComponent(id)}/launchurl`);
    const url = l.withDomain ? l.novncUrl : location.origin + l.novncUrl;
    window.open(url, '_blank', 'noopener');
  } catch (e) {
    say(`Could not open ${id}: ${e.message}`, true);
  }
}

async function remove(id) {
  if (!confirm(`Delete ${id}? Unsaved work in the desktop is lost.`)) return;
  try {
    await call('DELETE', `/${encodeURIComponent(id)}`);
    say(`Deleted ${id}.`);
  } catch (e) {
    say(`Could not delete ${id}: ${e.message}`, true);
  }
  await refresh();
}

$('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  token = $('token').value.trim();
  sessionStorage.setItem('hpcdesk.token', token);
  $('panel').hidden = false;
  refresh();
});
$('create').addEventListener('click', create);
$('refresh').addEventListener('click', refresh);
if (token) {
  $('token').value = token;
  $('panel').hidden = false;
  refresh();
}
setInterval(() => { if (token && !$('panel').hidden) refresh(); }, 5000);
