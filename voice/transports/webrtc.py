"""The WebRTC transport: a caller's audio on real WebRTC media tracks (aiortc). Pure asyncio.

The seed's FastRTC transport carries µ-law inside a data channel. Here the caller's
microphone is an **Opus audio track**, so the browser's echo cancellation, noise
suppression, jitter buffer and loss concealment all apply, and a **data channel** (label
``"events"``) carries the same JSON messages as the WebSocket protocol (docs/protocol.md):
transcription, speaking, clear_audio, session events and errors to the caller; ``text``,
``interrupt``, ``end_turn`` and ``end`` from it.

Three parts:

- :class:`WebRTCGateway` answers offers (signalling is HTTP: ``voice.webrtc.mount_webrtc``),
  holds the live peers of this process (bounded: ``max_peers``), takes trickled ICE
  candidates and watches each peer's connection: a peer whose connection fails, closes, stays
  ``disconnected`` for ``disconnected_grace_s``, never connects within ``connect_timeout_s``
  or sends no audio for ``media_timeout_s`` is **lost**, and its session ends.
- :class:`WebRTCPeer` is one peer connection: the inbound track reader (any codec aiortc
  decodes → PCM16 mono 48 kHz → the engine's bounded queue, never awaiting the engine), the
  outbound :class:`PacedAudioTrack` and the data channel.
- :class:`WebRTCRealtimeTransport` is the engine's side: ``start_session(...,
  connection=peer)`` (or the peer's id, as in the seed's ``connection=webrtc_id``).

**Outbound audio** is paced by the track itself: aiortc's sender pulls ``recv()`` as fast as
it returns, so ``recv()`` waits for the next 20 ms deadline (absolute, on the loop clock) and
returns one 960-sample frame from an :class:`~voice.transports.pacer.OutboundAudioPacer`:
80 ms prebuffer, silence between replies, bounded at 60 s (newest dropped and counted).
Barge-in (``interrupt``) clears it at once. The pacer knows exactly how much of a reply went
out, which the engine uses as the playback position when it truncates an interrupted reply.
Clients' own ``playback`` reports are refused on this transport.

**Before the session exists** (the provider connects while ICE and DTLS complete), caller
audio is kept (the newest 5 s) and JSON messages wait (at most :data:`PENDING_MESSAGES_MAX`;
more are dropped and counted) until the data channel opens. Once open, a peer that does
not read its data channel (more than :data:`DATA_CHANNEL_BUFFER_MAX` unsent) loses the
newest messages, counted; the session goes on.
"""

from __future__ import annotations

import asyncio
import contextvars
import fractions
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp
from av import AudioFrame, AudioResampler

from voice.protocol import CLOSE_NORMAL
from voice.transports.base import RealtimeTransport
from voice.transports.pacer import FRAME_MS, FrameClock, OutboundAudioPacer
from voice.transports.websocket import ClientLink

if TYPE_CHECKING:
    from voice.session import LiveSession

