// supervox softphone: the browser side of the node's local API (docs/API.md).
// Plain ES2020, no framework, no build step.
'use strict';

const $ = (id) => document.getElementById(id);
const MAX_MSG_BYTES = 16 * 1024;
const CHART_SECONDS = 120;
const ENDED_PANEL_MS = 8000;
const STATUS_RANK = { failed: -1, sending: 0, sent: 1, stored: 2, delivered: 3, read: 4 };
const MARKS = {
  sending: ['…', 'sending…'],
  failed: ['!', 'not sent'],
  sent: ['✓', 'sent'],
  stored: ['✉', 'stored in mailbox'],
  delivered: ['✓✓', 'delivered'],
  read: ['✓✓', 'read'],
};
const STATE_ORDER = { incoming: 0, accepted: 1, outgoing: 2, blocked: 3 };
const CALL_RANK = { calling: 0, ringing: 1, incoming: 1, connecting: 2, connected: 3, ended: 4 };

const S = {
  status: null,
  contacts: new Map(), // name -> contact
  keyChanged: new Map(), // name -> {old, new}
  strangers: new Map(), // name -> {unread}: conversations with non-contacts
  seenIn: new Set(), // ids of incoming messages already counted as unread
  history: [],
  chat: { peer: null, msgs: [], seq: 0 },
  call: null,
  expired: false,
  statusDirty: false,
};
let tmpSeq = 0;

// ---------- small helpers ----------

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'hidden') e.hidden = true;
    // Through the CSSOM: the page's CSP refuses style attributes set as markup.
    else if (k === 'style') e.style.cssText = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids) if (kid !== null && kid !== undefined && kid !== false) e.append(kid);
  return e;
}

function debounce(fn, ms) {
  let t = null;
  return () => {
    clearTimeout(t);
    t = setTimeout(fn, ms);
  };
}

const num = (v) => typeof v === 'number' && isFinite(v);
const iso = (ms) => (num(ms) ? new Date(ms).toISOString() : null);
const fmt = (v, d = 1) => (num(v) ? v.toFixed(d) : '–');
const pad2 = (n) => String(n).padStart(2, '0');

function fmtDur(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  return (hh ? hh + ':' + pad2(mm) : pad2(mm)) + ':' + pad2(s % 60);
}

function fmtLen(ms) {
  const s = Math.round(ms / 1000);
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + pad2(s % 60) + ' s';
  return Math.floor(s / 3600) + ' h ' + pad2(Math.floor((s % 3600) / 60)) + ' min';
}

function fmtClock(ms) {
  const d = new Date(ms);
  return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
}

function fmtWhen(ms) {
  if (!num(ms)) return '';
  const d = new Date(ms), now = new Date();
  const hm = pad2(d.getHours()) + ':' + pad2(d.getMinutes());
  if (d.toDateString() === now.toDateString()) return hm;
  if (d.toDateString() === new Date(now - 864e5).toDateString()) return 'yesterday ' + hm;
  const o = { day: 'numeric', month: 'short' };
  if (d.getFullYear() !== now.getFullYear()) o.year = 'numeric';
  return d.toLocaleDateString(undefined, o) + ' ' + hm;
}

function announce(text, assertive) {
  const e = $(assertive ? 'announce' : 'announce-polite');
  e.textContent = '';
  setTimeout(() => (e.textContent = text), 50);
}

// ---------- the API ----------

