// roomvoice voice page: microphone → server → speakers, plus transcript and status.
// Protocol: docs/protocol.md ("Voice"). No dependencies; loaded as an ES module.
//
// Two transports, chosen on the page ("Connection"; remembered in localStorage, or
// ?transport=webrtc|websocket in the page's URL), behind one interface (`conn`, see
// openSocket and openWebRTC): the JSON messages are handled the same way (onJson).
//
// WebSocket
// - Capture: getUserMedia → MediaStreamSource → AudioWorkletNode (capture-worklet.js),
//   which posts 20 ms PCM16 frames; each frame is sent as one binary WebSocket frame.
// - Playback: each binary frame from the server (or base64 `audio` message) becomes an
//   AudioBuffer played by its own AudioBufferSourceNode, scheduled back to back on the
//   AudioContext clock (see schedulePcm).
// - A ~10 Hz tick reads the AudioContext clock to retire played chunks, report the
//   reply's playback position to the server, and update meters and diagnostics.
//
// WebRTC (webrtc.js)
// - The microphone and the reply are Opus tracks; the JSON messages go on a data channel.
//   No playback reports: the server knows what it sent. clear_audio only updates the page
//   (the server has already dropped its queue; the browser's jitter buffer is small).
// - The tick reads the levels from AnalyserNodes (mic and reply), counts the time the reply
//   was audible as "played", and polls getStats() for the diagnostics.

import { WEBRTC_SUPPORTED, WebRTCConnection, analyserRms } from './webrtc.js';

const app = document.getElementById('voice-app');

// --- tunables -------------------------------------------------------------------------------

// The rate the page speaks with the server, both ways (the worklet downsamples the mic to
// it; Web Audio upsamples the replies). 24 kHz keeps speech's whole band and is what most
// realtime models produce, at half the upload of 48 kHz.
const WIRE_RATE = 24000;
const PLAYBACK_LEAD_S = 0.05; // head start when playback (re)starts from an empty queue
const TICK_MS = 100; // meters, diagnostics and playback reports
const RECONNECT_BASE_MS = 500;
const RECONNECT_MAX_MS = 10_000;
const RECONNECT_GIVE_UP_MS = 120_000;
const END_TIMEOUT_MS = 2_000; // wait this long for session_ended after sending "end"
const MAX_SOCKET_BACKLOG = 64 * 1024; // bytes queued in the socket before mic frames are dropped
const MAX_ERRORS = 8;
const TRANSPORTS = ['websocket', 'webrtc'];
const TRANSPORT_STORAGE_KEY = 'roomvoice.voice.transport';
const RTC_STATS_MS = 1_000; // how often the diagnostics read getStats() in WebRTC mode
const AUDIBLE_RMS = 0.003; // ~-50 dBFS: the reply track counts as playing above this
const WORKLET_NAME = 'roomvoice-pcm16-capture';
// Resolved against this module's own URL, so it works wherever static files are served.
const WORKLET_URL = new URL('./capture-worklet.js', import.meta.url);

// --- words ----------------------------------------------------------------------------------

const STATE_TEXT = {
  idle: 'Not connected',
  connecting: 'Connecting…',
  live: 'Live: speak any time',
  reconnecting: 'Connection lost: reconnecting…',
  ended: 'Ended',
  error: 'Not connected because of an error',
};

const ERROR_TEXT = {
  // refusals (sent before a 44xx close)
  unauthenticated: 'You are not signed in, or your room link is invalid or has expired.',
  forbidden: 'You do not have access to this room, or your access was revoked.',
  not_found: 'This room or agent does not exist, or the agent is disabled.',
  unavailable: 'This agent cannot be used right now: its AI provider is not available.',
  flooded: 'The server closed the connection because this page sent too much data.',
  // bad input (the session goes on)
  bad_json: 'The server could not read a message from this page.',
  unknown_type: 'The server did not understand a message from this page.',
  bad_message: 'The server rejected a message from this page.',
  bad_audio: 'The server rejected some microphone audio.',
  frame_too_large: 'A message was too large and was dropped.',
  rate_limited: 'Audio is being sent faster than real time; some of it was dropped.',
  busy: 'The server is busy and dropped your last request. Please try again.',
  not_live: 'The conversation is not live, so that was not sent.',
  // this page
  mic_denied:
    'Microphone access was denied. Allow the microphone for this site in your browser, then press Connect again.',
  mic_missing: 'No microphone was found. Connect one, then press Connect again.',
  mic_busy: 'The microphone could not be started. It may be in use by another application.',
  mic_failed: 'The microphone could not be started.',
  mic_ended: 'The microphone stopped (unplugged or disabled). You can still type messages.',
  insecure: 'Microphone access needs a secure connection (https, or localhost).',
  no_worklet:
    'This browser cannot process audio on this page (AudioWorklet is not available). Use a current Chrome, Edge or Firefox over https.',
  audio_failed: 'Audio could not be started in this browser.',
  connect_failed: 'Could not reach the voice server. Check your connection, then press Connect to try again.',
  reconnect_gave_up: 'The connection was lost and could not be restored within 2 minutes.',
  not_connected: 'Not live: connect first, then send your message.',
  rate_mismatch: 'The server chose a different sample rate from this page; audio may sound wrong.',
  bad_server_message: 'Received a message from the server that this page could not read.',
  webrtc_failed:
    'The WebRTC connection could not be established (a firewall may block it). Press Connect to try again, or choose the WebSocket connection.',
  no_webrtc: 'This browser does not support WebRTC: the WebSocket connection is used.',
  bad_request: 'The server could not use the request this page sent to start the call.',
  internal_error: 'The server could not start or continue the call because of an internal error.',
};

const TRANSPORT_TEXT = { websocket: 'WebSocket', webrtc: 'WebRTC' };

const CLOSE_CODE_ERROR = {
  4401: 'unauthenticated',
  4403: 'forbidden',
  4404: 'not_found',
  4409: 'unavailable',
  4429: 'flooded',
};

const END_REASON_TEXT = {
  client_hangup: 'the connection to the server was lost',
  ended_by_caller: 'you ended the conversation',
  ended_by_operator: 'an operator ended the conversation',
  connect_failed: 'the AI provider could not be reached',
  provider_error: 'the AI provider reported an error',
  transport_error: 'a connection error occurred',
  access_revoked: 'your access to this room was revoked',
  host_lost: 'the server handling the conversation stopped',
  server_shutdown: 'the server is shutting down',
  timeout: 'the time limit was reached',
  internal_error: 'an internal server error occurred',
};

const TOOL_STATUS_TEXT = {
  running: 'running…',
  succeeded: 'done',
  failed: 'failed',
  timed_out: 'timed out',
  cancelled: 'cancelled',
};