__all__ = [
    "PacedAudioTrack",
    "PeerRefused",
    "WebRTCGateway",
    "WebRTCPeer",
    "WebRTCRealtimeTransport",
    "parse_ice_servers",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48000  # Opus' clock: what the engine resamples to and from
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
DATA_CHANNEL_LABEL = "events"
MAX_OFFER_CHARS = 64 * 1024
PENDING_MESSAGES_MAX = 256  # JSON messages waiting for the data channel to open
DATA_CHANNEL_BUFFER_MAX = 1024 * 1024  # unsent bytes on an open data channel
DEFAULT_MAX_PEERS = 50
DEFAULT_CONNECT_TIMEOUT_S = 30.0
DEFAULT_DISCONNECTED_GRACE_S = 5.0
DEFAULT_MEDIA_TIMEOUT_S = 20.0
WATCH_PERIOD_S = 0.5
#: Why a peer was lost: (end reason, detail) for the session's record.
LOST_HANGUP = "client_hangup"
LOST_TIMEOUT = "timeout"
LOST_TRANSPORT = "transport_error"
LOST_SHUTDOWN = "server_shutdown"

PeerCallback = Callable[["WebRTCPeer"], Awaitable[Any] | None]


class PeerRefused(Exception):
    """An offer we cannot answer: ``status`` is the HTTP status to give, ``code`` the
    protocol's error code (bad_request, busy...)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def as_message(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "message": self.message}


def parse_ice_servers(config: Any) -> list[Any]:
    """``[{"urls": "stun:..."}, {"urls": ["turn:..."], "username": ..., "credential": ...}]``
    (the browser's ``RTCIceServer`` shape) → aiortc's ``RTCIceServer`` list. ValueError
    names what is wrong."""
    if config in (None, ""):
        return []
    if not isinstance(config, list):
        raise ValueError("ICE servers must be a list of {urls, username?, credential?}")
    servers = []
    for index, entry in enumerate(config):
        if not isinstance(entry, dict):
            raise ValueError(f"ICE server {index} is not an object")
        urls = entry.get("urls")
        if isinstance(urls, str):
            urls = [urls]
        if not urls or not all(
            isinstance(url, str) and url.split(":", 1)[0] in ("stun", "stuns", "turn", "turns")
            for url in urls
        ):
            raise ValueError(f"ICE server {index}: 'urls' must be stun:/turn: URLs")
        unknown = set(entry) - {"urls", "username", "credential"}
        if unknown:
            raise ValueError(f"ICE server {index}: unknown keys {sorted(unknown)}")
        servers.append(
            RTCIceServer(
                urls=list(urls),
                username=entry.get("username"),
                credential=entry.get("credential"),
            )
        )
    return servers


class PacedAudioTrack(MediaStreamTrack):
    """The reply audio as an aiortc audio track: one 20 ms frame (960 samples at 48 kHz)
    per 20 ms of loop time, from an :class:`OutboundAudioPacer`."""

    kind = "audio"

    def __init__(self, *, prebuffer_ms: int = 80) -> None:
        super().__init__()
        self.on_played: Callable[[int], None] | None = None
        self._frame = b""
        self._clock: FrameClock | None = None  # from the first frame
        self._pts = 0
        self.pacer = OutboundAudioPacer(
            sample_rate=SAMPLE_RATE,
            send_frame=self._take,
            prebuffer_ms=prebuffer_ms,
            on_played=self._played,
        )

    def _take(self, pcm: bytes, skipped: int) -> None:
        self._frame = pcm
        self._pts += skipped * FRAME_SAMPLES

    def _played(self, played_ms: int) -> None:
        if self.on_played is not None:
            self.on_played(played_ms)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = asyncio.get_running_loop().time()
        skipped = 0
        if self._clock is None:
            self._clock = FrameClock(now)
        else:
            delay = self._clock.next_deadline() - now
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                # Late: a stalled loop's lost time is skipped, not sent as a burst.
                skipped = self._clock.skip_stall(now)
                if skipped:
                    self.pacer.stats["stalls"] += 1
        self.pacer.tick(skipped)
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(self._frame)
        frame.pts = self._pts
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = TIME_BASE
        self._pts += FRAME_SAMPLES
        return frame


class _DataChannelSender:
    """A :class:`ClientLink`'s view of the peer (``FrameSender``): JSON text goes on the data
    channel (queued until it opens); closing the link hangs the peer up."""

    def __init__(self, peer: WebRTCPeer) -> None:
        self.peer = peer

    async def send_text(self, text: str) -> None:
        self.peer.send_text(text)

    async def send_bytes(self, data: bytes) -> None:
        raise RuntimeError("audio goes on the WebRTC track")

    async def close(self, code: int) -> None:
        await self.peer.close()


@dataclass(slots=True)
class _Timeouts:
    connect_s: float
    disconnected_grace_s: float
    media_s: float


class WebRTCPeer:
    """One peer connection: its tracks, its data channel and the link the engine talks to."""

    def __init__(self, gateway: WebRTCGateway, pc: RTCPeerConnection, metadata: dict[str, Any]):
        self.id = uuid.uuid4().hex
        self.gateway = gateway
        self.pc = pc
        self.metadata = metadata
        self.outbound = PacedAudioTrack()
        #: The protocol link over the data channel; the transport that accepts the peer
        #: sets its transport (a link needs one to deliver the caller's messages to).
        self.link: ClientLink | None = None
        self.channel: RTCDataChannel | None = None
        self.answer_sdp = ""
        self.created = time.monotonic()
        self.last_audio: float | None = None
        self.connected_once = False
        self.state = "new"
        self.lost: tuple[str, str] | None = None  # (reason, detail) once lost
        self.disconnected_at: float | None = None  # in the connection's "disconnected" state
        self.closed = False
        #: Called once when the peer is lost (set by the transport that accepted it).
        self.on_lost: Callable[[WebRTCPeer], Awaitable[None]] | None = None
        self.gone = asyncio.Event()
        self._pending: deque[str] = deque()
        self._early_audio: deque[bytes] = deque()
        self._early_bytes = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reporting: asyncio.Task[Any] | None = None  # reports the loss, then closes
        self._context = contextvars.copy_context()
        self.stats: dict[str, int] = {
            "frames_in": 0,
            "messages_out": 0,
            "messages_dropped": 0,
            "early_audio_dropped": 0,
            "bad_frames_in": 0,
        }

    @property
    def session(self) -> LiveSession | None:
        return self.link.session if self.link is not None else None

    # --- inbound -----------------------------------------------------------------------------

    def _spawn(self, coroutine: Any, name: str) -> asyncio.Task[Any]:
        # In the peer's own context (see WebRTCGateway.answer), also when called from a
        # request (a DELETE hangs up): the task outlives it.
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(
            coroutine, name=f"webrtc-{name}-{self.id[:8]}", context=self._context
        )
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s failed", task.get_name(), exc_info=task.exception())

    def _on_track(self, track: Any) -> None:
        if track.kind != "audio" or any(
            task.get_name().startswith("webrtc-read") for task in self._tasks
        ):
            return  # video, or a second audio track: not ours to play to the model
        self._spawn(self._read(track), "read")

    async def _read(self, track: Any) -> None:
        resampler = AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return  # the connection closed
            try:
                frames = resampler.resample(frame)
            except Exception:  # a frame the decoder gave in a shape we cannot convert
                self.stats["bad_frames_in"] += 1
                if self.stats["bad_frames_in"] == 1:
                    logger.warning("peer %s: an audio frame could not be converted", self.id)
                continue
            for out in frames:
                self.last_audio = time.monotonic()
                self.stats["frames_in"] += 1
                # The plane may be padded past the samples: one copy, of the samples only.
                self._audio(bytes(memoryview(out.planes[0])[: out.samples * 2]))

    def _audio(self, pcm: bytes) -> None:
        if self.link is not None:
            self.link.media_audio(pcm)
            return
        # Not accepted yet: the newest few seconds wait for the session.
        self._early_audio.append(pcm)
        self._early_bytes += len(pcm)
        while self._early_bytes > 5 * 2 * SAMPLE_RATE:
            self._early_bytes -= len(self._early_audio.popleft())
            self.stats["early_audio_dropped"] += 1

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != DATA_CHANNEL_LABEL or self.channel is not None:
            channel.close()  # only one events channel
            return
        self.channel = channel

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            link = self.link
            if link is None:
                return  # nothing to handle it yet: the client waits for session_started
            if isinstance(message, str):
                link.receive(text=message)
            else:
                link.receive(data=message)

        @channel.on("open")
        def on_open() -> None:
            self._flush()

        if channel.readyState == "open":
            self._flush()

    # --- outbound ----------------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        channel = self.channel
        if self.closed:
            return
        if channel is None or channel.readyState != "open":
            if len(self._pending) >= PENDING_MESSAGES_MAX:
                self.stats["messages_dropped"] += 1
                return
            self._pending.append(text)
            return
        if channel.bufferedAmount > DATA_CHANNEL_BUFFER_MAX:
            self.stats["messages_dropped"] += 1
            if self.stats["messages_dropped"] == 1:
                logger.warning("peer %s does not read its data channel: dropping", self.id)
            return
        channel.send(text)
        self.stats["messages_out"] += 1

    def _flush(self) -> None:
        pending, self._pending = self._pending, deque()
        for text in pending:
            self.send_text(text)

    # --- binding to a link -------------------------------------------------------------------

    def bind(self, link: ClientLink) -> None:
        """The engine's link for this peer: early audio goes to it, in order."""
        self.link = link
        early, self._early_audio, self._early_bytes = list(self._early_audio), deque(), 0
        for pcm in early:
            link.media_audio(pcm)

    # --- the connection ----------------------------------------------------------------------

    def _on_state(self) -> None:
        self.state = state = self.pc.connectionState
        logger.info("peer %s: connection %s", self.id, state)
        if state == "connected":
            self.connected_once = True
            self.disconnected_at = None
        elif state == "disconnected":
            self.disconnected_at = time.monotonic()
        elif state == "failed":
            self.mark_lost(LOST_TRANSPORT, "the WebRTC connection failed")
        elif state == "closed":
            self.mark_lost(LOST_HANGUP, "the peer closed the connection")

    def check(self, now: float, timeouts: _Timeouts) -> None:
        """The gateway's watchdog: lost when it never connects, stays disconnected, or
        sends no audio for too long."""
        if self.lost is not None:
            return
        if not self.connected_once:
            if now - self.created > timeouts.connect_s:
                self.mark_lost(
                    LOST_TIMEOUT, f"the connection was not established in {timeouts.connect_s:g} s"
                )
            return
        if (
            self.disconnected_at is not None
            and now - self.disconnected_at > timeouts.disconnected_grace_s
        ):
            self.mark_lost(
                LOST_TRANSPORT,
                f"the connection stayed disconnected for {timeouts.disconnected_grace_s:g} s",
            )
            return
        heard = self.last_audio if self.last_audio is not None else self.created
        if now - heard > timeouts.media_s:
            self.mark_lost(LOST_TIMEOUT, f"no audio from the caller for {timeouts.media_s:g} s")

    def mark_lost(self, reason: str, detail: str) -> None:
        if self.lost is not None or self.closed:
            return
        self.lost = (reason, detail)
        logger.info("peer %s lost: %s", self.id, detail)
        self._reporting = self._spawn(self._report_lost(), "lost")

    async def _report_lost(self) -> None:
        try:
            if self.on_lost is not None:
                await self.on_lost(self)
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the peer connection (idempotent); the gateway forgets it."""
        if self.closed:
            return
        self.closed = True
        self.gateway._forget(self)
        logger.info("peer %s closed: %s", self.id, self.describe())
        self.outbound.stop()
        try:
            await self.pc.close()
        except Exception:
            logger.info("closing peer %s failed", self.id, exc_info=True)
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            if not task.get_name().startswith("webrtc-lost"):
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.gone.set()

    async def wait_closed(self) -> None:
        """Until the peer is closed and, if it was lost, its loss reported (the session's
        end recorded)."""
        await self.gone.wait()
        if self._reporting is not None:
            await asyncio.gather(self._reporting, return_exceptions=True)

    def describe(self) -> dict[str, Any]:
        return {**self.stats, "state": self.state, "pacer": self.outbound.pacer.describe()}


class WebRTCGateway:
    """This process's WebRTC peers: answers offers, takes candidates, watches connections."""

    def __init__(
        self,
        *,
        ice_servers: list[Any] | None = None,
        max_peers: int = DEFAULT_MAX_PEERS,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        disconnected_grace_s: float = DEFAULT_DISCONNECTED_GRACE_S,
        media_timeout_s: float = DEFAULT_MEDIA_TIMEOUT_S,
    ) -> None:
        if max_peers < 1:
            raise ValueError("max_peers must be at least 1")
        self.ice_servers = parse_ice_servers(ice_servers)
        self.ice_servers_config = list(ice_servers or [])
        self.max_peers = max_peers
        self.timeouts = _Timeouts(connect_timeout_s, disconnected_grace_s, media_timeout_s)
        self.on_client_connected: PeerCallback | None = None
        self._peers: dict[str, WebRTCPeer] = {}
        self._answering = 0
        self._watch: asyncio.Task[None] | None = None

    def peer(self, peer_id: str) -> WebRTCPeer | None:
        return self._peers.get(peer_id)

    @property
    def peers(self) -> list[WebRTCPeer]:
        return list(self._peers.values())

    async def answer(self, offer_sdp: Any, *, metadata: dict[str, Any] | None = None) -> WebRTCPeer:
        """Answer an SDP offer (all our ICE candidates gathered into the answer). Raises
        :class:`PeerRefused`: 400 for an offer we cannot use, 503 at ``max_peers``.

        The peer connection's tasks (aiortc's, ours) start in a context of their own: they
        outlive the request that made the offer, and must not inherit its context variables
        (a web framework's per-request state, such as asgiref's thread for database calls).
        """
        loop = asyncio.get_running_loop()
        return await loop.create_task(
            self._answer(offer_sdp, metadata), name="webrtc-answer", context=contextvars.Context()
        )

    async def _answer(self, offer_sdp: Any, metadata: dict[str, Any] | None) -> WebRTCPeer:
        if not isinstance(offer_sdp, str) or not offer_sdp.strip():
            raise PeerRefused(400, "bad_request", "'sdp' must be the offer's SDP text")
        if len(offer_sdp) > MAX_OFFER_CHARS:
            raise PeerRefused(400, "bad_request", f"the offer is over {MAX_OFFER_CHARS} characters")
        if "\nm=audio " not in offer_sdp.replace("\r\n", "\n"):
            raise PeerRefused(400, "bad_request", "the offer has no audio track")
        if len(self._peers) + self._answering >= self.max_peers:
            raise PeerRefused(503, "busy", "the server is at its limit of WebRTC calls")
        self._answering += 1
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))
        peer = WebRTCPeer(self, pc, dict(metadata or {}))
        pc.on("track", peer._on_track)
        pc.on("datachannel", peer._on_datachannel)
        pc.on("connectionstatechange", peer._on_state)
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            except Exception as error:
                raise PeerRefused(
                    400, "bad_request", f"the offer could not be used: {_short(error)}"
                ) from None
            audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
            if not audio:
                raise PeerRefused(400, "bad_request", "the offer has no audio track")
            _prefer_opus(audio[0])
            pc.addTrack(peer.outbound)
            for transceiver in pc.getTransceivers():
                if transceiver.kind != "audio":
                    transceiver.direction = "inactive"  # video: not taken
            try:
                await pc.setLocalDescription(await pc.createAnswer())
            except Exception as error:
                raise PeerRefused(
                    400, "bad_request", f"the offer could not be answered: {_short(error)}"
                ) from None
        except BaseException:
            await pc.close()
            raise
        finally:
            self._answering -= 1
        peer.answer_sdp = pc.localDescription.sdp
        self._peers[peer.id] = peer
        self._ensure_watch()
        return peer

    async def add_candidate(self, peer: WebRTCPeer, candidate: Any) -> None:
        """A trickled ICE candidate: ``{"candidate": "candidate:...", "sdpMid": "0",
        "sdpMLineIndex": 0}``, or None / an empty candidate for the end of candidates.
        ValueError for one we cannot read."""
        if candidate is None or (isinstance(candidate, dict) and not candidate.get("candidate")):
            await peer.pc.addIceCandidate(None)
            return
        if not isinstance(candidate, dict) or not isinstance(candidate.get("candidate"), str):
            raise ValueError("a candidate is {candidate, sdpMid, sdpMLineIndex}")
        text = candidate["candidate"]
        if len(text) > 1024:
            raise ValueError("the candidate is too long")
        try:
            parsed = candidate_from_sdp(text.removeprefix("candidate:"))
        except Exception:
            raise ValueError("the candidate could not be read") from None
        mid = candidate.get("sdpMid")
        index = candidate.get("sdpMLineIndex")
        parsed.sdpMid = mid if isinstance(mid, str) else None
        parsed.sdpMLineIndex = index if isinstance(index, int) else None
        if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
            parsed.sdpMLineIndex = 0
        await peer.pc.addIceCandidate(parsed)

    def _forget(self, peer: WebRTCPeer) -> None:
        self._peers.pop(peer.id, None)

    def _ensure_watch(self) -> None:
        loop = asyncio.get_running_loop()
        if self._watch is None or self._watch.done() or self._watch.get_loop() is not loop:
            self._watch = loop.create_task(
                self._watchdog(), name="webrtc-watchdog", context=contextvars.Context()
            )

    async def _watchdog(self) -> None:
        while self._peers:
            now = time.monotonic()
            for peer in list(self._peers.values()):
                peer.check(now, self.timeouts)
            await asyncio.sleep(WATCH_PERIOD_S)

    async def close(self) -> None:
        """Close every peer: each is lost (``server_shutdown``), so its session ends (the end
        recorded) and its connection closes. Returns once all of that is done."""
        peers = list(self._peers.values())
        for peer in peers:
            peer.mark_lost(LOST_SHUTDOWN, "the server is shutting down")
        await asyncio.gather(*(peer.wait_closed() for peer in peers))
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)


