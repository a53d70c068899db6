// roomvoice live room view: follows a room's timeline, sessions and channel bindings over
// the live WebSocket, and lets operators mute / revoke bindings.
// Protocol: docs/protocol.md ("Live room view"). No dependencies; loaded as an ES module.

const app = document.getElementById('live-app');

const RECONNECT_BASE_MS = 500;
const RECONNECT_MAX_MS = 10_000;
const GAP_RETRY_MS = 5_000;
const ENDED_SESSION_TTL_MS = 10 * 60_000; // ended sessions stay listed this long
const MAX_ERRORS = 8;
const MAX_TIMELINE_ROWS = 1000; // a page left open for days drops its oldest rows

const ACCESS_TEXT = {
  read_write: 'Read and write',
  read_only: 'Read only',
  write_only: 'Write only',
  none: 'None (revoked)',
};

const SESSION_STATE_TEXT = { connecting: 'connecting', active: 'live', ended: 'ended' };

const END_REASON_TEXT = {
  client_hangup: 'caller hung up',
  ended_by_caller: 'ended by the caller',
  ended_by_operator: 'ended by an operator',
  connect_failed: 'provider connection failed',
  provider_error: 'provider error',
  transport_error: 'transport error',
  access_revoked: 'access revoked',
  host_lost: 'server process stopped',
  server_shutdown: 'server shut down',
  timeout: 'time limit reached',
  internal_error: 'internal error',
};

const TOOL_STATUS_TEXT = {
  running: 'running…',
  succeeded: 'done',
  failed: 'failed',
  timed_out: 'timed out',
  cancelled: 'cancelled',
};

const ERROR_TEXT = {
  unauthenticated: 'You are not signed in, or your room link is invalid or has expired.',
  forbidden: 'You do not have access to this room.',
  not_found: 'This room does not exist.',
  unavailable: 'Live updates are not available for this room right now.',
};
const CLOSE_CODE_ERROR = { 4401: 'unauthenticated', 4403: 'forbidden', 4404: 'not_found', 4409: 'unavailable' };

const STATE_TEXT = {
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Connection lost: reconnecting…',
  error: 'Not receiving updates',
};

const $ = (id) => document.getElementById(id);
const ui = app && {
  state: $('live-state'),
  errors: $('live-errors'),
  timeline: $('timeline'),
  sessions: $('sessions'),
  bindings: document.querySelector('#bindings tbody'),
  bindingsEmpty: $('bindings-empty'),
};

const canOperate = app?.dataset.canOperate === 'true';
const csrfToken = app?.dataset.csrfToken || '';
const actionUrlTemplate = app?.dataset.bindingActionUrl || '';
const sessionEndUrlTemplate = app?.dataset.sessionEndUrl || '';
const eventsUrl = app?.dataset.eventsUrl || '';

// --- helpers --------------------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function humanize(code) {
  return String(code || '').replace(/_/g, ' ');
}

function str(value) {
  return value === null || value === undefined ? '' : String(value);
}

function addError(text, code = '') {
  const last = ui.errors.lastElementChild;
  if (last && last.dataset.text === text) {
    const count = Number(last.dataset.count || 1) + 1;
    last.dataset.count = String(count);
    last.querySelector('.rv-error-count').textContent = ` (×${count})`;
    return;
  }
  const li = el('li', 'rv-error');
  li.dataset.code = code;
  li.dataset.text = text;
  const message = el('span', 'rv-error-text', text);
  message.append(el('span', 'rv-error-count', ''));
  const dismiss = el('button', 'rv-dismiss', '×');
  dismiss.type = 'button';
  dismiss.setAttribute('aria-label', 'Dismiss this message');
  li.append(message, dismiss);
  ui.errors.append(li);
  while (ui.errors.children.length > MAX_ERRORS) ui.errors.firstElementChild.remove();
}

function setState(state, text) {
  ui.state.dataset.state = state;
  ui.state.textContent = text || STATE_TEXT[state];
}