// --- page elements --------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);
const ui = app && {
  connect: $('connect-button'),
  end: $('end-button'),
  turn: $('turn-button'),
  cancel: $('cancel-button'),
  state: $('connection-state'),
  access: $('access-notice'),
  transcript: $('transcript'),
  userSpeaking: $('user-speaking'),
  assistantSpeaking: $('assistant-speaking'),
  inputLevel: $('input-level'),
  outputLevel: $('output-level'),
  errors: $('errors'),
  textForm: $('text-form'),
  textInput: $('text-input'),
  textSubmit: $('text-form')?.querySelector('button[type="submit"]'),
  toolCalls: $('tool-calls'),
  stats: $('voice-stats'),
  transportChoice: $('transport-choice'),
  replyAudio: $('reply-audio'),
};
const agentName = app?.dataset.agentName || 'Assistant';

// --- state ----------------------------------------------------------------------------------

let state = 'idle';
let attempt = 0; // bumped by start/cancel/teardown: stale async work checks it and bails out
let audio = null; // {ctx, stream, sendStream, source, worklet, micAnalyser, output, micStopped}
let transport = 'websocket'; // the current (or last) call's transport, chosen at Connect
// The current connection: {kind, opened, lastErrorCode, isOpen(), sendJson(message),
// close({hangUp}), muteReply(), reportsPlayback} plus `socket` (WebSocket) or `rtc`
// (a WebRTCConnection, with `lastStats`).
let conn = null;
let sessionEnded = false; // session_ended seen on the current socket
let userEnding = false; // End pressed; waiting for session_ended
let openedThisCall = false; // some socket opened since Connect (decides reconnect vs fail)
let manualTurns = false; // the agent's provider detects no turns: the caller ends each
let pendingReconnectNote = false; // the next session_started follows a lost connection
const reconnect = { attempt: 0, timer: 0, since: 0 };
let endTimer = 0;
let drainTimer = 0;
let tickTimer = 0;
let lastTickAt = 0;
let inputPeakRms = 0; // loudest mic frame since the last tick
let lastLevelAt = 0; // WebRTC: when the reply's level was last read (for "played")
let rtcStatsPending = false;
let lastRtcStatsAt = 0;
// WebRTC: getStats() counts per peer connection; the call's totals add up finished ones.
const rtcTotals = { sentSeconds: 0, receivedSeconds: 0, replyEnergy: 0 };

const stats = {
  sessionId: '',
  sampleRate: 0, // negotiated (session_started), else the AudioContext's
  sentSeconds: 0,
  receivedSeconds: 0,
  droppedFrames: 0,
  clears: 0,
  reconnects: 0,
  transport: '',
  connectionState: '', // WebRTC: the peer connection's state
  rttMs: null,
  jitterMs: null,
  packetsLost: 0,
  replyEnergy: 0, // WebRTC: the reply track's total audio energy (getStats)
};

// Playback bookkeeping. Chunks are kept in start order; at most the first one is playing.
const playback = {
  nextStart: 0, // AudioContext time where the next chunk starts (gap-free chaining)
  chunks: [], // {source, start, end, rms, epoch}
  // The "current reply" for playback reports starts at speaking{assistant,true} or
  // clear_audio: both bump the epoch. Only chunks scheduled in this epoch count.
  epoch: 0,
  replySeconds: 0, // played seconds of finished chunks of the current epoch
  totalSeconds: 0, // played seconds of finished or stopped chunks, whole page lifetime
  lastReportedMs: -1,
  hadQueued: false, // current-epoch audio was queued at the previous tick (drain detection)
};

const inProgressTurn = { user: null, assistant: null };
const toolItems = new Map();

// --- small helpers --------------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function connOpen() {
  return conn !== null && conn.isOpen();
}

function sendJson(message) {
  if (!connOpen()) return false;
  return conn.sendJson(message);
}

function humanize(code) {
  return String(code || '').replace(/_/g, ' ');
}

function clearTimer(id) {
  if (id) clearTimeout(id);
  return 0;
}

// A perceptual meter scale: -60 dBFS (or silence) → 0, 0 dBFS → 1. Raw RMS of speech sits
// around 0.02–0.2, which would barely move a linear bar.
function meterValue(rms) {
  if (!(rms > 0)) return 0;
  const value = (20 * Math.log10(rms) + 60) / 60;
  return Math.min(1, Math.max(0, value));
}

function setMeter(meter, rms) {
  const value = Math.round(meterValue(rms) * 100) / 100;
  if (Number(meter.value) !== value) {
    meter.value = value;
    meter.textContent = `${Math.round(value * 100)}%`;
  }
  meter.dataset.rms = rms > 0 ? rms.toFixed(4) : '0';
}

// --- state display --------------------------------------------------------------------------

function setState(next, text) {
  state = next;
  ui.state.dataset.state = next;
  ui.state.textContent = text || STATE_TEXT[next];
  updateControls();
}

let focusOrphaned = false; // a control lost keyboard focus by being disabled

function updateControls() {
  const buttons = [ui.connect, ui.end, ui.cancel];
  const focused = document.activeElement;
  ui.connect.disabled = !['idle', 'ended', 'error'].includes(state);
  ui.end.disabled = !(state === 'live' && !userEnding);
  ui.cancel.hidden = !(state === 'connecting' || state === 'reconnecting');
  if (ui.turn) {
    ui.turn.hidden = !manualTurns;
    ui.turn.disabled = !(state === 'live' && !userEnding);
  }
  if (ui.textSubmit) ui.textSubmit.disabled = !(state === 'live' && !userEnding);
  // The transport is chosen between calls, not during one.
  if (ui.transportChoice) ui.transportChoice.disabled = !['idle', 'ended', 'error'].includes(state);
  // A button disabled while focused drops keyboard focus to <body>. Hand focus to the
  // control that makes sense now (or, if none is usable yet, to the next one that is).
  const unusable = (node) => node.disabled || node.hidden;
  const lostNow = buttons.includes(focused) && unusable(focused);
  const stillLost = focused === document.body || focused === null || lostNow;
  if (lostNow || (focusOrphaned && stillLost)) {
    const next = buttons.find((button) => !unusable(button));
    if (next) next.focus();
    focusOrphaned = !next;
  } else if (!stillLost) {
    focusOrphaned = false;
  }
}

function setSpeaking(indicator, active) {
  indicator.dataset.active = active ? 'true' : 'false';
  const text = indicator.querySelector('.rv-indicator-text');
  if (text) text.textContent = active ? 'speaking' : 'quiet';
}

// --- errors ---------------------------------------------------------------------------------