def _prefer_opus(transceiver: Any) -> None:
    """Opus first (wideband, with the browser's FEC); G.711 stays as a fallback."""
    codecs = RTCRtpSender.getCapabilities("audio").codecs
    transceiver.setCodecPreferences(
        sorted(codecs, key=lambda codec: codec.mimeType.lower() != "audio/opus")
    )


def _short(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text[:200]


class WebRTCRealtimeTransport(RealtimeTransport):
    """The engine's view of WebRTC peers: ``start_session(..., connection=peer)`` where
    ``peer`` is a :class:`WebRTCPeer` or its id (the seed's ``connection=webrtc_id``).

    ``gateway``: the peers this transport can accept; by default one of its own. The seed's
    auto-session: ``transport.on_client_connected = lambda peer_id: channel.start_session(
    room_id, participant_id, connection=peer_id)`` is called for every answered offer, as
    soon as it is answered (the provider connects while ICE and DTLS complete).
    """

    name = "webrtc"

    def __init__(self, *, gateway: WebRTCGateway | None = None, **gateway_options: Any) -> None:
        super().__init__()
        self.gateway = gateway if gateway is not None else WebRTCGateway(**gateway_options)
        self._peers: dict[str, WebRTCPeer] = {}
        #: ``await on_peer_lost(session, reason, detail)``: how the session of a lost peer
        #: ends (a host sets it to record why: ``timeout``, ``transport_error``...); by
        #: default the disconnect callbacks run (the engine records ``client_hangup``).
        self.on_peer_lost: Callable[[LiveSession, str, str], Awaitable[None]] | None = None

    @property
    def on_client_connected(self) -> PeerCallback | None:
        return self.gateway.on_client_connected

    @on_client_connected.setter
    def on_client_connected(self, callback: Callable[[str], Any] | None) -> None:
        if callback is None:
            self.gateway.on_client_connected = None
            return

        def connected(peer: WebRTCPeer) -> Any:
            return callback(peer.id)

        self.gateway.on_client_connected = connected

    def transport_sample_rate(self, session: LiveSession) -> int | None:
        return SAMPLE_RATE

    def peer(self, session: LiveSession) -> WebRTCPeer | None:
        return self._peers.get(session.id)

    async def accept(self, session: LiveSession, connection: Any) -> None:
        peer = connection
        if isinstance(connection, str):
            peer = self.gateway.peer(connection)
            if peer is None:
                raise LookupError(f"no WebRTC peer {connection!r} (gone, or never answered)")
        if not isinstance(peer, WebRTCPeer):
            raise TypeError("the WebRTC transport takes a WebRTCPeer or its id")
        if peer.closed:
            raise ConnectionError("the WebRTC peer is already gone")
        link = ClientLink(
            self,
            _DataChannelSender(peer),
            sample_rate=SAMPLE_RATE,
            audio_format="binary",
            audio_on_track=True,
        )
        self._peers[session.id] = peer
        peer.outbound.on_played = lambda ms: self._deliver_playback(session, ms)
        peer.on_lost = self._peer_lost
        link.attach(session)
        peer.bind(link)
        if peer.lost is not None:  # lost while the session started
            self._peers.pop(session.id, None)
            raise ConnectionError(peer.lost[1])

    async def _peer_lost(self, peer: WebRTCPeer) -> None:
        session = peer.session
        if session is not None and self._peers.get(session.id) is peer:
            reason, detail = peer.lost or (LOST_HANGUP, "")
            if self.on_peer_lost is not None:
                await self.on_peer_lost(session, reason, detail)
            else:
                await self._deliver_disconnect(session)
        if peer.link is not None:
            await peer.link.shutdown()

    async def send_audio(self, session: LiveSession, audio: bytes) -> None:
        peer = self._peers.get(session.id)
        if peer is not None:
            peer.outbound.pacer.push(audio)

    async def send_message(self, session: LiveSession, message: dict[str, Any]) -> None:
        peer = self._peers.get(session.id)
        if peer is None:
            return
        if message.get("type") == "session_started":
            message = {**message, "sample_rate": SAMPLE_RATE, "transport": "webrtc"}
        peer.send_text(json.dumps(message, separators=(",", ":")))

    async def interrupt(self, session: LiveSession) -> None:
        peer = self._peers.get(session.id)
        if peer is not None:
            peer.outbound.pacer.clear()

    async def end_of_response(self, session: LiveSession) -> None:
        peer = self._peers.get(session.id)
        if peer is not None:
            peer.outbound.pacer.end_of_response()

    async def disconnect(self, session: LiveSession) -> None:
        peer = self._peers.pop(session.id, None)
        if peer is None:
            return
        peer.on_lost = None
        link = peer.link
        if link is not None:
            # The messages already sent (session_ended) go out before the connection closes.
            await _drain(peer)
            await link.close(CLOSE_NORMAL)
            if not link.handling_message():
                await link.shutdown()
        await peer.close()

    async def close(self) -> None:
        for session_id in list(self._peers):
            peer = self._peers.pop(session_id)
            peer.on_lost = None
            if peer.link is not None:
                await peer.link.shutdown()
            await peer.close()


async def _drain(peer: WebRTCPeer, limit_s: float = 1.0) -> None:
    """Wait (briefly) until the data channel has sent what it holds."""
    channel = peer.channel
    if channel is None or channel.readyState != "open":
        return
    deadline = time.monotonic() + limit_s
    while channel.bufferedAmount > 0 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
