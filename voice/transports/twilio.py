"""The Twilio Media Streams transport: a phone call's audio over Twilio's WebSocket protocol.

Twilio (``<Connect><Stream>``, a bidirectional stream) opens a WebSocket to us and sends
JSON text frames: ``connected``, then ``start`` (the stream's and call's ids, the custom
parameters of the TwiML, the media format: µ-law, 8 kHz, mono), then ``media`` every 20 ms
(base64 µ-law), ``dtmf`` when the caller presses a key, ``mark`` when audio we sent up to
a mark has been played (or dropped by a ``clear``), and ``stop`` when the call ends. We
send ``media`` (base64 µ-law), ``mark`` and ``clear``. Twilio's protocol has no message
for errors or text: the engine's JSON messages (transcripts, ``session_started``…) are
not sent on.

How this transport uses it:

- **Inbound**: :meth:`TwilioStream.receive` parses and checks each frame synchronously (no
  awaits, as the consumer's receive handler requires); caller audio is decoded µ-law →
  PCM16 at 8 kHz and handed to the engine (its bounded queue). Bad input — a frame that is
  not JSON, an unknown event, bad base64, another stream's ``streamSid``, a frame over
  64 KiB — is dropped, counted in :attr:`TwilioStream.stats` and logged once per kind; the
  call goes on. A flood (far above Twilio's 50 frames/s) is dropped, then closed.
- **Outbound**: reply audio (PCM16 at 8 kHz, as the engine resamples it) is cut into 20 ms
  chunks (160 µ-law bytes; the tail of a reply is padded with silence) and each reply's
  chunks are followed by marks: one after at most :data:`MARK_EVERY_CHUNKS` chunks and one
  at the end of every :meth:`~TwilioRealtimeTransport.send_audio` call. Each mark records
  how many ms of the current reply precede it; when Twilio sends it back, that is exactly
  what the caller has heard, and it goes to the engine as the playback position
  (``_deliver_playback``), which the engine uses to truncate the model's reply on barge-in.
- **Replies**: the "current reply" starts where the engine's does: at its ``speaking``
  ``{"who": "assistant", "speaking": true}`` message (sent right after the engine resets
  its own count) and at a barge-in (:meth:`~TwilioRealtimeTransport.interrupt`). At each
  start the transport reports 0 ms played; marks of earlier replies coming back later do
  not count for the new one.
- **Barge-in**: :meth:`~TwilioRealtimeTransport.interrupt` drops every message not yet
  written, sends ``clear`` and forgets the marks in flight: Twilio sends those back after a
  ``clear``, but that audio was never played, so they are ignored.
- **Send queue**: messages to Twilio go through one bounded queue
  (:data:`OUTBOUND_QUEUE_MESSAGES`, ≈10 s of audio and marks) written by one task, so a
  ``clear`` is always ordered after the audio it clears. When the queue is full,
  ``send_audio`` waits for room: the back-pressure reaches the engine, whose own bounded
  output queue then drops the newest audio (counted as ``outbound_dropped_overflow``).
  Twilio itself buffers up to 10 minutes of audio ahead of playback, so the queue only
  fills when the socket stalls.
- **DTMF and stop**: a key press goes to the transport's ``on_dtmf`` callbacks (the
  engine registers its ``receive_dtmf``); ``stop`` ends the session as a hang-up. Both run
  in order on one task per stream, from a bounded queue (further key presses are dropped
  and counted).

Pure asyncio: no Django. The Channels consumer (``telephony.consumers``) checks who the
call is for before a session starts; :meth:`TwilioStream.wait_started` gives it the
``start`` message to check.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voice.g711 import ulaw_decode, ulaw_encode
from voice.protocol import CLOSE_FLOODED, CLOSE_NORMAL, FloodGuard, Verdict
from voice.transports.base import RealtimeTransport
from voice.transports.websocket import FrameSender

if TYPE_CHECKING:
    from voice.session import LiveSession

__all__ = [
    "StreamEnded",
    "StreamStart",
    "TwilioRealtimeTransport",
    "TwilioStream",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 8000  # Twilio Media Streams: µ-law, 8 kHz, mono, both ways
MEDIA_ENCODING = "audio/x-mulaw"
CHUNK_SAMPLES = 160  # 20 ms at 8 kHz: one outbound media message (160 µ-law bytes)
CHUNK_PCM_BYTES = CHUNK_SAMPLES * 2
SAMPLES_PER_MS = SAMPLE_RATE // 1000
MARK_EVERY_CHUNKS = 5  # a mark after at most 100 ms of audio, and at every send's end
MARK_PREFIX = "rv-"
MAX_PENDING_MARKS = 6000  # ≈10 min of audio at one mark per 100 ms: what Twilio buffers
OUTBOUND_QUEUE_MESSAGES = 600  # ≈10 s of 20 ms media messages and their marks
CONTROL_QUEUE_SIZE = 32  # key presses waiting for the engine; more are dropped
EARLY_AUDIO_SECONDS = 5.0  # caller audio kept (newest) until the session exists
MAX_FRAME_CHARS = 64 * 1024  # Twilio's frames are ≈ 400 characters
#: Twilio sends ≈ 50 media frames a second, plus marks and key presses.
FRAMES_PER_S = 200.0
BYTES_PER_S = 128 * 1024.0
PUMP_FINISH_TIMEOUT_S = 10.0  # how long a shutdown waits for a stop being handled


class StreamEnded(Exception):
    """The stream ended, or its ``start`` was unusable, before a session could start."""


@dataclass(frozen=True, slots=True)
class StreamStart:
    """What Twilio's ``start`` message says about the stream and the call."""

    stream_sid: str
    call_sid: str
    account_sid: str
    custom_parameters: dict[str, str] = field(default_factory=dict)
    tracks: tuple[str, ...] = ()


