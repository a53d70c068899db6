"""A protocol-faithful fake of the OpenAI Realtime API (GA interface) over WebSocket.

Written against /work/shared/reference/provider-protocols.md section 1: GA event names and
fields only (``response.output_audio.delta``, ``conversation.item.added``/``done``, ...), every
server event carries an ``event_id``, errors are ``error`` events that leave the session open.

Audio: ``session.audio.input.format`` / ``session.audio.output.format`` are honoured:
``{"type": "audio/pcm", "rate": 24000}`` (the only PCM rate GA accepts: any other rate gets
the ``invalid_value`` error event), ``{"type": "audio/pcmu"}`` and ``{"type": "audio/pcma"}``
(G.711 at 8 kHz, one byte a sample). Input milliseconds (``input_audio_buffer.commit``'s 100 ms
minimum, VAD positions) are counted in the input format, reply audio is encoded in the output
format. The G.711 codec here is written from the G.711 formulas (the Sun reference code that
CPython's ``audioop`` also follows), deliberately independent of the production codec.

Voice activity is driven by the test, in one of two ways:

* :meth:`FakeOpenAIRealtime.user_speaks` declares a user turn (no audio needed);
* ``FakeOpenAIRealtime(auto_vad=True)`` detects turns in the appended audio itself (an energy
  detector: speech starts once the level stays above ``speech_rms_threshold`` for 100 ms, and
  stops after the session's ``silence_duration_ms`` of quiet). Each detected turn takes its
  transcript from ``fake.user_transcripts`` (a queue the test fills), else "(unintelligible)".

Both paths emit the same server_vad sequence. A manual ``input_audio_buffer.commit`` also
takes its transcript from ``user_transcripts`` (one entry per committed user turn).

Other test controls: :meth:`FakeOpenAIRealtime.expire_session` ends the connection as the
service does at the session's maximum length (``max_session_s``, 60 minutes by default, also
reflected in ``session.created``'s ``expires_at``); :meth:`FakeOpenAIRealtime.drop_connection`
cuts it, after which a client may reconnect: every connection gets its own session and
conversation (``session_of(i)``, ``items_of(i)``, ``received_per_connection[i]``); an optional
``client_validator`` sees every raw text frame before it is handled and its complaints land in
``invalid_client_frames``.

Usage::

    async with FakeOpenAIRealtime() as fake:
        url = f"{fake.base_url}/realtime?model=gpt-realtime"
        ...  # connect a client with ``Authorization: Bearer sk-test``
        await fake.wait_for("session.update")
        await fake.user_speaks("what's the weather?")

The class is also the base of the xAI fake (tests/fakes/xai_realtime.py): everything that
differs between the two vendors is an overridable hook (the ``_``-prefixed methods in the
"vendor hooks" section).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import json
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, urlsplit

import numpy as np
from numpy.typing import NDArray
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

JSON = dict[str, Any]

SAMPLE_RATE = 24_000
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000  # PCM16 mono at 24 kHz: 48 bytes per millisecond
G711_RATE = 8_000
CHUNK_MS = 40
MAX_EVENT_BYTES = 16 * 1024 * 1024  # input_audio_buffer.append may carry up to 15 MiB
VAD_FRAME_MS = 10
SPEECH_START_MS = 100  # the level must stay above the threshold this long to start a turn
DEFAULT_USER_TRANSCRIPT = "(unintelligible)"

CLIENT_EVENT_TYPES = frozenset(
    {
        "conversation.item.create",
        "conversation.item.delete",
        "conversation.item.retrieve",
        "conversation.item.truncate",
        "input_audio_buffer.append",
        "input_audio_buffer.clear",
        "output_audio_buffer.clear",
        "input_audio_buffer.commit",
        "response.cancel",
        "response.create",
        "session.update",
    }
)

SERVER_VAD_DEFAULTS: JSON = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
SEMANTIC_VAD_DEFAULTS: JSON = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}
# semantic_vad has no silence_duration_ms / prefix_padding_ms; auto VAD uses these for it.
SEMANTIC_VAD_SILENCE_MS = 500
SEMANTIC_VAD_PREFIX_MS = 300
# Parts of the session that session.update replaces wholesale instead of merging into.
_REPLACED_KEYS = frozenset(
    {"turn_detection", "format", "transcription", "noise_reduction", "tools", "tool_choice"}
)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(11)}"


# ---------------------------------------------------------------------- G.711 and formats
#
# G.711 after the Sun Microsystems reference implementation (g711.c), which CPython's audioop
# also follows: mu-law on the top 14 bits of the sample, A-law on the top 13 bits.

_SEGMENT_END_ULAW = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_SEGMENT_END_ALAW = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159


def _pcm16_samples(pcm16: bytes) -> NDArray[np.int32]:
    usable = len(pcm16) - len(pcm16) % 2
    return np.frombuffer(pcm16[:usable], dtype="<i2").astype(np.int32)


def ulaw_encode(pcm16: bytes) -> bytes:
    """PCM16 LE samples to G.711 mu-law bytes."""
    value = _pcm16_samples(pcm16) >> 2
    mask = np.where(value < 0, 0x7F, 0xFF)
    value = np.minimum(np.abs(value), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    segment = np.searchsorted(_SEGMENT_END_ULAW, value)
    code: NDArray[Any] = (segment << 4) | ((value >> (np.minimum(segment, 7) + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code) ^ mask
    return bytes(code.astype(np.uint8).tobytes())


def _ulaw_table() -> NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    value = (((code & 0x0F) << 3) + _ULAW_BIAS) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, _ULAW_BIAS - value, value - _ULAW_BIAS).astype(np.int16)


def alaw_encode(pcm16: bytes) -> bytes:
    """PCM16 LE samples to G.711 A-law bytes."""
    value = _pcm16_samples(pcm16) >> 3
    mask = np.where(value >= 0, 0xD5, 0x55)
    value = np.where(value >= 0, value, -value - 1)
    segment = np.searchsorted(_SEGMENT_END_ALAW, value)
    shift = np.clip(segment, 1, 7)
    code: NDArray[Any] = (segment << 4) | ((value >> shift) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code) ^ mask
    return bytes(code.astype(np.uint8).tobytes())


def _alaw_table() -> NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    segment = (code & 0x70) >> 4
    value = ((code & 0x0F) << 4) + np.where(segment == 0, 8, 0x108)
    value = np.where(segment > 1, value << np.maximum(segment - 1, 0), value)
    return np.where(code & 0x80, value, -value).astype(np.int16)


_ULAW_DECODE = _ulaw_table()
_ALAW_DECODE = _alaw_table()


def ulaw_decode(data: bytes) -> bytes:
    """G.711 mu-law bytes to PCM16 LE."""
    return bytes(_ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes())


def alaw_decode(data: bytes) -> bytes:
    """G.711 A-law bytes to PCM16 LE."""
    return bytes(_ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes())


@dataclass(frozen=True)
class AudioFormat:
    """A session audio format: ``audio/pcm`` (PCM16 LE mono) at ``rate``, or G.711 at 8 kHz."""

    type: str
    rate: int

    @classmethod
    def from_session(cls, value: Any) -> AudioFormat:
        if isinstance(value, dict) and value.get("type") in ("audio/pcmu", "audio/pcma"):
            return cls(str(value["type"]), G711_RATE)
        rate = value.get("rate") if isinstance(value, dict) else None
        return cls("audio/pcm", rate if isinstance(rate, int) else SAMPLE_RATE)

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.type == "audio/pcm" else 1

    def milliseconds(self, size: int) -> float:
        """Duration of ``size`` bytes in this format."""
        return size / self.bytes_per_sample * 1000 / self.rate

    def size(self, milliseconds: float) -> int:
        """Bytes holding ``milliseconds`` of audio in this format (whole samples)."""
        return int(self.rate * milliseconds / 1000) * self.bytes_per_sample

    def decode(self, data: bytes) -> bytes:
        """This format's bytes to PCM16 LE at ``rate``."""
        if self.type == "audio/pcmu":
            return ulaw_decode(data)
        if self.type == "audio/pcma":
            return alaw_decode(data)
        return data[: len(data) - len(data) % 2]

    def encode(self, pcm16: bytes) -> bytes:
        """PCM16 LE at ``rate`` to this format's bytes."""
        if self.type == "audio/pcmu":
            return ulaw_encode(pcm16)
        if self.type == "audio/pcma":
            return alaw_encode(pcm16)
        return pcm16