const pad = (n) => String(n).padStart(2, '0');

// Local wall-clock HH:MM:SS (server-rendered rows are re-labelled too, so every row uses the
// viewer's time zone).
function formatTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

// --- timeline -------------------------------------------------------------------------------

// Every index up to `contiguous` is shown (or predates what the page rendered); `knownLast`
// is the highest index the server has told us about. contiguous < knownLast means a gap to
// fetch from events_url.
const rows = new Map(); // index → <li>
let contiguous = 0;
let knownLast = 0;
let fetchingGap = false;
let gapRetryTimer = 0;

function withAutoScroll(list, change) {
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 48;
  change();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function eventRow(event) {
  const li = el('li');
  li.dataset.index = str(event.index);
  li.dataset.kind = str(event.kind);
  li.dataset.role = str(event.role);
  li.dataset.status = str(event.status || 'delivered');
  li.dataset.sessionId = str(event.session_id);
  const time = el('time', 'rv-time', formatTime(event.occurred_at));
  time.dateTime = str(event.occurred_at);
  const who = el('span', 'rv-who');
  who.append(el('span', 'rv-role', str(event.role) || str(event.kind)));
  if (event.participant_id) who.append(' ', el('span', 'rv-participant', str(event.participant_id)));
  li.append(time, ' ', who, ' ', el('span', 'rv-text', str(event.text)));
  if (event.status === 'blocked') li.append(' ', el('span', 'rv-badge rv-badge-blocked', 'blocked'));
  return li;
}

function advanceContiguous() {
  while (rows.has(contiguous + 1)) contiguous += 1;
}

// Insert in index order (nearly always at the end) and skip indexes already shown.
function placeEvent(event) {
  const index = Number(event.index);
  if (!Number.isSafeInteger(index) || index < 1 || rows.has(index)) return;
  const li = eventRow(event);
  rows.set(index, li);
  withAutoScroll(ui.timeline, () => {
    let after = ui.timeline.lastElementChild;
    while (after && Number(after.dataset.index) > index) after = after.previousElementSibling;
    if (after) after.after(li);
    else ui.timeline.prepend(li);
  });
  while (rows.size > MAX_TIMELINE_ROWS) {
    const oldest = ui.timeline.firstElementChild;
    if (!oldest) break;
    rows.delete(Number(oldest.dataset.index));
    oldest.remove();
  }
}

function onEvent(event) {
  const index = Number(event.index);
  if (!Number.isSafeInteger(index)) return;
  knownLast = Math.max(knownLast, index);
  placeEvent(event);
  advanceContiguous();
  if (contiguous < knownLast) fillGaps();
}

async function fetchEventsAfter(after) {
  const separator = eventsUrl.includes('?') ? '&' : '?';
  const response = await fetch(`${eventsUrl}${separator}after=${after}`, {
    credentials: 'same-origin',
    headers: { Accept: 'application/json' },
  });
  if (!response.ok) throw new Error(`the server answered ${response.status}`);
  const body = await response.json();
  return Array.isArray(body?.events) ? body.events : [];
}

// Fetch missed events until the timeline is complete. One fetch at a time; events arriving
// meanwhile raise knownLast and the loop picks them up. If the server cannot fill a hole
// (no progress), skip it instead of asking forever.
async function fillGaps() {
  if (fetchingGap || !eventsUrl) return;
  fetchingGap = true;
  clearTimeout(gapRetryTimer);
  gapRetryTimer = 0;
  try {
    while (contiguous < knownLast) {
      const before = contiguous;
      const events = await fetchEventsAfter(before);
      events.forEach((event) => {
        knownLast = Math.max(knownLast, Number(event.index) || 0);
        placeEvent(event);
      });
      advanceContiguous();
      if (contiguous === before) {
        // Nothing right after `before` exists on the server: jump to the next shown row.
        const next = [...rows.keys()].filter((i) => i > before).sort((x, y) => x - y)[0];
        contiguous = next ? next - 1 : knownLast;
        advanceContiguous();
      }
    }
  } catch (error) {
    addError(`Could not load missed timeline events (${error.message || 'network error'}). Retrying…`, 'gap_fetch');
    gapRetryTimer = setTimeout(fillGaps, GAP_RETRY_MS);
  } finally {
    fetchingGap = false;
  }
}

function initTimeline() {
  let maxShown = 0;
  for (const li of ui.timeline.children) {
    const index = Number(li.dataset.index);
    if (!Number.isSafeInteger(index)) continue;
    rows.set(index, li);
    maxShown = Math.max(maxShown, index);
    const time = li.querySelector('time');
    const local = time && formatTime(time.dateTime);
    if (local && time.textContent !== local) time.textContent = local;
  }
  const lastIndex = Number(app.dataset.lastIndex) || 0;
  contiguous = rows.size ? maxShown : lastIndex;
  knownLast = Math.max(lastIndex, contiguous);
  ui.timeline.scrollTop = ui.timeline.scrollHeight;
  if (contiguous < knownLast) fillGaps();
}

// --- sessions -------------------------------------------------------------------------------

const sessionItems = new Map(); // session id → <li>
const removalTimers = new Map();

function renderSession(li, session) {
  li.dataset.sessionId = str(session.session_id);
  li.dataset.state = str(session.state);
  li.dataset.participantId = str(session.participant_id);
  li.dataset.agent = str(session.agent);
  li.dataset.transport = str(session.transport);
  li.dataset.endReason = str(session.end_reason);
  let stateText = SESSION_STATE_TEXT[session.state] || humanize(session.state) || 'unknown';
  if (session.state === 'ended' && session.end_reason) {
    stateText += ` (${END_REASON_TEXT[session.end_reason] || humanize(session.end_reason)})`;
  }
  const tools = li.querySelector('.rv-session-tools') || el('ul', 'rv-session-tools');
  li.replaceChildren(
    el('span', 'rv-session-agent', str(session.agent) || 'No agent'),
    ' ',
    el('span', 'rv-session-participant', str(session.participant_id)),
    ' ',
    el('span', 'rv-session-transport', str(session.transport)),
    ' ',
    el('span', 'rv-session-state', stateText),
    tools,
  );
  if (canOperate && session.state !== 'ended') {
    const end = el('button', 'rv-button rv-small-button rv-danger', 'End');
    end.type = 'button';
    end.dataset.action = 'end-session';
    end.setAttribute('aria-label', `End the session of ${str(session.participant_id) || 'this caller'}`);
    end.addEventListener('click', () => endSession(li, end));
    li.append(' ', end);
  }
}

// An operator ends a live session; its `session` message (state ended) updates the list.
async function endSession(li, button) {
  const id = li.dataset.sessionId;
  const url = sessionEndUrlTemplate.replace('SESSION_ID', () => encodeURIComponent(id));
  button.disabled = true;
  try {
    const response = await fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-CSRFToken': csrfToken, Accept: 'application/json' },
    });
    if (!response.ok) {
      let reason = `the server answered ${response.status}`;
      try {
        const body = await response.json();
        if (typeof body?.error === 'string' && body.error) reason = body.error;
      } catch {
        // keep the status as the reason
      }
      addError(`Could not end the session: ${reason}`, 'session_end');
      button.disabled = false;
    }
  } catch {
    addError('Could not end the session: network error.', 'session_end');
    button.disabled = false;
  }
}

