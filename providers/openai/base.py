"""What OpenAI Realtime (GA) and xAI's Grok Voice Agent API have in common.

Both speak the OpenAI GA event vocabulary over one WebSocket per session (provider-protocols.md
§1 and §3.2): ``session.update``, ``input_audio_buffer.*``, ``conversation.item.*``,
``response.*`` and ``error``. They differ in the endpoint, the ``session`` object's shape, the
audio formats they take, how input transcripts arrive and which error codes end a session.
:class:`RealtimeWireProvider` holds the common part; a vendor subclass supplies those
differences through the hooks marked "vendor hook" and nothing else.

Resilience lives here too, because both vendors cap a session at 60 minutes and both drop
sockets now and then: an unexpected close, the server's ``session_expired`` error, or the
approach of the session-length limit opens a new vendor session transparently
(:meth:`RealtimeWireProvider._reconnect`). The new session gets the same settings (as last
reconfigured) and the conversation so far as text items; caller audio that arrives during
the gap is kept (bounded, newest kept) and sent once the new session is ready; a response
the drop cut short is asked for again. The engine is told through the ``reconnect``
callback, which records it on the VoiceSession.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar

import websockets
from websockets.asyncio.client import ClientConnection

from providers.base import ProviderError, RealtimeVoiceProvider
from providers.config import ProviderConfig
from providers.wire import GapAudio, checked_config, open_socket
from voice import g711
from voice.audio import StreamResampler
from voice.session import LiveSession

__all__ = ["AudioFormat", "RealtimeWireProvider", "SessionSettings", "WireConn"]

logger = logging.getLogger(__name__)

SESSION_READY_TIMEOUT_S = 15.0

#: Error codes that are part of normal operation: a race between the client and the server
#: (cancelling a response that just finished, truncating or deleting an item the server has
#: already trimmed, committing a buffer the server VAD already committed). Logged; the caller
#: is not told, and the session goes on.
BENIGN_ERROR_CODES = frozenset(
    {
        "response_cancel_not_active",
        "input_audio_buffer_commit_empty",
        "item_not_found",
        "item_truncate_invalid_item_id",
    }
)


#: The vendor ended the session at its length limit (OpenAI: code ``session_expired``;
#: xAI: type ``max_duration``, no code): a fresh session takes over.
SESSION_EXPIRED_CODES = frozenset({"session_expired", "max_duration"})


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """One direction's wire format: what ``audio.*.format`` says and how to (de)code it."""

    rate: int
    codec: str = "pcm16"  # or "pcmu" / "pcma" (G.711, 8 kHz)

    def wire(self) -> dict[str, Any]:
        if self.codec == "pcmu":
            return {"type": "audio/pcmu"}
        if self.codec == "pcma":
            return {"type": "audio/pcma"}
        return {"type": "audio/pcm", "rate": self.rate}

    def bytes_per_ms(self) -> float:
        return self.rate / 1000 * (1 if self.codec != "pcm16" else 2)

    def encode(self, pcm16: bytes) -> bytes:
        if self.codec == "pcmu":
            return g711.ulaw_encode(pcm16)
        if self.codec == "pcma":
            return g711.alaw_encode(pcm16)
        return pcm16

    def decode(self, data: bytes) -> bytes:
        if self.codec == "pcmu":
            return g711.ulaw_decode(data)
        if self.codec == "pcma":
            return g711.alaw_decode(data)
        return data


@dataclass(slots=True)
class SessionSettings:
    """What the vendor session was configured with (kept to configure a new one alike)."""

    system_prompt: str | None
    voice: str | None
    tools: list[dict[str, Any]] | None
    temperature: float | None
    config: dict[str, Any]
    server_vad: bool = True


@dataclass(slots=True)
class _AssistantItem:
    item_id: str
    audio_ms: float = 0.0  # generated so far


@dataclass(slots=True)
class _HistoryEntry:
    """A finished conversation item, as text, for restoring a new vendor session."""

    kind: str  # "user" | "assistant" | "system" | "function_call" | "function_call_output"
    text: str = ""
    call_id: str = ""
    name: str = ""
    heard: float = 1.0  # of an assistant reply cut short by barge-in: the part heard

    def size(self) -> int:
        return len(self.text) + len(self.name) + 16