function addError(code, serverMessage) {
  const friendly = ERROR_TEXT[code];
  const text = friendly || serverMessage || `Something went wrong (${humanize(code)}).`;
  const detail = friendly && serverMessage && serverMessage !== friendly ? serverMessage : '';
  // Collapse repeats of the newest error (rate_limited can come once a second).
  const last = ui.errors.lastElementChild;
  if (last && last.dataset.code === code && last.dataset.text === text) {
    const count = Number(last.dataset.count || 1) + 1;
    last.dataset.count = String(count);
    last.querySelector('.rv-error-count').textContent = ` (×${count})`;
    return;
  }
  const li = el('li', 'rv-error');
  li.dataset.code = code;
  li.dataset.text = text;
  li.dataset.count = '1';
  const message = el('span', 'rv-error-text', text);
  message.append(el('span', 'rv-error-count', ''));
  li.append(message);
  if (detail) li.append(el('small', 'rv-error-detail', detail));
  const dismiss = el('button', 'rv-dismiss', '×');
  dismiss.type = 'button';
  dismiss.setAttribute('aria-label', 'Dismiss this message');
  li.append(dismiss);
  ui.errors.append(li);
  while (ui.errors.children.length > MAX_ERRORS) ui.errors.firstElementChild.remove();
}

// --- transcript -----------------------------------------------------------------------------