class _BadFrame(ValueError):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@dataclass(slots=True)
class _Mark:
    seq: int
    reply: int
    played_ms: float  # of its reply, up to this mark


class TwilioStream:
    """One Twilio media stream: the inbound parser and checks, the outbound queue, marks."""

    def __init__(self, transport: TwilioRealtimeTransport, sender: FrameSender) -> None:
        self.transport = transport
        self.sender = sender
        self.session: LiveSession | None = None
        self.start: StreamStart | None = None
        self.protocol: str | None = None  # from "connected"
        self.closed = False
        self.stopped = False  # Twilio sent "stop": the call is over
        self._flooded = False
        self._shut_down = False
        self.close_code: int | None = None
        self.guard = FloodGuard(frames_per_s=FRAMES_PER_S, bytes_per_s=BYTES_PER_S)
        self.stats: dict[str, int] = {
            "frames": 0,
            "media_frames": 0,
            "bad_frames": 0,
            "rate_limited": 0,
            "early_audio_dropped": 0,
            "dtmf_dropped": 0,
            "marks_sent": 0,
            "marks_played": 0,
            "marks_cleared": 0,
            "marks_forgotten": 0,
            "clears_sent": 0,
            "outbound_dropped_cleared": 0,
        }
        #: Bad input by kind (bad_json, unknown_event, bad_audio, wrong_stream, ...).
        self.problems: dict[str, int] = {}
        self._started = asyncio.Event()  # "start" came, or the stream ended before it
        self._start_problem = ""
        self._early: deque[bytes] = deque()
        self._early_bytes = 0
        # Key presses and the stop, in arrival order, for the pump.
        self._controls: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()  # the pump is not in the middle of a message
        self._idle.set()
        # Outbound: (epoch, frame); a frame of an older epoch (before a clear) is dropped.
        self._outbound: asyncio.Queue[tuple[int | None, str]] = asyncio.Queue(
            maxsize=OUTBOUND_QUEUE_MESSAGES
        )
        self._writer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._epoch = 0
        self._pcm_tail = b""  # reply audio short of a whole chunk
        self._unmarked = 0  # chunks queued since the last mark
        self._reply = 0
        self._reply_ms = 0.0  # audio of the current reply queued so far
        self._next_mark = 1
        self._live_from = 1  # marks numbered below this were cleared
        self._marks: deque[_Mark] = deque()  # sent, not yet back; oldest first

    # --- inbound (synchronous: called from the receive handler) ------------------------------

    def receive(self, text: str | None = None, data: bytes | None = None) -> None:
        if self.closed or self.stopped or self._flooded:
            return
        self.stats["frames"] += 1
        verdict = self.guard.admit(len(data) if data is not None else len(text or ""))
        if verdict == Verdict.CLOSE:
            logger.warning("twilio stream flooded (%d frames dropped): closing", self.guard.dropped)
            self._flooded = True
            self._spawn(self.close(CLOSE_FLOODED))
            return
        if verdict == Verdict.DROP:
            self.stats["rate_limited"] += 1
            if self.guard.should_warn():
                logger.warning("twilio stream above the rate limit: frames dropped")
            return
        try:
            if data is not None:
                raise _BadFrame("binary_frame", "Twilio sends text frames only")
            self._handle(text or "")
        except _BadFrame as problem:
            self._problem(problem.kind, problem.detail)

    def _handle(self, text: str) -> None:
        if len(text) > MAX_FRAME_CHARS:
            raise _BadFrame("frame_too_large", f"a frame of {len(text)} characters")
        try:
            message = json.loads(text)
        except ValueError:
            raise _BadFrame("bad_json", "a frame that is not JSON") from None
        if not isinstance(message, dict):
            raise _BadFrame("bad_json", "a frame that is not a JSON object")
        event = message.get("event")
        if event == "media":
            self._media(message)
        elif event == "mark":
            self._mark(message)
        elif event == "dtmf":
            self._dtmf(message)
        elif event == "start":
            self._start(message)
        elif event == "stop":
            self._stop(message)
        elif event == "connected":
            protocol = message.get("protocol")
            self.protocol = protocol if isinstance(protocol, str) else None
        else:
            raise _BadFrame("unknown_event", f"an unknown event {str(event)[:40]!r}")

    def _problem(self, kind: str, detail: str) -> None:
        self.stats["bad_frames"] += 1
        count = self.problems.get(kind, 0) + 1
        self.problems[kind] = count
        if count == 1:
            logger.warning(
                "twilio stream: %s dropped (%s); further ones are counted, not logged",
                detail,
                kind,
            )

    def _body(self, message: dict[str, Any], name: str) -> dict[str, Any]:
        """The event's own object, for a message of this stream after its start."""
        if self.start is None:
            raise _BadFrame("before_start", f"a {name} before the start")
        if message.get("streamSid") != self.start.stream_sid:
            raise _BadFrame("wrong_stream", f"a {name} for another stream")
        body = message.get(name)
        if not isinstance(body, dict):
            raise _BadFrame("bad_message", f"a {name} without its {name!r} object")
        return body

    def _start(self, message: dict[str, Any]) -> None:
        if self.start is not None or self._started.is_set():
            raise _BadFrame("duplicate_start", "a second start")
        try:
            self.start = _parse_start(message)
        except _BadFrame as problem:
            self._start_problem = problem.detail
            self._started.set()
            raise
        self._started.set()

    def _media(self, message: dict[str, Any]) -> None:
        media = self._body(message, "media")
        track = media.get("track", "inbound")
        if track not in ("inbound", "inbound_track"):
            self.problems["other_track"] = self.problems.get("other_track", 0) + 1
            return  # a unidirectional stream's other side: not the caller
        payload = media.get("payload")
        if not isinstance(payload, str):
            raise _BadFrame("bad_audio", "a media frame without a payload")
        try:
            ulaw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise _BadFrame("bad_audio", "a media payload that is not base64") from None
        self.stats["media_frames"] += 1
        if ulaw:
            self._audio(ulaw_decode(ulaw))

    def _audio(self, pcm: bytes) -> None:
        if self.session is not None:
            self.transport._deliver_audio(self.session, pcm)
            return
        # Before the session exists: keep the newest few seconds, in order.
        limit = int(EARLY_AUDIO_SECONDS * 2 * SAMPLE_RATE)
        self._early.append(pcm)
        self._early_bytes += len(pcm)
        while self._early_bytes > limit:
            self._early_bytes -= len(self._early.popleft())
            self.stats["early_audio_dropped"] += 1

    def _mark(self, message: dict[str, Any]) -> None:
        name = self._body(message, "mark").get("name")
        seq = _mark_seq(name)
        if seq is None or seq >= self._next_mark:
            raise _BadFrame("unknown_mark", "a mark we did not send")
        if seq < self._live_from:
            self.stats["marks_cleared"] += 1  # sent back by a clear: never played
            return
        played: _Mark | None = None
        while self._marks and self._marks[0].seq <= seq:
            played = self._marks.popleft()  # marks come back in order
        if played is None or played.seq != seq:
            raise _BadFrame("unknown_mark", "a mark that came back twice")
        self.stats["marks_played"] += 1
        if played.reply == self._reply and self.session is not None:
            self.transport._deliver_playback(self.session, int(played.played_ms))

    def _dtmf(self, message: dict[str, Any]) -> None:
        digit = self._body(message, "dtmf").get("digit")
        if not isinstance(digit, str) or len(digit) != 1:
            raise _BadFrame("bad_message", "a dtmf without a digit")
        if self._controls.qsize() >= CONTROL_QUEUE_SIZE:
            self.stats["dtmf_dropped"] += 1
            return
        self._controls.put_nowait(("dtmf", digit))  # before the session: once it exists

    def _stop(self, message: dict[str, Any]) -> None:
        if self.start is not None and message.get("streamSid") != self.start.stream_sid:
            raise _BadFrame("wrong_stream", "a stop for another stream")
        self.stopped = True  # nothing after it is read
        self._start_problem = self._start_problem or "the stream stopped before it started"
        self._started.set()
        if self.start is not None:
            # Behind the key presses before it; handled once the session exists (a stop
            # during the start ends the session as it starts, as a hang-up).
            self._controls.put_nowait(("stop", None))

    async def wait_started(self) -> StreamStart:
        """The ``start`` message, once it came; StreamEnded when the stream stopped, closed
        or sent an unusable start first."""
        await self._started.wait()
        if self.start is None or self.stopped or self.closed:
            raise StreamEnded(self._start_problem or "the stream ended before it started")
        return self.start

    # --- the session ---------------------------------------------------------------------------

    def attach(self, session: LiveSession) -> None:
        """The session exists: early audio goes to it, outbound audio and key presses flow."""
        if self.start is None:
            raise StreamEnded("the stream has not started")
        self.session = session
        early, self._early, self._early_bytes = list(self._early), deque(), 0
        for pcm in early:
            self.transport._deliver_audio(session, pcm)
        self._writer = asyncio.create_task(self._write(), name=f"twilio-writer-{session.id}")
        self._pump = asyncio.create_task(self._run_pump(session), name=f"twilio-pump-{session.id}")

    async def _run_pump(self, session: LiveSession) -> None:
        while True:
            kind, value = await self._controls.get()
            self._idle.clear()
            try:
                if kind == "stop":
                    await self.transport.stream_stopped(self)
                    return
                await self.transport._deliver_dtmf(session, value, None)  # no duration given
            finally:
                self._idle.set()

    def handling_message(self) -> bool:
        """True inside the pump (a stop is ending the session)."""
        return self._pump is not None and asyncio.current_task() is self._pump

    # --- outbound ----------------------------------------------------------------------------

    async def send_audio(self, pcm: bytes) -> None:
        if self.closed or self.start is None:
            return
        pcm = self._pcm_tail + pcm
        whole = len(pcm) - len(pcm) % CHUNK_PCM_BYTES
        self._pcm_tail = pcm[whole:]
        if not whole:
            return
        ulaw = ulaw_encode(pcm[:whole])
        frames: list[str] = []
        for offset in range(0, len(ulaw), CHUNK_SAMPLES):
            frames.append(self._media_frame(ulaw[offset : offset + CHUNK_SAMPLES]))
            self._reply_ms += CHUNK_SAMPLES / SAMPLES_PER_MS
            self._unmarked += 1
            if self._unmarked >= MARK_EVERY_CHUNKS:
                frames.append(self._mark_frame())
        if self._unmarked:
            frames.append(self._mark_frame())
        await self._queue(frames)

    async def end_of_response(self) -> None:
        """The reply's last audio: its tail (padded to a chunk with silence) and a mark."""
        if self.closed or self.start is None or not self._pcm_tail:
            return
        tail, self._pcm_tail = self._pcm_tail, b""
        samples = len(tail) // 2
        chunk = ulaw_encode(tail[: samples * 2] + b"\x00\x00" * (CHUNK_SAMPLES - samples))
        self._reply_ms += samples / SAMPLES_PER_MS
        self._unmarked += 1
        await self._queue([self._media_frame(chunk), self._mark_frame()])

    def _media_frame(self, ulaw: bytes) -> str:
        assert self.start is not None
        payload = base64.b64encode(ulaw).decode("ascii")
        return _json(
            {"event": "media", "streamSid": self.start.stream_sid, "media": {"payload": payload}}
        )

    def _mark_frame(self) -> str:
        assert self.start is not None
        seq, self._next_mark = self._next_mark, self._next_mark + 1
        self._marks.append(_Mark(seq, self._reply, self._reply_ms))
        if len(self._marks) > MAX_PENDING_MARKS:  # Twilio is not sending marks back
            self._marks.popleft()
            self.stats["marks_forgotten"] += 1
        self._unmarked = 0
        self.stats["marks_sent"] += 1
        name = f"{MARK_PREFIX}{seq}"
        return _json({"event": "mark", "streamSid": self.start.stream_sid, "mark": {"name": name}})

    async def _queue(self, frames: list[str]) -> None:
        epoch = self._epoch
        for frame in frames:
            if self.closed or self._epoch != epoch:
                return  # closed, or cleared while waiting for room: the rest is stale
            await self._outbound.put((epoch, frame))

    def begin_reply(self) -> None:
        """A new reply starts: nothing of it has been played yet."""
        self._reply += 1
        self._reply_ms = 0.0
        if self.session is not None:
            self.transport._deliver_playback(self.session, 0)

    async def interrupt(self) -> None:
        """Barge-in: drop what is not written yet, ``clear`` Twilio's buffer, and ignore the
        marks it sends back for the audio it dropped."""
        if self.closed or self.start is None:
            return
        self._epoch += 1
        self._pcm_tail = b""
        self._unmarked = 0
        self._live_from = self._next_mark
        self._marks.clear()
        while not self._outbound.empty():
            self._outbound.get_nowait()
            self.stats["outbound_dropped_cleared"] += 1
        self.begin_reply()
        self.stats["clears_sent"] += 1
        self._outbound.put_nowait(
            (None, _json({"event": "clear", "streamSid": self.start.stream_sid}))
        )

    async def _write(self) -> None:
        while True:
            epoch, frame = await self._outbound.get()
            if epoch is not None and epoch != self._epoch:
                self.stats["outbound_dropped_cleared"] += 1
                continue
            try:
                await self.sender.send_text(frame)
            except Exception as error:
                logger.info("twilio stream: sending failed (%s): stop writing", error)
                self.closed = True
                self._drain_outbound()
                return

    def _drain_outbound(self) -> None:
        """Empty the queue, so that a sender waiting for room wakes (and sees it closed)."""
        while not self._outbound.empty():
            self._outbound.get_nowait()

    # --- closing -----------------------------------------------------------------------------

    async def close(self, code: int = CLOSE_NORMAL) -> None:
        """Close the socket (once): Twilio then ends the ``<Connect>`` and, with no TwiML
        after it, the call."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        self._drain_outbound()
        self._started.set()  # a start still awaited will not come
        try:
            await self.sender.close(code)
        except Exception:
            logger.info("closing the twilio socket failed", exc_info=True)

    async def shutdown(self) -> None:
        """Stop the stream's tasks (the connection is gone); idempotent. Not from the pump."""
        self.closed = True
        self._started.set()
        self._drain_outbound()
        pump = self._pump
        if pump is not None and pump is not asyncio.current_task() and not self._idle.is_set():
            # A stop being handled ends the session and records it: let it finish.
            try:
                async with asyncio.timeout(PUMP_FINISH_TIMEOUT_S):
                    await self._idle.wait()
            except TimeoutError:
                logger.warning("a twilio stop was still being handled at disconnect")
        tasks = [task for task in (pump, self._writer, *self._tasks) if task is not None]
        tasks = [task for task in tasks if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._shut_down:
            return
        self._shut_down = True
        if self.problems or self.stats["rate_limited"]:
            logger.info(
                "twilio stream ended: problems=%s stats=%s", dict(self.problems), self.stats
            )

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class TwilioRealtimeTransport(RealtimeTransport):
    """Carries phone calls over Twilio Media Streams; see the module docstring.

    A host (the Channels consumer) makes a :class:`TwilioStream` with :meth:`stream`, feeds
    it the socket's frames, awaits :meth:`TwilioStream.wait_started`, checks the call, and
    passes the stream to ``channel.start_session(..., connection=stream)``.
    """

    name = "twilio"

    def __init__(self) -> None:
        super().__init__()
        self._streams: dict[str, TwilioStream] = {}

    def stream(self, sender: FrameSender) -> TwilioStream:
        return TwilioStream(self, sender)

    def stream_for(self, session: LiveSession) -> TwilioStream | None:
        return self._streams.get(session.id)

    # --- the transport interface -------------------------------------------------------------

    def transport_sample_rate(self, session: LiveSession) -> int | None:
        return SAMPLE_RATE

    async def accept(self, session: LiveSession, connection: Any) -> None:
        if not isinstance(connection, TwilioStream):
            raise TypeError(f"connection must be a TwilioStream, got {type(connection).__name__}")
        if connection.closed:
            raise StreamEnded("the call ended before its session started")
        self._streams[session.id] = connection
        connection.attach(session)

    async def send_audio(self, session: LiveSession, audio: bytes) -> None:
        stream = self._streams.get(session.id)
        if stream is not None:
            await stream.send_audio(audio)

    async def send_message(self, session: LiveSession, message: dict[str, Any]) -> None:
        # Twilio has no channel for the engine's messages; one of them marks a reply's start.
        if (
            message.get("type") == "speaking"
            and message.get("who") == "assistant"
            and message.get("speaking") is True
        ):
            stream = self._streams.get(session.id)
            if stream is not None:
                stream.begin_reply()

    async def interrupt(self, session: LiveSession) -> None:
        stream = self._streams.get(session.id)
        if stream is not None:
            await stream.interrupt()

    async def end_of_response(self, session: LiveSession) -> None:
        stream = self._streams.get(session.id)
        if stream is not None:
            await stream.end_of_response()

    async def disconnect(self, session: LiveSession) -> None:
        stream = self._streams.pop(session.id, None)
        if stream is None:
            return
        await stream.close(CLOSE_NORMAL)
        if not stream.handling_message():
            await stream.shutdown()  # else the stop that ends it returns, then the host's does

    async def stream_stopped(self, stream: TwilioStream) -> None:
        """Twilio sent ``stop``: the caller hung up (from the stream's pump)."""
        session = stream.session
        if session is not None and self._streams.get(session.id) is stream:
            await self._deliver_disconnect(session)  # the engine ends it: client_hangup

    async def connection_lost(self, stream: TwilioStream) -> None:
        """The socket is gone (closed by Twilio, or the connection died): end the session
        (the engine records ``client_hangup``) and stop the stream."""
        stream.closed = True
        session = stream.session
        if session is not None and self._streams.get(session.id) is stream:
            self._streams.pop(session.id, None)
            await self._deliver_disconnect(session)
        await stream.shutdown()

    async def close(self) -> None:
        for session_id in list(self._streams):
            stream = self._streams.pop(session_id)
            await stream.close(CLOSE_NORMAL)
            await stream.shutdown()


def _json(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def _mark_seq(name: object) -> int | None:
    if not isinstance(name, str) or not name.startswith(MARK_PREFIX):
        return None
    digits = name[len(MARK_PREFIX) :]
    return int(digits) if digits.isdigit() and len(digits) < 12 else None


def _parse_start(message: dict[str, Any]) -> StreamStart:
    start = message.get("start")
    if not isinstance(start, dict):
        raise _BadFrame("bad_start", "a start without its 'start' object")
    ids: dict[str, str] = {}
    for name in ("streamSid", "callSid", "accountSid"):
        value = start.get(name) or (message.get(name) if name == "streamSid" else None)
        if not isinstance(value, str) or not value or len(value) > 64:
            raise _BadFrame("bad_start", f"a start without a {name}")
        ids[name] = value
    media_format = start.get("mediaFormat")
    if not isinstance(media_format, dict) or (
        media_format.get("encoding"),
        media_format.get("sampleRate"),
        media_format.get("channels"),
    ) != (MEDIA_ENCODING, SAMPLE_RATE, 1):
        raise _BadFrame("bad_start", f"a start with a media format other than {MEDIA_ENCODING}")
    parameters = start.get("customParameters") or {}
    if not isinstance(parameters, dict):
        raise _BadFrame("bad_start", "a start whose customParameters is not an object")
    tracks = start.get("tracks") or []
    return StreamStart(
        stream_sid=ids["streamSid"],
        call_sid=ids["callSid"],
        account_sid=ids["accountSid"],
        custom_parameters={str(k): str(v) for k, v in parameters.items()},
        tracks=tuple(str(t) for t in tracks) if isinstance(tracks, list) else (),
    )
