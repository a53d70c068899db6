// roomvoice voice page: the WebRTC connection (voice.js chooses it, or the WebSocket).
// Server side: voice/webrtc.py (signalling over HTTP) and voice/transports/webrtc.py.
//
// - The microphone is a real audio track (Opus): the browser's echo cancellation, noise
//   suppression, jitter buffer and loss concealment all apply.
// - The reply is the server's audio track, played by an <audio> element. Chrome only feeds a
//   remote track into Web Audio while a media element plays it, so the level meter reads the
//   same stream through an AnalyserNode that is not connected to the speakers.
// - A data channel labelled "events" carries the WebSocket protocol's JSON messages
//   (docs/protocol.md) both ways, except audio, hello and playback: the track carries the
//   audio and the server knows how much of it went out.
// - Signalling: POST the offer at once, then trickle our ICE candidates with PATCH as they
//   come (the answer already holds all of the server's). DELETE hangs up.
//
// The page talks to a connection through the same small interface for both transports:
//   isOpen(), sendJson(message), close({hangUp}), muteReply(); and handlers
//   onOpen(), onJson(text), onClose({code, reason, refused, error}), onError(code, detail).

export const WEBRTC_SUPPORTED =
  typeof window !== 'undefined' && typeof window.RTCPeerConnection === 'function';

// The server ends a session whose connection stays disconnected for 5 s: so do we, and start
// a new one rather than wait for the browser to call it failed (that takes ~30 s).
const DISCONNECTED_GRACE_MS = 5_000;
const MAX_CANDIDATES_PER_PATCH = 64; // the server's limit per request
const DATA_CHANNEL_LABEL = 'events';

// An HTTP refusal of the offer, as the WebSocket's close code for the same refusal: the page
// never reconnects after one. Other statuses (500, a proxy's 502) are worth a retry.
const REFUSAL_CLOSE_CODE = { 400: 4400, 401: 4401, 403: 4403, 404: 4404, 503: 4409 };

function rmsOf(analyser, buffer) {
  analyser.getFloatTimeDomainData(buffer);
  let sum = 0;
  for (let i = 0; i < buffer.length; i++) sum += buffer[i] * buffer[i];
  return Math.sqrt(sum / buffer.length);
}

// The RMS level (0…1) an AnalyserNode hears now, for meters. scratch: a reusable
// Float32Array of the analyser's fftSize.
export function analyserRms(analyser, scratch) {
  if (!analyser) return 0;
  return rmsOf(analyser, scratch && scratch.length === analyser.fftSize ? scratch : new Float32Array(analyser.fftSize));
}

export class WebRTCConnection {
  // options: {offerUrl, iceServers, csrfToken, token, agent, micStream, audioElement,
  //           audioContext (for the reply meter; optional), handlers}
  constructor(options) {
    this.options = options;
    this.handlers = options.handlers;
    this.pc = null;
    this.channel = null;
    this.peerUrl = '';
    this.opened = false; // the data channel opened: the call got through
    this.done = false; // closed or lost: no more events
    this.candidates = []; // waiting for the answer's peer_url, or for the PATCH in flight
    this.patching = false;
    this.endOfCandidatesQueued = false;
    this.disconnectedTimer = 0;
    this.replySource = null;
    this.replyAnalyser = null;
    this.scratch = null;
    this.statsBase = null;
  }

  // --- the interface voice.js uses ---------------------------------------------------------

  isOpen() {
    return !this.done && this.channel !== null && this.channel.readyState === 'open';
  }

  sendJson(message) {
    if (!this.isOpen()) return false;
    this.channel.send(JSON.stringify(message));
    return true;
  }