// Keep the transcript scrolled to the newest line unless the reader has scrolled up.
function withAutoScroll(change) {
  const list = ui.transcript;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 48;
  change();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function onTranscription(message) {
  const role = message.role === 'user' || message.role === 'assistant' ? message.role : null;
  if (!role) return;
  const text = typeof message.text === 'string' ? message.text : '';
  const isFinal = message.is_final === true;
  withAutoScroll(() => {
    let li = inProgressTurn[role];
    if (!li) {
      if (isFinal && !text.trim()) return; // nothing to show
      li = el('li', 'turn');
      li.dataset.role = role;
      li.dataset.label = role === 'user' ? 'You' : agentName; // shown via CSS ::before
      ui.transcript.append(li);
    }
    if (isFinal && !text.trim()) {
      li.remove(); // a partial that came to nothing
    } else {
      li.textContent = text;
      li.dataset.final = isFinal ? 'true' : 'false';
      // Screen readers hold back a busy element's changes: announce the final, not every partial.
      if (isFinal) li.removeAttribute('aria-busy');
      else li.setAttribute('aria-busy', 'true');
    }
    // A final closes the turn: the next partial of this role starts a new line.
    inProgressTurn[role] = isFinal ? null : li;
  });
}

// The agent's last reply was not all spoken (the caller interrupted): show what was said.
function onTranscriptCorrected(message) {
  if (typeof message.original !== 'string' || typeof message.text !== 'string') return;
  const turns = ui.transcript.querySelectorAll('li.turn[data-role="assistant"][data-final="true"]');
  for (let i = turns.length - 1; i >= 0; i -= 1) {
    if (turns[i].textContent === message.original) {
      turns[i].textContent = message.text;
      turns[i].dataset.corrected = 'true';
      return;
    }
  }
}

// Partial turns of a session that is gone are left as they were, and no longer updated.
function abandonPartialTurns() {
  for (const role of ['user', 'assistant']) {
    const li = inProgressTurn[role];
    if (li) {
      li.classList.add('rv-abandoned');
      li.removeAttribute('aria-busy');
    }
    inProgressTurn[role] = null;
  }
}

function addSystemLine(text) {
  withAutoScroll(() => {
    const li = el('li', 'rv-system-line', text);
    li.dataset.role = 'system';
    ui.transcript.append(li);
  });
}

// --- tool calls -----------------------------------------------------------------------------

function onToolCall(message) {
  const id = String(message.call_id ?? '');
  const status = String(message.status || 'running');
  let li = toolItems.get(id);
  if (!li) {
    li = el('li', 'rv-tool-call');
    li.dataset.callId = id;
    li.append(el('span', 'rv-tool-name'), el('span', 'rv-tool-status'));
    ui.toolCalls.append(li);
    toolItems.set(id, li);
  }
  li.querySelector('.rv-tool-name').textContent = String(message.name || 'tool');
  if (status === 'progress') {
    // Still running after the tool's delay: the model was asked to say this to the caller.
    li.dataset.status = 'running';
    const said = typeof message.message === 'string' ? message.message : '';
    li.querySelector('.rv-tool-status').textContent = said ? `still running: “${said}”` : 'still running';
    return;
  }
  li.dataset.status = status;
  li.querySelector('.rv-tool-status').textContent = TOOL_STATUS_TEXT[status] || humanize(status);
}

// --- diagnostics ----------------------------------------------------------------------------

function formatMs(ms) {
  return ms < 10_000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function setStat(attribute, key, value, text) {
  const stringValue = String(value);
  if (ui.stats.getAttribute(attribute) !== stringValue) ui.stats.setAttribute(attribute, stringValue);
  const dd = ui.stats.querySelector(`[data-stat="${key}"]`);
  if (dd && dd.textContent !== text) dd.textContent = text;
}

function renderStats(playedMs) {
  const sent = Math.round(stats.sentSeconds * 1000);
  const received = Math.round(stats.receivedSeconds * 1000);
  setStat('data-sent-ms', 'sent-ms', sent, formatMs(sent));
  setStat('data-received-ms', 'received-ms', received, formatMs(received));
  setStat('data-played-ms', 'played-ms', playedMs, formatMs(playedMs));
  setStat('data-clears', 'clears', stats.clears, String(stats.clears));
  setStat('data-session-id', 'session-id', stats.sessionId, stats.sessionId || 'none');
  setStat('data-dropped-frames', 'dropped-frames', stats.droppedFrames, String(stats.droppedFrames));
  setStat('data-reconnects', 'reconnects', stats.reconnects, String(stats.reconnects));
  const rate = stats.sampleRate || (audio && transport === 'websocket' ? wireRate() : 0);
  setStat('data-sample-rate', 'sample-rate', rate, rate ? `${rate} Hz` : 'unknown');
  const kind = TRANSPORT_TEXT[stats.transport] || '';
  const linkState = stats.connectionState ? ` (${stats.connectionState})` : '';
  setStat('data-transport', 'transport', stats.transport, kind ? `${kind}${linkState}` : 'none');
  setStat('data-connection-state', 'connection-state', stats.connectionState, stats.connectionState || 'none');
  const rtt = stats.rttMs === null ? '' : String(stats.rttMs);
  setStat('data-rtt-ms', 'rtt-ms', rtt, rtt ? `${rtt} ms` : 'unknown');
  const jitter = stats.jitterMs === null ? '' : String(stats.jitterMs);
  setStat('data-jitter-ms', 'jitter-ms', jitter, jitter ? `${jitter} ms` : 'unknown');
  setStat('data-packets-lost', 'packets-lost', stats.packetsLost, String(stats.packetsLost));
  const energy = stats.replyEnergy.toFixed(6);
  setStat('data-reply-energy', 'reply-energy', energy, energy);
  // The rows that only mean something for one transport.
  for (const row of ui.stats.querySelectorAll('[data-transport-only]')) {
    row.hidden = row.dataset.transportOnly !== (stats.transport || chosenTransport());
  }
}

function resetStats() {
  Object.assign(stats, {
    sessionId: '',
    sampleRate: 0,
    sentSeconds: 0,
    receivedSeconds: 0,
    droppedFrames: 0,
    clears: 0,
    reconnects: 0,
    transport: '',
    connectionState: '',
    rttMs: null,
    jitterMs: null,
    packetsLost: 0,
    replyEnergy: 0,
  });
  Object.assign(rtcTotals, { sentSeconds: 0, receivedSeconds: 0, replyEnergy: 0 });
  playback.totalSeconds = 0;
  renderStats(0);
}

// --- playback -------------------------------------------------------------------------------

function newReplyEpoch() {
  playback.epoch += 1;
  playback.replySeconds = 0;
  playback.lastReportedMs = -1;
  playback.hadQueued = false;
}

// Schedule one chunk of PCM16 LE mono.
//
// Timing: chunks are chained on the AudioContext clock, each starting exactly where the
// previous one ends (nextStart), so consecutive chunks play without gaps or overlaps no
// matter how irregularly they arrive. Only when the queue has run dry (first chunk of a
// reply, after clear_audio, or after a network stall) is the start moved to
// currentTime + PLAYBACK_LEAD_S: a small head start so the next chunks can arrive and be
// chained before this one finishes.
function schedulePcm(arrayBuffer) {
  const a = audio;
  // After End (or the end of the session) late reply audio is not played.
  if (!a || a.ctx.state === 'closed' || userEnding || sessionEnded) return;
  const count = arrayBuffer.byteLength >> 1;
  if (count === 0) return;
  const rate = stats.sampleRate || wireRate();
  stats.receivedSeconds += count / rate;

  const buffer = a.ctx.createBuffer(1, count, rate); // resampled by Web Audio if rates differ
  const samples = buffer.getChannelData(0);
  const view = new DataView(arrayBuffer);
  let sumSquares = 0;
  for (let i = 0; i < count; i++) {
    const s = view.getInt16(i * 2, true) / 32768;
    samples[i] = s;
    sumSquares += s * s;
  }

  const source = a.ctx.createBufferSource();
  source.buffer = buffer;
  source.connect(a.output);
  const now = a.ctx.currentTime;
  // Underrun (or nearly): restart with a lead. 5 ms of slack keeps start() from landing in
  // the past by the time the render thread sees it.
  if (playback.nextStart < now + 0.005) playback.nextStart = now + PLAYBACK_LEAD_S;
  const start = playback.nextStart;
  source.start(start);
  playback.nextStart = start + buffer.duration;
  playback.chunks.push({
    source,
    start,
    end: playback.nextStart,
    rms: Math.sqrt(sumSquares / count),
    epoch: playback.epoch,
  });
}

// Stop everything scheduled at once. What already played still counts in the totals.
function stopPlayback() {
  const a = audio;
  const now = a ? a.ctx.currentTime : 0;
  for (const chunk of playback.chunks) {
    if (now > chunk.start) playback.totalSeconds += Math.min(now, chunk.end) - chunk.start;
    try {
      chunk.source.stop();
    } catch {
      // already stopped
    }
    chunk.source.disconnect();
  }
  playback.chunks = [];
  playback.nextStart = 0;
  newReplyEpoch();
}

function onClearAudio() {
  stopPlayback();
  stats.clears += 1;
  tick(); // show the stop at once
}

// Read the AudioContext clock: retire finished chunks and measure what has been played.
// Returns {replyMs, totalMs, rms, queued}.
function measurePlayback() {
  const a = audio;
  if (!a) {
    return { replyMs: 0, totalMs: Math.floor(playback.totalSeconds * 1000), rms: 0, queued: false };
  }
  const now = a.ctx.currentTime;
  const chunks = playback.chunks;
  while (chunks.length && chunks[0].end <= now) {
    const done = chunks.shift();
    const seconds = done.end - done.start;
    playback.totalSeconds += seconds;
    if (done.epoch === playback.epoch) playback.replySeconds += seconds;
  }
  // Chunks never overlap, so only the first remaining one can be partly played.
  let partial = 0;
  let rms = 0;
  const head = chunks[0];
  if (head && head.start < now) {
    partial = now - head.start;
    rms = head.rms;
  }
  const headIsCurrent = head !== undefined && head.epoch === playback.epoch;
  return {
    replyMs: Math.floor((playback.replySeconds + (headIsCurrent ? partial : 0)) * 1000),
    totalMs: Math.floor((playback.totalSeconds + partial) * 1000),
    rms,
    queued: chunks.some((chunk) => chunk.epoch === playback.epoch),
  };
}

// Tell the server how much of the current reply has been heard: while it plays (at most
// once per tick, only when it changed) and once more when the queue drains, so the last
// report is the reply's full played length.
function reportPlayback(replyMs, queued) {
  const drained = !queued && playback.hadQueued;
  playback.hadQueued = queued;
  // Never over WebRTC: the server refuses playback reports there (it knows what it sent).
  if (!connOpen() || !conn.reportsPlayback || sessionEnded) return;
  if ((queued && replyMs > 0 && replyMs !== playback.lastReportedMs) || drained) {
    sendJson({ type: 'playback', played_ms: replyMs });
    playback.lastReportedMs = replyMs;
  }
}

// --- the tick -------------------------------------------------------------------------------

// Runs from a timer and from mic frames (every 20 ms, which keeps going in background tabs
// where timers are throttled); the guard keeps it at ~10 Hz.
function maybeTick() {
  const now = performance.now();
  if (now - lastTickAt < TICK_MS - 10) return;
  lastTickAt = now;
  tick();
}

function tick() {
  let measured;
  if (transport === 'webrtc') {
    measured = measureWebRTC();
  } else {
    measured = measurePlayback();
    reportPlayback(measured.replyMs, measured.queued);
  }
  setMeter(ui.inputLevel, audio && !audio.micStopped ? inputPeakRms : 0);
  inputPeakRms = 0;
  setMeter(ui.outputLevel, measured.rms);
  renderStats(measured.totalMs);
}

// WebRTC: the levels come from AnalyserNodes on the mic and on the reply track; the time
// the reply was audible counts as played. Returns {rms, totalMs} like measurePlayback.
function measureWebRTC() {
  const now = performance.now();
  const a = audio;
  if (a?.micAnalyser && !a.micStopped) {
    a.micScratch ||= new Float32Array(a.micAnalyser.fftSize);
    inputPeakRms = Math.max(inputPeakRms, analyserRms(a.micAnalyser, a.micScratch));
  }
  const rms = conn?.kind === 'webrtc' ? conn.rtc.replyRms() : 0;
  // At most a second per reading: a throttled background tab does not count a gap as played.
  const elapsed = lastLevelAt ? Math.min(1, (now - lastLevelAt) / 1000) : 0;
  lastLevelAt = conn?.kind === 'webrtc' ? now : 0;
  if (rms >= AUDIBLE_RMS) playback.totalSeconds += elapsed;
  pollRtcStats(now);
  return { rms, totalMs: Math.floor(playback.totalSeconds * 1000) };
}

// getStats() is asynchronous and not free: about once a second, one at a time.
function pollRtcStats(now) {
  const current = conn;
  if (current?.kind !== 'webrtc' || rtcStatsPending || now - lastRtcStatsAt < RTC_STATS_MS) return;
  rtcStatsPending = true;
  lastRtcStatsAt = now;
  current.rtc
    .readStats()
    .then((read) => {
      if (!read || conn !== current) return;
      current.lastStats = read;
      stats.sentSeconds = rtcTotals.sentSeconds + read.sentSeconds;
      stats.receivedSeconds = rtcTotals.receivedSeconds + read.receivedSeconds;
      stats.replyEnergy = rtcTotals.replyEnergy + read.replyEnergy;
      stats.packetsLost = read.packetsLost;
      stats.jitterMs = read.jitterMs;
      stats.rttMs = read.rttMs;
    })
    .catch(() => {}) // a closing connection: the next one reports
    .finally(() => {
      rtcStatsPending = false;
    });
}

// A WebRTC connection is over: its numbers become part of the call's totals.
function keepRtcTotals(current) {
  const read = current?.lastStats;
  if (!read) return;
  current.lastStats = null;
  rtcTotals.sentSeconds += read.sentSeconds;
  rtcTotals.receivedSeconds += read.receivedSeconds;
  rtcTotals.replyEnergy += read.replyEnergy;
}

// --- capture --------------------------------------------------------------------------------

function onMicFrame(event) {
  const { pcm, rms } = event.data || {};
  if (!(pcm instanceof ArrayBuffer)) return;
  if (rms > inputPeakRms) inputPeakRms = rms;
  // Send only on an open socket and never after the session ended or End was pressed.
  // Frames before session_started are fine: the server buffers them.
  if (connOpen() && conn.kind === 'websocket' && !sessionEnded && !userEnding) {
    if (conn.socket.bufferedAmount > MAX_SOCKET_BACKLOG) {
      stats.droppedFrames += 1; // the network is not keeping up: drop rather than lag
    } else {
      conn.socket.send(pcm);
      stats.sentSeconds += pcm.byteLength / 2 / wireRate();
    }
  }
  maybeTick();
}

function micErrorCode(error) {
  switch (error && error.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'mic_denied';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'mic_missing';
    case 'NotReadableError':
    case 'AbortError':
      return 'mic_busy';
    default:
      return 'mic_failed';
  }
}

function createContext(AudioContextClass, sampleRate) {
  const ctx = sampleRate ? new AudioContextClass({ sampleRate }) : new AudioContextClass();
  // The device default is used (48 or 44.1 kHz usually). The protocol accepts 8–48 kHz, so
  // only a device outside that range (e.g. a 96 kHz interface) gets an explicit 48 kHz.
  if (!sampleRate && (ctx.sampleRate > 48000 || ctx.sampleRate < 8000)) {
    ctx.close().catch(() => {});
    return createContext(AudioContextClass, 48000);
  }
  return ctx;
}

// Build mic → worklet. The worklet has one (silent) output connected to the destination:
// that guarantees every browser keeps pulling it, and it never carries the mic signal
// (process() writes silence to it), so there is no local echo.
function buildCaptureGraph(a) {
  const source = a.ctx.createMediaStreamSource(a.stream);
  const worklet = new AudioWorkletNode(a.ctx, WORKLET_NAME, {
    numberOfInputs: 1,
    numberOfOutputs: 1,
    outputChannelCount: [1],
    channelCount: 1,
    channelCountMode: 'explicit', // Web Audio down-mixes stereo mics to mono for us
    channelInterpretation: 'speakers',
    processorOptions: { targetRate: wireRate() },
  });
  worklet.port.onmessage = onMicFrame;
  source.connect(worklet);
  worklet.connect(a.ctx.destination);
  a.source = source;
  a.worklet = worklet;
}

function stopMic() {
  const a = audio;
  if (!a || a.micStopped) return;
  a.micStopped = true;
  a.stream?.getTracks().forEach((track) => track.stop());
  if (a.worklet) {
    a.worklet.port.onmessage = null;
    a.worklet.port.postMessage({ type: 'stop' });
    a.worklet.disconnect();
  }
  a.source?.disconnect();
  a.micAnalyser = null;
  inputPeakRms = 0;
  setMeter(ui.inputLevel, 0);
}

// WebRTC: the mic's level, read by the tick. Not to the speakers (no local echo).
function buildMicMeter(a) {
  try {
    a.source = a.ctx.createMediaStreamSource(a.stream);
    a.micAnalyser = a.ctx.createAnalyser();
    a.micAnalyser.fftSize = 1024;
    a.source.connect(a.micAnalyser);
  } catch {
    a.micAnalyser = null; // e.g. Firefox, a mic at another rate than the context: no meter
  }
}

// WebRTC: the microphone went away (unplugged, disabled). Send silence instead: the server
// ends a call whose track carries no audio for a while, and the caller can still type.
function sendSilenceInstead(a) {
  if (a.ctx.state === 'closed') return;
  try {
    const destination = a.ctx.createMediaStreamDestination();
    // A destination with no input sends no frames at all: feed it zeros.
    const zeros = a.ctx.createConstantSource();
    zeros.offset.value = 0;
    zeros.connect(destination);
    zeros.start();
    a.sendStream = destination.stream;
  } catch {
    return;
  }
  if (conn?.kind === 'webrtc') conn.rtc.replaceMicTrack(a.sendStream.getAudioTracks()[0]);
}

// --- start ----------------------------------------------------------------------------------

async function start() {
  if (!['idle', 'ended', 'error'].includes(state)) return;
  teardown(); // leftovers of a previous call (e.g. playback still draining)
  const myAttempt = ++attempt;
  ui.errors.replaceChildren();
  resetStats(); // a new call counts from zero (a reconnect within a call does not)
  transport = chosenTransport();
  stats.transport = transport;
  const overWebSocket = transport === 'websocket';

  const AudioContextClass = window.AudioContext || window.webkitAudioContext;
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    addError('insecure');
    setState('error', 'Cannot use the microphone here');
    return;
  }
  // WebRTC needs no worklet (the browser encodes the mic); its meters use the context.
  if (!AudioContextClass || (overWebSocket && typeof AudioWorkletNode === 'undefined')) {
    addError('no_worklet');
    setState('error', 'Audio not supported in this browser');
    return;
  }

  // Created and resumed synchronously inside the click: browsers only let a page start
  // audio output from a user gesture.
  let ctx;
  try {
    ctx = createContext(AudioContextClass);
  } catch {
    addError('audio_failed');
    setState('error', 'Audio could not start');
    return;
  }
  ctx.resume().catch(() => {});
  if (overWebSocket && !ctx.audioWorklet) {
    ctx.close().catch(() => {});
    addError('no_worklet');
    setState('error', 'Audio not supported in this browser');
    return;
  }
  const a = {
    ctx,
    stream: null,
    sendStream: null, // WebRTC: what the track sends when not the mic (see sendSilenceInstead)
    source: null,
    worklet: null,
    micAnalyser: null,
    output: null,
    micStopped: false,
  };
  audio = a;
  openedThisCall = false;
  pendingReconnectNote = false;
  setState('connecting', 'Waiting for the microphone…');

  try {
    a.stream = await navigator.mediaDevices.getUserMedia({
      audio: {
        echoCancellation: true,
        noiseSuppression: true,
        autoGainControl: true,
        channelCount: 1,
      },
    });
  } catch (error) {
    if (myAttempt !== attempt) return;
    addError(micErrorCode(error));
    failCall('Microphone unavailable');
    return;
  }
  if (myAttempt !== attempt) {
    a.stream.getTracks().forEach((track) => track.stop()); // cancelled meanwhile
    return;
  }
  a.stream.getAudioTracks().forEach((track) =>
    track.addEventListener('ended', () => {
      if (audio !== a || a.micStopped) return;
      addError('mic_ended');
      if (transport === 'webrtc') sendSilenceInstead(a);
    }),
  );

  if (!overWebSocket) {
    buildMicMeter(a);
    lastTickAt = 0;
    lastLevelAt = 0;
    tickTimer = setInterval(maybeTick, TICK_MS / 2);
    setState('connecting');
    openConnection();
    return;
  }

  try {
    await a.ctx.audioWorklet.addModule(WORKLET_URL);
    if (myAttempt !== attempt) return;
    try {
      buildCaptureGraph(a);
    } catch (error) {
      // Firefox cannot connect a mic whose rate differs from the context's (e.g. a 16 kHz
      // Bluetooth headset): use a context at the mic's rate instead. Capture is active, so
      // Firefox lets this new context play without another click.
      const micRate = a.stream.getAudioTracks()[0]?.getSettings().sampleRate;
      if (error?.name !== 'NotSupportedError' || !micRate || micRate === a.ctx.sampleRate) throw error;
      a.ctx.close().catch(() => {});
      a.ctx = createContext(AudioContextClass, Math.min(48000, Math.max(8000, micRate)));
      a.ctx.resume().catch(() => {});
      await a.ctx.audioWorklet.addModule(WORKLET_URL);
      if (myAttempt !== attempt) return;
      buildCaptureGraph(a);
    }
  } catch (error) {
    if (myAttempt !== attempt) return;
    addError('audio_failed', error?.message);
    failCall('Audio could not start');
    return;
  }
  a.output = a.ctx.createGain();
  a.output.connect(a.ctx.destination);
  lastTickAt = 0;
  tickTimer = setInterval(maybeTick, TICK_MS / 2);
  setState('connecting');
  openConnection();
}

// --- the transport switch -------------------------------------------------------------------

function storedTransport() {
  try {
    return localStorage.getItem(TRANSPORT_STORAGE_KEY) || '';
  } catch {
    return ''; // storage disabled (privacy settings): the default then
  }
}

// The page's URL (?transport=…, for links and tests) wins over the remembered choice; that
// wins over the default, the WebSocket.
function initTransportChoice() {
  const choice = ui.transportChoice;
  if (!choice) return;
  const fromUrl = new URLSearchParams(location.search).get('transport');
  const remembered = storedTransport();
  let initial = TRANSPORTS.includes(fromUrl) ? fromUrl : TRANSPORTS.includes(remembered) ? remembered : 'websocket';
  const webrtcInput = choice.querySelector('input[value="webrtc"]');
  if (!WEBRTC_SUPPORTED || !app.dataset.webrtcOfferPath) {
    if (webrtcInput) webrtcInput.disabled = true;
    if (initial === 'webrtc') addError('no_webrtc');
    initial = 'websocket';
  }
  const input = choice.querySelector(`input[value="${initial}"]`);
  if (input) input.checked = true;
  choice.addEventListener('change', (event) => {
    const value = event.target?.value;
    if (!TRANSPORTS.includes(value)) return;
    try {
      localStorage.setItem(TRANSPORT_STORAGE_KEY, value);
    } catch {
      // not remembered; still used for the next call
    }
    renderStats(Math.floor(playback.totalSeconds * 1000));
  });
}

function chosenTransport() {
  const value = ui.transportChoice?.querySelector('input[name="transport"]:checked')?.value;
  return value === 'webrtc' && WEBRTC_SUPPORTED ? 'webrtc' : 'websocket';
}

function openConnection() {
  if (transport === 'webrtc') openWebRTC();
  else openSocket();
}

// --- the connection -------------------------------------------------------------------------

// The negotiated rate: WIRE_RATE, or the context's own when that is lower.
function wireRate() {
  return Math.min(WIRE_RATE, audio.ctx.sampleRate);
}

// A room token given in the page's fragment (#token=…): browsers never send fragments to
// the server, so the token stays out of access logs; it goes on the WebSocket URL only.
function fragmentToken() {
  return new URLSearchParams(location.hash.slice(1)).get('token') || '';
}

// WebRTC: the room token the page was opened with (fragment, or the page's own ?token=), for
// the offer's body; none for a member signed in.
function roomToken() {
  if (app.dataset.tokenFragment === 'true') return fragmentToken();
  return new URLSearchParams(location.search).get('token') || '';
}

// The STUN/TURN servers the server configured (ROOMVOICE_WEBRTC_ICE_SERVERS).
function iceServers() {
  try {
    const servers = JSON.parse($('rv-ice-servers')?.textContent || '[]');
    return Array.isArray(servers) ? servers : [];
  } catch {
    return [];
  }
}

function socketUrl() {
  const path = app.dataset.wsPath || '';
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  // Append to whatever query ws_path already has (e.g. a room token), keeping it verbatim.
  const separator = !path.includes('?') ? '?' : /[?&]$/.test(path) ? '' : '&';
  let query = `sample_rate=${wireRate()}&audio_format=binary`;
  if (app.dataset.tokenFragment === 'true') query += `&token=${encodeURIComponent(fragmentToken())}`;
  return `${scheme}//${location.host}${path}${separator}${query}`;
}

function openSocket() {
  let socket;
  try {
    socket = new WebSocket(socketUrl());
  } catch (error) {
    addError('connect_failed', error?.message);
    failCall('Could not connect');
    return;
  }
  socket.binaryType = 'arraybuffer';
  const current = {
    kind: 'websocket',
    socket,
    opened: false,
    lastErrorCode: '',
    reportsPlayback: true,
    isOpen: () => socket.readyState === WebSocket.OPEN,
    sendJson: (message) => {
      socket.send(JSON.stringify(message));
      return true;
    },
    // The server ends the session when the socket closes, whether or not we hang up.
    close: () => {
      if (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING) {
        socket.close(1000);
      }
    },
    muteReply: () => {}, // stopPlayback does it
  };
  conn = current;
  sessionEnded = false;
  socket.addEventListener('open', () => {
    if (conn !== current) return;
    current.opened = true;
    openedThisCall = true;
  });
  socket.addEventListener('message', (event) => {
    if (conn !== current) return;
    if (typeof event.data === 'string') onJson(event.data, current);
    else schedulePcm(event.data);
  });
  socket.addEventListener('close', (event) => {
    if (conn !== current) return; // a socket we already let go of
    conn = null;
    onClose(current, event);
  });
}

// The same `conn` interface over WebRTC. Closes report like a socket's: a refused offer as
// the WebSocket's 44xx code for that refusal (`refused`), a lost connection as 1006.
function openWebRTC() {
  const current = {
    kind: 'webrtc',
    rtc: null,
    opened: false,
    lastErrorCode: '',
    lastStats: null,
    reportsPlayback: false,
    isOpen: () => current.rtc.isOpen(),
    sendJson: (message) => current.rtc.sendJson(message),
    close: (options) => current.rtc.close(options),
    muteReply: () => current.rtc.muteReply(),
  };
  current.rtc = new WebRTCConnection({
    offerUrl: app.dataset.webrtcOfferPath,
    iceServers: iceServers(),
    csrfToken: app.dataset.csrfToken || '',
    token: roomToken(),
    agent: app.dataset.agentSlug || '',
    micStream: audio.sendStream || audio.stream,
    audioElement: ui.replyAudio,
    audioContext: audio.ctx,
    handlers: {
      onOpen: () => {
        if (conn !== current) return;
        current.opened = true;
        openedThisCall = true;
      },
      onJson: (text) => {
        if (conn === current) onJson(text, current);
      },
      onError: (code, detail) => {
        if (conn === current) addError(code, detail);
      },
      onStateChange: (connectionState) => {
        if (conn !== current) return;
        stats.connectionState = connectionState;
        renderStats(Math.floor(playback.totalSeconds * 1000));
      },
      onClose: (info) => {
        if (conn !== current) return; // a connection we already let go of
        conn = null;
        keepRtcTotals(current);
        onClose(current, info);
      },
    },
  });
  conn = current;
  sessionEnded = false;
  stats.connectionState = 'new';
  current.rtc.connect();
}

function decodeBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes.buffer;
}