class ApiError extends Error {
  constructor(message, code, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

async function api(path, body, method) {
  if (S.expired) throw new ApiError('session expired', 'unauthorized', 401);
  const opt = { method: method || 'GET', credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body != null) {
    opt.headers['Content-Type'] = 'application/json';
    opt.body = JSON.stringify(body);
  }
  let r, data = null;
  try {
    r = await fetch('/api/v1/' + path, opt);
  } catch (e) {
    throw new ApiError('cannot reach the node (' + e.message + ')', 'network', 0);
  }
  if (r.status === 401) {
    sessionExpired();
    throw new ApiError('session expired', 'unauthorized', 401);
  }
  const text = await r.text();
  try {
    data = text ? JSON.parse(text) : null;
  } catch (e) {
    if (r.ok) throw new ApiError('the node sent something that is not JSON', 'bad-answer', r.status);
  }
  if (!r.ok || (data && !Array.isArray(data) && (data.ok === false || data.event === 'error'))) {
    throw new ApiError((data && data.error) || r.statusText || 'request failed', (data && data.code) || String(r.status), r.status);
  }
  return data;
}

const post = (path, body) => api(path, body, 'POST');

// GET path and hand the answer to fn; a failure goes to the banner.
async function load(path, what, fn) {
  try {
    fn(await api(path));
    return true;
  } catch (e) {
    fail(e, what);
    return false;
  }
}
const enc = encodeURIComponent;

// ---------- banner ----------

function showError(msg, code, kind) {
  if (S.expired && kind !== 'expired') return;
  const b = $('error-banner');
  b.querySelector('.banner-text').textContent = code ? msg + ' (' + code + ')' : msg;
  b.dataset.kind = kind || 'error';
  b.querySelector('.banner-close').hidden = kind === 'expired';
  b.hidden = false;
}

function fail(e, what) {
  if (e && e.status === 401) return;
  showError((what ? what + ': ' : '') + (e && e.message ? e.message : String(e)), e && e.code && e.code !== 'network' ? e.code : '');
}

function sessionExpired() {
  if (S.expired) return;
  S.expired = true;
  if (stream) stream.close();
  setStream('session expired');
  document.body.classList.add('expired');
  showError('Session expired: run `supervox ui` again', '', 'expired');
}

// ---------- the event stream ----------

let stream = null;
let retryMs = 1000;
let loadedOnce = false;

function setStream(state) {
  const e = $('stream-state');
  e.textContent = state;
  e.dataset.state = state.split(' ')[0];
}

function openStream() {
  if (S.expired) return;
  const es = new EventSource('/api/v1/events');
  stream = es;
  es.onopen = () => {
    retryMs = 1000;
    setStream('live');
    reloadAll(); // events may have been missed while the stream was down
  };
  es.onmessage = (m) => {
    let ev;
    try {
      ev = JSON.parse(m.data);
    } catch (e) {
      return;
    }
    try {
      if (ON[ev.event]) ON[ev.event](ev);
    } catch (e) {
      console.error('event', ev, e);
    }
  };
  es.onerror = () => {
    if (S.expired || stream !== es) return;
    setStream('reconnecting');
    if (es.readyState === EventSource.CLOSED) {
      // The browser gave up (an HTTP error): find out why, then try again.
      es.close();
      setTimeout(async () => {
        try {
          await api('version');
        } catch (e) {
          if (S.expired) return;
        }
        openStream();
      }, retryMs);
      retryMs = Math.min(retryMs * 2, 15000);
    }
  };
}

function reloadAll() {
  loadedOnce = true;
  loadStatus();
  loadContacts();
  loadHistory();
  loadPins();
  loadDevices();
  if (S.chat.peer) loadMessages();
}

const ON = {
  signed_in(ev) {
    if (S.status) S.status.supernode = ev.supernode || S.status.supernode;
    renderMe();
    statusSoon();
  },
  lost_supernode() {
    if (S.status) S.status.supernode = null;
    renderMe();
    statusSoon();
  },
  incoming_call: onIncomingCall,
  ringing(ev) {
    const c = callFor(ev);
    if (!c) statusSoon();
    else setCallState(c, c.incoming ? 'incoming' : 'ringing');
  },
  call_connected: onConnected,
  path_changed(ev) {
    const c = callFor(ev);
    if (!c) return;
    c.path = ev.path;
    c.pathLog.push({ t: Date.now(), path: ev.path, reason: ev.reason || ev.code || 'path changed' });
    renderCall();
  },
  call_stats: onStats,
  call_ended(ev) {
    const c = callFor(ev);
    if (c) endCall(c, ev);
    historySoon();
  },
  key_changed(ev) {
    const p = ev.peer;
    S.keyChanged.set(p, { old: ev.old_fingerprint, new: ev.new_fingerprint });
    renderContacts();
    showError(`The key of ${p} changed (pinned ${ev.old_fingerprint || '?'}, now ${ev.new_fingerprint || '?'}). This may be an attack: compare fingerprints with ${p}, then press Trust.`, '', 'warn');
    announce('Warning: the key of ' + p + ' changed', true);
  },
  contact_request(ev) {
    announce(ev.name + ' wants to add you as a contact');
    contactsSoon();
  },
  contact: () => contactsSoon(),
  presence(ev) {
    const c = S.contacts.get(ev.name);
    if (!c) return contactsSoon();
    c.presence = ev.presence;
    c.status_text = ev.status_text;
    renderContacts();
    if (S.chat.peer === ev.name) renderChatHead();
  },
  message: onMessage,
  message_sent: onMessageSent,
  message_status(ev) {
    const m = findMsg(ev.id);
    if (m) setStatus(m, ev.status);
  },
  missed_call(ev) {
    announce('Missed call from ' + ev.peer, true);
    historySoon();
  },
  mail_refused: (ev) => showError(`The mailbox for ${ev.to} refused the message: ${ev.reason || 'refused'}`, 'mail-refused'),
  error: (ev) => showError((ev.name ? ev.name + ': ' : '') + (ev.error || 'error'), ev.code),
};
ON.call_failed = ON.call_ended;

// ---------- me ----------

async function loadStatus() {
  if (!(await load('status', 'status', (v) => (S.status = v)))) return;
  renderMe();
  applyStatusCall(S.status.call);
}
const statusSoon = debounce(loadStatus, 300);

function reachText(r) {
  if (!r || r.summary) return (r && r.summary) || 'unknown';
  if (r.udp == null) return 'checking…';
  return !r.udp ? 'no UDP: calls go through a relay over TCP' : r.public ? 'public address: directly reachable' : `behind NAT (mapping ${r.mapping}, filtering ${r.filtering})`;
}

function renderMe() {
  const s = S.status;
  if (!s) return;
  $('me-name').textContent = s.name || '';
  $('me-fingerprint').textContent = s.fingerprint || '';
  $('me-role').textContent = s.role || '';
  $('me-role').dataset.role = s.role || '';
  const sn = $('me-supernode');
  sn.textContent = s.supernode || 'signing in…';
  sn.dataset.signedIn = s.supernode ? 'true' : 'false';
  $('reachability').textContent = reachText(s.reachability);
  if (s.presence && document.activeElement !== $('presence-select')) $('presence-select').value = s.presence;
  $('presence-select').dataset.presence = $('presence-select').value;
  if (!S.statusDirty && document.activeElement !== $('status-text')) $('status-text').value = s.status_text || '';
  document.title = (S.call && S.call.state === 'incoming' ? 'Incoming call: ' + S.call.peer + ' – ' : '') + (s.name ? s.name + ' – ' : '') + 'supervox';
}

async function setPresence() {
  const state = $('presence-select').value;
  const text = $('status-text').value;
  $('presence-select').dataset.presence = state;
  try {
    const r = await post('presence', { state, text });
    S.statusDirty = false;
    if (S.status) {
      S.status.presence = (r && r.presence) || state;
      S.status.status_text = text;
    }
    announce('Presence: ' + state + (text ? ', ' + text : ''));
  } catch (e) {
    fail(e, 'presence');
    statusSoon();
  }
}

// ---------- devices ----------

const loadDevices = () => load('devices', 'audio devices', renderDevices);

function fillSelect(sel, list, cur) {
  const keep = document.activeElement === sel;
  sel.replaceChildren();
  const all = (list || []).slice();
  if (cur && !all.includes(cur)) all.unshift(cur);
  for (const d of all) sel.append(h('option', { value: d, text: d }));
  if (cur) sel.value = cur;
  if (keep) sel.focus();
}

function renderDevices(d) {
  if (!d) return;
  fillSelect($('input-device'), d.inputs, d.input);
  fillSelect($('output-device'), d.outputs, d.output);
}

async function setDevice(which) {
  const body = {};
  body[which] = $(which + '-device').value;
  try {
    renderDevices(await post('devices', body));
    announce(which + ' device: ' + body[which] + ' (from the next call on)');
  } catch (e) {
    fail(e, which + ' device');
    loadDevices();
  }
}

// ---------- contacts ----------

async function loadContacts() {
  if (!(await load('contacts', 'contacts', (v) => (S.contacts = new Map((v || []).map((c) => [c.name, c])))))) return;
  for (const [n, c] of S.contacts) if (c.state === 'accepted') S.strangers.delete(n);
  renderContacts();
  if (S.chat.peer) renderChatHead();
}
const contactsSoon = debounce(loadContacts, 200);

async function loadPins() {
  try {
    const r = await api('pins');
    // Add marks only: a key_changed event may name a key the node did not keep as pending.
    for (const p of (r && r.pins) || []) if (p.pending_fingerprint || p.pending_user_id) S.keyChanged.set(p.name, { old: p.fingerprint, new: p.pending_fingerprint });
    renderContacts();
  } catch (e) {
    // Pins are a nicety here: no banner for them.
  }
}

async function contactAction(action, name, extra) {
  try {
    await post('contacts', Object.assign({ action, name }, extra || {}));
    announce(name + ': ' + action + ' done');
  } catch (e) {
    fail(e, action + ' ' + name);
  }
  loadContacts();
}

async function trust(name) {
  try {
    await post('trust', { name });
    S.keyChanged.delete(name);
    announce('The new key of ' + name + ' is trusted');
    const b = $('error-banner');
    if (b.dataset.kind === 'warn') b.hidden = true;
  } catch (e) {
    fail(e, 'trust ' + name);
  }
  renderContacts();
  loadContacts();
}

function sortContacts(a, b) {
  return (STATE_ORDER[a.state] ?? 9) - (STATE_ORDER[b.state] ?? 9) || a.name.localeCompare(b.name);
}

function callActive() {
  return S.call && S.call.state !== 'ended';
}

function renderContacts() {
  const ul = $('contacts');
  const f = document.activeElement;
  const fli = f && ul.contains(f) ? f.closest('li') : null;
  const refocus = fli ? [fli.dataset.name, f.className.split(' ')[0]] : null;
  ul.replaceChildren();
  const list = [...S.contacts.values()].sort(sortContacts);
  for (const c of list) ul.append(contactRow(c));
  $('contacts-empty').hidden = list.length > 0;
  if (refocus) {
    const li = [...ul.children].find((x) => x.dataset.name === refocus[0]);
    const el = li && (li.querySelector('.' + refocus[1]) || li.querySelector('button'));
    if (el) el.focus();
  }
  renderStrangers();
}

const btn = (cls, text, fn, label) => h('button', { type: 'button', class: cls, 'aria-label': label, onclick: fn, text });

function contactRow(c) {
  const { name, state } = c;
  const kc = S.keyChanged.get(name);
  const presence = c.presence || 'offline';
  const unread = c.unread || 0;
  const act = (a) => () => contactAction(a, name);
  const ver = kc
    ? h('span', { class: 'verified bad', title: `key changed: pinned ${kc.old || '?'}, now ${kc.new || '?'}`, text: 'key changed' })
    : c.verified === 'contact'
      ? h('span', { class: 'verified ok', title: 'verified key (pinned)', 'aria-label': 'verified key', text: '✔' })
      : h('span', { class: 'verified unv', title: 'key from the directory, not verified yet', text: 'unverified' });
  const note = { incoming: 'wants to add you' + (c.message ? ': “' + c.message + '”' : ''), outgoing: 'request sent', blocked: 'blocked' }[state];
  const actions = [];
  if (state === 'incoming') actions.push(btn('accept-button btn-go small', 'Accept', act('accept'), 'Accept ' + name), btn('decline-button small', 'Decline', act('decline'), 'Decline ' + name));
  else if (state === 'blocked') actions.push(btn('remove-button ghost', 'Unblock', act('remove'), 'Unblock ' + name));
  else actions.push(btn('remove-button ghost', 'Remove', act('remove'), 'Remove ' + name));
  if (state !== 'blocked') actions.push(btn('block-button ghost', 'Block', act('block'), 'Block ' + name));
  const call = state === 'accepted' || state === 'outgoing' ? btn('call-button btn-go small', 'Call', () => startCall(name), 'Call ' + name) : null;
  if (call) call.disabled = !!callActive();
  const li = h(
    'li',
    { class: 'contact', 'data-name': name, 'data-state': state, 'data-presence': presence, 'data-verified': kc ? 'key-changed' : c.verified || '', 'aria-current': S.chat.peer === name ? 'true' : null },
    h('span', { class: 'dot', 'data-presence': presence, title: presence, role: 'img', 'aria-label': presence }),
    h('div', { class: 'c-body' },
      h('div', { class: 'c-line' },
        h('button', { type: 'button', class: 'contact-name', title: 'Open the chat with ' + name, onclick: () => openChat(name), text: name }),
        ver,
        kc ? btn('trust-button warnbtn', 'Trust', () => trust(name), `Trust the new key of ${name} (compare fingerprints first)`) : null,
        h('span', { class: 'unread', 'aria-label': unread + ' unread', hidden: !unread, text: String(unread) }),
        call),
      h('div', { class: 'c-line sub' },
        h('span', { class: 'status-text', text: c.status_text || '' }),
        note ? h('span', { class: 'note', text: note }) : null,
        h('span', { class: 'c-actions' }, ...actions))));
  return li;
}

function renderStrangers() {
  const ul = $('other-chats');
  ul.replaceChildren();
  for (const [name, s] of S.strangers) {
    const c = S.contacts.get(name);
    if (c && c.state === 'accepted') continue;
    ul.append(h('li', { class: 'other', 'data-name': name },
      btn('other-name', name, () => openChat(name), 'Open the chat with ' + name + ' (not a contact)'),
      h('span', { class: 'tag', text: 'not a contact' }),
      h('span', { class: 'unread', hidden: !s.unread, text: String(s.unread || 0) })));
  }
  $('others').hidden = !ul.children.length;
}

async function addContact(ev) {
  ev.preventDefault();
  const name = $('add-contact-name').value.trim();
  const message = $('add-contact-message').value.trim();
  if (!name) return $('add-contact-name').focus();
  const body = { action: 'add', name };
  if (message) body.message = message;
  $('add-contact-button').disabled = true;
  try {
    await post('contacts', body);
    $('add-contact-name').value = '';
    $('add-contact-message').value = '';
    announce('Contact request sent to ' + name);
  } catch (e) {
    fail(e, 'add ' + name);
  }
  $('add-contact-button').disabled = false;
  loadContacts();
}

// ---------- chat ----------

function openChat(name) {
  if (S.chat.peer !== name) {
    S.chat = { peer: name, msgs: [], seq: S.chat.seq + 1 };
    $('chat-messages').replaceChildren();
  }
  renderChatHead();
  renderContacts();
  loadMessages();
  $('chat-input').disabled = false;
  $('chat-send').disabled = false;
  if (window.matchMedia('(max-width: 820px)').matches) $('chat-panel').scrollIntoView({ behavior: 'smooth', block: 'start' });
  $('chat-input').focus({ preventScroll: true });
}

function renderChatHead() {
  const peer = S.chat.peer;
  const c = peer ? S.contacts.get(peer) : null;
  $('chat-peer').textContent = peer || '';
  $('chat-empty').hidden = !!peer;
  $('chat-panel').dataset.peer = peer || '';
  let note = '';
  if (peer && (!c || c.state !== 'accepted')) note = c ? (c.state === 'outgoing' ? 'request sent' : c.state === 'incoming' ? 'wants to add you' : c.state) : 'not a contact';
  else if (c) note = (c.presence || 'offline') + (c.status_text ? ' · ' + c.status_text : '');
  $('chat-peer-note').textContent = note;
  const cc = $('chat-call');
  cc.hidden = !c || (c.state !== 'accepted' && c.state !== 'outgoing');
  cc.disabled = !!callActive();
}

async function loadMessages() {
  const peer = S.chat.peer;
  const seq = S.chat.seq;
  let list;
  try {
    list = await api('messages/' + enc(peer));
  } catch (e) {
    // No conversation the node can name (a sender who is not a contact): what the events brought.
    if (e.status === 409 || e.status === 404) list = ((S.strangers.get(peer) || {}).msgs || []).map((m) => Object.assign({}, m));
    else return fail(e, 'messages');
  }
  if (S.chat.seq !== seq) return;
  const ul = $('chat-messages');
  ul.setAttribute('aria-busy', 'true');
  const keep = S.chat.msgs.filter((m) => !m.id); // optimistic rows still waiting
  const old = new Map(S.chat.msgs.filter((m) => m.id).map((m) => [m.id, m]));
  S.chat.msgs = [];
  $('chat-messages').replaceChildren();
  for (const m of list || []) {
    const o = old.get(m.id);
    if (o && (STATUS_RANK[o.status] ?? 0) > (STATUS_RANK[m.status] ?? 0)) m.status = o.status;
    if (m.direction === 'in') S.seenIn.add(m.id);
    addMsg(m);
  }
  for (const m of keep) addMsg(Object.assign(m, { li: null }));
  ul.setAttribute('aria-busy', 'false');
  scrollChat(true);
  markRead();
}

function addMsg(m) {
  S.chat.msgs.push(m);
  S.chat.msgs.sort((a, b) => (a.sent_ms || 0) - (b.sent_ms || 0));
  renderMsg(m);
}

function findMsg(id) {
  return id ? S.chat.msgs.find((m) => m.id === id) : null;
}

function renderMsg(m) {
  const out = m.direction === 'out';
  const st = m.status || (out ? 'sent' : 'delivered');
  const mark = (out && MARKS[st]) || ['', out ? st : ''];
  const li = h('li', { class: 'message', 'data-id': m.id || '', 'data-direction': out ? 'out' : 'in', 'data-status': st },
    h('div', { class: 'bubble' }, h('div', { class: 'text', text: m.text || '' })),
    h('div', { class: 'meta' },
      !out && m.contact === false ? h('span', { class: 'tag', text: 'not a contact' }) : null,
      h('time', { datetime: iso(m.sent_ms), text: fmtWhen(m.sent_ms) }),
      h('span', { class: 'mark', 'data-status': out ? st : '', title: mark[1] || null, 'aria-label': mark[1] || null, text: mark[0] }),
      m.error ? h('span', { class: 'err', text: m.error }) : null));
  const ul = $('chat-messages');
  if (m.li && m.li.parentNode === ul) {
    m.li.replaceWith(li);
  } else {
    const i = S.chat.msgs.indexOf(m);
    const next = S.chat.msgs.slice(i + 1).find((x) => x.li && x.li.parentNode === ul);
    ul.insertBefore(li, next ? next.li : null);
  }
  m.li = li;
}

function scrollChat(force) {
  const ul = $('chat-messages');
  if (force || ul.scrollHeight - ul.scrollTop - ul.clientHeight < 120) ul.scrollTop = ul.scrollHeight;
}

const peerOf = (m) => (m.direction === 'out' ? m.to : m.from);

function onMessage(ev) {
  const m = Object.assign({}, ev);
  delete m.event;
  if (!m.id) return;
  const peer = peerOf(m);
  const c = S.contacts.get(peer);
  const stranger = m.direction === 'in' && !(c && c.state === 'accepted');
  if (stranger) {
    const s = S.strangers.get(peer) || { unread: 0, msgs: [] };
    if (!s.msgs.some((x) => x.id === m.id)) s.msgs.push(m);
    S.strangers.set(peer, s);
  }
  if (S.chat.peer && peer === S.chat.peer) {
    const old = findMsg(m.id);
    if (old) {
      setStatus(old, m.status);
    } else {
      addMsg(m);
      scrollChat(m.direction === 'out');
    }
    if (m.direction === 'in') {
      S.seenIn.add(m.id);
      markRead();
    }
  } else if (m.direction === 'in' && !S.seenIn.has(m.id)) {
    S.seenIn.add(m.id);
    if (stranger) S.strangers.get(peer).unread++;
    else if (c) c.unread = (c.unread || 0) + 1;
    renderContacts();
  }
  if (m.direction === 'in') announce('New message from ' + peer + (m.contact === false ? ' (not a contact)' : '') + ': ' + String(m.text || '').slice(0, 120));
}

function setStatus(m, status) {
  if (!status) return;
  if (status === 'failed' || (STATUS_RANK[status] ?? 0) > (STATUS_RANK[m.status] ?? 0)) {
    m.status = status;
    renderMsg(m);
  }
}

function onMessageSent(ev) {
  if (!S.chat.peer || ev.to !== S.chat.peer) return;
  if (findMsg(ev.id)) return setStatus(findMsg(ev.id), 'sent');
  const p = S.chat.msgs.find((m) => !m.id && m.status === 'sending');
  if (p) {
    p.id = ev.id;
    setStatus(p, 'sent');
  } else messagesSoon(); // sent from elsewhere (ctl): fetch it
}
const messagesSoon = debounce(() => S.chat.peer && loadMessages(), 300);

const markRead = debounce(async () => {
  const peer = S.chat.peer;
  if (!peer) return;
  const c = S.contacts.get(peer);
  const s = S.strangers.get(peer);
  try {
    await post('messages/' + enc(peer) + '/read');
  } catch (e) {
    if (e.status !== 409) fail(e, 'mark read');
    return;
  }
  for (const m of S.chat.msgs) if (m.direction === 'in' && m.status !== 'read') setStatus(m, 'read');
  if (c && c.unread) {
    c.unread = 0;
    renderContacts();
  }
  if (s && s.unread) {
    s.unread = 0;
    renderStrangers();
  }
}, 250);

async function sendMessage(ev) {
  if (ev) ev.preventDefault();
  const peer = S.chat.peer;
  const input = $('chat-input');
  const text = input.value;
  if (!peer || !text.trim()) return;
  if (new TextEncoder().encode(text).length > MAX_MSG_BYTES) {
    showError('The message is longer than 16 KiB: shorten it', 'too-large');
    return;
  }
  input.value = '';
  const me = S.status ? S.status.name : '';
  const m = { tmp: 't' + ++tmpSeq, id: null, direction: 'out', from: me, to: peer, text, sent_ms: Date.now(), status: 'sending' };
  addMsg(m);
  scrollChat(true);
  const seq = S.chat.seq;
  try {
    const r = await post('messages/' + enc(peer), { text });
    if (S.chat.seq !== seq) return;
    if (r && r.id) {
      const other = findMsg(r.id);
      if (other && other !== m) {
        // An event already brought the message: keep that row.
        S.chat.msgs.splice(S.chat.msgs.indexOf(m), 1);
        if (m.li) m.li.remove();
        setStatus(other, r.status);
      } else {
        m.id = r.id;
        if (num(r.sent_ms)) m.sent_ms = r.sent_ms;
        if (m.status === 'sending') m.status = 'sent';
        setStatus(m, r.status || 'sent');
        renderMsg(m);
      }
    } else setStatus(m, 'sent');
  } catch (e) {
    if (S.chat.seq !== seq) return;
    m.status = 'failed';
    m.error = 'not sent: ' + e.message;
    renderMsg(m);
    if (!input.value) input.value = text; // give the text back to retry
    fail(e, 'message to ' + peer);
  }
}

function chatKey(ev) {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && !ev.altKey && !ev.ctrlKey && !ev.metaKey) {
    ev.preventDefault();
    sendMessage();
  }
}

// ---------- history ----------

async function loadHistory() {
  await load('history', 'history', (v) => (S.history = v || []));
  renderHistory();
}
const historySoon = debounce(loadHistory, 400);

function renderHistory() {
  const ul = $('history');
  ul.replaceChildren();
  for (const r of S.history) {
    const missed = !!r.missed;
    const dur = missed ? 'missed' : r.duration_ms > 0 ? fmtLen(r.duration_ms) : 'not connected';
    ul.append(h('li', { class: 'call-record', 'data-direction': r.direction, 'data-missed': String(missed), 'data-peer': r.peer },
      h('span', { class: 'dir', title: r.direction, 'aria-label': r.direction, text: r.direction === 'incoming' ? '↙' : '↗' }),
      h('span', { class: 'h-peer', text: r.peer }),
      h('time', { class: 'h-when', datetime: iso(r.start_ms), text: fmtWhen(r.start_ms) }),
      h('span', { class: 'h-sub' },
        h('span', { class: 'h-dur', text: dur }),
        r.path ? h('span', { class: 'path small', 'data-path': r.path, 'data-kind': pathKind(r.path), text: r.path }) : null,
        num(r.mos) ? h('span', { class: 'h-mos', text: 'MOS ' + r.mos.toFixed(1) }) : null)));
  }
  $('history-empty').hidden = S.history.length > 0;
}

// ---------- calls ----------

function newCall(id, peer, incoming) {
  if (S.call && S.call.hideTimer) clearTimeout(S.call.hideTimer);
  S.call = { call_id: id, peer, incoming, state: incoming ? 'incoming' : 'calling', path: '', verified: null, fingerprint: '', muted: false, connectedAt: null, samples: [], pathLog: [], figures: null, reason: '', hideTimer: null };
  return S.call;
}

function callFor(ev) {
  const c = S.call;
  if (!c) return null;
  if (ev.call_id && c.call_id === ev.call_id) return c;
  // Our own call whose POST has not answered yet.
  if (!c.call_id && c.state !== 'ended') {
    c.call_id = ev.call_id || null;
    return c;
  }
  if (!ev.call_id) return c;
  return null;
}

function mapState(st, incoming) {
  if (st === 'incoming') return 'incoming';
  if (st === 'ringing') return incoming ? 'incoming' : 'ringing';
  if (st === 'connected') return 'connected';
  if (st === 'connecting') return incoming ? 'connecting' : 'calling';
  return 'calling'; // outgoing, resolving, verifying, inviting
}

function setCallState(c, st) {
  if (c.state === 'ended' || (CALL_RANK[st] ?? 0) < (CALL_RANK[c.state] ?? 0)) return;
  c.state = st;
  if (st === 'connected' && !c.connectedAt) c.connectedAt = Date.now();
  renderCall();
}

function applyStatusCall(sc) {
  const c = S.call;
  if (!sc) {
    if (c && c.state !== 'ended' && c.call_id && !c.posting) endCall(c, { reason: 'call ended' });
    return;
  }
  let cur = c;
  if (!cur || (cur.call_id && cur.call_id !== sc.call_id) || (cur.state === 'ended' && cur.call_id !== sc.call_id)) cur = newCall(sc.call_id, sc.peer, sc.state === 'incoming');
  if (!cur.call_id) cur.call_id = sc.call_id;
  if (cur.state === 'ended') return;
  cur.peer = sc.peer || cur.peer;
  if (sc.state === 'incoming') cur.incoming = true;
  if (sc.path) cur.path = sc.path;
  if (sc.fingerprint) cur.fingerprint = sc.fingerprint;
  if (sc.verified !== undefined) cur.verified = sc.verified;
  if (typeof sc.muted === 'boolean') cur.muted = sc.muted;
  if (num(sc.mos) || num(sc.jitter_ms)) cur.figures = sc;
  setCallState(cur, mapState(sc.state, cur.incoming));
  renderCall();
  renderContacts();
}

function onIncomingCall(ev) {
  if (callActive() && S.call.call_id !== ev.call_id && S.call.call_id) {
    announce(ev.peer + ' is calling you (you are in a call)', true);
    return;
  }
  const c = S.call && S.call.call_id === ev.call_id ? S.call : newCall(ev.call_id, ev.peer, true);
  c.incoming = true;
  c.fingerprint = ev.fingerprint || c.fingerprint;
  renderCall();
  renderContacts();
  renderMe();
  announce('Incoming call from ' + ev.peer, true);
  const a = document.activeElement;
  if (!a || !/^(INPUT|TEXTAREA|SELECT)$/.test(a.tagName)) $('answer-button').focus({ preventScroll: true });
}

function onConnected(ev) {
  let c = callFor(ev);
  if (!c) c = newCall(ev.call_id, ev.peer, false);
  c.peer = ev.peer || c.peer;
  c.path = ev.path || c.path;
  c.verified = ev.verified !== undefined ? ev.verified : c.verified;
  c.fingerprint = ev.fingerprint || c.fingerprint;
  c.pathLog.push({ t: Date.now(), path: c.path, reason: 'connected' + (num(ev.setup_ms) ? ' in ' + Math.round(ev.setup_ms) + ' ms' : '') });
  setCallState(c, 'connected');
  renderMe();
  announce('Connected to ' + c.peer + ' over ' + c.path);
}

function onStats(ev) {
  const c = callFor(ev);
  if (!c) return statusSoon();
  if (c.state === 'ended') return;
  if (c.state !== 'connected') setCallState(c, 'connected');
  c.samples.push(ev);
  if (c.samples.length > CHART_SECONDS) c.samples.splice(0, c.samples.length - CHART_SECONDS);
  c.figures = ev;
  if (ev.path && ev.path !== c.path) c.path = ev.path;
  if (typeof ev.muted === 'boolean') c.muted = ev.muted;
  renderCall();
}

function endCall(c, ev) {
  if (c.state === 'ended') return;
  const wasIncoming = c.state === 'incoming';
  c.state = 'ended';
  c.reason = ev.reason || (ev.event === 'call_failed' ? 'failed' : 'ended');
  if (num(ev.duration_ms)) c.duration = ev.duration_ms;
  else if (c.connectedAt) c.duration = Date.now() - c.connectedAt;
  if (ev.event === 'call_ended' && (num(ev.mos) || num(ev.jitter_ms))) c.figures = Object.assign({}, c.figures || {}, ev);
  c.hideTimer = setTimeout(closeCall, ENDED_PANEL_MS);
  renderCall();
  renderContacts();
  renderMe();
  announce('Call ' + (wasIncoming ? 'from ' : 'with ') + c.peer + ' ended: ' + c.reason, true);
}

function closeCall() {
  if (S.call && S.call.state === 'ended') {
    clearTimeout(S.call.hideTimer);
    S.call = null;
    renderCall();
  }
}

async function startCall(name) {
  if (callActive()) return;
  const c = newCall(null, name, false);
  c.posting = true;
  renderCall();
  renderContacts();
  try {
    const r = await post('call', { name });
    if (r && r.call_id && !c.call_id) c.call_id = r.call_id;
  } catch (e) {
    fail(e, 'call ' + name);
    if (S.call === c) endCall(c, { event: 'call_failed', reason: e.message });
  }
  c.posting = false;
}

async function callAction(path, body) {
  try {
    const r = await post(path, body);
    return r || {};
  } catch (e) {
    fail(e, path);
    statusSoon();
    return null;
  }
}

async function answer() {
  const c = S.call;
  if (!c) return;
  if (await callAction('answer')) setCallState(c, 'connecting');
  $('hangup-button').focus({ preventScroll: true });
}

async function hangup() {
  await callAction('hangup');
}

async function toggleMute() {
  const c = S.call;
  if (!c) return;
  const r = await callAction('mute', { muted: !c.muted });
  if (r) {
    c.muted = typeof r.muted === 'boolean' ? r.muted : !c.muted;
    renderCall();
  }
}

function pathKind(p) {
  return String(p || '').startsWith('relay') ? 'relay' : p ? 'direct' : '';
}

function renderCall() {
  const c = S.call;
  const panel = $('call-panel');
  if (!c) {
    panel.hidden = true;
    panel.dataset.state = '';
    renderChatHead();
    renderMe();
    return;
  }
  panel.hidden = false;
  panel.dataset.state = c.state;
  $('call-peer').textContent = c.peer || '';
  panel.querySelector('.avatar').textContent = (c.peer || '?').slice(0, 1).toUpperCase();
  const st = $('call-state');
  st.textContent = c.state;
  st.dataset.state = c.state;
  $('call-timer').textContent = c.state === 'connected' && c.connectedAt ? fmtDur(Date.now() - c.connectedAt) : c.state === 'ended' && c.duration ? fmtDur(c.duration) : '';
  $('call-reason').textContent = c.state === 'ended' ? '(' + c.reason + ')' : c.state === 'calling' ? 'waiting for ' + c.peer + '…' : c.state === 'incoming' ? 'is calling you' : '';
  const v = $('call-verified');
  v.textContent = c.verified === 'contact' ? '✔ verified key' : c.verified === 'directory' ? 'key from the directory (unverified)' : c.verified ? 'unverified' : '';
  v.dataset.verified = c.verified || '';
  $('call-fp').textContent = c.fingerprint || '';
  const p = $('call-path');
  p.textContent = c.path || '';
  p.dataset.path = c.path || '';
  p.dataset.kind = pathKind(c.path);
  p.title = c.path ? (pathKind(c.path) === 'relay' ? 'media through a relay' : 'direct media path') : '';
  const ended = c.state === 'ended';
  const ringing = c.state === 'incoming';
  $('answer-button').hidden = !ringing;
  $('decline-button').hidden = !ringing;
  $('hangup-button').hidden = ended || ringing;
  $('mute-button').hidden = ended || ringing;
  $('mute-button').setAttribute('aria-pressed', c.muted ? 'true' : 'false');
  $('call-close').hidden = !ended;
  const chart = c.samples.length > 0 || c.state === 'connected';
  panel.querySelector('.chart-wrap').hidden = !chart;
  $('call-figures').hidden = !chart && !c.figures;
  renderPathLog(c);
  renderFigures(c);
  drawChart(c);
  renderChatHead();
}

function renderPathLog(c) {
  const log = $('path-log');
  log.replaceChildren();
  const items = c.pathLog.slice(-6);
  if (!items.length) return;
  log.append(h('span', { class: 'pl-title', text: 'Path log' }));
  items.forEach((e, i) => {
    log.append(h('span', { class: 'pl-item' }, h('time', { text: fmtClock(e.t) }), ' ', i || c.pathLog.length > 6 ? '→ ' : '', h('b', { text: e.path || '?' }), ' (' + e.reason + ')'));
  });
}

// ---------- the live chart ----------

const SERIES = [
  { chart: 0, key: 'mos', label: 'MOS', color: '#15803d', unit: '', d: 2 },
  { chart: 1, key: 'loss_before_fec_pct', label: 'loss before FEC', color: '#ea580c', unit: ' %', d: 1 },
  { chart: 1, key: 'loss_after_fec_pct', label: 'loss after FEC', color: '#be123c', unit: ' %', d: 1 },
  { chart: 2, key: 'jitter_ms', label: 'jitter', color: '#7c3aed', unit: ' ms', d: 1 },
  { chart: 2, key: 'rtt_ms', label: 'RTT', color: '#2563eb', unit: ' ms', d: 0 },
  { chart: 2, key: 'playout_delay_ms', label: 'playout', color: '#0f766e', unit: ' ms', d: 0 },
];
const CHARTS = [
  { title: 'MOS', min: 1, max: 5, fixed: true },
  { title: 'loss %', min: 0, max: 2 },
  { title: 'delay ms', min: 0, max: 50 },
];

function renderFigures(c) {
  const box = $('call-figures');
  const f = c.figures;
  if (!f) {
    box.textContent = c.state === 'connected' ? 'waiting for figures…' : 'no figures yet';
    return;
  }
  const kids = [];
  SERIES.forEach((s, i) => {
    if (i) kids.push(h('span', { class: 'sr-only', text: '; ' }));
    kids.push(h('span', { class: 'fig', 'data-key': s.key }, h('i', { class: 'sw', style: 'background:' + s.color, 'aria-hidden': 'true' }), s.label + ' ', h('b', { text: fmt(f[s.key], s.d) + (num(f[s.key]) ? s.unit : '') })));
  });
  box.replaceChildren(...kids);
}

function niceMax(v, floor) {
  const x = Math.max(v, floor);
  const p = Math.pow(10, Math.floor(Math.log10(x)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

function drawChart(c) {
  const cv = $('call-chart');
  const n = c.samples.length;
  cv.dataset.points = String(n);
  const W = cv.clientWidth;
  const H = 180;
  if (!W) return; // hidden: drawn when shown
  const dpr = window.devicePixelRatio || 1;
  if (cv.width !== Math.round(W * dpr) || cv.height !== Math.round(H * dpr)) {
    cv.width = Math.round(W * dpr);
    cv.height = Math.round(H * dpr);
  }
  const g = cv.getContext('2d');
  if (!g) return;
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, W, H);
  const L = 36, R = 8, T = 4, B = 16, GAP = 8;
  const ch = (H - T - B - GAP * 2) / 3;
  const pw = W - L - R;
  // The window grows with the call (at least 30 s, at most CHART_SECONDS) so a new call fills it.
  const span = Math.min(CHART_SECONDS, Math.max(30, n));
  const xAt = (i) => L + pw - ((n - 1 - i) * pw) / (span - 1);
  g.font = '10px system-ui, sans-serif';
  g.textBaseline = 'middle';
  CHARTS.forEach((cfg, k) => {
    const top = T + k * (ch + GAP);
    const series = SERIES.filter((s) => s.chart === k);
    let max = cfg.max;
    if (!cfg.fixed) {
      let m = 0;
      for (const s of c.samples) for (const se of series) if (num(s[se.key])) m = Math.max(m, s[se.key]);
      max = niceMax(m * 1.1, cfg.max);
    }
    const yAt = (v) => top + ch - ((Math.min(Math.max(v, cfg.min), max) - cfg.min) / (max - cfg.min)) * ch;
    g.fillStyle = '#f8fafc';
    g.fillRect(L, top, pw, ch);
    g.strokeStyle = '#e2e8f0';
    g.lineWidth = 1;
    g.beginPath();
    for (const f of [0, 0.5, 1]) {
      const y = Math.round(top + ch * f) + 0.5;
      g.moveTo(L, y);
      g.lineTo(L + pw, y);
    }
    g.stroke();
    g.fillStyle = '#64748b';
    g.textAlign = 'right';
    g.fillText(String(+max.toFixed(2)), L - 4, top + 5);
    g.fillText(String(cfg.min), L - 4, top + ch - 4);
    g.textAlign = 'left';
    g.fillText(cfg.title, L + 4, top + 8);
    g.save();
    g.beginPath();
    g.rect(L, top, pw, ch);
    g.clip();
    g.lineWidth = 1.6;
    g.lineJoin = 'round';
    for (const se of series) {
      g.strokeStyle = se.color;
      g.beginPath();
      let pen = false;
      c.samples.forEach((s, i) => {
        const v = s[se.key];
        if (!num(v)) {
          pen = false;
          return;
        }
        const x = xAt(i), y = yAt(v);
        if (pen) g.lineTo(x, y);
        else g.moveTo(x, y);
        pen = true;
      });
      g.stroke();
      if (n === 1 && num(c.samples[0][se.key])) {
        g.fillStyle = se.color;
        g.beginPath();
        g.arc(xAt(0), yAt(c.samples[0][se.key]), 2.5, 0, 7);
        g.fill();
      }
    }
    g.restore();
  });
  g.fillStyle = '#64748b';
  const yb = H - B / 2 + 1;
  g.textAlign = 'left';
  g.fillText('−' + span + ' s', L, yb);
  g.textAlign = 'center';
  g.fillText('−' + Math.round(span / 2) + ' s', L + pw / 2, yb);
  g.textAlign = 'right';
  g.fillText('now', L + pw, yb);
}

// ---------- wiring ----------

function tick() {
  const c = S.call;
  if (c && c.state === 'connected' && c.connectedAt) $('call-timer').textContent = fmtDur(Date.now() - c.connectedAt);
}

function init() {
  const on = (id, type, fn) => $(id).addEventListener(type, fn);
  on('presence-select', 'change', setPresence);
  on('status-apply', 'click', setPresence);
  on('status-text', 'input', () => (S.statusDirty = true));
  on('status-text', 'keydown', (e) => e.key === 'Enter' && (e.preventDefault(), setPresence()));
  on('input-device', 'change', () => setDevice('input'));
  on('output-device', 'change', () => setDevice('output'));
  on('add-contact-form', 'submit', addContact);
  on('chat-form', 'submit', sendMessage);
  on('chat-input', 'keydown', chatKey);
  on('chat-call', 'click', () => S.chat.peer && startCall(S.chat.peer));
  on('answer-button', 'click', answer);
  on('decline-button', 'click', hangup);
  on('hangup-button', 'click', hangup);
  on('mute-button', 'click', toggleMute);
  on('call-close', 'click', closeCall);
  on('qr-toggle', 'click', () => {
    const big = document.querySelector('.me').classList.toggle('qr-big');
    $('qr-toggle').setAttribute('aria-expanded', big);
    $('qr-toggle').setAttribute('aria-label', big ? 'Show a smaller QR code' : 'Show a larger QR code');
  });
  const banner = $('error-banner');
  banner.querySelector('.banner-close').addEventListener('click', () => (banner.hidden = true));
  document.addEventListener('keydown', (e) => e.key === 'Escape' && !S.expired && (banner.hidden = true));
  window.addEventListener('resize', debounce(() => S.call && drawChart(S.call), 150));
  setInterval(tick, 1000);
  renderChatHead();
  openStream();
  // The stream's opening loads everything; without a stream, load anyway.
  setTimeout(() => loadedOnce || reloadAll(), 2000);
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
else init();