  // Let go of the call, from the page's side: no events after this. hangUp: tell the server
  // (DELETE: the session ends as ended_by_caller) unless it has already ended the session.
  close({ hangUp = true } = {}) {
    if (this.done) return;
    this.done = true;
    if (hangUp && this.peerUrl) {
      // keepalive: also goes out when the page is being closed.
      fetch(this.peerUrl, { method: 'DELETE', headers: this.#headers(), keepalive: true }).catch(() => {});
    }
    this.#release();
  }

  // Stop hearing the reply now (End pressed): the rest of it is not wanted.
  muteReply() {
    if (this.options.audioElement) this.options.audioElement.muted = true;
  }

  // Send another track than the microphone (silence, when the mic went away).
  replaceMicTrack(track) {
    const sender = this.pc?.getSenders().find((candidate) => candidate.track?.kind !== 'video');
    if (!sender || this.done) return;
    sender.replaceTrack(track).catch(() => {}); // the call goes on without it
  }

  // The reply's level now (0…1), for the playback meter.
  replyRms() {
    if (!this.replyAnalyser || this.done) return 0;
    if (!this.scratch) this.scratch = new Float32Array(this.replyAnalyser.fftSize);
    return rmsOf(this.replyAnalyser, this.scratch);
  }

  // Numbers for the diagnostics, from getStats(): null once closed.
  async readStats() {
    const pc = this.pc;
    if (!pc || this.done) return null;
    const report = await pc.getStats();
    const out = {
      connectionState: pc.connectionState,
      sentSeconds: 0,
      receivedSeconds: 0,
      replyEnergy: 0,
      packetsLost: 0,
      jitterMs: null,
      rttMs: null,
    };
    report.forEach((entry) => {
      if (entry.type === 'media-source' && entry.kind === 'audio') {
        out.sentSeconds = entry.totalSamplesDuration || 0;
      } else if (entry.type === 'inbound-rtp' && entry.kind === 'audio') {
        out.receivedSeconds = entry.totalSamplesDuration || 0;
        out.replyEnergy = entry.totalAudioEnergy || 0;
        out.packetsLost = entry.packetsLost || 0;
        if (typeof entry.jitter === 'number') out.jitterMs = Math.round(entry.jitter * 1000);
      } else if (entry.type === 'candidate-pair' && entry.nominated && entry.state === 'succeeded') {
        if (typeof entry.currentRoundTripTime === 'number') {
          out.rttMs = Math.round(entry.currentRoundTripTime * 1000);
        }
      }
    });
    return out;
  }

  // --- connecting --------------------------------------------------------------------------

  // Offer, POST, apply the answer. Failures end in handlers.onClose (never throws).
  async connect() {
    const { iceServers, micStream } = this.options;
    let offer;
    try {
      const pc = new RTCPeerConnection({ iceServers: iceServers || [] });
      this.pc = pc;
      pc.addEventListener('icecandidate', (event) => this.#onCandidate(event.candidate));
      pc.addEventListener('track', (event) => this.#onTrack(event));
      pc.addEventListener('connectionstatechange', () => this.#onConnectionState());
      // The data channel must exist before the offer, so that the offer negotiates it.
      this.#watchChannel(pc.createDataChannel(DATA_CHANNEL_LABEL, { ordered: true }));
      for (const track of micStream.getAudioTracks()) pc.addTrack(track, micStream);
      offer = await pc.createOffer();
      if (this.done) return;
      await pc.setLocalDescription(offer);
    } catch (error) {
      this.#lost({ error: 'webrtc_failed', reason: error?.message || String(error) });
      return;
    }
    if (this.done) return;

    let response;
    try {
      response = await fetch(this.options.offerUrl, {
        method: 'POST',
        headers: this.#headers(),
        body: JSON.stringify(this.#offerBody(offer.sdp)),
        credentials: 'same-origin',
      });
    } catch (error) {
      this.#lost({ reason: error?.message || 'network error' }); // never reached the server
      return;
    }
    const text = await response.text().catch(() => '');
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
    if (this.done) {
      // Cancelled while the offer was on its way: hang up the call the server started.
      if (response.status === 201 && typeof body?.peer_url === 'string') {
        fetch(body.peer_url, { method: 'DELETE', headers: this.#headers(), keepalive: true }).catch(() => {});
      }
      return;
    }
    if (response.status !== 201 || !body || body.type !== 'answer') {
      this.#refused(response.status, body);
      return;
    }
    this.peerUrl = typeof body.peer_url === 'string' ? body.peer_url : '';
    try {
      await this.pc.setRemoteDescription({ type: 'answer', sdp: String(body.sdp || '') });
    } catch (error) {
      this.#lost({ error: 'webrtc_failed', reason: error?.message || String(error) });
      return;
    }
    this.#flushCandidates();
  }

  #headers() {
    const headers = { 'Content-Type': 'application/json' };
    // Only checked for callers signed in with the session cookie (not for a room token).
    if (this.options.csrfToken) headers['X-CSRFToken'] = this.options.csrfToken;
    return headers;
  }

  #offerBody(sdp) {
    const body = { type: 'offer', sdp };
    if (this.options.agent) body.agent = this.options.agent;
    if (this.options.token) body.token = this.options.token;
    return body;
  }

  // The offer was not answered: show the server's error like the WebSocket's, then close.
  #refused(status, body) {
    const closeCode = REFUSAL_CLOSE_CODE[status];
    if (body && body.type === 'error') {
      this.handlers.onJson(JSON.stringify(body));
    }
    this.#finish({
      code: closeCode || 1011,
      refused: closeCode !== undefined,
      reason: body && typeof body.message === 'string' ? body.message : `HTTP ${status}`,
    });
  }

  // --- ICE candidates (trickle) ------------------------------------------------------------

  #onCandidate(candidate) {
    if (this.done) return;
    if (!candidate || !candidate.candidate) {
      // The end of our candidates: lets the server give up early when none works.
      if (this.endOfCandidatesQueued) return;
      this.endOfCandidatesQueued = true;
      this.candidates.push({ candidate: '', sdpMid: null, sdpMLineIndex: null });
    } else {
      this.candidates.push({
        candidate: candidate.candidate,
        sdpMid: candidate.sdpMid,
        sdpMLineIndex: candidate.sdpMLineIndex,
      });
    }
    this.#flushCandidates();
  }

  // One PATCH at a time, each with everything gathered meanwhile.
  #flushCandidates() {
    if (this.done || !this.peerUrl || this.patching || this.candidates.length === 0) return;
    const batch = this.candidates.splice(0, MAX_CANDIDATES_PER_PATCH);
    this.patching = true;
    fetch(this.peerUrl, {
      method: 'PATCH',
      headers: this.#headers(),
      body: JSON.stringify({ candidates: batch }),
      credentials: 'same-origin',
    })
      .catch(() => {}) // best effort: ICE can still find the way (peer-reflexive candidates)
      .finally(() => {
        this.patching = false;
        this.#flushCandidates();
      });
  }

  // --- media and events --------------------------------------------------------------------

  #onTrack(event) {
    if (this.done || event.track.kind !== 'audio') return;
    const stream = event.streams[0] || new MediaStream([event.track]);
    const { audioElement, audioContext } = this.options;
    if (audioElement) {
      audioElement.muted = false;
      audioElement.srcObject = stream;
      audioElement.play().catch((error) => {
        // AbortError: a newer source replaced this one (a reconnect), not a failure.
        if (!this.done && error?.name !== 'AbortError') {
          this.handlers.onError('audio_failed', error?.message || '');
        }
      });
    }
    if (audioContext && audioContext.state !== 'closed') {
      try {
        this.replySource = audioContext.createMediaStreamSource(stream);
        this.replyAnalyser = audioContext.createAnalyser();
        this.replyAnalyser.fftSize = 2048;
        this.replySource.connect(this.replyAnalyser); // not to the speakers: the element plays it
      } catch {
        this.replySource = null; // no meter; the call goes on
        this.replyAnalyser = null;
      }
    }
  }