function onJson(raw, current) {
  let message;
  try {
    message = JSON.parse(raw);
  } catch {
    addError('bad_server_message');
    return;
  }
  if (!message || typeof message !== 'object') return;
  switch (message.type) {
    case 'session_started':
      onSessionStarted(message);
      break;
    case 'audio':
      if (typeof message.data === 'string') {
        try {
          schedulePcm(decodeBase64(message.data));
        } catch {
          addError('bad_server_message');
        }
      }
      break;
    case 'transcription':
      onTranscription(message);
      break;
    case 'transcript_corrected':
      onTranscriptCorrected(message);
      break;
    case 'speaking':
      if (message.who === 'user') setSpeaking(ui.userSpeaking, message.speaking === true);
      if (message.who === 'assistant') {
        setSpeaking(ui.assistantSpeaking, message.speaking === true);
        if (message.speaking === true) newReplyEpoch(); // a new reply: count from zero
      }
      break;
    case 'clear_audio':
      onClearAudio();
      break;
    case 'tool_call':
      onToolCall(message);
      break;
    case 'error':
      current.lastErrorCode = String(message.code || '');
      addError(current.lastErrorCode || 'error', typeof message.message === 'string' ? message.message : '');
      break;
    case 'session_ended':
      onSessionEnded(message.reason);
      break;
    case 'access':
      onAccess(message);
      break;
    default:
      break; // unknown types are ignored (forward compatible)
  }
}