function sessionFromItem(li) {
  return {
    session_id: li.dataset.sessionId,
    state: li.dataset.state,
    participant_id: li.dataset.participantId,
    agent: li.dataset.agent,
    transport: li.dataset.transport,
    end_reason: li.dataset.endReason,
  };
}

function sessionItem(id) {
  let li = sessionItems.get(id);
  if (!li) {
    li = el('li');
    sessionItems.set(id, li);
    ui.sessions.append(li);
  }
  return li;
}

function onSession(message) {
  const id = str(message.session_id);
  if (!id) return;
  const li = sessionItem(id);
  const previous = sessionFromItem(li);
  // Keep what we knew when a message leaves a field out.
  const merged = { ...previous };
  for (const key of ['state', 'participant_id', 'agent', 'transport', 'end_reason']) {
    if (message[key] !== undefined && message[key] !== null) merged[key] = message[key];
  }
  merged.session_id = id;
  renderSession(li, merged);
  clearTimeout(removalTimers.get(id));
  removalTimers.delete(id);
  if (merged.state === 'ended') {
    removalTimers.set(
      id,
      setTimeout(() => {
        li.remove();
        sessionItems.delete(id);
        removalTimers.delete(id);
      }, ENDED_SESSION_TTL_MS),
    );
  }
}