@dataclass(slots=True)
class WireConn:
    session: LiveSession
    settings: SessionSettings
    audio_in: AudioFormat
    audio_out: AudioFormat
    socket: ClientConnection | None = None
    reader: asyncio.Task[None] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    setup_error: tuple[str, str] | None = None  # an error before the session was confirmed
    live: bool = False  # the first vendor session was confirmed
    response_active: bool = False
    pending_response: bool = False  # response.create wanted while one was active
    last_assistant: _AssistantItem | None = None
    resample_in: StreamResampler | None = None
    resample_out: StreamResampler | None = None
    closing: bool = False
    event_counter: int = 0
    # Reconnection
    reconnecting: bool = False
    reconnect_task: asyncio.Task[None] | None = None
    limit_timer: asyncio.Task[None] | None = None
    opened_at: float = 0.0
    gap_audio: GapAudio = field(default_factory=lambda: GapAudio(0))
    gap_items: list[_HistoryEntry] = field(default_factory=list)
    history: OrderedDict[str, _HistoryEntry] = field(default_factory=OrderedDict)
    history_chars: int = 0
    speaking: bool = False  # the caller is mid-utterance (server VAD)
    # Tool calls still running when the session was replaced: the new session learns of
    # the call together with its result.
    unrestored_calls: dict[str, _HistoryEntry] = field(default_factory=dict)