// An operator changed what this caller may do (mute, revoke, restore).
function onAccess(message) {
  if (!ui.access) return;
  const speak = message.can_speak === true;
  const hear = message.can_hear === true;
  let text = '';
  if (!speak && !hear) text = 'Your access was revoked: the agent can no longer hear you, and you cannot hear it.';
  else if (!speak) text = 'You are muted: the agent cannot hear you.';
  else if (!hear) text = 'The agent\'s voice is muted for you.';
  ui.access.textContent = text;
  ui.access.hidden = text === '';
  ui.access.dataset.canSpeak = String(speak);
  ui.access.dataset.canHear = String(hear);
}

function onSessionStarted(message) {
  stats.sessionId = String(message.session_id || '');
  manualTurns = message.turn_detection === 'manual';
  const rate = Number(message.sample_rate);
  stats.sampleRate = rate > 0 ? rate : wireRate();
  // Over WebRTC the rate is Opus' (48 kHz): the browser resamples, there is nothing to match.
  if (transport === 'websocket' && stats.sampleRate !== wireRate()) {
    addError('rate_mismatch', `Server ${stats.sampleRate} Hz, page ${wireRate()} Hz.`);
  }
  if (pendingReconnectNote) {
    addSystemLine('Reconnected: new session');
    stats.reconnects += 1;
    pendingReconnectNote = false;
  }
  reconnect.timer = clearTimer(reconnect.timer);
  reconnect.attempt = 0;
  reconnect.since = 0;
  tick(); // diagnostics (session id) are current by the time the state says live
  setState('live');
}

