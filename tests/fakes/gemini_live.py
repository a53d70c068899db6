"""A protocol-faithful fake of the Gemini Live API (BidiGenerateContent) over WebSocket.

Written against /work/shared/reference/provider-protocols.md section 2 and the vendor's own
material. Each behaviour names its source and a confidence: **high** = the ``google-genai``
SDK (types, docstrings, converters) or the ai.google.dev / Firebase docs; **medium** = the
same wire behaviour reported independently by several projects that run against the live
service (close reasons quoted verbatim), or a maintained integration (LiveKit
``livekit-plugins-google`` realtime); **low** = one report, or inferred.

Endpoint and auth
  ``ws://127.0.0.1:<port>/ws/google.ai.generativelanguage.v1beta.GenerativeService.
  BidiGenerateContent?key=K`` (``v1alpha`` too), key in ``?key=`` or the ``x-goog-api-key``
  header (the SDK's way) [high]. ``base_url`` is ``ws://127.0.0.1:<port>``: what replaces
  ``wss://generativelanguage.googleapis.com`` for a client; ``url`` is the whole v1beta
  endpoint without the key. Another path gets HTTP 404 [low]. The key is checked when the
  first frame arrives (clients send ``setup`` at once, so the timing is invisible to them):
  a wrong key closes with **1007 "API key not valid. Please pass a valid API key."**
  [medium: many projects match on exactly that reason]; no key closes with **1008 "Method
  doesn't allow unregistered callers ..."** (truncated) [medium-low: one report].

Close reasons are cut to the 123 bytes a close frame holds, as the service's are (its GoAway
abort reason is observed ending mid-word, "... once the session durat") [high].

Client frames (exactly one top-level field; camelCase or snake_case, as the service's
proto-JSON parser accepts [high: SDK sends snake_case in places])
  * ``setup`` must come first and only once; anything else first, or a second ``setup``,
    closes with **1007 "Request contains an invalid argument."** [medium: litellm #31494,
    "a second setup closes the socket with 1007 Request contains an invalid argument"].
    Two top-level fields, or a top-level field that is not one of setup / clientContent /
    realtimeInput / toolResponse, close with 1007 too [low for the reason text: proto-JSON's
    "Invalid JSON payload received. Unknown name ..."]; a frame that is not JSON likewise.
  * ``setup.model`` must be ``models/<name>`` with a name in ``models`` (constructor), else
    **1008 "<model> is not found for API version v1beta, or is not supported for
    bidiGenerateContent."** [high: quoted verbatim by many]. A voice outside the 30
    prebuilt voices, a ``responseModalities`` that is not exactly one of AUDIO/TEXT, or a
    resumed session whose model differs close with 1007 [low]. Everything else in the setup
    is kept (``setup``, ``setups``) and drives the behaviour below; the fake does not model
    thinking, affective dialog, proactivity or compression beyond recording them.
  * ``realtimeInput``: ``audio {data, mimeType: "audio/pcm;rate=16000"}`` (any rate is
    taken; no rate means 16 kHz [high]); ``text``; ``audioStreamEnd`` (ends a turn in
    progress); ``activityStart`` / ``activityEnd`` only when
    ``automaticActivityDetection.disabled`` (else 1007 [high that it is not allowed, low
    for the close]); ``video`` is recorded. ``data`` is proto-JSON ``bytes``: standard or
    URL-safe base64, padding optional [high: protobuf JSON mapping; the SDK sends URL-safe].
    ``mediaChunks`` closes with **1007 "realtime_input.media_chunks is deprecated. Use
    audio, video, or text instead."** [medium-high: quoted verbatim by many; older models
    accepted it: ``accept_media_chunks=True``]. Bad base64 closes with 1007 [low for the text].
  * ``clientContent {turns, turnComplete}``: appended to the history; interrupts a
    generation in progress; ``turnComplete: true`` starts a model turn [high: API
    reference].
  * ``toolResponse.functionResponses [{id, name, response}]``: answers pending calls; once
    every call of a ``toolCall`` is answered the model speaks. Responses to unknown or
    cancelled ids are recorded in ``unmatched_tool_responses`` and otherwise ignored [low].

Server frames (proto3 JSON: default values are left out, so ``resumable: false`` with an
empty handle is ``{"sessionResumptionUpdate": {}}`` [medium])
  * ``{"setupComplete": {}}`` [high].
  * A model turn: ``serverContent.modelTurn.parts[{inlineData: {mimeType:
    "audio/pcm;rate=24000", data}}]`` frames (PCM16 24 kHz) [high], each followed by
    ``serverContent.outputTranscription {text}`` when ``outputAudioTranscription`` is set
    (its own frames, ordered independently of the audio [high: SDK docstring]); then
    ``serverContent.generationComplete``; then ``serverContent.turnComplete`` in the same
    frame as ``usageMetadata`` [medium: observed logs]; then, when ``sessionResumption`` is
    set, ``sessionResumptionUpdate {newHandle, resumable: true}`` [medium: observed logs;
    "only sent if SessionResumptionConfig was set" high: Firebase reference]. TEXT modality
    streams ``modelTurn.parts[{text}]`` instead.
  * User turns: ``serverContent.inputTranscription {text}`` pieces when
    ``inputAudioTranscription`` is set, before the model's answer [high for the event,
    low for the exact timing]. The user's words come from ``user_speaks(transcript)`` or,
    with ``auto_vad``, from ``user_transcripts`` (else "(unintelligible)").
  * Tool calls: ``next_tool_call = (name, args)`` makes the next model turn open with
    ``toolCall.functionCalls [{id, name, args}]`` (and, with resumption on, a
    not-resumable ``sessionResumptionUpdate``) and wait for the ``toolResponse`` [high].
  * Barge-in (``activityHandling`` START_OF_ACTIVITY_INTERRUPTS, the default): user speech
    during a generation cancels it: ``serverContent.interrupted``, then
    ``toolCallCancellation {ids}`` for calls still unanswered, then ``turnComplete`` (no
    ``generationComplete`` in an interrupted turn) [high: SDK docstrings "interrupted >
    turn_complete"; the order of the cancellation among them is low]. The service assumes
    real-time playback: speech that starts after ``turnComplete`` but before the turn's audio
    would have finished playing still gets ``interrupted`` [medium: LiveKit handles both
    "turn_complete -> interrupted" and "interrupted -> turn_complete"]. Only what was sent
    stays in the history [high: docs]. NO_INTERRUPTION: the model finishes, the user's turn
    is answered after it.
  * ``goAway {timeLeft: "<n>s"}`` (protobuf Duration) via :meth:`FakeGeminiLive.go_away`;
    a connection still open when the time is up is closed with **1008 "Connection aborted
    because the client failed to close the connection after receiving a GoAway signal once
    the session durat"** [medium-high: quoted verbatim by several; one report shows 1011
    "Deadline expired before operation could complete." instead].

Session resumption
  Sessions outlive connections. Each resumable update issues a new handle naming the
  conversation as it stood then; a new connection whose ``setup.sessionResumption.handle``
  is one of them gets that conversation back (later turns dropped), with the new setup's
  config (the model must stay the same) [high: docs]. Handles stay valid for
  ``handle_ttl_s`` (2 h) after the session's last connection closed [high: docs];
  :meth:`FakeGeminiLive.expire_handles` ends that early. An expired handle closes with
  **1008 "BidiGenerateContent session expired"** [low: one report]; a handle never issued
  with 1007 [low]. ``refuse_resume_while_open=True`` refuses (1011) a resume while an
  earlier connection of the session is still open [low: one report says the live service
  does this].

Voice activity: ``user_speaks(transcript)`` declares a turn without audio; with
``auto_vad=True`` the appended audio is analysed by the OpenAI fake's energy detector
(:class:`EnergyVad`): speech starts once the level stays above ``speech_rms_threshold`` for
``prefixPaddingMs`` (default 100 ms) and ends after ``silenceDurationMs`` (default 800 ms
[low: "approximately 800ms" quoted from the docs by one project]) of quiet.

Test controls mirror tests/fakes/openai_realtime.py: ``connections``, ``request_headers``,
``request_paths``, ``received``/``received_per_connection``, ``sent``/``sent_per_connection``,
``wait_for``, ``wait_for_sent``, ``wait_for_connections``, ``wait_idle``, ``user_speaks``,
``next_reply``, ``next_tool_call``, ``drop_connection``, ``go_away``,
``send_resumption_update``, ``expire_handles``, ``input_pcm16``, ``setup``/``setups``,
``conversation``, ``sessions``, ``issued_handles``, ``tool_responses``,
``cancelled_tool_calls``, ``closes``, ``client_validator``/``invalid_client_frames``; a Gemini
"error" is a close, so ``drop_connection(code=..., reason=...)`` is also how a test sends one.

Checked against the real client: tests/fakes/test_gemini_fake.py runs google-genai's own
Live client (``client.aio.live.connect``) against this fake.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import json
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.fakes.openai_realtime import (
    CHUNK_MS,
    DEFAULT_USER_TRANSCRIPT,
    SPEECH_START_MS,
    VAD_FRAME_MS,
    _rms,
    _SpeechDetector,
    _split_words,
    _tone,
)

JSON = dict[str, Any]

INPUT_RATE = 16_000
OUTPUT_RATE = 24_000
OUTPUT_MIME = f"audio/pcm;rate={OUTPUT_RATE}"
MAX_FRAME_BYTES = 16 * 1024 * 1024
API_PATH = re.compile(
    r"^/ws/google\.ai\.generativelanguage\.(?P<version>v1beta|v1alpha)"
    r"\.GenerativeService\.BidiGenerateContent$"
)
V1BETA_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
DEFAULT_MODELS = frozenset(
    {
        "gemini-2.5-flash-native-audio-preview-12-2025",
        "gemini-2.5-flash-native-audio-preview-09-2025",
        "gemini-2.5-flash-native-audio-latest",
        "gemini-live-2.5-flash-preview",
        "gemini-2.0-flash-live-001",
    }
)
# The 30 prebuilt voices of the native-audio models (ai.google.dev speech generation docs).
PREBUILT_VOICES = frozenset(
    name.lower()
    for name in (
        "Zephyr Puck Charon Kore Fenrir Leda Orus Aoede Callirrhoe Autonoe Enceladus Iapetus "
        "Umbriel Algieba Despina Erinome Algenib Rasalgethi Laomedeia Achernar Alnilam Schedar "
        "Gacrux Pulcherrima Achird Zubenelgenubi Vindemiatrix Sadachbia Sadaltager Sulafat"
    ).split()
)
# BidiGenerateContentSetup's fields (google-genai LiveClientSetup + realtimeInputConfig).
SETUP_FIELDS = frozenset(
    spelling
    for name in (
        "model generationConfig systemInstruction tools realtimeInputConfig sessionResumption "
        "contextWindowCompression inputAudioTranscription outputAudioTranscription proactivity "
        "explicitVadSignal historyConfig avatarConfig safetySettings labels"
    ).split()
    for spelling in (name, re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower())
)
HANDLE_TTL_S = 2 * 60 * 60
DEFAULT_SILENCE_MS = 800
CLOSE_REASON_BYTES = 123

INVALID_ARGUMENT = "Request contains an invalid argument."
API_KEY_INVALID = "API key not valid. Please pass a valid API key."
UNREGISTERED_CALLER = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
GO_AWAY_ABORT = (
    "Connection aborted because the client failed to close the connection after receiving "
    "a GoAway signal once the session duration limit was reached."
)
MEDIA_CHUNKS_DEPRECATED = (
    "realtime_input.media_chunks is deprecated. Use audio, video, or text instead."
)
SESSION_EXPIRED = "BidiGenerateContent session expired"
INTERNAL_ERROR = "Internal error encountered."

# Client message kinds, by wire name (camelCase and snake_case) -> canonical camelCase.
_CLIENT_KINDS = {
    "setup": "setup",
    "clientContent": "clientContent",
    "client_content": "clientContent",
    "realtimeInput": "realtimeInput",
    "realtime_input": "realtimeInput",
    "toolResponse": "toolResponse",
    "tool_response": "toolResponse",
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _get(obj: Any, name: str) -> Any:
    """``obj[name]`` under its camelCase or snake_case spelling (None when absent)."""
    if not isinstance(obj, dict):
        return None
    if name in obj:
        return obj[name]
    return obj.get(_snake(name))


def _has(obj: Any, name: str) -> bool:
    return isinstance(obj, dict) and (name in obj or _snake(name) in obj)


def _truncate_reason(reason: str) -> str:
    data = reason.encode()[:CLOSE_REASON_BYTES]
    return data.decode("utf-8", errors="ignore")


def duration(seconds: float) -> str:
    """A protobuf Duration in its JSON form: ``"50s"``, ``"0.500s"``, ``"1.000250s"``."""
    nanos = round(seconds * 1_000_000_000)
    whole, fraction = divmod(nanos, 1_000_000_000)
    if not fraction:
        return f"{whole}s"
    digits = f"{fraction:09d}"
    for width in (3, 6, 9):
        if digits[width:].strip("0") == "":
            return f"{whole}.{digits[:width]}s"
    return f"{whole}.{digits}s"  # pragma: no cover - the loop always returns


def _proto_bytes(value: Any) -> bytes:
    """A proto-JSON ``bytes`` value: standard or URL-safe base64, padded or not (the SDK
    sends URL-safe)."""
    if not isinstance(value, str):
        raise ValueError("bytes must be a base64 string")
    text = value.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _pcm_rate(mime_type: Any) -> int | None:
    """The rate of an ``audio/pcm[;rate=N]`` MIME type (16000 when absent), None if not PCM."""
    if not isinstance(mime_type, str):
        return None
    kind, _, params = mime_type.partition(";")
    if kind.strip().lower() != "audio/pcm":
        return None
    match = re.search(r"rate\s*=\s*(\d+)", params)
    return int(match.group(1)) if match else INPUT_RATE


# ---------------------------------------------------------------------- voice activity


class EnergyVad:
    """The OpenAI fake's energy detector (its ``_SpeechDetector`` state and ``_rms`` level,
    tests/fakes/openai_realtime.py) as an object a fake feeds with PCM16: speech starts once
    the level stays at or above ``threshold`` for ``start_ms`` and stops after
    ``silence_ms`` of quiet, analysed in 10 ms frames. :meth:`feed` returns the events it
    found, with their position in the stream (ms since the first byte fed)."""

    def __init__(
        self, *, rate: int, threshold: float, silence_ms: float, start_ms: float = SPEECH_START_MS
    ) -> None:
        self.rate = rate
        self.threshold = threshold
        self.silence_ms = silence_ms
        self.start_ms = max(float(VAD_FRAME_MS), start_ms)
        self.state = _SpeechDetector()

    @property
    def speaking(self) -> bool:
        return self.state.speaking

    @property
    def position_ms(self) -> float:
        return self.state.position_ms

    def feed(self, pcm16: bytes) -> list[tuple[Literal["start", "stop"], float]]:
        state = self.state
        frame_size = self.rate * VAD_FRAME_MS // 1000 * 2
        frame_ms = frame_size / 2 * 1000 / self.rate
        state.pending.extend(pcm16)
        found: list[tuple[Literal["start", "stop"], float]] = []
        while len(state.pending) >= frame_size:
            frame = bytes(state.pending[:frame_size])
            del state.pending[:frame_size]
            frame_start = state.position_ms
            state.position_ms += frame_ms
            loud = _rms(frame) >= self.threshold
            if not state.speaking:
                if not loud:
                    state.loud_ms = 0.0
                    continue
                if state.loud_ms == 0.0:
                    state.onset_ms = frame_start
                state.loud_ms += frame_ms
                if state.loud_ms + 1e-6 >= self.start_ms:
                    state.speaking = True
                    state.quiet_ms = 0.0
                    state.start_ms = state.onset_ms
                    found.append(("start", state.onset_ms))
            elif loud:
                state.quiet_ms = 0.0
            else:
                state.quiet_ms += frame_ms
                if state.quiet_ms + 1e-6 >= self.silence_ms:
                    state.speaking = False
                    state.loud_ms = 0.0
                    found.append(("stop", state.position_ms))
        return found

    def end_speech(self) -> bool:
        """Stop a turn in progress now (the client paused its stream); True if there was one."""
        if not self.state.speaking:
            return False
        self.state.speaking = False
        self.state.loud_ms = 0.0
        self.state.quiet_ms = 0.0
        return True


# ---------------------------------------------------------------------- state


@dataclass
class GeminiSession:
    """A resumable conversation: outlives its connections."""

    id: str
    model: str
    turns: list[JSON] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)
    open_connections: int = 0
    ended_at: float | None = None
    resumptions: int = 0


@dataclass
class _Handle:
    session: GeminiSession
    turns: int  # len(session.turns) when the handle was issued
    expired: bool = False


@dataclass
class _ModelTurn:
    task: asyncio.Task[None] | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    tools_answered: asyncio.Event = field(default_factory=asyncio.Event)
    pending_calls: dict[str, str] = field(default_factory=dict)  # call id -> name
    said: str = ""
    audio_ms: float = 0.0
    complete: bool = False  # turnComplete sent


@dataclass
class _Connection:
    index: int
    ws: ServerConnection
    key: str | None
    version: str
    events: list[JSON] = field(default_factory=list)
    sent: list[JSON] = field(default_factory=list)
    setup: JSON | None = None
    session: GeminiSession | None = None
    input_pcm: bytearray = field(default_factory=bytearray)
    input_rate: int = INPUT_RATE
    vad: EnergyVad | None = None
    user_speaking: bool = False
    turn: _ModelTurn | None = None
    playout_until: float = 0.0  # loop time when the last complete turn's audio ends playing
    frames: int = 0
    closed: tuple[int, str] | None = None  # what the fake closed the connection with
    timers: list[asyncio.Task[None]] = field(default_factory=list)


class _Refusal(Exception):
    """The client did something the service answers by closing the connection."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class FakeGeminiLive:
    """Fake Gemini Live BidiGenerateContent endpoint on 127.0.0.1, any free port.

    Test-visible state (all connections, in order): ``connections``, ``request_headers``,
    ``request_paths``, ``received`` (every client frame, decoded) and
    ``received_per_connection``, ``sent`` and ``sent_per_connection``, ``setups``,
    ``sessions``, ``issued_handles``, ``tool_responses``, ``unmatched_tool_responses``,
    ``cancelled_tool_calls``, ``client_contents``, ``closes`` (``(connection index, code,
    reason)`` for every close the fake made), ``invalid_client_frames``.
    """

    def __init__(
        self,
        *,
        api_key: str = "AIza-test-key",
        models: Iterable[str] = DEFAULT_MODELS,
        next_reply: str = "Hello from the fake.",
        reply_audio_ms: int = 600,
        chunk_interval_s: float = 0.005,
        auto_vad: bool = False,
        speech_rms_threshold: float = 300.0,
        accept_media_chunks: bool = False,
        handle_ttl_s: float = HANDLE_TTL_S,
        refuse_resume_while_open: bool = False,
        client_validator: Callable[[str], None] | None = None,
    ) -> None:
        self.api_key = api_key
        self.models = frozenset(models)
        self.next_reply = next_reply
        self.reply_audio_ms = reply_audio_ms
        self.chunk_interval_s = chunk_interval_s
        self.auto_vad = auto_vad
        self.speech_rms_threshold = speech_rms_threshold
        self.accept_media_chunks = accept_media_chunks
        self.handle_ttl_s = handle_ttl_s
        self.refuse_resume_while_open = refuse_resume_while_open
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
        self.setups: list[JSON] = []
        self.sessions: list[GeminiSession] = []
        self.issued_handles: list[str] = []
        self.tool_responses: list[JSON] = []
        self.unmatched_tool_responses: list[JSON] = []
        self.cancelled_tool_calls: list[str] = []
        self.client_contents: list[JSON] = []
        self.closes: list[tuple[int, int, str]] = []
        self.invalid_client_frames: list[tuple[str, str]] = []

        self._server: Server | None = None
        self._all: list[_Connection] = []
        self._current: _Connection | None = None
        self._handles: dict[str, _Handle] = {}
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
            max_size=MAX_FRAME_BYTES,
            compression=None,
        )
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.base_url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        for conn in self._all:
            for timer in conn.timers:
                timer.cancel()
            if conn.turn is not None:
                conn.turn.cancelled.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        """The v1beta endpoint, without the key."""
        return f"{self.base_url}{V1BETA_PATH}"

    # ------------------------------------------------------------------ test controls

    @property
    def setup(self) -> JSON:
        """The setup of the current connection (the latest one that completed its setup)."""
        setup = self._conn().setup
        assert setup is not None
        return setup

    @property
    def session(self) -> GeminiSession:
        session = self._conn().session
        assert session is not None
        return session

    @property
    def conversation(self) -> list[JSON]:
        """The current session's history: ``{"role": "user"|"model", "parts": [...]}``."""
        return self.session.turns

    def connection_closed_with(self, index: int) -> tuple[int, str] | None:
        """The close code and reason the fake ended connection ``index`` with, if it did."""
        return self._all[index].closed

    def input_pcm16(self, index: int | None = None) -> bytes:
        """All audio the client sent on connection ``index`` (default: the current one), PCM16
        LE mono at :meth:`input_rate`."""
        return bytes(self._conn(index).input_pcm)

    def input_rate(self, index: int | None = None) -> int:
        return self._conn(index).input_rate

    def received_kinds(self) -> list[str]:
        return [_client_kind(message) for message in self.received]

    def sent_kinds(self) -> list[str]:
        """Each server frame's top-level fields, ``serverContent`` ones as
        ``serverContent.<field>``: ``["setupComplete", "serverContent.modelTurn", ...]``."""
        return [kind for message in self.sent for kind in _server_kinds(message)]

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 5) -> list[JSON]:  # noqa: ASYNC109
        """Wait until the client has sent ``count`` frames of ``kind`` (``setup``,
        ``realtimeInput``, ``clientContent``, ``toolResponse``; either spelling), across
        connections; returns them."""
        kind = _CLIENT_KINDS.get(kind, kind)

        def matching() -> list[JSON]:
            return [m for m in self.received if _client_kind(m) == kind]

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(matching()) >= count)
        return matching()

    async def wait_for_sent(self, kind: str, count: int = 1, timeout: float = 5) -> list[JSON]:  # noqa: ASYNC109
        """Wait until the fake has sent ``count`` frames with ``kind`` (a top-level field such
        as ``toolCall``, or ``serverContent.turnComplete``); returns them."""

        def matching() -> list[JSON]:
            return [m for m in self.sent if kind in _server_kinds(m)]

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(matching()) >= count)
        return matching()

    async def wait_for_connections(self, count: int = 1, timeout: float = 5) -> None:  # noqa: ASYNC109
        """Wait until ``count`` connections have completed their setup."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self._ready >= count)

    async def wait_idle(self, timeout: float = 5) -> None:  # noqa: ASYNC109
        """Wait until the current connection has no model turn in flight (a turn waiting for
        a tool response counts as in flight)."""
        async with asyncio.timeout(timeout):
            while (conn := self._current) is not None and conn.turn is not None:
                task = conn.turn.task
                if task is None or task.done():
                    await asyncio.sleep(0)
                else:
                    await asyncio.shield(task)

    async def user_speaks(self, transcript: str) -> None:
        """Automatic activity detection finds a user turn on the current connection: barge-in
        if the model is speaking, the input transcription, then the model's answer (returns
        once it has started; :meth:`wait_idle` waits for its end)."""
        conn = self._conn()
        if self._activity_detection_disabled(conn):
            raise RuntimeError("automaticActivityDetection is disabled: the client marks turns")
        await self._user_started(conn)
        await self._user_finished(conn, transcript)

    async def go_away(self, time_left_s: float) -> None:
        """Send ``goAway {timeLeft}`` on the current connection; if the client has not closed
        it when the time is up, abort it as the service does (1008)."""
        conn = self._conn()
        await self._send(conn, {"goAway": {"timeLeft": duration(time_left_s)}})
        timer = asyncio.create_task(self._abort_after(conn, time_left_s))
        conn.timers.append(timer)

    async def send_resumption_update(self, *, resumable: bool = True) -> str | None:
        """Send a ``sessionResumptionUpdate`` now (a new handle when ``resumable``); returns
        the handle. A model turn in flight (not waiting for a tool response) is let finish
        first, with its own update, so that this one is the newest."""
        conn = self._conn()
        turn = conn.turn
        if turn is not None and turn.task is not None and not turn.pending_calls:
            await asyncio.shield(turn.task)
        return await self._resumption_update(conn, resumable=resumable)

    def expire_handles(self) -> None:
        """Every handle issued so far stops working (as after the 2 h validity)."""
        for record in self._handles.values():
            record.expired = True

    async def drop_connection(self, *, code: int | None = None, reason: str = "") -> None:
        """Close the current connection: abruptly (TCP abort, the client sees 1006) when
        ``code`` is None, else with that close code and reason (1011 "Internal error
        encountered.", 1008 policy, ... : how the service reports errors)."""
        conn = self._conn()
        if code is None:
            conn.ws.transport.abort()
        else:
            await self._close(conn, code, reason)

    # ------------------------------------------------------------------ connection handling

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if API_PATH.match(urlsplit(request.path).path) is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.connections += 1
        self.request_headers.append(ws.request.headers)
        self.request_paths.append(ws.request.path)
        parts = urlsplit(ws.request.path)
        match = API_PATH.match(parts.path)
        key = parse_qs(parts.query).get("key", [None])[0] or ws.request.headers.get(
            "x-goog-api-key"
        )
        conn = _Connection(
            index=self.connections - 1,
            ws=ws,
            key=key,
            version=match.group("version") if match else "v1beta",
        )
        self._all.append(conn)
        self.received_per_connection.append(conn.events)
        self.sent_per_connection.append(conn.sent)
        try:
            async for raw in ws:
                try:
                    await self._on_frame(conn, raw)
                except _Refusal as refusal:
                    await self._close(conn, refusal.code, refusal.reason)
                    break
        except ConnectionClosed:
            pass
        finally:
            for timer in conn.timers:
                timer.cancel()
            if conn.turn is not None:
                conn.turn.cancelled.set()
            if conn.session is not None:
                conn.session.open_connections -= 1
                if conn.session.open_connections == 0:
                    conn.session.ended_at = time.monotonic()
            await self._notify()

    async def _close(self, conn: _Connection, code: int, reason: str) -> None:
        reason = _truncate_reason(reason)
        conn.closed = (code, reason)
        self.closes.append((conn.index, code, reason))
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.close(code, reason)
        await self._notify()

    async def _abort_after(self, conn: _Connection, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if conn.closed is None:
            await self._close(conn, 1008, GO_AWAY_ABORT)

    async def _on_frame(self, conn: _Connection, raw: str | bytes) -> None:
        text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")
        if self.client_validator is not None:
            try:
                self.client_validator(text)
            except Exception as exc:  # the hook's verdict is recorded, never raised
                self.invalid_client_frames.append((text, str(exc) or repr(exc)))
        first = conn.frames == 0
        conn.frames += 1
        try:
            message: Any = json.loads(text)
        except ValueError:
            message = None
            valid_json = False
        else:
            valid_json = True
            record = message if isinstance(message, dict) else {"": message}
            conn.events.append(record)
            self.received.append(record)
            await self._notify()
        if first:
            if not conn.key:
                raise _Refusal(1008, UNREGISTERED_CALLER)
            if conn.key != self.api_key:
                raise _Refusal(1007, API_KEY_INVALID)
        if not valid_json:
            raise _Refusal(1007, "Invalid JSON payload received.")
        if not isinstance(message, dict) or len(message) != 1:
            raise _Refusal(1007, INVALID_ARGUMENT)
        ((name, body),) = message.items()
        kind = _CLIENT_KINDS.get(name)
        if kind is None:
            raise _Refusal(
                1007, f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.'
            )
        if kind == "setup":
            if conn.setup is not None:
                raise _Refusal(1007, INVALID_ARGUMENT)
            await self._setup(conn, body)
            return
        if conn.setup is None or not isinstance(body, dict):
            raise _Refusal(1007, INVALID_ARGUMENT)
        if kind == "realtimeInput":
            await self._realtime_input(conn, body)
        elif kind == "clientContent":
            await self._client_content(conn, body)
        else:
            await self._tool_response(conn, body)

    # ------------------------------------------------------------------ setup and resumption

    async def _setup(self, conn: _Connection, setup: Any) -> None:
        if not isinstance(setup, dict):
            raise _Refusal(1007, INVALID_ARGUMENT)
        model = _get(setup, "model")
        if (
            not isinstance(model, str)
            or model.removeprefix("models/") not in self.models
            or (not model.startswith("models/"))
        ):
            raise _Refusal(
                1008,
                f"{model} is not found for API version {conn.version}, or is not supported "
                "for bidiGenerateContent.",
            )
        for name in setup:
            if name not in SETUP_FIELDS:
                raise _Refusal(
                    1007,
                    f"Invalid JSON payload received. Unknown name \"{name}\" at 'setup': "
                    "Cannot find field.",
                )
        generation = _get(setup, "generationConfig")
        if generation is not None and not isinstance(generation, dict):
            raise _Refusal(1007, INVALID_ARGUMENT)
        modalities = _get(generation, "responseModalities")
        if modalities is not None and (
            not isinstance(modalities, list)
            or len(modalities) != 1
            or str(modalities[0]).upper() not in ("AUDIO", "TEXT")
        ):
            raise _Refusal(1007, INVALID_ARGUMENT)
        voice = _get(
            _get(_get(_get(generation, "speechConfig"), "voiceConfig"), "prebuiltVoiceConfig"),
            "voiceName",
        )
        if voice is not None and (
            not isinstance(voice, str) or voice.lower() not in PREBUILT_VOICES
        ):
            raise _Refusal(1007, INVALID_ARGUMENT)
        handle = _get(_get(setup, "sessionResumption"), "handle")
        if handle:
            session = self._resumed_session(handle, model)
        else:
            session = GeminiSession(id=secrets.token_hex(8), model=model)
            self.sessions.append(session)
        conn.setup = copy.deepcopy(setup)
        conn.session = session
        session.connections.append(conn.index)
        session.open_connections += 1
        session.ended_at = None
        self.setups.append(conn.setup)
        if self.auto_vad and not self._activity_detection_disabled(conn):
            detection = _get(_get(setup, "realtimeInputConfig"), "automaticActivityDetection")
            silence = _get(detection, "silenceDurationMs")
            prefix = _get(detection, "prefixPaddingMs")
            conn.vad = EnergyVad(
                rate=INPUT_RATE,
                threshold=self.speech_rms_threshold,
                silence_ms=float(silence)
                if isinstance(silence, int | float)
                else DEFAULT_SILENCE_MS,
                start_ms=float(prefix) if isinstance(prefix, int | float) else SPEECH_START_MS,
            )
        await self._send(conn, {"setupComplete": {}})
        self._current = conn
        self._ready += 1
        await self._notify()

    def _resumed_session(self, handle: Any, model: str) -> GeminiSession:
        record = self._handles.get(handle) if isinstance(handle, str) else None
        if record is None:
            raise _Refusal(1007, INVALID_ARGUMENT)
        session = record.session
        ended = session.ended_at
        if record.expired or (
            session.open_connections == 0
            and ended is not None
            and time.monotonic() - ended > self.handle_ttl_s
        ):
            raise _Refusal(1008, SESSION_EXPIRED)
        if session.model != model:
            raise _Refusal(1007, INVALID_ARGUMENT)
        if self.refuse_resume_while_open and session.open_connections:
            raise _Refusal(1011, INTERNAL_ERROR)
        del session.turns[record.turns :]
        session.resumptions += 1
        return session

    async def _resumption_update(self, conn: _Connection, *, resumable: bool) -> str | None:
        if not resumable:
            await self._send(conn, {"sessionResumptionUpdate": {}})
            return None
        assert conn.session is not None
        handle = secrets.token_urlsafe(32)
        self._handles[handle] = _Handle(session=conn.session, turns=len(conn.session.turns))
        self.issued_handles.append(handle)
        await self._send(
            conn, {"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}}
        )
        return handle

    # ------------------------------------------------------------------ client frames

    async def _realtime_input(self, conn: _Connection, body: JSON) -> None:
        if _has(body, "mediaChunks"):
            if not self.accept_media_chunks:
                raise _Refusal(1007, MEDIA_CHUNKS_DEPRECATED)
            chunks = _get(body, "mediaChunks")
            for chunk in chunks if isinstance(chunks, list) else []:
                await self._audio(conn, chunk, "media_chunks")
        if _has(body, "audio"):
            await self._audio(conn, _get(body, "audio"), "audio")
        disabled = self._activity_detection_disabled(conn)
        if _has(body, "activityStart"):
            if not disabled:
                raise _Refusal(1007, INVALID_ARGUMENT)
            await self._user_started(conn)
        if _has(body, "activityEnd"):
            if not disabled:
                raise _Refusal(1007, INVALID_ARGUMENT)
            if conn.user_speaking:
                await self._user_finished(conn, self._next_transcript())
        if _get(body, "audioStreamEnd") and conn.vad is not None and conn.vad.end_speech():
            await self._user_finished(conn, self._next_transcript())
        text = _get(body, "text")
        if isinstance(text, str) and text:
            await self._user_started(conn)
            await self._user_finished(conn, text, spoken=False)

    async def _audio(self, conn: _Connection, blob: Any, field_name: str) -> None:
        rate = _pcm_rate(_get(blob, "mimeType"))
        data = _get(blob, "data")
        if rate is None:
            if isinstance(_get(blob, "mimeType"), str) and not str(
                _get(blob, "mimeType")
            ).startswith("audio/"):
                return  # an image or other media chunk: recorded, not listened to
            raise _Refusal(1007, INVALID_ARGUMENT)
        try:
            pcm = _proto_bytes(data)
        except (binascii.Error, ValueError):
            raise _Refusal(
                1007,
                f"Invalid value at 'realtime_input.{field_name}.data' (TYPE_BYTES), "
                "Base64 decoding failed",
            ) from None
        pcm = pcm[: len(pcm) - len(pcm) % 2]
        conn.input_pcm.extend(pcm)
        conn.input_rate = rate
        if conn.vad is None:
            return
        if conn.vad.rate != rate:
            conn.vad.rate = rate
        for event, _position in conn.vad.feed(pcm):
            if event == "start":
                await self._user_started(conn)
            else:
                await self._user_finished(conn, self._next_transcript())

    async def _client_content(self, conn: _Connection, body: JSON) -> None:
        assert conn.session is not None
        self.client_contents.append(body)
        await self._interrupt(conn)
        turns = _get(body, "turns")
        for turn in turns if isinstance(turns, list) else []:
            if isinstance(turn, dict):
                role = turn.get("role", "user")
                parts = turn.get("parts") if isinstance(turn.get("parts"), list) else []
                conn.session.turns.append({"role": role, "parts": copy.deepcopy(parts)})
        if _get(body, "turnComplete"):
            self._start_turn(conn)

    async def _tool_response(self, conn: _Connection, body: JSON) -> None:
        assert conn.session is not None
        responses = _get(body, "functionResponses")
        for response in responses if isinstance(responses, list) else []:
            if not isinstance(response, dict):
                continue
            self.tool_responses.append(response)
            turn = conn.turn
            call_id = response.get("id")
            if turn is None or call_id not in turn.pending_calls:
                self.unmatched_tool_responses.append(response)
                continue
            del turn.pending_calls[call_id]
            conn.session.turns.append(
                {"role": "user", "parts": [{"functionResponse": copy.deepcopy(response)}]}
            )
            if not turn.pending_calls:
                turn.tools_answered.set()
        await self._notify()

    # ------------------------------------------------------------------ turns

    def _activity_detection_disabled(self, conn: _Connection) -> bool:
        config = _get(_get(conn.setup, "realtimeInputConfig"), "automaticActivityDetection")
        return bool(_get(config, "disabled"))

    def _text_modality(self, conn: _Connection) -> bool:
        modalities = _get(_get(conn.setup, "generationConfig"), "responseModalities")
        return isinstance(modalities, list) and [str(m).upper() for m in modalities] == ["TEXT"]

    def _barge_in(self, conn: _Connection) -> bool:
        handling = _get(_get(conn.setup, "realtimeInputConfig"), "activityHandling")
        return bool(handling != "NO_INTERRUPTION")

    def _next_transcript(self) -> str:
        return self.user_transcripts.popleft() if self.user_transcripts else DEFAULT_USER_TRANSCRIPT

    async def _user_started(self, conn: _Connection) -> None:
        conn.user_speaking = True
        if self._barge_in(conn):
            await self._interrupt(conn)

    async def _interrupt(self, conn: _Connection) -> None:
        """Cancel the generation in flight (or the playback the service assumes is still
        going): interrupted, toolCallCancellation, turnComplete."""
        turn = conn.turn
        if turn is not None and not turn.complete:
            turn.cancelled.set()
            if turn.task is not None and turn.task is not asyncio.current_task():
                await asyncio.shield(turn.task)
            await self._send(conn, {"serverContent": {"interrupted": True}})
            if turn.pending_calls:
                ids = list(turn.pending_calls)
                self.cancelled_tool_calls.extend(ids)
                turn.pending_calls.clear()
                await self._send(conn, {"toolCallCancellation": {"ids": ids}})
            await self._send(conn, {"serverContent": {"turnComplete": True}})
        elif asyncio.get_running_loop().time() < conn.playout_until:
            conn.playout_until = 0.0
            await self._send(conn, {"serverContent": {"interrupted": True}})

    async def _user_finished(
        self, conn: _Connection, transcript: str, *, spoken: bool = True
    ) -> None:
        assert conn.session is not None
        conn.user_speaking = False
        if spoken and _has(conn.setup, "inputAudioTranscription"):
            for piece in _split_words(transcript, 3):
                await self._send(conn, {"serverContent": {"inputTranscription": {"text": piece}}})
        conn.session.turns.append({"role": "user", "parts": [{"text": transcript}]})
        self._start_turn(conn)

    def _start_turn(self, conn: _Connection) -> None:
        previous = conn.turn
        turn = _ModelTurn()
        conn.turn = turn
        turn.task = asyncio.create_task(self._run_turn(conn, turn, previous))
        self._tasks.add(turn.task)
        turn.task.add_done_callback(self._tasks.discard)

    async def _run_turn(
        self, conn: _Connection, turn: _ModelTurn, previous: _ModelTurn | None
    ) -> None:
        try:
            if previous is not None and previous.task is not None:
                await asyncio.shield(previous.task)
            await self._generate(conn, turn)
        except ConnectionClosed:
            pass
        finally:
            if turn.said and not turn.complete and conn.session is not None:
                conn.session.turns.append({"role": "model", "parts": [{"text": turn.said}]})
            if conn.turn is turn:
                conn.turn = None
            await self._notify()

    async def _pause(self, turn: _ModelTurn) -> bool:
        """Yield between chunks; True when the turn has been cancelled."""
        await asyncio.sleep(self.chunk_interval_s)
        return turn.cancelled.is_set()

    async def _generate(self, conn: _Connection, turn: _ModelTurn) -> None:
        session = conn.session
        assert session is not None and conn.setup is not None
        resumption = _has(conn.setup, "sessionResumption")
        tool_call, self.next_tool_call = self.next_tool_call, None
        if tool_call is not None:
            name, args = tool_call
            call_id = f"function-call-{secrets.randbelow(10**19)}"
            turn.pending_calls[call_id] = name
            call = {"id": call_id, "name": name, "args": copy.deepcopy(args)}
            session.turns.append(
                {"role": "model", "parts": [{"functionCall": copy.deepcopy(call)}]}
            )
            await self._send(conn, {"toolCall": {"functionCalls": [call]}})
            if resumption:
                await self._resumption_update(conn, resumable=False)
            answered = asyncio.ensure_future(turn.tools_answered.wait())
            cancelled = asyncio.ensure_future(turn.cancelled.wait())
            await asyncio.wait({answered, cancelled}, return_when=asyncio.FIRST_COMPLETED)
            answered.cancel()
            cancelled.cancel()
            if turn.cancelled.is_set():
                return
        text = self.next_reply
        if self._text_modality(conn):
            for piece in _split_words(text, 8):
                if await self._pause(turn):
                    return
                turn.said += piece
                await self._send(
                    conn, {"serverContent": {"modelTurn": {"parts": [{"text": piece}]}}}
                )
        else:
            await self._stream_audio(conn, turn, text)
            if turn.cancelled.is_set():
                return
        await self._send(conn, {"serverContent": {"generationComplete": True}})
        turn.complete = True
        session.turns.append({"role": "model", "parts": [{"text": turn.said}]})
        await self._send(
            conn,
            {"serverContent": {"turnComplete": True}, "usageMetadata": self._usage(conn, turn)},
        )
        if resumption:
            await self._resumption_update(conn, resumable=True)

    async def _stream_audio(self, conn: _Connection, turn: _ModelTurn, text: str) -> None:
        transcribe = _has(conn.setup, "outputAudioTranscription")
        pcm = _tone(self.reply_audio_ms, rate=OUTPUT_RATE)
        chunk_size = OUTPUT_RATE * CHUNK_MS // 1000 * 2
        chunks = max(1, math.ceil(len(pcm) / chunk_size))
        pieces = _split_words(text, chunks)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for n in range(chunks):
            if await self._pause(turn):
                return
            chunk = pcm[n * chunk_size : (n + 1) * chunk_size]
            data = base64.b64encode(chunk).decode()
            await self._send(
                conn,
                {
                    "serverContent": {
                        "modelTurn": {
                            "parts": [{"inlineData": {"mimeType": OUTPUT_MIME, "data": data}}]
                        }
                    }
                },
            )
            turn.audio_ms += len(chunk) / 2 * 1000 / OUTPUT_RATE
            conn.playout_until = started + turn.audio_ms / 1000
            if n < len(pieces):
                turn.said += pieces[n]
                if transcribe:
                    await self._send(
                        conn, {"serverContent": {"outputTranscription": {"text": pieces[n]}}}
                    )

    def _usage(self, conn: _Connection, turn: _ModelTurn) -> JSON:
        assert conn.session is not None
        history = sum(len(json.dumps(t)) for t in conn.session.turns) // 4
        audio_in = len(conn.input_pcm) // 2 * 25 // max(1, conn.input_rate)
        prompt = 100 + history + audio_in
        response = (
            max(1, round(turn.audio_ms * 25 / 1000))
            if turn.audio_ms
            else max(1, len(turn.said) // 4)
        )
        prompt_details = [{"modality": "TEXT", "tokenCount": prompt - audio_in}]
        if audio_in:
            prompt_details.append({"modality": "AUDIO", "tokenCount": audio_in})
        return {
            "promptTokenCount": prompt,
            "responseTokenCount": response,
            "totalTokenCount": prompt + response,
            "promptTokensDetails": prompt_details,
            "responseTokensDetails": [
                {"modality": "AUDIO" if turn.audio_ms else "TEXT", "tokenCount": response}
            ],
        }

    # ------------------------------------------------------------------ helpers

    def _conn(self, index: int | None = None) -> _Connection:
        if index is not None:
            return self._all[index]
        if self._current is None:
            raise RuntimeError("no client has completed a setup with the fake")
        return self._current

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _send(self, conn: _Connection, message: JSON) -> None:
        await conn.ws.send(json.dumps(message))
        self.sent.append(message)
        conn.sent.append(message)
        await self._notify()


def _client_kind(message: JSON) -> str:
    names = [_CLIENT_KINDS.get(name, name) for name in message]
    return names[0] if len(names) == 1 else "+".join(sorted(names))


def _server_kinds(message: JSON) -> list[str]:
    kinds: list[str] = []
    for name, body in message.items():
        if name == "serverContent" and isinstance(body, dict):
            kinds.extend(f"serverContent.{part}" for part in body)
        else:
            kinds.append(name)
    return kinds