  #watchChannel(channel) {
    this.channel = channel;
    channel.addEventListener('open', () => {
      if (this.done) return;
      this.opened = true;
      this.handlers.onOpen();
    });
    channel.addEventListener('message', (event) => {
      if (this.done) return;
      if (typeof event.data === 'string') this.handlers.onJson(event.data);
    });
    // The server closes the call after session_ended (the page has seen it by then, and
    // ignores this); without one, the call was lost.
    channel.addEventListener('close', () => this.#lost({ reason: 'the data channel closed' }));
  }

  #onConnectionState() {
    if (this.done) return;
    const state = this.pc.connectionState;
    this.handlers.onStateChange?.(state);
    if (state === 'connected') {
      this.disconnectedTimer = clearTimeout(this.disconnectedTimer) || 0;
    } else if (state === 'disconnected') {
      if (!this.disconnectedTimer) {
        this.disconnectedTimer = setTimeout(() => {
          this.disconnectedTimer = 0;
          this.#lost({ reason: 'the connection stayed disconnected' });
        }, DISCONNECTED_GRACE_MS);
      }
    } else if (state === 'failed' || state === 'closed') {
      this.#lost({ reason: `the connection ${state}` });
    }
  }

  // The call is gone without the page asking. Before the data channel ever opened, say why
  // (the offer was answered but no media path was found: a firewall, most likely).
  #lost({ reason, error }) {
    if (this.done) return;
    const why = error || (this.peerUrl && !this.opened ? 'webrtc_failed' : undefined);
    this.#finish({ code: 1006, refused: false, reason, error: why });
  }

  #finish(info) {
    if (this.done) return;
    this.done = true;
    this.#release();
    this.handlers.onClose(info);
  }

  #release() {
    this.disconnectedTimer = clearTimeout(this.disconnectedTimer) || 0;
    this.candidates = [];
    try {
      this.replySource?.disconnect();
    } catch {
      // already disconnected
    }
    this.replySource = null;
    this.replyAnalyser = null;
    const { audioElement } = this.options;
    if (audioElement) {
      audioElement.pause();
      audioElement.srcObject = null;
    }
    // Closing the peer connection does not stop the microphone: a reconnect reuses it.
    try {
      this.channel?.close();
      this.pc?.close();
    } catch {
      // already closed
    }
  }
}