function onSessionEnded(reason) {
  sessionEnded = true;
  endTimer = clearTimer(endTimer);
  const words = END_REASON_TEXT[reason] || humanize(reason) || 'the session is over';
  abandonPartialTurns();
  setSpeaking(ui.userSpeaking, false);
  setSpeaking(ui.assistantSpeaking, false);
  stopMic();
  addSystemLine(`Conversation ended: ${words}.`);
  const wasUserEnding = userEnding;
  userEnding = false;
  setState('ended', `Ended: ${words}`);
  if (wasUserEnding || !audio) {
    teardown();
    return;
  }
  // The server ended it (a goodbye, a time limit…): let queued reply audio finish first.
  const remaining = Math.max(0, playback.nextStart - audio.ctx.currentTime);
  drainTimer = setTimeout(teardown, remaining * 1000 + 250);
}

function onClose(current, event) {
  if (sessionEnded || state === 'ended' || state === 'idle') return; // expected
  if (userEnding) {
    // Closed before session_ended arrived; the call is over either way.
    userEnding = false;
    setState('ended', 'Ended: you ended the conversation');
    teardown();
    return;
  }
  if (event.refused || (event.code >= 4400 && event.code <= 4499)) {
    // A refusal: never reconnect. The server normally sent an `error` first (over WebRTC,
    // the refused offer's body); don't repeat it.
    const code = CLOSE_CODE_ERROR[event.code];
    const shown = current.lastErrorCode !== '' && (event.refused || current.lastErrorCode === code);
    if (!shown) {
      addError(
        code || `closed_${event.code}`,
        code ? '' : `The server refused the connection (code ${event.code}${event.reason ? `: ${event.reason}` : ''}).`,
      );
    }
    failCall(code === 'flooded' ? 'Disconnected' : 'Connection refused');
    return;
  }
  if (!current.opened && !openedThisCall && state === 'connecting') {
    // Never got through at all: report rather than retry blindly.
    addError(event.error || 'connect_failed');
    failCall('Could not connect');
    return;
  }
  // Network loss or a server restart: the server has ended that session (client_hangup).
  // Keep the mic running and start a new session on a new socket.
  stopPlayback();
  abandonPartialTurns();
  setSpeaking(ui.userSpeaking, false);
  setSpeaking(ui.assistantSpeaking, false);
  if (state === 'live') {
    pendingReconnectNote = true;
    addSystemLine('Connection lost: reconnecting…');
  }
  scheduleReconnect();
}