class RealtimeWireProvider(RealtimeVoiceProvider):
    """A provider speaking the OpenAI GA realtime event vocabulary (see module docstring)."""

    #: Shown in messages ("OpenAI refused the session").
    vendor_label: ClassVar[str] = "the provider"
    #: The vendor's ``provider_config`` schema (vendor hook).
    config_schema: ClassVar[type[ProviderConfig]]
    #: Error codes after which the session cannot go on (auth, billing, a missing model).
    fatal_error_codes: ClassVar[frozenset[str]] = frozenset()
    #: The vendor's maximum session length, and how long before it a quiet moment is used
    #: to move to a fresh vendor session.
    session_max_s: float = 3600.0
    rollover_margin_s: float = 300.0
    #: Reconnection: delays before each attempt (their count is the attempt limit).
    reconnect_delays_s: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)
    #: Caller audio kept while reconnecting (seconds; the newest is kept).
    gap_audio_max_s: float = 10.0
    #: The conversation restored into a new session, in characters of text (oldest dropped).
    history_max_chars: int = 24_000

    def __init__(self, *, api_key: str, model: str, base_url: str) -> None:
        super().__init__()
        self._api_key = api_key
        self.model = model
        self.base_url = base_url.rstrip("/")
        self._conns: dict[str, WireConn] = {}

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def model_name(self) -> str:
        return self.model

    # --- vendor hooks ----------------------------------------------------------------------

    def _url(self) -> str:
        raise NotImplementedError

    def _validate_config(self, provider_config: dict[str, Any], *, fatal: bool) -> dict[str, Any]:
        """The provider_config normalised to the keys set; ProviderError when invalid."""
        return checked_config(self.config_schema, provider_config, fatal=fatal)

    def _audio_formats(self, input_rate: int, output_rate: int) -> tuple[AudioFormat, AudioFormat]:
        raise NotImplementedError

    def _session_fields(
        self, conn: WireConn, settings: SessionSettings, *, full: bool
    ) -> dict[str, Any]:
        """The ``session`` object of a session.update: everything (``full``), or only the
        settings given (a reconfigure; None means "leave as is")."""
        raise NotImplementedError

    async def _dispatch_vendor(self, conn: WireConn, kind: str, event: dict[str, Any]) -> bool:
        """Handle a vendor-only event; True when it was one."""
        return False

    # --- connecting ------------------------------------------------------------------------

    async def connect(
        self,
        session: LiveSession,
        *,
        system_prompt: str | None,
        voice: str | None,
        tools: list[dict[str, Any]] | None,
        temperature: float | None,
        input_sample_rate: int,
        output_sample_rate: int,
        server_vad: bool = True,
        provider_config: dict[str, Any] | None = None,
    ) -> None:
        config = self._validate_config(provider_config or {}, fatal=True)
        audio_in, audio_out = self._audio_formats(input_sample_rate, output_sample_rate)
        conn = WireConn(
            session=session,
            settings=SessionSettings(
                system_prompt=system_prompt,
                voice=voice,
                tools=tools,
                temperature=temperature,
                config=config,
                server_vad=server_vad,
            ),
            audio_in=audio_in,
            audio_out=audio_out,
            gap_audio=GapAudio(int(self.gap_audio_max_s * 1000 * audio_in.bytes_per_ms())),
        )
        if input_sample_rate != audio_in.rate:
            conn.resample_in = StreamResampler(input_sample_rate, audio_in.rate)
        if output_sample_rate != audio_out.rate:
            conn.resample_out = StreamResampler(audio_out.rate, output_sample_rate)
        self._conns[session.id] = conn
        try:
            await self._open(conn)
        except BaseException:
            await self.disconnect(session)
            raise
        conn.live = True
        self._arm_limit_timer(conn)
        if conn.socket is None or conn.socket.close_code is not None:
            self._start_reconnect(conn, "connection_lost")  # lost as it went live

    async def _open(self, conn: WireConn) -> None:
        """Open a socket, configure the vendor session, wait for its confirmation."""
        socket = await open_socket(
            self._url(),
            headers={"Authorization": f"Bearer {self._api_key}"},
            vendor=self.vendor_label,
        )
        conn.socket = socket
        conn.ready = asyncio.Event()
        conn.setup_error = None
        conn.response_active = False
        conn.last_assistant = None
        conn.speaking = False
        conn.opened_at = time.monotonic()
        conn.reader = asyncio.create_task(
            self._read(conn, socket), name=f"{self.name}-read-{conn.session.id}"
        )
        update = {
            "type": "session.update",
            "session": self._session_fields(conn, conn.settings, full=True),
        }
        with contextlib.suppress(websockets.ConnectionClosed):
            # Closed already (a refused key): the reader has the server's reason.
            await self._send(conn, update)
        try:
            async with asyncio.timeout(SESSION_READY_TIMEOUT_S):
                await conn.ready.wait()
        except TimeoutError:
            raise ProviderError(
                "session_timeout", f"{self.vendor_label} did not confirm the session", fatal=True
            ) from None
        setup_error = _setup_error(conn)  # set by the reader meanwhile
        if setup_error is not None:
            code, message = setup_error
            raise ProviderError(
                code, f"{self.vendor_label} refused the session: {message}", fatal=True
            )
        if conn.socket is not socket or socket.close_code is not None:
            raise ProviderError(
                "connect_failed", f"{self.vendor_label} closed the session at once", fatal=True
            )

    # --- client events -----------------------------------------------------------------------

    async def _send(self, conn: WireConn, event: dict[str, Any]) -> None:
        if conn.closing or conn.socket is None:
            return
        conn.event_counter += 1
        event.setdefault("event_id", f"evt_rv_{conn.event_counter}")
        await conn.socket.send(json.dumps(event, separators=(",", ":")))

    async def _send_soon(self, conn: WireConn, event: dict[str, Any]) -> None:
        """Send unless the socket is gone: a lost socket is the reconnect's business."""
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._send(conn, event)

    def _conn(self, session: LiveSession) -> WireConn | None:
        return self._conns.get(session.id)

    async def send_audio(self, session: LiveSession, audio: bytes) -> None:
        conn = self._conns.get(session.id)
        if conn is None or conn.closing:
            return
        pcm = conn.resample_in.process(audio) if conn.resample_in else audio
        if not pcm:
            return
        data = conn.audio_in.encode(pcm)
        if conn.reconnecting:
            conn.gap_audio.push(data)
            return
        socket = conn.socket
        if socket is None:
            return
        # The hot path: the frame is assembled directly (base64 needs no JSON escaping)
        # and carries no event_id (nothing answers an append).
        encoded = base64.b64encode(data).decode("ascii")
        try:
            await socket.send('{"type":"input_audio_buffer.append","audio":"' + encoded + '"}')
        except websockets.ConnectionClosed:
            if conn.live and not conn.closing:  # kept for the new session
                conn.gap_audio.push(data)
                self._start_reconnect(conn, "connection_lost")

    async def _create_response(self, conn: WireConn) -> None:
        """One response in flight at a time: a second request waits for the first's end."""
        if conn.reconnecting:
            conn.pending_response = True
            return
        if conn.response_active:
            conn.pending_response = True
            return
        conn.response_active = True
        await self._send_soon(conn, {"type": "response.create"})

    async def submit_tool_result(self, session: LiveSession, call_id: str, result: str) -> None:
        conn = self._conn(session)
        if conn is None:
            return
        if conn.reconnecting:  # given to the new session with the conversation
            conn.gap_items.append(
                _HistoryEntry("function_call_output", text=result, call_id=call_id)
            )
            conn.pending_response = True
            return
        call = conn.unrestored_calls.pop(call_id, None)
        if call is not None:
            await self._send_soon(
                conn, {"type": "conversation.item.create", "item": _call_item(call)}
            )
        await self._send_soon(
            conn,
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": call_id, "output": result},
            },
        )
        await self._create_response(conn)

    async def inject_text(
        self, session: LiveSession, text: str, *, role: str = "user", silent: bool = False
    ) -> None:
        conn = self._conn(session)
        if conn is None:
            raise ProviderError(
                "not_connected", f"the {self.vendor_label} session is not open", fatal=False
            )
        kind = role if role in ("user", "system", "assistant") else "user"
        if conn.reconnecting:
            conn.gap_items.append(_HistoryEntry(kind, text=text))
            if not silent:
                conn.pending_response = True
            return
        await self._send_soon(conn, {"type": "conversation.item.create", "item": _item(kind, text)})
        if not silent:
            await self._create_response(conn)

    async def end_turn(self, session: LiveSession) -> None:
        """Manual turns (turn_detection null): the caller finished speaking."""
        conn = self._conn(session)
        if conn is None or conn.reconnecting:
            return
        await self._send_soon(conn, {"type": "input_audio_buffer.commit"})
        await self._create_response(conn)

    async def interrupt(self, session: LiveSession) -> None:
        conn = self._conn(session)
        if conn is None:
            return
        conn.pending_response = False
        if conn.response_active and not conn.reconnecting:
            await self._send_soon(conn, {"type": "response.cancel"})

    async def truncate_audio(self, session: LiveSession, played_ms: int) -> None:
        """Make the model's memory of its last reply match what the caller heard (§1.7):
        truncate at the played position, clamped to what was generated; delete the item
        when nothing was heard."""
        conn = self._conn(session)
        if conn is None or conn.last_assistant is None or conn.reconnecting:
            return
        item = conn.last_assistant
        entry = conn.history.get(item.item_id)
        if played_ms <= 0:
            conn.last_assistant = None
            self._forget(conn, item.item_id)
            await self._send_soon(
                conn, {"type": "conversation.item.delete", "item_id": item.item_id}
            )
            return
        end_ms = int(min(played_ms, item.audio_ms))
        if entry is not None and item.audio_ms > 0:
            entry.heard = end_ms / item.audio_ms
        await self._send_soon(
            conn,
            {
                "type": "conversation.item.truncate",
                "item_id": item.item_id,
                "content_index": 0,
                "audio_end_ms": end_ms,
            },
        )

    async def reconfigure(
        self,
        session: LiveSession,
        *,
        system_prompt: str | None = None,
        voice: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        temperature: float | None = None,
        provider_config: dict[str, Any] | None = None,
    ) -> None:
        conn = self._conn(session)
        if conn is None:
            raise ProviderError(
                "not_connected", f"the {self.vendor_label} session is not open", fatal=False
            )
        config = self._validate_config(provider_config, fatal=False) if provider_config else {}
        patch = SessionSettings(
            system_prompt=system_prompt,
            voice=voice,
            tools=tools,
            temperature=temperature,
            config=config,
        )
        # Kept for a new vendor session after a reconnect.
        settings = conn.settings
        if system_prompt is not None:
            settings.system_prompt = system_prompt
        if voice:
            settings.voice = voice
        if tools is not None:
            settings.tools = tools
        if temperature is not None:
            settings.temperature = temperature
        settings.config = {**settings.config, **config}
        if conn.reconnecting:
            return  # the new session is configured with the merged settings
        await self._send_soon(
            conn,
            {"type": "session.update", "session": self._session_fields(conn, patch, full=False)},
        )

    async def disconnect(self, session: LiveSession) -> None:
        conn = self._conns.pop(session.id, None)
        if conn is None:
            return
        conn.closing = True
        current = asyncio.current_task()
        for task in (conn.limit_timer, conn.reconnect_task):
            if task is not None and task is not current:
                task.cancel()
        if conn.socket is not None:
            with contextlib.suppress(Exception):
                await conn.socket.close()
        tasks = [
            task
            for task in (conn.reader, conn.limit_timer, conn.reconnect_task)
            if task is not None and task is not current
        ]
        if conn.reader is not None and conn.reader is not current:
            conn.reader.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        for conn in list(self._conns.values()):
            await self.disconnect(conn.session)

    # --- server events -----------------------------------------------------------------------

    async def _read(self, conn: WireConn, socket: ClientConnection) -> None:
        try:
            async for frame in socket:
                if conn.socket is not socket:
                    break  # replaced by a newer vendor session
                try:
                    event = json.loads(frame)
                except ValueError:
                    logger.warning("%s sent a frame that is not JSON: ignored", self.vendor_label)
                    continue
                if isinstance(event, dict):
                    try:
                        await self._dispatch(conn, event)
                    except Exception:
                        logger.exception(
                            "handling %s event %s failed", self.vendor_label, event.get("type")
                        )
        except websockets.ConnectionClosed:
            pass
        except Exception:  # a broken socket must still end in the handling below
            logger.exception("reading from %s failed", self.vendor_label)
        if conn.closing or conn.socket is not socket:
            return
        if not conn.ready.is_set():  # closed before the session was confirmed
            conn.socket = None
            conn.ready.set()
            return
        if not conn.live or conn.reconnecting:
            return
        close = socket.close_code
        logger.warning(
            "the %s connection closed unexpectedly (code %s): reconnecting",
            self.vendor_label,
            close,
        )
        self._start_reconnect(conn, "connection_lost")

    async def _dispatch(self, conn: WireConn, event: dict[str, Any]) -> None:
        session = conn.session
        kind = str(event.get("type", ""))
        if kind == "session.created":
            session.provider_session_id = str((event.get("session") or {}).get("id", ""))
        elif kind == "session.updated":
            conn.ready.set()
        elif kind == "input_audio_buffer.speech_started":
            conn.speaking = True
            await self._fire("speech_start", session)
        elif kind == "input_audio_buffer.speech_stopped":
            conn.speaking = False
            await self._fire("speech_end", session)
        elif kind == "conversation.item.input_audio_transcription.delta":
            await self._fire("transcription", session, str(event.get("delta", "")), "user", False)
        elif kind == "conversation.item.input_audio_transcription.completed":
            await self._on_user_transcript(conn, event)
        elif kind in ("conversation.item.added", "conversation.item.done"):
            self._remember_item(conn, event.get("item"))
        elif kind == "conversation.item.deleted":
            self._forget(conn, str(event.get("item_id", "")))
        elif kind == "response.created":
            conn.response_active = True
            await self._fire("response_start", session)
        elif kind == "response.output_item.added":
            item = event.get("item") or {}
            if item.get("type") == "message" and item.get("role", "assistant") == "assistant":
                conn.last_assistant = _AssistantItem(str(item.get("id", "")))
        elif kind == "response.output_audio.delta":
            await self._on_audio_delta(conn, event)
        elif kind == "response.output_audio_transcript.delta":
            await self._fire(
                "transcription", session, str(event.get("delta", "")), "assistant", False
            )
        elif kind == "response.output_audio_transcript.done":
            transcript = str(event.get("transcript", ""))
            entry = conn.history.get(str(event.get("item_id", "")))
            if entry is not None:
                self._set_text(conn, entry, transcript)
            await self._fire("transcription", session, transcript, "assistant", True)
        elif kind == "response.function_call_arguments.done":
            await self._on_function_call(conn, event)
        elif kind == "response.done":
            await self._on_response_done(conn, event)
        elif kind == "error":
            await self._on_error(conn, event)
        elif await self._dispatch_vendor(conn, kind, event):
            pass
        # Everything else (rate_limits.updated, content parts, output_item.done, …) is
        # information we do not need.

    async def _on_user_transcript(self, conn: WireConn, event: dict[str, Any]) -> None:
        transcript = str(event.get("transcript", ""))
        entry = conn.history.get(str(event.get("item_id", "")))
        if entry is not None:
            self._set_text(conn, entry, transcript)
        await self._fire("transcription", conn.session, transcript, "user", True)

    async def _on_audio_delta(self, conn: WireConn, event: dict[str, Any]) -> None:
        try:
            data = base64.b64decode(str(event.get("delta", "")), validate=True)
        except ValueError:
            logger.warning("%s audio delta is not base64: dropped", self.vendor_label)
            return
        item_id = str(event.get("item_id", ""))
        if conn.last_assistant is None or conn.last_assistant.item_id != item_id:
            conn.last_assistant = _AssistantItem(item_id)
        conn.last_assistant.audio_ms += len(data) / conn.audio_out.bytes_per_ms()
        pcm = conn.audio_out.decode(data)
        out = conn.resample_out.process(pcm) if conn.resample_out else pcm
        if out:
            await self._fire("audio", conn.session, out)

    async def _on_function_call(self, conn: WireConn, event: dict[str, Any]) -> None:
        raw = event.get("arguments", "")
        try:
            arguments: Any = json.loads(raw) if raw else {}
        except ValueError:
            arguments = raw  # the engine answers the model with a clear error
        await self._fire(
            "tool_call",
            conn.session,
            str(event.get("call_id", "")),
            str(event.get("name", "")),
            arguments,
        )

    def _usage_of(self, event: dict[str, Any]) -> dict[str, Any] | None:
        usage = (event.get("response") or {}).get("usage")
        return usage if isinstance(usage, dict) else None

    async def _on_response_done(self, conn: WireConn, event: dict[str, Any]) -> None:
        conn.response_active = False
        response = event.get("response") or {}
        usage = self._usage_of(event)
        if usage is not None:
            await self._fire("usage", conn.session, usage)
        if response.get("status") == "failed":
            details = response.get("status_details") or {}
            error = details.get("error") or {}
            await self._fire(
                "error",
                conn.session,
                str(error.get("code") or "response_failed"),
                str(error.get("message") or "the response failed"),
                False,
            )
        await self._end_response(conn)
        if conn.pending_response:
            conn.pending_response = False
            await self._create_response(conn)

    async def _end_response(self, conn: WireConn) -> None:
        if conn.resample_out is not None:
            tail = conn.resample_out.flush()
            if tail:
                await self._fire("audio", conn.session, tail)
        await self._fire("response_end", conn.session)

    async def _on_error(self, conn: WireConn, event: dict[str, Any]) -> None:
        error = event.get("error") or {}
        code = str(error.get("code") or error.get("type") or "error")
        message = str(error.get("message") or f"{self.vendor_label} reported an error")
        if not conn.ready.is_set():  # the session.update was refused: connect() raises
            conn.setup_error = (code, message)
            conn.ready.set()
            return
        if code in SESSION_EXPIRED_CODES:  # the length limit came first: a fresh session
            logger.info("%s session expired: reconnecting", self.vendor_label)
            self._start_reconnect(conn, "session_expired")
            return
        if code in BENIGN_ERROR_CODES or _is_truncate_race(error):
            logger.info("%s: %s (%s), ignored", self.vendor_label, code, message)
            return
        if code == "conversation_already_has_active_response":
            conn.pending_response = True
            conn.response_active = True
            logger.info("%s: a response is already active; asking again after it", code)
            return
        await self._fire("error", conn.session, code, message, code in self.fatal_error_codes)

    # --- the conversation, kept for a new session -------------------------------------------

    def _remember_item(self, conn: WireConn, item: Any) -> None:
        if not isinstance(item, dict) or not item.get("id"):
            return
        item_id = str(item["id"])
        kind = item.get("type")
        entry = conn.history.get(item_id)
        if kind == "message":
            role = str(item.get("role", "user"))
            text = _message_text(item)
            if entry is None:
                entry = _HistoryEntry(role if role in ("user", "assistant", "system") else "user")
                self._add_history(conn, item_id, entry)
            if text:
                self._set_text(conn, entry, text)
        elif kind == "function_call":
            if entry is None:
                entry = _HistoryEntry("function_call")
                self._add_history(conn, item_id, entry)
            entry.call_id = str(item.get("call_id", ""))
            entry.name = str(item.get("name", ""))
            self._set_text(conn, entry, str(item.get("arguments") or ""))
        elif kind == "function_call_output":
            if entry is None:
                entry = _HistoryEntry("function_call_output", call_id=str(item.get("call_id")))
                self._add_history(conn, item_id, entry)
            self._set_text(conn, entry, str(item.get("output") or ""))

    def _add_history(self, conn: WireConn, item_id: str, entry: _HistoryEntry) -> None:
        conn.history[item_id] = entry
        conn.history_chars += entry.size()
        self._trim_history(conn)

    def _set_text(self, conn: WireConn, entry: _HistoryEntry, text: str) -> None:
        conn.history_chars += len(text) - len(entry.text)
        entry.text = text
        self._trim_history(conn)

    def _forget(self, conn: WireConn, item_id: str) -> None:
        entry = conn.history.pop(item_id, None)
        if entry is not None:
            conn.history_chars -= entry.size()

    def _trim_history(self, conn: WireConn) -> None:
        while conn.history_chars > self.history_max_chars and len(conn.history) > 1:
            _, oldest = conn.history.popitem(last=False)
            conn.history_chars -= oldest.size()

    def _restore_events(self, conn: WireConn) -> list[dict[str, Any]]:
        """conversation.item.create events re-creating the finished turns as text. The
        history is rebuilt under the items' new ids (the server echoes them back)."""
        events: list[dict[str, Any]] = []
        entries = [*conn.history.values(), *conn.gap_items]
        conn.history.clear()
        conn.history_chars = 0
        conn.gap_items.clear()
        outputs = {e.call_id for e in entries if e.kind == "function_call_output"}
        calls = {e.call_id for e in entries if e.kind == "function_call"}
        for entry in entries:
            if entry.kind == "function_call":
                if entry.call_id not in outputs:
                    # Still running: sent with its result (a lone call would make the model
                    # wait for an answer that is not in this session).
                    conn.unrestored_calls[entry.call_id] = entry
                    continue
                item = _call_item(entry)
            elif entry.kind == "function_call_output":
                if entry.call_id not in calls:
                    continue  # its call was trimmed away: the vendor refuses a lone output
                item = {
                    "type": "function_call_output",
                    "call_id": entry.call_id,
                    "output": entry.text,
                }
            else:
                text = _cut_words(entry.text, entry.heard) if entry.heard < 1.0 else entry.text
                if not text.strip():
                    continue
                entry.text, entry.heard = text, 1.0
                item = _item(entry.kind, text)
            item_id = f"rv_{secrets.token_hex(12)}"
            item["id"] = item_id
            self._add_history(conn, item_id, entry)
            events.append({"type": "conversation.item.create", "item": item})
        return events

    # --- reconnection ------------------------------------------------------------------------

    def _arm_limit_timer(self, conn: WireConn) -> None:
        if conn.limit_timer is not None and conn.limit_timer is not asyncio.current_task():
            conn.limit_timer.cancel()
        conn.limit_timer = asyncio.create_task(
            self._session_limit(conn), name=f"{self.name}-limit-{conn.session.id}"
        )

    async def _session_limit(self, conn: WireConn) -> None:
        """Before the vendor's session-length limit, move to a fresh session in a quiet
        moment (no reply playing, the caller not mid-sentence), at the latest just before
        the limit."""
        rollover_at = conn.opened_at + max(0.0, self.session_max_s - self.rollover_margin_s)
        deadline = conn.opened_at + max(0.0, self.session_max_s - 5.0)
        await asyncio.sleep(max(0.0, rollover_at - time.monotonic()))
        # A coarse look at two flags, 5 times a second, for at most the margin: cheaper and
        # simpler than making every writer of them signal an event.
        while (conn.response_active or conn.speaking) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        if not conn.closing and not conn.reconnecting:
            self._start_reconnect(conn, "session_limit")

    def _start_reconnect(self, conn: WireConn, reason: str) -> None:
        if conn.closing or conn.reconnecting:
            return
        conn.reconnecting = True
        conn.reconnect_task = asyncio.create_task(
            self._reconnect(conn, reason), name=f"{self.name}-reconnect-{conn.session.id}"
        )

    async def _reconnect(self, conn: WireConn, reason: str) -> None:
        started = time.monotonic()
        old = conn.socket
        conn.socket = None  # the old reader ignores what follows
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        if conn.response_active:  # cut short: the engine's reply ends here
            conn.response_active = False
            conn.pending_response = True
            await self._end_response(conn)
        conn.last_assistant = None
        if conn.resample_out is not None:
            conn.resample_out.reset()
        failure: ProviderError | None = None
        attempts = 0
        for delay in self.reconnect_delays_s:
            attempts += 1
            if delay:
                await asyncio.sleep(delay)
            if conn.closing:
                return
            try:
                await self._open(conn)
            except ProviderError as error:
                failure = error
                logger.warning(
                    "%s reconnect attempt %d failed: %s", self.vendor_label, attempts, error.code
                )
                half_open = _socket_of(conn)  # _open may have left one
                if half_open is not None:
                    with contextlib.suppress(Exception):
                        await half_open.close()
                    conn.socket = None
                if error.code in self.fatal_error_codes or error.code == "invalid_api_key":
                    break
                continue
            failure = None
            break
        if _closing(conn):  # ended while reconnecting
            return
        if failure is not None:
            conn.reconnecting = False
            conn.closing = True
            self._conns.pop(conn.session.id, None)
            await self._fire(
                "error",
                conn.session,
                "connection_lost",
                f"the connection to {self.vendor_label} was lost and could not be restored "
                f"after {attempts} attempt(s): {failure.message}",
                True,
            )
            return
        try:
            await self._restore(conn)
        except websockets.ConnectionClosed:
            pass
        socket = _socket_of(conn)
        if socket is None or socket.close_code is not None:
            # Lost again while restoring: start over (the history is already rebuilt).
            conn.reconnecting = False
            self._start_reconnect(conn, "connection_lost")
            return
        gap_ms = round((time.monotonic() - started) * 1000)
        dropped_ms = round(conn.gap_audio.take_dropped() / conn.audio_in.bytes_per_ms())
        self._arm_limit_timer(conn)
        logger.info(
            "%s session restored (%s) after %d ms, %d attempt(s)",
            self.vendor_label,
            reason,
            gap_ms,
            attempts,
        )
        await self._fire(
            "reconnect",
            conn.session,
            {
                "reason": reason,
                "attempts": attempts,
                "gap_ms": gap_ms,
                "audio_dropped_ms": dropped_ms,
                "restored_items": len(conn.history),
                "provider_session_id": conn.session.provider_session_id,
            },
        )

    async def _restore(self, conn: WireConn) -> None:
        """The new session gets the conversation, then the caller's audio of the gap."""
        for event in self._restore_events(conn):
            await self._send(conn, event)
        for data in conn.gap_audio.drain():
            for start in range(0, len(data), 32 * 1024):
                chunk = base64.b64encode(data[start : start + 32 * 1024]).decode("ascii")
                await self._send(conn, {"type": "input_audio_buffer.append", "audio": chunk})
        conn.reconnecting = False
        if conn.pending_response and not conn.speaking:
            conn.pending_response = False
            await self._create_response(conn)