def _tone(
    duration_ms: int, *, rate: int = SAMPLE_RATE, freq: float = 440.0, amplitude: int = 800
) -> bytes:
    """A quiet sine tone, PCM16 LE mono at ``rate``."""
    samples = np.arange(rate * duration_ms // 1000)
    wave = amplitude * np.sin(2 * np.pi * freq * samples / rate)
    return bytes(wave.astype("<i2").tobytes())


def _rms(pcm16: bytes) -> float:
    samples = _pcm16_samples(pcm16).astype(np.float64)
    return float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0


def _split_words(text: str, parts: int) -> list[str]:
    """``text`` cut into at most ``parts`` pieces that concatenate back to ``text``."""
    words = [w + " " for w in text.split(" ")]
    if words:
        words[-1] = words[-1][:-1]
    parts = max(1, min(parts, len(words)))
    size = math.ceil(len(words) / parts)
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]


def _merge(base: JSON, update: JSON) -> None:
    for key, value in update.items():
        if (
            key not in _REPLACED_KEYS
            and isinstance(value, dict)
            and isinstance(base.get(key), dict)
        ):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def _with_vad_defaults(turn_detection: Any) -> Any:
    if not isinstance(turn_detection, dict):
        return turn_detection
    kind = turn_detection.get("type")
    defaults = SEMANTIC_VAD_DEFAULTS if kind == "semantic_vad" else SERVER_VAD_DEFAULTS
    return {**defaults, **turn_detection}