// Tool calls are listed under their session (timeline tool_call events carry no call id to
// match them by).
function onToolCall(message) {
  const sessionId = str(message.session_id);
  if (!sessionId) return;
  let li = sessionItems.get(sessionId);
  if (!li) {
    li = sessionItem(sessionId);
    renderSession(li, { session_id: sessionId, state: 'active' });
  }
  const list = li.querySelector('.rv-session-tools');
  const callId = str(message.call_id);
  let item = [...list.children].find((child) => child.dataset.callId === callId);
  if (!item) {
    item = el('li');
    item.dataset.callId = callId;
    list.append(item);
  }
  const status = str(message.status);
  item.dataset.status = status;
  item.textContent = `${str(message.name) || 'tool'}: ${TOOL_STATUS_TEXT[status] || humanize(status)}`;
}

function initSessions() {
  for (const li of [...ui.sessions.children]) {
    const id = li.dataset.sessionId;
    if (!id) continue;
    sessionItems.set(id, li);
    renderSession(li, sessionFromItem(li));
  }
}

// --- bindings -------------------------------------------------------------------------------

const bindingRows = new Map(); // binding id → <tr>

function bindingFromRow(tr) {
  return {
    binding_id: tr.dataset.bindingId,
    channel_id: tr.dataset.channelId,
    participant_id: tr.dataset.participantId,
    access: tr.dataset.access,
    muted: tr.dataset.muted === 'true',
    output_muted: tr.dataset.outputMuted === 'true',
  };
}

// Render a row in place. The action buttons are reused (only their action and label
// change), so keyboard focus stays on the button that was just pressed.
function renderBinding(tr, binding) {
  tr.dataset.bindingId = str(binding.binding_id);
  tr.dataset.channelId = str(binding.channel_id);
  tr.dataset.participantId = str(binding.participant_id);
  tr.dataset.access = str(binding.access);
  tr.dataset.muted = binding.muted ? 'true' : 'false';
  tr.dataset.outputMuted = binding.output_muted ? 'true' : 'false';
  const cellCount = canOperate ? 6 : 5;
  while (tr.cells.length < cellCount) tr.insertCell();
  while (tr.cells.length > cellCount) tr.deleteCell(-1);
  const [channel, participant, access, input, output, actions] = tr.cells;
  const who = binding.participant_id ? str(binding.participant_id) : 'everyone';
  channel.textContent = str(binding.channel_id);
  participant.textContent = who;
  access.textContent = ACCESS_TEXT[binding.access] || humanize(binding.access);
  input.textContent = binding.muted ? 'Muted' : 'On';
  output.textContent = binding.output_muted ? 'Muted' : 'On';
  input.dataset.flag = binding.muted ? 'off' : 'on';
  output.dataset.flag = binding.output_muted ? 'off' : 'on';
  access.dataset.flag = binding.access === 'none' ? 'off' : 'on';
  if (!actions) return;
  let [muteButton, accessButton] = actions.querySelectorAll('button');
  if (!muteButton) {
    muteButton = el('button', 'rv-button rv-small-button');
    accessButton = el('button', 'rv-button rv-small-button');
    muteButton.type = accessButton.type = 'button';
    const box = el('div', 'rv-binding-actions');
    box.append(muteButton, accessButton);
    actions.replaceChildren(box);
  }
  const target = `${who} on ${str(binding.channel_id)}`;
  muteButton.dataset.action = binding.muted ? 'unmute' : 'mute';
  muteButton.textContent = binding.muted ? 'Unmute' : 'Mute';
  muteButton.setAttribute('aria-label', `${muteButton.textContent} ${target}`);
  accessButton.dataset.action = binding.access === 'none' ? 'restore' : 'revoke';
  accessButton.textContent = binding.access === 'none' ? 'Restore' : 'Revoke';
  accessButton.classList.toggle('rv-danger', binding.access !== 'none');
  accessButton.setAttribute('aria-label', `${accessButton.textContent} access for ${target}`);
}