def _setup_error(conn: WireConn) -> tuple[str, str] | None:
    return conn.setup_error


def _closing(conn: WireConn) -> bool:
    return conn.closing


def _socket_of(conn: WireConn) -> ClientConnection | None:
    """Read anew (mypy would keep an earlier narrowing across the awaits between)."""
    return conn.socket


def _item(kind: str, text: str) -> dict[str, Any]:
    """A text message item (GA: assistant content is output_text, others input_text)."""
    content_type = "output_text" if kind == "assistant" else "input_text"
    return {
        "type": "message",
        "role": kind,
        "content": [{"type": content_type, "text": text}],
    }


def _call_item(entry: _HistoryEntry) -> dict[str, Any]:
    return {
        "type": "function_call",
        "call_id": entry.call_id,
        "name": entry.name,
        "arguments": entry.text or "{}",
    }


def _message_text(item: dict[str, Any]) -> str:
    parts = []
    for part in item.get("content") or []:
        if isinstance(part, dict):
            text = part.get("text") or part.get("transcript")
            if isinstance(text, str):
                parts.append(text)
    return "".join(parts)


def _cut_words(text: str, fraction: float) -> str:
    """The part of ``text`` that was heard, cut at a word boundary."""
    if fraction >= 1.0:
        return text
    cut = int(len(text) * max(0.0, fraction))
    head = text[:cut]
    if cut < len(text) and " " in head:
        head = head[: head.rindex(" ")]
    return head.rstrip() + ("…" if head else "")


def _is_truncate_race(error: dict[str, Any]) -> bool:
    """Truncating past the audio the server kept (it may have trimmed it meanwhile)."""
    return error.get("param") == "audio_end_ms" or "already shorter than" in str(
        error.get("message", "")
    )
