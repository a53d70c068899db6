"""The WebSocket transport: the seed's ``WebSocketRealtimeTransport`` (docs/protocol.md).

Two ways in:

- the Channels consumer (``voice.consumers.VoiceConsumer``) authenticates the caller,
  makes a :class:`ClientLink` with :meth:`WebSocketRealtimeTransport.link` and passes it to
  ``channel.start_session(..., connection=link)``; it feeds frames to ``link.receive``;
- plain asyncio code (the seed's examples) passes a ``websockets`` server connection as the
  ``connection``: the transport runs the seed's ``authenticate`` callback and reads the
  socket itself.

Either way a link parses and checks every frame synchronously (no awaits: a receive
handler never waits on the engine), hands caller audio to the engine's bounded queue,
queues control messages (bounded; one pump task per link delivers them in order) and
answers bad input with an ``error`` without ending the session.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, urlsplit

from voice.protocol import (
    AUDIO_FORMATS,
    CLOSE_FLOODED,
    CLOSE_NORMAL,
    Audio,
    Control,
    FloodGuard,
    ProtocolError,
    Verdict,
    parse_binary,
    parse_sample_rate,
    parse_text,
)
from voice.transports.base import RealtimeTransport

if TYPE_CHECKING:
    from voice.session import LiveSession

__all__ = ["ClientLink", "FrameSender", "WebSocketRealtimeTransport", "run_authenticate"]

logger = logging.getLogger(__name__)

DEFAULT_SAMPLE_RATE = 16000
CONTROL_QUEUE_SIZE = 16  # text/interrupt/end waiting for the engine; more → "busy"
EARLY_AUDIO_SECONDS = 5.0  # audio kept (newest first) until the session exists
PENDING_REPLIES_MAX = 32  # error replies in flight; beyond that they are not sent
AUDIO_RATE_FACTOR = 4.0  # audio accepted up to 4× real time, sustained
PUMP_FINISH_TIMEOUT_S = 10.0  # how long a disconnect waits for the message being handled

Authenticate = Callable[[Any], Awaitable[dict[str, Any] | None]]


class FrameSender(Protocol):
    """Where a link writes: one client WebSocket."""

    async def send_text(self, text: str) -> None: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, code: int) -> None: ...


class ClientLink:
    """One client connection: its negotiated format, its inbound checks and queues."""

    def __init__(
        self,
        transport: RealtimeTransport,
        sender: FrameSender,
        *,
        sample_rate: int | None,
        audio_format: str,
        audio_on_track: bool = False,
    ) -> None:
        if audio_format not in AUDIO_FORMATS:
            raise ValueError(f"audio_format must be one of {AUDIO_FORMATS}")
        self.transport = transport
        self.sender = sender
        self.audio_format = audio_format
        #: WebRTC: the caller's audio comes on a media track and the server knows what it
        #: played, so audio, ``hello`` and ``playback`` messages on this link are refused.
        self.audio_on_track = audio_on_track
        self.sample_rate: int | None = None
        self.rate_known = asyncio.Event()
        self.session: LiveSession | None = None
        self.closed = False
        self.close_code: int | None = None
        self.guard = FloodGuard(bytes_per_s=AUDIO_RATE_FACTOR * 2 * 48000)
        self.stats: dict[str, int] = {
            "frames": 0,
            "bad_frames": 0,
            "rate_limited": 0,
            "busy": 0,
            "early_audio_dropped": 0,
        }
        self._hello_allowed = sample_rate is None
        self._early: deque[bytes] = deque()
        self._early_bytes = 0
        self._controls: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(
            maxsize=CONTROL_QUEUE_SIZE
        )
        self._pump: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()  # the pump is not in the middle of a message
        self._idle.set()
        self._replies: set[asyncio.Task[None]] = set()
        if sample_rate is not None:
            self._set_rate(sample_rate)

    # --- inbound (synchronous: called from the receive handler) ------------------------------

    def receive(self, text: str | None = None, data: bytes | None = None) -> None:
        if self.closed:
            return
        self.stats["frames"] += 1
        first = self.stats["frames"] == 1
        # The rate check comes before parsing: a flood costs us a counter, not a JSON parse.
        size = len(data) if data is not None else len(text or "") * 3 // 4
        verdict = self.guard.admit(size)
        if verdict == Verdict.CLOSE:
            logger.warning(
                "client flooded the connection (%d frames dropped): closing", self.guard.dropped
            )
            self._reply({"type": "error", "code": "flooded", "message": "too many frames"})
            self._spawn(self.close(CLOSE_FLOODED))
            return
        if verdict == Verdict.DROP:
            self.stats["rate_limited"] += 1
            if self.guard.should_warn():
                self._reply(
                    {
                        "type": "error",
                        "code": "rate_limited",
                        "message": "sending faster than the rate limit: frames were dropped",
                    }
                )
            return
        try:
            parsed = parse_binary(data) if data is not None else parse_text(text or "")
            if self.audio_on_track:
                _refuse_off_track(parsed)
            if isinstance(parsed, Audio):
                self._rate_from_first_frame()
                self._audio(parsed.pcm)
            elif parsed.type == "hello":
                self._hello(parsed.fields, first=first)
            else:
                self._rate_from_first_frame()
                self._control(parsed.type, parsed.fields)
        except ProtocolError as problem:
            self.stats["bad_frames"] += 1
            self._reply(problem.as_message())

    def _rate_from_first_frame(self) -> None:
        if self.sample_rate is None:  # the first frame was not a hello: the default rate
            self._set_rate(DEFAULT_SAMPLE_RATE)
        self._hello_allowed = False

    def _hello(self, fields: dict[str, Any], *, first: bool) -> None:
        if not (first and self._hello_allowed):
            raise ProtocolError(
                "bad_message",
                "hello is only accepted as the first message, when the query has no sample_rate",
            )
        self._hello_allowed = False
        if "audio_format" in fields:
            self.audio_format = fields["audio_format"]
        self._set_rate(fields.get("sample_rate", DEFAULT_SAMPLE_RATE))

    def _set_rate(self, rate: int) -> None:
        self.sample_rate = rate
        self.guard.set_byte_rate(AUDIO_RATE_FACTOR * 2 * rate)
        self.rate_known.set()

    def settle_rate(self) -> int:
        """The rate, falling back to the default when the client never said (no hello)."""
        if self.sample_rate is None:
            self._set_rate(DEFAULT_SAMPLE_RATE)
        self._hello_allowed = False
        assert self.sample_rate is not None
        return self.sample_rate

    def media_audio(self, pcm: bytes) -> None:
        """Caller audio that came on a media track (WebRTC): to the session, or kept (the
        newest few seconds) until it exists. Synchronous, never blocks."""
        self._audio(pcm)

    def _audio(self, pcm: bytes) -> None:
        if not pcm:
            return
        if self.session is not None:
            self.transport._deliver_audio(self.session, pcm)
            return
        # Before the session exists: keep the newest few seconds, in order.
        limit = int(EARLY_AUDIO_SECONDS * 2 * (self.sample_rate or DEFAULT_SAMPLE_RATE))
        self._early.append(pcm)
        self._early_bytes += len(pcm)
        while self._early_bytes > limit:
            self._early_bytes -= len(self._early.popleft())
            self.stats["early_audio_dropped"] += 1

    def _control(self, kind: str, fields: dict[str, Any]) -> None:
        if kind == "playback":
            if self.session is not None:
                self.transport._deliver_playback(self.session, fields["played_ms"])
            return
        try:
            self._controls.put_nowait((kind, fields))
        except asyncio.QueueFull:
            self.stats["busy"] += 1
            raise ProtocolError(
                "busy", f"too many messages waiting; this {kind} message was dropped"
            ) from None

    # --- the session ---------------------------------------------------------------------------

    def attach(self, session: LiveSession) -> None:
        """The session exists: early audio goes to it, control messages start flowing."""
        self.session = session
        self.settle_rate()
        early, self._early, self._early_bytes = list(self._early), deque(), 0
        for pcm in early:
            self.transport._deliver_audio(session, pcm)
        self._pump = asyncio.create_task(self._run_pump(session), name=f"ws-pump-{session.id}")

    async def _run_pump(self, session: LiveSession) -> None:
        while True:
            kind, fields = await self._controls.get()
            self._idle.clear()
            try:
                await self.transport._deliver_client_message(session, kind, fields)
            finally:
                self._idle.set()
            if self.closed:  # that message ended the session (or the socket went meanwhile)
                return

    # --- outbound ----------------------------------------------------------------------------

    async def send_json(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        await self.sender.send_text(json.dumps(message, separators=(",", ":")))

    async def send_audio(self, pcm: bytes) -> None:
        if self.closed:
            return
        if self.audio_format == "binary":
            await self.sender.send_bytes(pcm)
        else:
            data = base64.b64encode(pcm).decode("ascii")
            await self.sender.send_text('{"type":"audio","data":"' + data + '"}')

    def _reply(self, message: dict[str, Any]) -> None:
        """An answer to a bad frame, sent without waiting (receive never awaits)."""
        if len(self._replies) >= PENDING_REPLIES_MAX:
            return
        self._spawn(self.send_json(message))

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._replies.add(task)
        task.add_done_callback(self._reply_done)

    def _reply_done(self, task: asyncio.Task[None]) -> None:
        self._replies.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.info("could not answer the client: %s", task.exception())

    async def close(self, code: int = CLOSE_NORMAL) -> None:
        """Close the client's socket (once)."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        try:
            await self.sender.close(code)
        except Exception:
            logger.info("closing the client socket failed", exc_info=True)

    def handling_message(self) -> bool:
        """True inside the pump (a client message is ending the session)."""
        return self._pump is not None and asyncio.current_task() is self._pump

    async def shutdown(self) -> None:
        """Stop the link's tasks (the connection is gone); idempotent. Never call it from the
        pump itself (an ``end`` message ends the session, which closes, not shuts down)."""
        self.closed = True
        pump = self._pump
        if pump is not None and pump is not asyncio.current_task() and not self._idle.is_set():
            # The message in hand finishes first: an "end" being handled ends the session
            # and records it; cancelling it halfway would lose that record.
            try:
                async with asyncio.timeout(PUMP_FINISH_TIMEOUT_S):
                    await self._idle.wait()
            except TimeoutError:
                logger.warning("a client message was still being handled at disconnect")
        tasks = [task for task in (pump, *self._replies) if task is not None]
        tasks = [task for task in tasks if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _refuse_off_track(parsed: Audio | Control) -> None:
    if isinstance(parsed, Audio):
        raise ProtocolError("bad_message", "audio goes on the WebRTC audio track, not here")
    if parsed.type in ("hello", "playback"):
        raise ProtocolError(
            "bad_message",
            f"{parsed.type} is not used over WebRTC: the audio track sets the format and the "
            "server knows what it played",
        )


class WebSocketRealtimeTransport(RealtimeTransport):
    """Carries a caller over a WebSocket; see the module docstring.

    ``authenticate(connection)``: the seed's hook, awaited for a connection handed in
    directly; ``None`` refuses, a dict is merged into the session's metadata (the consumer
    runs it itself, before accepting the socket). ``audio_format``: how audio is sent to the
    client unless it asks otherwise: ``"base64_json"`` or ``"binary"``.
    """

    name = "websocket"

    def __init__(
        self, *, authenticate: Authenticate | None = None, audio_format: str = "base64_json"
    ) -> None:
        super().__init__()
        if audio_format not in AUDIO_FORMATS:
            raise ValueError(f"audio_format must be one of {AUDIO_FORMATS}, got {audio_format!r}")
        if authenticate is not None and not callable(authenticate):
            raise TypeError("authenticate must be an async callable (connection) -> dict | None")
        self.authenticate = authenticate
        self.audio_format = audio_format
        self._links: dict[str, ClientLink] = {}
        self._readers: dict[str, asyncio.Task[None]] = {}

    async def authenticate_connection(self, connection: Any) -> dict[str, Any]:
        """Run the ``authenticate`` hook: the metadata it grants, or PermissionError."""
        if self.authenticate is None:
            return {}
        return await run_authenticate(self.authenticate, connection)

    def link(
        self, sender: FrameSender, *, sample_rate: int | None, audio_format: str | None = None
    ) -> ClientLink:
        """A link for a connection the caller (the consumer) authenticated and reads."""
        return ClientLink(
            self, sender, sample_rate=sample_rate, audio_format=audio_format or self.audio_format
        )

    # --- the transport interface -------------------------------------------------------------

    async def accept(self, session: LiveSession, connection: Any) -> None:
        if isinstance(connection, ClientLink):
            link = connection
        elif _is_websockets_connection(connection):
            session.metadata.update(await self.authenticate_connection(connection))
            rate = _query_sample_rate(connection)
            link = ClientLink(
                self,
                _WebsocketsSender(connection),
                sample_rate=rate,
                audio_format=self.audio_format,
            )
            self._readers[session.id] = asyncio.create_task(
                self._read(session, link, connection), name=f"ws-read-{session.id}"
            )
        else:
            raise TypeError(
                "connection must be a ClientLink or a websockets connection, "
                f"got {type(connection).__name__}"
            )
        self._links[session.id] = link
        link.attach(session)

    def transport_sample_rate(self, session: LiveSession) -> int | None:
        link = self._links.get(session.id)
        return link.sample_rate if link is not None else None

    async def send_audio(self, session: LiveSession, audio: bytes) -> None:
        link = self._links.get(session.id)
        if link is not None:
            await link.send_audio(audio)

    async def send_message(self, session: LiveSession, message: dict[str, Any]) -> None:
        link = self._links.get(session.id)
        if link is None:
            return
        if message.get("type") == "session_started":
            message = {
                **message,
                "sample_rate": link.sample_rate,
                "audio_format": link.audio_format,
            }
        await link.send_json(message)

    async def disconnect(self, session: LiveSession) -> None:
        link = self._links.pop(session.id, None)
        if link is not None:
            await link.close(CLOSE_NORMAL)
        reader = self._readers.pop(session.id, None)
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        if link is not None and not link.handling_message():
            await link.shutdown()  # else the reader's connection_lost (or close) stops it

    async def connection_lost(self, link: ClientLink) -> None:
        """The client's socket is gone (closed, or the TCP connection died): end its
        session (the engine records ``client_hangup``) and stop the link."""
        link.closed = True
        session = link.session
        if session is not None and self._links.get(session.id) is link:
            self._links.pop(session.id, None)
            await self._deliver_disconnect(session)
        await link.shutdown()

    async def close(self) -> None:
        for session_id in list(self._links):
            link = self._links.pop(session_id)
            await link.close(CLOSE_NORMAL)
            await link.shutdown()
        readers = list(self._readers.values())
        self._readers.clear()
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    async def _read(self, session: LiveSession, link: ClientLink, connection: Any) -> None:
        try:
            async for frame in connection:
                if isinstance(frame, bytes | bytearray | memoryview):
                    link.receive(data=bytes(frame))
                else:
                    link.receive(text=str(frame))
        except Exception as error:  # the websockets library signals a dead peer by raising
            logger.info("client connection lost: %s", type(error).__name__)
        self._readers.pop(session.id, None)
        await self.connection_lost(link)


async def run_authenticate(hook: Authenticate, connection: Any) -> dict[str, Any]:
    """The seed's ``authenticate`` contract: a dict admits (and is the session's extra
    metadata), ``None`` refuses, an exception refuses without saying why."""
    try:
        granted = await hook(connection)
    except Exception as error:
        logger.warning("authentication hook failed: %s", type(error).__name__)
        raise PermissionError("Authentication failed") from None
    if granted is None:
        raise PermissionError("Authentication rejected")
    if not isinstance(granted, dict):
        raise PermissionError("Authentication failed: the hook must return a dict or None")
    return granted


class _WebsocketsSender:
    def __init__(self, connection: Any) -> None:
        self.connection = connection

    async def send_text(self, text: str) -> None:
        await self.connection.send(text)

    async def send_bytes(self, data: bytes) -> None:
        await self.connection.send(data)

    async def close(self, code: int) -> None:
        await self.connection.close(code)


def _is_websockets_connection(connection: Any) -> bool:
    return all(hasattr(connection, name) for name in ("send", "close", "__aiter__"))


def _query_sample_rate(connection: Any) -> int | None:
    request = getattr(connection, "request", None)
    path = getattr(request, "path", "") or ""
    values = parse_qs(urlsplit(path).query).get("sample_rate")
    if not values:
        return None
    try:
        return parse_sample_rate(values[0])
    except ProtocolError:
        return None