function sortKey(binding) {
  return `${str(binding.channel_id)}\u0000${str(binding.participant_id)}`;
}

function updateBindingsEmpty() {
  if (ui.bindingsEmpty) ui.bindingsEmpty.hidden = ui.bindings.rows.length > 0;
}

function applyBinding(binding) {
  const id = str(binding?.binding_id);
  if (!id) return;
  let tr = bindingRows.get(id);
  if (binding.detached) {
    tr?.remove();
    bindingRows.delete(id);
    updateBindingsEmpty();
    return;
  }
  if (!tr) {
    tr = document.createElement('tr');
    bindingRows.set(id, tr);
    // Same order as the server renders them: channel, then participant.
    const key = sortKey(binding);
    const before = [...ui.bindings.rows].find((row) => sortKey(bindingFromRow(row)) > key);
    ui.bindings.insertBefore(tr, before || null);
  }
  renderBinding(tr, binding);
  updateBindingsEmpty();
}

async function runBindingAction(tr, action) {
  const id = tr.dataset.bindingId;
  const url = actionUrlTemplate
    .replace('BINDING_ID', () => encodeURIComponent(id))
    .replace('ACTION', () => encodeURIComponent(action));
  const buttons = [...tr.querySelectorAll('button')];
  tr.setAttribute('aria-busy', 'true');
  buttons.forEach((button) => {
    button.disabled = true;
  });
  const target = `${tr.dataset.participantId || 'everyone'} on ${tr.dataset.channelId}`;
  try {
    const response = await fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-CSRFToken': csrfToken, Accept: 'application/json' },
    });
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      const reason = typeof body?.error === 'string' && body.error ? body.error : `the server answered ${response.status}`;
      addError(`Could not ${action} ${target}: ${reason}`, 'binding_action');
      return;
    }
    if (body) applyBinding(body);
  } catch {
    addError(`Could not ${action} ${target}: network error.`, 'binding_action');
  } finally {
    tr.removeAttribute('aria-busy');
    buttons.forEach((button) => {
      button.disabled = false;
    });
  }
}

function initBindings() {
  for (const tr of [...ui.bindings.rows]) {
    const id = tr.dataset.bindingId;
    if (!id) continue;
    bindingRows.set(id, tr);
    renderBinding(tr, bindingFromRow(tr));
  }
  updateBindingsEmpty();
  if (canOperate) {
    ui.bindings.addEventListener('click', (event) => {
      const button = event.target.closest('button[data-action]');
      const tr = button?.closest('tr');
      if (tr && !button.disabled) runBindingAction(tr, button.dataset.action);
    });
  }
}

// --- the socket -----------------------------------------------------------------------------

let socket = null;
let lastErrorCode = '';
let reconnectAttempt = 0;
let reconnectTimer = 0;
let hadConnection = false; // a sync arrived at least once (so a later one is a resync)
let stopped = false; // refused (44xx): no more reconnects

function socketUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${app.dataset.wsPath || ''}`;
}

function connect() {
  reconnectTimer = 0;
  if (stopped || socket) return;
  lastErrorCode = '';
  let current;
  try {
    current = new WebSocket(socketUrl());
  } catch (error) {
    addError(`Cannot open the live connection: ${error.message}`, 'connect_failed');
    setState('error');
    return;
  }
  socket = current;
  current.addEventListener('message', (event) => {
    if (socket !== current || typeof event.data !== 'string') return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (message && typeof message === 'object') onMessage(message);
  });
  current.addEventListener('close', (event) => {
    if (socket !== current) return;
    socket = null;
    onClose(event);
  });
}

function onMessage(message) {
  switch (message.type) {
    case 'sync': {
      // Sent first on every connection: from here on we are live. After a reconnect this
      // is also how missed events are found (last_index beyond what is shown).
      resync(message);
      hadConnection = true;
      reconnectAttempt = 0;
      setState('live');
      const last = Number(message.last_index);
      if (Number.isSafeInteger(last)) knownLast = Math.max(knownLast, last);
      if (contiguous < knownLast) fillGaps();
      break;
    }
    case 'event':
      onEvent(message);
      break;
    case 'binding':
      applyBinding(message);
      break;
    case 'session':
      onSession(message);
      break;
    case 'tool_call':
      onToolCall(message);
      break;
    case 'error':
      lastErrorCode = str(message.code);
      addError(ERROR_TEXT[lastErrorCode] || str(message.message) || `Error: ${humanize(lastErrorCode)}`, lastErrorCode);
      break;
    default:
      break;
  }
}

function onClose(event) {
  if (event.code >= 4400 && event.code <= 4499) {
    stopped = true;
    const code = CLOSE_CODE_ERROR[event.code];
    if (!code || code !== lastErrorCode) {
      addError(ERROR_TEXT[code] || `The server refused the live connection (code ${event.code}).`, code || String(event.code));
    }
    setState('error');
    return;
  }
  scheduleReconnect();
}

// Backoff 0.5 s, 1 s, 2 s … 10 s with ±25% jitter; observers keep trying until the page
// is closed. The server's `sync` on the new socket fills the timeline gap.
function scheduleReconnect() {
  const base = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** reconnectAttempt);
  const delay = Math.min(RECONNECT_MAX_MS, Math.round(base * (0.75 + Math.random() * 0.5)));
  reconnectAttempt += 1;
  const offline = navigator.onLine === false ? ' (offline)' : '';
  setState('reconnecting', `Connection lost${offline}: reconnecting in ${Math.max(1, Math.round(delay / 1000))} s…`);
  clearTimeout(reconnectTimer);
  reconnectTimer = setTimeout(connect, delay);
}

// The sync message carries the room's current bindings and live sessions: changes made while
// the connection was down are applied here (rows that no longer exist go, sessions that are
// no longer live are marked ended).
function resync(message) {
  if (Array.isArray(message.bindings)) {
    const present = new Set();
    for (const binding of message.bindings) {
      present.add(str(binding.binding_id));
      applyBinding(binding);
    }
    for (const [id, tr] of [...bindingRows]) {
      if (!present.has(id)) {
        tr.remove();
        bindingRows.delete(id);
      }
    }
    updateBindingsEmpty();
  }
  if (Array.isArray(message.sessions)) {
    const live = new Set();
    for (const session of message.sessions) {
      live.add(str(session.session_id));
      onSession(session);
    }
    for (const [id, li] of [...sessionItems]) {
      if (!live.has(id) && li.dataset.state !== 'ended') onSession({ session_id: id, state: 'ended' });
    }
  }
}

// --- start ----------------------------------------------------------------------------------

function init() {
  ui.errors.addEventListener('click', (event) => {
    const button = event.target.closest('.rv-dismiss');
    if (button) button.closest('li')?.remove();
  });
  initTimeline();
  initSessions();
  initBindings();
  window.addEventListener('online', () => {
    if (!socket && !stopped && reconnectTimer) {
      clearTimeout(reconnectTimer);
      connect();
    }
  });
  setState('connecting');
  connect();
}

if (app && ui.state && ui.timeline && ui.sessions && ui.bindings) init();