class ClientProtocolError(Exception):
    """A client event the real server would answer with an ``error`` event."""

    def __init__(
        self,
        code: str | None,
        message: str,
        *,
        param: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.type = type


@dataclass
class _Response:
    id: str
    task: asyncio.Task[None] | None = None
    cancel_reason: str | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _SpeechDetector:
    """Energy VAD state of one connection (auto_vad mode)."""

    position_ms: float = 0.0  # input audio analysed so far
    pending: bytearray = field(default_factory=bytearray)  # PCM16 short of a whole frame
    loud_ms: float = 0.0  # length of the current run of loud frames
    onset_ms: float = 0.0  # where that run began
    quiet_ms: float = 0.0  # length of the current quiet run, while speaking
    speaking: bool = False
    start_ms: float = 0.0  # audio_start_ms of the turn in progress
    item_id: str | None = None


@dataclass
class _Connection:
    index: int
    ws: ServerConnection
    session: JSON
    events: list[JSON] = field(default_factory=list)
    sent: list[JSON] = field(default_factory=list)
    items: dict[str, JSON] = field(default_factory=dict)
    audio_ms: dict[str, int] = field(default_factory=dict)  # assistant item id -> audio sent
    input_buffer: bytearray = field(default_factory=bytearray)  # uncommitted, input format
    buffer_start_ms: float = 0.0  # position of input_buffer[0] in the input stream
    input_ms: float = 0.0  # all input audio appended, in ms of the format it came in
    input_pcm: bytearray = field(default_factory=bytearray)  # all input, decoded to PCM16
    input_rate: int = SAMPLE_RATE
    vad_cursor_ms: int = 0
    detector: _SpeechDetector = field(default_factory=_SpeechDetector)
    response: _Response | None = None
    audio_output_sent: bool = False
    conversation_id: str = field(default_factory=lambda: _new_id("conv"))
    opened_at: float = field(default_factory=time.time)

    @property
    def input_ms_total(self) -> int:
        return int(self.input_ms)


class FakeOpenAIRealtime:
    """Fake ``wss://api.openai.com/v1/realtime`` (GA) on 127.0.0.1, any free port.

    Test-visible state (all connections, in order):

    * ``connections``: WebSocket connections opened (including ones refused for auth)
    * ``request_headers`` / ``request_paths``: the handshake of each connection
    * ``received``: every client event (decoded dict), in order; ``received_per_connection``
      holds the same split by connection
    * ``sent``: every server event sent, in order; ``sent_per_connection`` split by connection
    * ``audio_bytes``: audio bytes received through ``input_audio_buffer.append`` (as sent,
      in the input format); :meth:`input_pcm16` gives them decoded
    * ``tool_outputs``: ``function_call_output`` items received
    * ``truncations``: accepted ``conversation.item.truncate`` events
    * ``invalid_client_frames``: ``(raw frame, error)`` for every frame ``client_validator``
      rejected (the frame is then handled as usual)
    * ``user_transcripts``: queue of transcripts for user turns that auto_vad detects (and
      for manual commits); "(unintelligible)" when empty
    """

    vendor: ClassVar[str] = "openai"
    client_event_types: ClassVar[frozenset[str]] = CLIENT_EVENT_TYPES
    min_commit_ms: ClassVar[float] = 100.0

    def __init__(
        self,
        *,
        api_key: str = "sk-test",
        next_reply: str = "Hello from the fake.",
        reply_audio_ms: int = 600,
        chunk_interval_s: float = 0.005,
        voice: str = "marin",
        instructions: str = "",
        auto_vad: bool = False,
        speech_rms_threshold: float = 300.0,
        max_session_s: int = 60 * 60,
        client_validator: Callable[[str], None] | None = None,
    ) -> None:
        self.api_key = api_key
        self.next_reply = next_reply
        self.reply_audio_ms = reply_audio_ms
        self.chunk_interval_s = chunk_interval_s
        self.default_voice = voice
        self.default_instructions = instructions
        self.auto_vad = auto_vad
        self.speech_rms_threshold = speech_rms_threshold
        self.max_session_s = max_session_s
        self.client_validator = client_validator
        self.next_tool_call: tuple[str, dict[str, Any]] | None = None
        self.user_transcripts: deque[str] = deque()

        self.connections = 0
        self.request_headers: list[Headers] = []
        self.request_paths: list[str] = []
        self.received: list[JSON] = []
        self.received_per_connection: list[list[JSON]] = []
        self.sent: list[JSON] = []
        self.sent_per_connection: list[list[JSON]] = []
        self.audio_bytes = 0
        self.tool_outputs: list[JSON] = []
        self.truncations: list[JSON] = []
        self.invalid_client_frames: list[tuple[str, str]] = []

        self._server: Server | None = None
        self._current: _Connection | None = None
        self._all: list[_Connection] = []
        self._ready = 0
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self.base_url = ""

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            max_size=MAX_EVENT_BYTES,
            compression=None,
        )
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.base_url = f"ws://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._server.close()
        await self._server.wait_closed()

    # ------------------------------------------------------------------ test controls

    @property
    def session(self) -> JSON:
        """The current connection's session object (as last sent to the client)."""
        return self._conn().session

    @property
    def items(self) -> dict[str, JSON]:
        """The current connection's conversation items by id, in conversation order."""
        return self._conn().items

    def session_of(self, index: int) -> JSON:
        """The session of connection ``index`` (0-based, in connection order)."""
        return self._all[index].session

    def items_of(self, index: int) -> dict[str, JSON]:
        """The conversation items of connection ``index``: every connection has its own."""
        return self._all[index].items

    def input_pcm16(self, index: int | None = None) -> bytes:
        """All audio the client appended on connection ``index`` (default: the current one),
        decoded to PCM16 LE mono at the input format's rate (see :meth:`input_rate`; a
        connection that changes its input format mid-way gets the decoded pieces joined)."""
        return bytes(self._conn(index).input_pcm)

    def input_rate(self, index: int | None = None) -> int:
        """Sample rate of :meth:`input_pcm16` (24000, or 8000 for G.711 on OpenAI)."""
        return self._conn(index).input_rate

    @property
    def response_active(self) -> bool:
        conn = self._current
        return conn is not None and conn.response is not None

    def received_types(self) -> list[str]:
        return [str(e.get("type")) for e in self.received]

    def sent_types(self) -> list[str]:
        return [str(e.get("type")) for e in self.sent]

    async def wait_for(self, event_type: str, count: int = 1, timeout: float = 5) -> list[JSON]:  # noqa: ASYNC109
        """Wait until the client has sent ``count`` events of ``event_type`` (all connections);
        returns those events."""

        def matching() -> list[JSON]:
            return [e for e in self.received if e.get("type") == event_type]

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(matching()) >= count)
        return matching()

    async def wait_for_sent(
        self,
        event_type: str,
        count: int = 1,
        timeout: float = 5,  # noqa: ASYNC109
    ) -> list[JSON]:
        """Wait until the fake has sent ``count`` events of ``event_type`` (all connections)."""

        def matching() -> list[JSON]:
            return [e for e in self.sent if e.get("type") == event_type]

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(matching()) >= count)
        return matching()

    async def wait_for_connections(self, count: int = 1, timeout: float = 5) -> None:  # noqa: ASYNC109
        """Wait until ``count`` clients have connected and been greeted (``session.created``)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self._ready >= count)

    async def wait_idle(self, timeout: float = 5) -> None:  # noqa: ASYNC109
        """Wait until the current connection has no response in flight."""
        async with asyncio.timeout(timeout):
            while (conn := self._current) is not None and conn.response is not None:
                task = conn.response.task
                if task is None:
                    await asyncio.sleep(0)
                else:
                    await asyncio.shield(task)

    async def user_speaks(self, transcript: str, *, duration_ms: int = 800) -> None:
        """Server VAD detects a user turn on the current connection.

        Emits speech_started (cancelling an in-flight response when ``interrupt_response``),
        speech_stopped, committed, conversation.item.added/done for the user item, the input
        transcription events when ``audio.input.transcription`` is configured, and starts a
        response when ``create_response``. Returns once the response has *started*; use
        :meth:`wait_idle` to wait for its end.
        """
        conn = self._conn()
        vad = self._turn_detection(conn.session)
        if not isinstance(vad, dict):
            raise RuntimeError("turn_detection is null: the server does no VAD")
        start_ms = max(conn.vad_cursor_ms, conn.input_ms_total - duration_ms)
        end_ms = start_ms + duration_ms
        item_id = await self._speech_started(conn, start_ms)
        await self._speech_stopped(conn, item_id, end_ms, transcript, duration_ms)
        conn.vad_cursor_ms = end_ms + int(vad.get("silence_duration_ms", 500))

    async def drop_connection(self, *, code: int | None = None, reason: str = "") -> None:
        """Close the current connection: abruptly (TCP abort, the client sees 1006) when
        ``code`` is None, else with that close code."""
        conn = self._conn()
        if code is None:
            conn.ws.transport.abort()
        else:
            await conn.ws.close(code, reason)

    async def expire_session(self) -> None:
        """End the current connection the way the service does at its maximum session length:
        the ``error`` event, then the close frame."""
        conn = self._conn()
        error, close_code, close_reason = self._expiry()
        with contextlib.suppress(ConnectionClosed):
            await self._send_error(conn, error)
            await conn.ws.close(close_code, close_reason)

    async def send_error(
        self,
        code: str | None,
        message: str,
        type: str = "invalid_request_error",
        *,
        param: str | None = None,
    ) -> None:
        """Send an ``error`` event on the current connection (the session stays open)."""
        await self._send_error(
            self._conn(), ClientProtocolError(code, message, param=param, type=type)
        )

    # ------------------------------------------------------------------ vendor hooks

    def _handshake_refusal(self, connection: ServerConnection, request: Request) -> Response | None:
        """An HTTP response refusing the WebSocket upgrade, or None to accept it."""
        return None

    def _connection_refusal(
        self, headers: Headers, query: dict[str, list[str]]
    ) -> ClientProtocolError | None:
        """An error to send right after the handshake before closing, or None."""
        # The real service completes the handshake, then reports bad credentials as an error
        # event and closes with 3000 "invalid_request_error.invalid_api_key".
        authorization = headers.get("Authorization")
        if authorization != f"Bearer {self.api_key}":
            message = (
                "Incorrect API key provided."
                if authorization
                else "You didn't provide an API key. Provide it in the Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            return ClientProtocolError("invalid_api_key", message)
        if not query.get("model", [""])[0] and "call_id" not in query:
            return ClientProtocolError(
                "missing_required_parameter", "Missing required parameter: 'model'.", param="model"
            )
        return None

    def _default_session(self, model: str) -> JSON:
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": _new_id("sess"),
            "model": model,
            "output_modalities": ["audio"],
            "instructions": self.default_instructions,
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "include": None,
            "expires_at": int(time.time()) + self.max_session_s,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": SAMPLE_RATE},
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": dict(SERVER_VAD_DEFAULTS),
                },
                "output": {
                    "format": {"type": "audio/pcm", "rate": SAMPLE_RATE},
                    "voice": self.default_voice,
                    "speed": 1.0,
                },
            },
        }

    async def _greet(self, conn: _Connection) -> None:
        await self._send(conn, {"type": "session.created", "session": conn.session})

    def _background(self, conn: _Connection) -> list[Coroutine[Any, Any, None]]:
        """Coroutines that run for as long as the connection (server keep-alives...)."""
        return []

    def _turn_detection(self, session: JSON) -> Any:
        return session["audio"]["input"].get("turn_detection")

    def _input_format(self, session: JSON) -> AudioFormat:
        return AudioFormat.from_session(session["audio"]["input"].get("format"))

    def _output_format(self, session: JSON) -> AudioFormat:
        return AudioFormat.from_session(session["audio"]["output"].get("format"))

    def _updated_session(self, conn: _Connection, update: Any) -> JSON:
        """The session after ``session.update`` (raises ClientProtocolError to refuse it)."""
        if not isinstance(update, dict):
            raise ClientProtocolError(
                "missing_required_parameter",
                "Missing required parameter: 'session'.",
                param="session",
            )
        if "type" not in update:
            raise ClientProtocolError(
                "missing_required_parameter",
                "Missing required parameter: 'session.type'.",
                param="session.type",
            )
        if update["type"] != "realtime":
            raise ClientProtocolError(
                "invalid_value",
                f"Invalid value: {update['type']!r}. Supported values are: 'realtime'.",
                param="session.type",
            )
        if "model" in update and update["model"] != conn.session["model"]:
            raise ClientProtocolError(
                "invalid_value", "The session's model cannot be changed.", param="session.model"
            )
        audio: JSON = update["audio"] if isinstance(update.get("audio"), dict) else {}
        for direction in ("input", "output"):
            part = audio.get(direction)
            if isinstance(part, dict) and "format" in part:
                self._check_openai_format(part["format"], f"session.audio.{direction}.format")
        voice = (
            audio.get("output", {}).get("voice") if isinstance(audio.get("output"), dict) else None
        )
        if (
            voice is not None
            and voice != conn.session["audio"]["output"]["voice"]
            and conn.audio_output_sent
        ):
            raise ClientProtocolError(
                "cannot_update_voice",
                "Cannot update a conversation's voice if assistant audio is present.",
                param="session.audio.output.voice",
            )
        session = copy.deepcopy(conn.session)
        _merge(session, update)
        session["audio"]["input"]["turn_detection"] = _with_vad_defaults(
            session["audio"]["input"].get("turn_detection")
        )
        return session

    @staticmethod
    def _check_openai_format(value: Any, param: str) -> None:
        # GA AudioPCM.rate is Literal[24000]; pcmu/pcma carry no rate (8 kHz G.711).
        kinds = ("audio/pcm", "audio/pcmu", "audio/pcma")
        if not isinstance(value, dict) or value.get("type") not in kinds:
            kind = value.get("type") if isinstance(value, dict) else value
            raise ClientProtocolError(
                "invalid_value",
                f"Invalid value: {kind!r}. Supported values are: "
                + ", ".join(f"'{k}'" for k in kinds)
                + ".",
                param=f"{param}.type",
            )
        if value["type"] == "audio/pcm" and value.get("rate", SAMPLE_RATE) != SAMPLE_RATE:
            raise ClientProtocolError(
                "invalid_value",
                f"Invalid value: {value.get('rate')!r}. Supported values are: 24000.",
                param=f"{param}.rate",
            )

    def _transcription_config(self, session: JSON) -> Any:
        return session["audio"]["input"].get("transcription")

    def _response_modalities(self, conn: _Connection, params: JSON) -> list[str]:
        return list(params.get("output_modalities") or conn.session["output_modalities"])

    def _response_refusal(self, conn: _Connection) -> ClientProtocolError | None:
        """An error that replaces the response about to start, or None."""
        return None

    def _response_body(self, conn: _Connection, response: _Response, params: JSON) -> JSON:
        session = conn.session
        audio_cfg = copy.deepcopy(session["audio"]["output"])
        audio_cfg.pop("speed", None)
        return {
            "object": "realtime.response",
            "id": response.id,
            "status": "in_progress",
            "status_details": None,
            "output": [],
            "conversation_id": conn.conversation_id,
            "output_modalities": self._response_modalities(conn, params),
            "max_output_tokens": params.get("max_output_tokens", session["max_output_tokens"]),
            "audio": {"output": audio_cfg},
            "usage": None,
            "metadata": params.get("metadata"),
        }

    async def _after_response_created(self, conn: _Connection) -> None:
        await self._send(
            conn,
            {
                "type": "rate_limits.updated",
                "rate_limits": [
                    {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
                    {"name": "tokens", "limit": 40000, "remaining": 38000, "reset_seconds": 3.0},
                ],
            },
        )

    def _usage(self, input_tokens: int, output_tokens: int, audio_out: int) -> JSON:
        return {
            "total_tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "input_token_details": {
                "text_tokens": input_tokens // 2,
                "audio_tokens": input_tokens - input_tokens // 2,
                "image_tokens": 0,
                "cached_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {
                "text_tokens": output_tokens - audio_out,
                "audio_tokens": audio_out,
            },
        }

    def _response_done_event(self, body: JSON) -> JSON:
        return {"type": "response.done", "response": body}

    async def _item_added(self, conn: _Connection, item: JSON, previous: str | None) -> None:
        await self._send(
            conn,
            {
                "type": "conversation.item.added",
                "previous_item_id": previous,
                "item": copy.deepcopy(item),
            },
        )

    async def _item_done(self, conn: _Connection, item: JSON, previous: str | None) -> None:
        await self._send(
            conn,
            {
                "type": "conversation.item.done",
                "previous_item_id": previous,
                "item": copy.deepcopy(item),
            },
        )

    async def _before_speech_stopped(
        self, conn: _Connection, item_id: str, transcript: str
    ) -> None:
        """Events the server sends while the user is still speaking (streamed partials)."""

    async def _user_turn_committed(
        self, conn: _Connection, item: JSON, previous: str | None, transcript: str, duration_ms: int
    ) -> None:
        """After ``input_audio_buffer.committed``: the user item and its transcription."""
        await self._add_item(conn, item, previous)
        await self._transcribe(conn, item, transcript, duration_ms)

    def _commit_refusal(self, conn: _Connection) -> ClientProtocolError | None:
        return None

    async def _send_truncated(
        self, conn: _Connection, item: JSON, end_ms: int, duration_ms: int
    ) -> None:
        # GA: the server deletes the transcript of a truncated item.
        for part in item.get("content", []):
            if part.get("type") == "output_audio":
                part["transcript"] = ""
        await self._send(
            conn,
            {
                "type": "conversation.item.truncated",
                "item_id": item["id"],
                "content_index": 0,
                "audio_end_ms": end_ms,
            },
        )

    def _deleted_event(self, item_id: str) -> JSON:
        return {"type": "conversation.item.deleted", "item_id": item_id}

    def _expiry(self) -> tuple[ClientProtocolError, int, str]:
        """The error event and close frame that end a session at its maximum duration.

        Observed wire behaviour: openai/openai-realtime-twilio-demo#7 and
        twilio-samples/speech-assistant-openai-realtime-api-python#10 quote the event
        ``{"type":"invalid_request_error","code":"session_expired","message":"Your session hit
        the maximum duration of N minutes.","param":null,"event_id":null}``;
        pollen-robotics/reachy_mini_conversation_app#134 shows the close that follows:
        ``1001 (going away) Your session hit the maximum duration of 60 minutes.``
        """
        message = f"Your session hit the maximum duration of {self.max_session_s // 60} minutes."
        return ClientProtocolError("session_expired", message), 1001, message

    def _unknown_event_error(self, kind: Any) -> ClientProtocolError:
        return ClientProtocolError(
            "invalid_value",
            f"Invalid value: {kind!r}. Supported values are: "
            + ", ".join(f"'{t}'" for t in sorted(self.client_event_types))
            + ".",
            param="type",
        )

    def _item_types(self) -> tuple[str, ...]:
        return ("message", "function_call", "function_call_output")

    async def _item_created(self, conn: _Connection, item: JSON) -> bool:
        """Hook for vendor-specific item types; True when the item was fully handled."""
        return False

    def _error_code(self, name: str) -> str | None:
        """The error code the vendor uses for one of the fake's named error situations."""
        return name

    # ------------------------------------------------------------------ connection handling

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != "/v1/realtime":
            return connection.respond(HTTPStatus.NOT_FOUND, "Not found\n")
        return self._handshake_refusal(connection, request)

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.connections += 1
        self.request_headers.append(ws.request.headers)
        self.request_paths.append(ws.request.path)
        query = parse_qs(urlsplit(ws.request.path).query)
        model = query.get("model", [""])[0]
        conn = _Connection(index=self.connections - 1, ws=ws, session=self._default_session(model))
        conn.input_rate = self._input_format(conn.session).rate
        self._all.append(conn)
        self.received_per_connection.append(conn.events)
        self.sent_per_connection.append(conn.sent)
        refusal = self._connection_refusal(ws.request.headers, query)
        if refusal is not None:
            await self._refuse(conn, refusal)
            return
        self._current = conn
        background: list[asyncio.Task[None]] = []
        try:
            await self._greet(conn)
            self._ready += 1
            await self._notify()
            background = [asyncio.create_task(c) for c in self._background(conn)]
            async for raw in ws:
                await self._on_message(conn, raw)
        except ConnectionClosed:
            pass
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if conn.response is not None:
                conn.response.cancel_reason = "client_cancelled"
                conn.response.cancelled.set()

    async def _refuse(self, conn: _Connection, error: ClientProtocolError) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._send_error(conn, error)
            await conn.ws.close(3000, f"invalid_request_error.{error.code}")

    async def _on_message(self, conn: _Connection, raw: str | bytes) -> None:
        if isinstance(raw, str) and self.client_validator is not None:
            try:
                self.client_validator(raw)
            except Exception as exc:  # the hook's verdict is recorded, never raised
                self.invalid_client_frames.append((raw, str(exc) or repr(exc)))
        try:
            event = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            await self._send_error(
                conn,
                ClientProtocolError(
                    "invalid_json",
                    "We could not parse the JSON body of your request. Expected a JSON object.",
                ),
            )
            return
        if not isinstance(event, dict):
            await self._send_error(
                conn, ClientProtocolError("invalid_json", "Expected a JSON object.")
            )
            return
        conn.events.append(event)
        self.received.append(event)
        await self._notify()
        try:
            await self._dispatch(conn, event)
        except ClientProtocolError as error:
            await self._send_error(conn, error, client_event_id=event.get("event_id"))

    async def _dispatch(self, conn: _Connection, event: JSON) -> None:
        kind = event.get("type")
        if kind not in self.client_event_types:
            raise self._unknown_event_error(kind)
        if kind == "session.update":
            conn.session = self._updated_session(conn, event.get("session"))
            await self._send(conn, {"type": "session.updated", "session": conn.session})
        elif kind == "input_audio_buffer.append":
            await self._append(conn, event)
        elif kind == "input_audio_buffer.commit":
            await self._commit(conn)
        elif kind == "input_audio_buffer.clear":
            self._clear_input(conn)
            await self._send(conn, {"type": "input_audio_buffer.cleared"})
        elif kind == "output_audio_buffer.clear":
            raise ClientProtocolError(
                "invalid_value",
                "output_audio_buffer.clear is only supported for WebRTC and SIP connections.",
                param="type",
            )
        elif kind == "conversation.item.create":
            await self._item_create(conn, event)
        elif kind == "conversation.item.retrieve":
            item = self._item(conn, event.get("item_id"))
            await self._send(conn, {"type": "conversation.item.retrieved", "item": item})
        elif kind == "conversation.item.delete":
            item = self._item(conn, event.get("item_id"))
            del conn.items[item["id"]]
            await self._send(conn, self._deleted_event(item["id"]))
        elif kind == "conversation.item.truncate":
            await self._truncate(conn, event)
        elif kind == "response.create":
            if conn.response is not None:
                raise ClientProtocolError(
                    self._error_code("conversation_already_has_active_response"),
                    "Conversation already has an active response in progress: "
                    f"{conn.response.id}. Wait until the response is finished before "
                    "creating a new one.",
                )
            params = event.get("response")
            self._start_response(conn, params if isinstance(params, dict) else {})
        elif kind == "response.cancel":
            if conn.response is None or (event.get("response_id") not in (None, conn.response.id)):
                raise ClientProtocolError(
                    self._error_code("response_cancel_not_active"),
                    "Cancellation failed: no active response found.",
                )
            await self._cancel_response(conn, "client_cancelled")

    # ------------------------------------------------------------------ input audio and VAD

    async def _append(self, conn: _Connection, event: JSON) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise ClientProtocolError(
                "missing_required_parameter",
                "Missing required parameter: 'audio'.",
                param="audio",
            )
        try:
            data = base64.b64decode(audio, validate=True)
        except binascii.Error as exc:
            raise ClientProtocolError(
                "invalid_value",
                "Invalid 'audio'. Expected base64-encoded audio bytes.",
                param="audio",
            ) from exc
        fmt = self._input_format(conn.session)
        conn.input_buffer.extend(data)
        conn.input_ms += fmt.milliseconds(len(data))
        self.audio_bytes += len(data)
        pcm = fmt.decode(data)
        conn.input_pcm.extend(pcm)
        conn.input_rate = fmt.rate
        await self._detect_speech(conn, pcm, fmt.rate)

    def _clear_input(self, conn: _Connection) -> None:
        conn.input_buffer.clear()
        conn.buffer_start_ms = conn.input_ms
        detector = conn.detector
        conn.detector = _SpeechDetector(position_ms=detector.position_ms)

    def _consume_input(self, conn: _Connection, end_ms: float) -> None:
        """Commit point: drop buffered audio up to ``end_ms`` (the rest stays buffered)."""
        fmt = self._input_format(conn.session)
        size = min(len(conn.input_buffer), fmt.size(max(0.0, end_ms - conn.buffer_start_ms)))
        del conn.input_buffer[:size]
        conn.buffer_start_ms = conn.input_ms - fmt.milliseconds(len(conn.input_buffer))

    async def _detect_speech(self, conn: _Connection, pcm: bytes, rate: int) -> None:
        """auto_vad: an energy detector over 10 ms frames of the decoded input."""
        detector = conn.detector
        vad = self._turn_detection(conn.session)
        if not self.auto_vad or not isinstance(vad, dict):
            position = detector.position_ms + len(pcm) / 2 * 1000 / rate
            conn.detector = _SpeechDetector(position_ms=position)
            return
        frame_size = rate * VAD_FRAME_MS // 1000 * 2
        frame_ms = frame_size / 2 * 1000 / rate
        detector.pending.extend(pcm)
        while len(detector.pending) >= frame_size:
            frame = bytes(detector.pending[:frame_size])
            del detector.pending[:frame_size]
            frame_start = detector.position_ms
            detector.position_ms += frame_ms
            loud = _rms(frame) >= self.speech_rms_threshold
            if not detector.speaking:
                if not loud:
                    detector.loud_ms = 0.0
                    continue
                if detector.loud_ms == 0.0:
                    detector.onset_ms = frame_start
                detector.loud_ms += frame_ms
                if detector.loud_ms + 1e-6 >= SPEECH_START_MS:
                    prefix = vad.get("prefix_padding_ms", SEMANTIC_VAD_PREFIX_MS)
                    start = max(conn.vad_cursor_ms, int(detector.onset_ms - prefix), 0)
                    detector.speaking = True
                    detector.quiet_ms = 0.0
                    detector.start_ms = start
                    detector.item_id = await self._speech_started(conn, start)
            elif loud:
                detector.quiet_ms = 0.0
            else:
                detector.quiet_ms += frame_ms
                silence = vad.get("silence_duration_ms", SEMANTIC_VAD_SILENCE_MS)
                if detector.quiet_ms + 1e-6 >= silence:
                    end = int(round(detector.position_ms))
                    item_id = detector.item_id or _new_id("item")
                    detector.speaking = False
                    detector.loud_ms = 0.0
                    detector.item_id = None
                    transcript = (
                        self.user_transcripts.popleft()
                        if self.user_transcripts
                        else DEFAULT_USER_TRANSCRIPT
                    )
                    duration = end - int(detector.start_ms)
                    await self._speech_stopped(conn, item_id, end, transcript, duration)
                    conn.vad_cursor_ms = end

    async def _speech_started(self, conn: _Connection, start_ms: int) -> str:
        """``input_audio_buffer.speech_started``; barge-in cancels the response in flight."""
        vad = self._turn_detection(conn.session)
        item_id = _new_id("item")
        await self._send(
            conn,
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": start_ms,
                "item_id": item_id,
            },
        )
        if (
            conn.response is not None
            and isinstance(vad, dict)
            and vad.get("interrupt_response", True)
        ):
            await self._cancel_response(conn, "turn_detected")
        return item_id

    async def _speech_stopped(
        self, conn: _Connection, item_id: str, end_ms: int, transcript: str, duration_ms: int
    ) -> None:
        """speech_stopped, the commit, the user item with its transcription, the response."""
        vad = self._turn_detection(conn.session)
        await self._before_speech_stopped(conn, item_id, transcript)
        await self._send(
            conn,
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": end_ms,
                "item_id": item_id,
            },
        )
        previous = self._last_item_id(conn)
        self._consume_input(conn, end_ms)
        await self._send(
            conn,
            {
                "type": "input_audio_buffer.committed",
                "previous_item_id": previous,
                "item_id": item_id,
            },
        )
        await self._user_turn_committed(
            conn, self._user_audio_item(item_id), previous, transcript, duration_ms
        )
        create = not isinstance(vad, dict) or vad.get("create_response", True)
        if create and conn.response is None:
            self._start_response(conn, {})

    @staticmethod
    def _user_audio_item(item_id: str) -> JSON:
        return {
            "id": item_id,
            "type": "message",
            "object": "realtime.item",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }

    async def _commit(self, conn: _Connection) -> None:
        refusal = self._commit_refusal(conn)
        if refusal is not None:
            raise refusal
        fmt = self._input_format(conn.session)
        buffered_ms = fmt.milliseconds(len(conn.input_buffer))
        if buffered_ms < self.min_commit_ms or not conn.input_buffer:
            raise ClientProtocolError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{self.min_commit_ms:.0f}ms of audio, but buffer only has "
                f"{buffered_ms:.2f}ms of audio.",
            )
        item_id = _new_id("item")
        previous = self._last_item_id(conn)
        conn.input_buffer.clear()
        conn.buffer_start_ms = conn.input_ms
        await self._send(
            conn,
            {
                "type": "input_audio_buffer.committed",
                "previous_item_id": previous,
                "item_id": item_id,
            },
        )
        # The committed audio is a user turn like a VAD one: transcribed when the session
        # configures transcription (its text comes from ``user_transcripts``).
        transcript = (
            self.user_transcripts.popleft() if self.user_transcripts else DEFAULT_USER_TRANSCRIPT
        )
        await self._user_turn_committed(
            conn, self._user_audio_item(item_id), previous, transcript, int(buffered_ms)
        )

    # ------------------------------------------------------------------ client events

    async def _item_create(self, conn: _Connection, event: JSON) -> None:
        given = event.get("item")
        if not isinstance(given, dict) or given.get("type") not in self._item_types():
            raise ClientProtocolError("invalid_value", "Invalid 'item.type'.", param="item.type")
        item = copy.deepcopy(given)
        if await self._item_created(conn, item):
            return
        item.setdefault("id", _new_id("item"))
        if item["id"] in conn.items:
            raise ClientProtocolError(
                "item_already_exists",
                f"Item with id {item['id']!r} already exists.",
                param="item.id",
            )
        item["object"] = "realtime.item"
        item.setdefault("status", "completed")
        if item["type"] == "function_call_output":
            if not isinstance(item.get("call_id"), str) or not isinstance(item.get("output"), str):
                raise ClientProtocolError(
                    "missing_required_parameter",
                    "Missing required parameter: 'item.call_id' or 'item.output'.",
                    param="item",
                )
            self.tool_outputs.append(item)
        previous = event.get("previous_item_id")
        if previous is None:
            previous = self._last_item_id(conn)
        elif previous != "root" and previous not in conn.items:
            raise ClientProtocolError(
                "invalid_value",
                f"previous_item_id {previous!r} not found.",
                param="previous_item_id",
            )
        await self._add_item(conn, item, None if previous == "root" else previous)

    async def _truncate(self, conn: _Connection, event: JSON) -> None:
        item = self._item(conn, event.get("item_id"))
        if item.get("role") != "assistant" or item["id"] not in conn.audio_ms:
            raise ClientProtocolError(
                "invalid_value",
                "Only assistant messages with audio can be truncated.",
                param="item_id",
            )
        content_index = event.get("content_index")
        if content_index != 0:
            raise ClientProtocolError(
                "invalid_value",
                "Invalid 'content_index': only 0 is supported.",
                param="content_index",
            )
        end_ms = event.get("audio_end_ms")
        if not isinstance(end_ms, int) or isinstance(end_ms, bool) or end_ms < 0:
            raise ClientProtocolError(
                "invalid_value", "Invalid 'audio_end_ms'.", param="audio_end_ms"
            )
        duration = conn.audio_ms[item["id"]]
        if end_ms > duration:
            raise ClientProtocolError(
                "invalid_value",
                f"Audio content of {duration}ms is already shorter than {end_ms}ms",
                param="audio_end_ms",
            )
        conn.audio_ms[item["id"]] = end_ms
        self.truncations.append(event)
        await self._send_truncated(conn, item, end_ms, duration)

    # ------------------------------------------------------------------ responses

    def _start_response(self, conn: _Connection, params: JSON, *, text: str | None = None) -> None:
        response = _Response(id=_new_id("resp"))
        conn.response = response
        response.task = asyncio.create_task(self._run_response(conn, response, params, text))
        self._tasks.add(response.task)
        response.task.add_done_callback(self._tasks.discard)

    async def _cancel_response(self, conn: _Connection, reason: str) -> None:
        response = conn.response
        if response is None:
            return
        response.cancel_reason = reason
        response.cancelled.set()
        if response.task is not None and response.task is not asyncio.current_task():
            await asyncio.shield(response.task)

    async def _run_response(
        self, conn: _Connection, response: _Response, params: JSON, text: str | None
    ) -> None:
        try:
            refusal = self._response_refusal(conn)
            if refusal is not None:
                await self._send_error(conn, refusal)
            else:
                await self._stream_response(conn, response, params, text)
        except ConnectionClosed:
            pass
        finally:
            if conn.response is response:
                conn.response = None

    async def _pause(self, response: _Response) -> bool:
        """Yield between chunks; True when the response has been cancelled."""
        await asyncio.sleep(self.chunk_interval_s)
        return response.cancelled.is_set()

    async def _stream_response(
        self, conn: _Connection, response: _Response, params: JSON, text: str | None
    ) -> None:
        modalities = self._response_modalities(conn, params)
        body = self._response_body(conn, response, params)
        await self._send(conn, {"type": "response.created", "response": copy.deepcopy(body)})
        await self._after_response_created(conn)
        tool_call = None
        if text is None:
            tool_call, self.next_tool_call = self.next_tool_call, None
        cancelled = await self._pause(response)
        output_tokens = 0
        if not cancelled and tool_call is not None:
            item, cancelled = await self._stream_tool_call(conn, response, tool_call)
            output_tokens = len(item["arguments"]) // 4 + 5
            body["output"].append(item)
        elif not cancelled:
            item, cancelled, output_tokens = await self._stream_message(
                conn, response, modalities, self.next_reply if text is None else text
            )
            body["output"].append(item)
        status = "cancelled" if cancelled else "completed"
        body["status"] = status
        if cancelled:
            body["status_details"] = {
                "type": "cancelled",
                "reason": response.cancel_reason or "client_cancelled",
            }
        input_tokens = 120 + 20 * len(conn.items)
        audio_out = output_tokens if "audio" in modalities and tool_call is None else 0
        body["usage"] = self._usage(input_tokens, output_tokens, audio_out)
        await self._send(conn, self._response_done_event(body))

    async def _stream_tool_call(
        self, conn: _Connection, response: _Response, tool_call: tuple[str, dict[str, Any]]
    ) -> tuple[JSON, bool]:
        name, arguments = tool_call
        args = json.dumps(arguments)
        item: JSON = {
            "id": _new_id("item"),
            "type": "function_call",
            "object": "realtime.item",
            "status": "in_progress",
            "name": name,
            "call_id": _new_id("call"),
            "arguments": "",
        }
        base = {"response_id": response.id, "output_index": 0}
        previous = self._last_item_id(conn)
        conn.items[item["id"]] = item
        await self._send(
            conn, {"type": "response.output_item.added", **base, "item": copy.deepcopy(item)}
        )
        await self._item_added(conn, item, previous)
        cancelled = False
        pieces = [args[i : i + 8] for i in range(0, len(args), 8)] or [""]
        for piece in pieces:
            if cancelled := await self._pause(response):
                break
            item["arguments"] += piece
            await self._send(
                conn,
                {
                    "type": "response.function_call_arguments.delta",
                    **base,
                    "item_id": item["id"],
                    "call_id": item["call_id"],
                    "delta": piece,
                },
            )
        if not cancelled:
            await self._send(
                conn,
                {
                    "type": "response.function_call_arguments.done",
                    **base,
                    "item_id": item["id"],
                    "call_id": item["call_id"],
                    "name": name,
                    "arguments": args,
                },
            )
        item["status"] = "incomplete" if cancelled else "completed"
        await self._send(
            conn, {"type": "response.output_item.done", **base, "item": copy.deepcopy(item)}
        )
        await self._item_done(conn, item, previous)
        return copy.deepcopy(item), cancelled

    async def _stream_message(
        self, conn: _Connection, response: _Response, modalities: Iterable[str], text: str
    ) -> tuple[JSON, bool, int]:
        audio = "audio" in modalities
        item: JSON = {
            "id": _new_id("item"),
            "type": "message",
            "object": "realtime.item",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        base = {"response_id": response.id, "output_index": 0}
        ref = {**base, "item_id": item["id"], "content_index": 0}
        previous = self._last_item_id(conn)
        conn.items[item["id"]] = item
        await self._send(
            conn, {"type": "response.output_item.added", **base, "item": copy.deepcopy(item)}
        )
        await self._item_added(conn, item, previous)
        part: JSON = (
            {"type": "output_audio", "transcript": ""}
            if audio
            else {"type": "output_text", "text": ""}
        )
        await self._send(
            conn, {"type": "response.content_part.added", **ref, "part": copy.deepcopy(part)}
        )
        item["content"].append(part)
        cancelled = False
        said = ""
        if audio:
            fmt = self._output_format(conn.session)
            conn.audio_ms[item["id"]] = 0
            encoded = fmt.encode(_tone(self.reply_audio_ms, rate=fmt.rate))
            chunk_size = max(fmt.bytes_per_sample, fmt.size(CHUNK_MS))
            chunks = max(1, math.ceil(len(encoded) / chunk_size))
            pieces = _split_words(text, chunks)
            for n in range(chunks):
                if cancelled := await self._pause(response):
                    break
                chunk = encoded[n * chunk_size : (n + 1) * chunk_size]
                await self._send(
                    conn,
                    {
                        "type": "response.output_audio.delta",
                        **ref,
                        "delta": base64.b64encode(chunk).decode(),
                    },
                )
                conn.audio_output_sent = True
                conn.audio_ms[item["id"]] += round(fmt.milliseconds(len(chunk)))
                if n < len(pieces):
                    said += pieces[n]
                    await self._send(
                        conn,
                        {
                            "type": "response.output_audio_transcript.delta",
                            **ref,
                            "delta": pieces[n],
                        },
                    )
            # The transcript is generated ahead of the audio: on cancellation the full text
            # stays the transcript (the client truncates to what was heard).
            part["transcript"] = text
            await self._send(conn, {"type": "response.output_audio.done", **ref})
            await self._send(
                conn,
                {"type": "response.output_audio_transcript.done", **ref, "transcript": text},
            )
        else:
            for piece in _split_words(text, 8):
                if cancelled := await self._pause(response):
                    break
                said += piece
                await self._send(
                    conn, {"type": "response.output_text.delta", **ref, "delta": piece}
                )
            part["text"] = said
            await self._send(conn, {"type": "response.output_text.done", **ref, "text": said})
        await self._send(
            conn, {"type": "response.content_part.done", **ref, "part": copy.deepcopy(part)}
        )
        item["status"] = "incomplete" if cancelled else "completed"
        await self._send(
            conn, {"type": "response.output_item.done", **base, "item": copy.deepcopy(item)}
        )
        await self._item_done(conn, item, previous)
        return copy.deepcopy(item), cancelled, max(1, len(text) // 4) * (6 if audio else 1)

    # ------------------------------------------------------------------ helpers

    def _conn(self, index: int | None = None) -> _Connection:
        if index is not None:
            return self._all[index]
        if self._current is None:
            raise RuntimeError("no client is connected to the fake")
        return self._current

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    @staticmethod
    def _last_item_id(conn: _Connection) -> str | None:
        return next(reversed(conn.items), None)

    @staticmethod
    def _item(conn: _Connection, item_id: Any) -> JSON:
        if not isinstance(item_id, str) or item_id not in conn.items:
            raise ClientProtocolError(
                "item_not_found",
                f"Conversation item with item_id {item_id!r} not found.",
                param="item_id",
            )
        return conn.items[item_id]

    async def _add_item(self, conn: _Connection, item: JSON, previous: str | None) -> None:
        conn.items[item["id"]] = item
        await self._item_added(conn, item, previous)
        await self._item_done(conn, item, previous)

    async def _transcribe(
        self, conn: _Connection, item: JSON, transcript: str, duration_ms: int
    ) -> None:
        """Input transcription events: sent only when the session configures transcription."""
        config = self._transcription_config(conn.session)
        if not isinstance(config, dict):
            return
        ref = {"item_id": item["id"], "content_index": 0}
        for piece in _split_words(transcript, 4):
            await self._send(
                conn,
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    **ref,
                    "delta": piece,
                },
            )
        usage: JSON
        if config.get("model") == "whisper-1":
            usage = {"type": "duration", "seconds": round(duration_ms / 1000, 3)}
        else:
            audio_tokens = max(1, duration_ms // 100)
            out = max(1, len(transcript) // 4)
            usage = {
                "type": "tokens",
                "input_tokens": audio_tokens,
                "output_tokens": out,
                "total_tokens": audio_tokens + out,
                "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
            }
        item["content"][0]["transcript"] = transcript
        await self._send(
            conn,
            {
                "type": "conversation.item.input_audio_transcription.completed",
                **ref,
                "transcript": transcript,
                "usage": usage,
            },
        )

    async def _send(self, conn: _Connection, event: JSON) -> None:
        event = {"event_id": _new_id("event"), **event}
        await conn.ws.send(json.dumps(event))
        self.sent.append(event)
        conn.sent.append(event)
        await self._notify()

    async def _send_error(
        self,
        conn: _Connection,
        error: ClientProtocolError,
        *,
        client_event_id: Any = None,
    ) -> None:
        await self._send(
            conn,
            {
                "type": "error",
                "error": {
                    "type": error.type,
                    "code": error.code,
                    "message": error.message,
                    "param": error.param,
                    "event_id": client_event_id,
                },
            },
        )