// Exponential backoff (0.5 s, 1 s, 2 s … 10 s) with ±25% jitter, so many clients dropped by
// the same outage don't all come back in the same instant. Gives up 2 minutes after the
// connection was lost; a successful session_started resets everything.
function scheduleReconnect() {
  if (!reconnect.since) reconnect.since = Date.now();
  const remaining = RECONNECT_GIVE_UP_MS - (Date.now() - reconnect.since);
  if (remaining <= 0) {
    addError('reconnect_gave_up');
    failCall('Connection lost');
    return;
  }
  const base = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** reconnect.attempt);
  const delay = Math.min(remaining, RECONNECT_MAX_MS, Math.round(base * (0.75 + Math.random() * 0.5)));
  reconnect.attempt += 1;
  const offline = navigator.onLine === false ? ' (offline)' : '';
  setState('reconnecting', `Connection lost${offline}: reconnecting in ${Math.max(1, Math.round(delay / 1000))} s…`);
  reconnect.timer = clearTimer(reconnect.timer);
  reconnect.timer = setTimeout(reconnectNow, delay);
}

function reconnectNow() {
  reconnect.timer = clearTimer(reconnect.timer);
  if (state !== 'reconnecting' || conn !== null || !audio) return;
  setState('reconnecting', 'Reconnecting…');
  openConnection();
}

// --- end, cancel, teardown ------------------------------------------------------------------

function endCall() {
  if (state !== 'live' || userEnding) return;
  userEnding = true;
  sendJson({ type: 'end' });
  stopMic();
  stopPlayback();
  conn?.muteReply();
  setState('live', 'Ending…');
  // Normally session_ended arrives at once; don't wait forever if it doesn't.
  endTimer = setTimeout(() => {
    endTimer = 0;
    if (!userEnding) return;
    userEnding = false;
    setState('ended', 'Ended');
    teardown();
  }, END_TIMEOUT_MS);
}

function cancel() {
  if (state !== 'connecting' && state !== 'reconnecting') return;
  teardown();
  setState('idle', 'Not connected (cancelled)');
}

function failCall(text) {
  teardown();
  setState('error', text ? `Error: ${text}` : undefined);
}

// Release everything this call holds. Safe to call more than once.
function teardown() {
  attempt += 1;
  reconnect.timer = clearTimer(reconnect.timer);
  reconnect.attempt = 0;
  reconnect.since = 0;
  endTimer = clearTimer(endTimer);
  drainTimer = clearTimer(drainTimer);
  if (tickTimer) clearInterval(tickTimer);
  tickTimer = 0;
  if (conn) {
    const current = conn;
    conn = null; // its close event is ignored from now on
    if (current.kind === 'webrtc') keepRtcTotals(current);
    // Hang up unless the server ended the session (then the WebRTC peer is gone already).
    current.close({ hangUp: !sessionEnded });
  }
  if (stats.connectionState) stats.connectionState = 'closed';
  lastLevelAt = 0;
  userEnding = false;
  pendingReconnectNote = false;
  if (audio) {
    stopMic();
    tick(); // final numbers before the clock goes away
    stopPlayback();
    audio.ctx.close().catch(() => {});
    audio = null;
  }
  abandonPartialTurns();
  setSpeaking(ui.userSpeaking, false);
  setSpeaking(ui.assistantSpeaking, false);
  setMeter(ui.inputLevel, 0);
  setMeter(ui.outputLevel, 0);
  renderStats(Math.floor(playback.totalSeconds * 1000));
  updateControls();
}

// --- typed messages -------------------------------------------------------------------------

function onTextSubmit(event) {
  event.preventDefault();
  const text = ui.textInput.value.trim();
  if (!text) return;
  if (state !== 'live' || userEnding || !connOpen()) {
    addError('not_connected');
    return;
  }
  // Not added to the transcript here: the server echoes it as a user transcription.
  sendJson({ type: 'text', text: text.slice(0, 4000) });
  ui.textInput.value = '';
}

// --- wiring ---------------------------------------------------------------------------------

function init() {
  // Opened without a login: only a token in the fragment gets in; without one, log in.
  if (app.dataset.tokenFragment === 'true' && !fragmentToken()) {
    location.replace(app.dataset.loginUrl || '/accounts/login/');
    return;
  }
  ui.connect.addEventListener('click', () => {
    start().catch((error) => {
      addError('audio_failed', error?.message);
      failCall('Could not start');
    });
  });
  ui.end.addEventListener('click', endCall);
  ui.cancel.addEventListener('click', cancel);
  // Manual turns: the caller says when they are done; the model answers then.
  ui.turn?.addEventListener('click', () => sendJson({ type: 'end_turn' }));
  ui.textForm.addEventListener('submit', onTextSubmit);
  initTransportChoice();
  // Leaving the page: a WebRTC call hangs up at once (a socket closes by itself).
  window.addEventListener('pagehide', () => {
    if (conn?.kind !== 'webrtc') return;
    teardown();
    setState('idle'); // what the page shows if the browser brings it back
  });
  ui.errors.addEventListener('click', (event) => {
    const button = event.target.closest('.rv-dismiss');
    if (button) button.closest('li')?.remove();
  });
  // Back online: don't wait out the backoff.
  window.addEventListener('online', () => {
    if (state === 'reconnecting') reconnectNow();
  });
  window.addEventListener('offline', () => {
    if (state === 'reconnecting') ui.state.textContent = 'Offline: will reconnect when the network is back…';
  });
  setState('idle');
  renderStats(0);
}

if (app && ui.connect && ui.state && ui.transcript) init();
