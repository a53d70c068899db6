"""A protocol-faithful fake of the ElevenLabs Agents (Conversational AI) WebSocket API.

Written against /work/shared/reference/provider-protocols.md section 4 and the vendor's own
material. Each behaviour names its source and a confidence: **high** = the official AsyncAPI
contract (elevenlabs/packages ``packages/types/schemas/agent.asyncapi.yaml``, published as
``@elevenlabs/types``), the ``elevenlabs`` SDK models or the ElevenLabs docs; **medium** =
ElevenLabs docs as quoted by integrators (Voximplant's reference), or the same observation
by several projects that run against the live service; **low** = one report, or inferred.

Endpoints (one port, plain HTTP and WebSocket)
  * ``base_url`` = ``http://127.0.0.1:<port>`` replaces ``https://api.elevenlabs.io``;
    ``ws_base_url`` = ``ws://127.0.0.1:<port>`` replaces ``wss://api.elevenlabs.io``.
  * ``GET /v1/convai/conversation/get-signed-url?agent_id=A`` with ``xi-api-key``:
    ``200 {"signed_url": "ws://.../v1/convai/conversation?agent_id=A&conversation_signature=S"}``
    [high: SDK / docs]. A signature starts one conversation, within 15 minutes
    (``signed_url_ttl_s``) [medium: docs "valid for 15 minutes ... must be initiated within
    the window", "cannot be reused" quoted by integrators]. No key: ``401 {"detail": {"status":
    "needs_authorization", ...}}``; a wrong key: ``401 {"detail": {"status":
    "invalid_api_key", "message": "Invalid API key", ...}}`` [medium: ElevenLabs' REST errors
    as observed]; an unknown agent: 404 [low]; no ``agent_id``: 422 [low].
  * ``ws://.../v1/convai/conversation?agent_id=A`` [high]. A public agent needs nothing; a
    private one (``requires_auth=True``) takes a signed URL's ``conversation_signature`` or
    the ``xi-api-key`` header [high]. The upgrade is always accepted; then an unknown agent
    is closed with **3000 "The AI agent you are trying to reach does not exist."** [low:
    one client codes 3000 for it; the reason is widely quoted], and failed auth with an
    ``error`` event (code 1008) and close **1008** [low: the contract puts "auth/validation
    errors" under 1008; the wording is ours].

Client messages [high: AsyncAPI]
  ``conversation_initiation_client_data`` (first; a client that starts with anything else
  gets the agent's defaults [low]) with ``conversation_config_override`` (agent.prompt.prompt,
  agent.first_message, agent.language, tts.voice_id, ...), ``dynamic_variables``,
  ``custom_llm_extra_body``; ``{"user_audio_chunk": b64}`` without ``type`` (recognised by
  that key alone, as the contract says the service does); ``pong
  {event_id}``; ``client_tool_result {tool_call_id, result, is_error}``; ``contextual_update
  {text}``; ``user_message {text}``; ``user_activity``; ``feedback``;
  ``mcp_tool_approval_result``; ``multimodal_message``. A frame that is not JSON, has an
  unknown ``type`` or misses a required field ends the conversation: ``error`` event
  ``{code: 1008, error_type: "invalid_message" | "missing_fields"}`` then close 1008
  "Invalid message received" [high for the codes and types: AsyncAPI ErrorType; medium for
  the reason: observed].

Overrides [high: docs "each field must be enabled in the agent's Security tab"; medium:
  "Override for field 'voice_id' is not allowed by config." observed as the close reason]
  ``allowed_overrides`` (constructor) lists the dotted override paths the agent's security
  settings enable (``"agent.prompt.prompt"``, ``"agent.first_message"``, ``"agent.language"``,
  ``"tts.voice_id"``, ...); ``None`` (the default) enables every one. Any other override
  present: ``error {code: 1008, error_type: "override_error"}`` and close 1008 with that
  reason. ``{{var}}`` placeholders in the prompt or first message need a
  ``dynamic_variables`` entry (``system__*`` ones are the platform's): else ``error
  {code: 1008, error_type: "missing_dynamic_variable"}`` and close 1008 [high for the type,
  low for the wording].

Server messages [high: AsyncAPI shapes]
  * ``conversation_initiation_metadata {conversation_id, agent_output_audio_format,
    user_input_audio_format}``, answering the initiation [high]; formats are agent settings:
    ``user_input_audio_format`` / ``agent_output_audio_format`` (constructor, ``pcm_16000``
    default; ``ulaw_8000`` is G.711 mu-law, coded with the OpenAI fake's G.711 helpers).
  * ``ping {ping_event: {event_id, ping_ms}}`` every ``ping_interval_s`` (``ping_ms`` is the
    last measured round trip, null before the first pong) [high for the shape; the interval
    is ours]. The client must answer ``pong {event_id}`` ("health check event requiring
    immediate response" [medium: docs]); no source documents what the service does when it
    does not, so the fake only counts them (``unanswered_pings``).
  * A user turn: ``vad_score`` per audio chunk while listening (energy-based),
    ``tentative_user_transcript`` partials, then ``user_transcript {user_transcript,
    event_id}`` [high for the events; the VAD score formula is ours].
  * An agent turn: ``internal_tentative_agent_response`` (cumulative partials), then
    ``agent_response {agent_response, event_id}`` "sent with the first audio chunk"
    [medium: docs via Voximplant], then ``audio {audio_base_64, event_id}`` chunks in the
    output format. All events of one turn share its ``event_id``; ids grow through the
    conversation [medium: the SDKs drop audio whose event_id <= the last interruption's].
  * Barge-in (user speech while the agent speaks, including audio the service assumes is
    still playing): ``interruption {event_id}`` of the cut turn, then
    ``agent_response_correction {original_agent_response, corrected_agent_response,
    event_id}`` with the words heard so far [high for the events, low for the timing].
  * Client tools: ``next_tool_call = (name, parameters)`` makes the next agent turn send
    ``client_tool_call {tool_name, tool_call_id, parameters, event_id}`` and wait for the
    ``client_tool_result``; then ``agent_tool_response {tool_name, tool_call_id, tool_type:
    "client", is_error, is_called: true, event_id}`` and the spoken reply [high for shapes,
    low for agent_tool_response being sent for client tools].
  * ``client_events`` (constructor; the agent's "client events" setting, overridable by
    ``conversation.client_events``) selects what is sent. The vendor default is
    ``AGENT_DEFAULT_CLIENT_EVENTS`` [high: AsyncAPI]; the fake's default is every event it can
    send, as an agent with all of them ticked.
  * Limits: ``max_duration_s`` ends with ``error {code: 1000, error_type:
    "max_duration_exceeded"}`` and close 1000; ``idle_timeout_s`` (60 s: "no user input for
    60 seconds") with ``error {code: 1002, error_type: "transport_receive_timeout"}`` and
    close 1002 [high for codes and types: AsyncAPI ErrorType; the messages are ours]. A pong
    is not user input [low].

There is no reconnection: a dropped conversation cannot be resumed (each connection is a new
conversation with a new ``conversation_id``) [high: nothing in the protocol resumes one].

Test controls mirror tests/fakes/openai_realtime.py: ``connections``, ``request_headers``,
``request_paths``, ``received``/``received_per_connection``, ``sent``/``sent_per_connection``,
``wait_for``, ``wait_for_sent``, ``wait_for_connections``, ``wait_idle``, ``user_speaks``,
``agent_says``, ``interrupt``, ``correct_last_response``, ``next_reply``, ``next_tool_call``,
``drop_connection``, ``send_error``, ``send_ping``, ``issue_signed_url``, ``responding``,
``unanswered_pings``, ``input_pcm16``, ``transcript``/``transcript_of``, ``initiation``,
``contextual_updates``, ``tool_results``, ``closes``, ``auto_vad`` with ``user_transcripts``,
``client_validator``/``invalid_client_frames``. A test client must keep reading: one that
stops stalls the fake's sends (and its own close handshake), as with the real service.
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
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.fakes.gemini_live import EnergyVad
from tests.fakes.openai_realtime import (
    CHUNK_MS,
    DEFAULT_USER_TRANSCRIPT,
    _rms,
    _split_words,
    _tone,
    ulaw_decode,
    ulaw_encode,
)

JSON = dict[str, Any]

CONVERSATION_PATH = "/v1/convai/conversation"
SIGNED_URL_PATH = "/v1/convai/conversation/get-signed-url"
MAX_FRAME_BYTES = 16 * 1024 * 1024
AUDIO_RATES = {
    "pcm_8000": 8000,
    "pcm_16000": 16000,
    "pcm_22050": 22050,
    "pcm_24000": 24000,
    "pcm_44100": 44100,
    "pcm_48000": 48000,
    "ulaw_8000": 8000,
}
AGENT_DEFAULT_CLIENT_EVENTS = frozenset(
    {
        "audio",
        "interruption",
        "agent_response",
        "user_transcript",
        "tentative_user_transcript",
        "conversation_initiation_metadata",
        "ping",
    }
)
FAKE_CLIENT_EVENTS = AGENT_DEFAULT_CLIENT_EVENTS | {
    "agent_response_correction",
    "client_tool_call",
    "agent_tool_response",
    "vad_score",
    "internal_tentative_agent_response",
}
# Fields of ConversationConfigClientOverrideConfig (the agent's override permissions).
OVERRIDE_FIELDS = frozenset(
    {
        "agent.first_message",
        "agent.language",
        "agent.max_conversation_duration_message",
        "agent.native_mcp_server_ids",
        "agent.prompt.prompt",
        "agent.prompt.llm",
        "agent.prompt.reasoning_effort",
        "agent.prompt.tool_ids",
        "agent.prompt.tool_ids_strict",
        "agent.prompt.native_mcp_server_ids",
        "agent.prompt.knowledge_base",
        "tts.model_id",
        "tts.voice_id",
        "tts.supported_voices",
        "tts.stability",
        "tts.speed",
        "tts.similarity_boost",
        "tts.clone_strength",
        "tts.pronunciation_dictionary_locators",
        "asr.keywords",
        "turn.soft_timeout_config",
        "turn.noisy_environment_message",
        "conversation.text_only",
        "conversation.max_duration_seconds",
        "conversation.client_events",
    }
)
CLIENT_TYPES = frozenset(
    {
        "conversation_initiation_client_data",
        "pong",
        "client_tool_result",
        "contextual_update",
        "user_message",
        "user_activity",
        "feedback",
        "mcp_tool_approval_result",
        "multimodal_message",
    }
)
REQUIRED_FIELDS = {
    "pong": ("event_id",),
    "client_tool_result": ("tool_call_id", "result", "is_error"),
    "contextual_update": ("text",),
    "feedback": ("event_id", "score"),
    "mcp_tool_approval_result": ("tool_call_id", "is_approved"),
}
AGENT_NOT_FOUND = "The AI agent you are trying to reach does not exist."
INVALID_MESSAGE = "Invalid message received"
PLACEHOLDER = re.compile(r"{{\s*([A-Za-z0-9_]+)\s*}}")


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _override_paths(value: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the overrides set (not null) in ``conversation_config_override``;
    a permission covers its whole subtree (``turn.soft_timeout_config``)."""
    if not isinstance(value, dict):
        return []
    paths: list[str] = []
    for key, item in value.items():
        path = f"{prefix}{key}"
        if item is None:
            continue
        if path in OVERRIDE_FIELDS or not isinstance(item, dict):
            paths.append(path)
        else:
            paths.extend(_override_paths(item, f"{path}."))
    return paths


@dataclass
class _AgentTurn:
    text: str = ""
    event_id: int = 0
    task: asyncio.Task[None] | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    tool_call_id: str | None = None
    tool_name: str = ""
    tool_result: JSON | None = None
    tool_answered: asyncio.Event = field(default_factory=asyncio.Event)
    audio_ms: float = 0.0  # audio sent
    total_ms: float = 0.0  # audio the whole reply would take
    first_audio_at: float | None = None  # loop time
    responded: bool = False  # agent_response sent
    transcript_index: int | None = None


@dataclass
class _Connection:
    index: int
    ws: ServerConnection
    agent_id: str
    conversation_id: str = field(default_factory=lambda: _new_id("conv"))
    events: list[JSON] = field(default_factory=list)
    sent: list[JSON] = field(default_factory=list)
    initiation: JSON | None = None
    started: bool = False
    prompt: str = ""
    first_message: str = ""
    language: str = "en"
    voice_id: str = ""
    client_events: frozenset[str] = frozenset()
    next_event_id: int = 1
    ping_id: int = 0
    pings: dict[int, float] = field(default_factory=dict)  # outstanding: event id -> sent at
    rtt_ms: int | None = None
    input_pcm: bytearray = field(default_factory=bytearray)
    input_rate: int = 16000
    vad: EnergyVad | None = None
    user_speaking: bool = False
    turn: _AgentTurn | None = None
    last_turn: _AgentTurn | None = None
    playout_until: float = 0.0
    transcript: list[JSON] = field(default_factory=list)
    contextual_updates: list[str] = field(default_factory=list)
    last_input: float = field(default_factory=time.monotonic)
    opened: float = field(default_factory=time.monotonic)
    closed: tuple[int, str] | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class _EndConversation(Exception):
    """The service ends the conversation: an optional ``error`` event, then the close."""

    def __init__(
        self,
        code: int,
        reason: str,
        *,
        error_type: str | None = None,
        message: str | None = None,
        send_error: bool = True,
    ) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.error_type = error_type
        self.message = message if message is not None else reason
        self.send_error = send_error


class FakeElevenLabs:
    """Fake ElevenLabs Agents API on 127.0.0.1, any free port: the conversation WebSocket
    and the signed-URL endpoint. Test-visible state (all connections, in order):
    ``connections``, ``request_headers``, ``request_paths``, ``received`` /
    ``received_per_connection``, ``sent`` / ``sent_per_connection``, ``initiations``,
    ``signed_urls``, ``http_requests``, ``tool_results``, ``pongs``, ``user_activity``,
    ``closes`` (``(connection index, code, reason)``), ``invalid_client_frames``."""

    def __init__(
        self,
        *,
        api_key: str = "xi-test-key",
        agent_id: str = "agent_test",
        requires_auth: bool = False,
        prompt: str = "You are a helpful agent.",
        first_message: str = "",
        language: str = "en",
        voice_id: str = "21m00Tcm4TlvDq8ikWAM",
        user_input_audio_format: str = "pcm_16000",
        agent_output_audio_format: str = "pcm_16000",
        next_reply: str = "Hello from the fake.",
        reply_audio_ms: int = 600,
        chunk_interval_s: float = 0.005,
        auto_vad: bool = False,
        speech_rms_threshold: float = 300.0,
        silence_ms: float = 500.0,
        ping_interval_s: float | None = 2.0,
        allowed_overrides: Iterable[str] | None = None,
        client_events: Iterable[str] | None = None,
        max_duration_s: float | None = None,
        idle_timeout_s: float | None = 60.0,
        signed_url_ttl_s: float = 15 * 60,
        client_validator: Callable[[str], None] | None = None,
    ) -> None:
        for name, value in (
            ("user_input_audio_format", user_input_audio_format),
            ("agent_output_audio_format", agent_output_audio_format),
        ):
            if value not in AUDIO_RATES:
                raise ValueError(f"{name} must be one of {sorted(AUDIO_RATES)}, not {value!r}")
        self.api_key = api_key
        self.agent_id = agent_id
        self.requires_auth = requires_auth
        self.prompt = prompt
        self.first_message = first_message
        self.language = language
        self.voice_id = voice_id
        self.user_input_audio_format = user_input_audio_format
        self.agent_output_audio_format = agent_output_audio_format
        self.next_reply = next_reply
        self.reply_audio_ms = reply_audio_ms
        self.chunk_interval_s = chunk_interval_s
        self.auto_vad = auto_vad
        self.speech_rms_threshold = speech_rms_threshold
        self.silence_ms = silence_ms
        self.ping_interval_s = ping_interval_s
        self.allowed_overrides = None if allowed_overrides is None else frozenset(allowed_overrides)
        self.client_events = (
            FAKE_CLIENT_EVENTS if client_events is None else frozenset(client_events)
        )
        self.max_duration_s = max_duration_s
        self.idle_timeout_s = idle_timeout_s
        self.signed_url_ttl_s = signed_url_ttl_s
        self.client_validator = client_validator
        self.next_tool_call: tuple[str, dict[str, Any]] | None = None
        self.user_transcripts: deque[str] = deque()

        self.connections = 0
        self.request_headers: list[Headers] = []
        self.request_paths: list[str] = []
        self.http_requests: list[tuple[str, Headers]] = []
        self.received: list[JSON] = []
        self.received_per_connection: list[list[JSON]] = []
        self.sent: list[JSON] = []
        self.sent_per_connection: list[list[JSON]] = []
        self.initiations: list[JSON] = []
        self.signed_urls: list[str] = []
        self.tool_results: list[JSON] = []
        self.pongs: list[JSON] = []
        self.user_activity = 0
        self.closes: list[tuple[int, int, str]] = []
        self.invalid_client_frames: list[tuple[str, str]] = []

        self._server: Server | None = None
        self._all: list[_Connection] = []
        self._current: _Connection | None = None
        self._signatures: dict[str, tuple[str, float]] = {}  # unused signature -> agent, issued
        self._ready = 0
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self.base_url = ""
        self.ws_base_url = ""

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
        self.base_url = f"http://127.0.0.1:{port}"
        self.ws_base_url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        for conn in self._all:
            for task in conn.tasks:
                task.cancel()
            if conn.turn is not None:
                conn.turn.cancelled.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        """The public conversation URL of the agent."""
        return f"{self.ws_base_url}{CONVERSATION_PATH}?{urlencode({'agent_id': self.agent_id})}"

    # ------------------------------------------------------------------ test controls

    @property
    def conversation_id(self) -> str:
        return self._conn().conversation_id

    @property
    def initiation(self) -> JSON | None:
        """The current connection's ``conversation_initiation_client_data`` (None: none)."""
        return self._conn().initiation

    @property
    def transcript(self) -> list[JSON]:
        """The current conversation: ``{"role": "user"|"agent", "message": text}``, with
        agent messages as corrected after interruptions."""
        return self._conn().transcript

    def transcript_of(self, index: int) -> list[JSON]:
        return self._all[index].transcript

    @property
    def contextual_updates(self) -> list[str]:
        return self._conn().contextual_updates

    @property
    def responding(self) -> bool:
        """The current connection's agent is speaking, or waiting for a tool result."""
        conn = self._current
        return conn is not None and conn.turn is not None

    @property
    def unanswered_pings(self) -> int:
        """Pings of the current connection the client has not answered (yet)."""
        return len(self._conn().pings)

    def connection_closed_with(self, index: int) -> tuple[int, str] | None:
        return self._all[index].closed

    def input_pcm16(self, index: int | None = None) -> bytes:
        """All audio the client sent on connection ``index`` (default: the current one),
        decoded to PCM16 LE mono at :meth:`input_rate`."""
        return bytes(self._conn(index).input_pcm)

    def input_rate(self, index: int | None = None) -> int:
        return self._conn(index).input_rate

    def received_types(self) -> list[str]:
        return [_client_type(m) for m in self.received]

    def sent_types(self) -> list[str]:
        return [str(m.get("type")) for m in self.sent]

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 5) -> list[JSON]:  # noqa: ASYNC109
        """Wait until the client has sent ``count`` messages of ``kind`` (a ``type``, or
        ``user_audio_chunk``), across connections."""

        def matching() -> list[JSON]:
            return [m for m in self.received if _client_type(m) == kind]

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(matching()) >= count)
        return matching()

    async def wait_for_sent(self, kind: str, count: int = 1, timeout: float = 5) -> list[JSON]:  # noqa: ASYNC109
        """Wait until the fake has sent ``count`` messages of ``type`` ``kind``."""

        def matching() -> list[JSON]:
            return [m for m in self.sent if m.get("type") == kind]

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(matching()) >= count)
        return matching()

    async def wait_for_connections(self, count: int = 1, timeout: float = 5) -> None:  # noqa: ASYNC109
        """Wait until ``count`` conversations have started (metadata sent)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self._ready >= count)

    async def wait_idle(self, timeout: float = 5) -> None:  # noqa: ASYNC109
        """Wait until the current connection's agent is not speaking or waiting for a tool."""
        async with asyncio.timeout(timeout):
            while (conn := self._current) is not None and conn.turn is not None:
                task = conn.turn.task
                if task is None or task.done():
                    await asyncio.sleep(0)
                else:
                    await asyncio.shield(task)

    async def user_speaks(self, transcript: str) -> None:
        """The service hears a user turn on the current connection (no audio needed):
        barge-in if the agent is speaking, the transcripts, then the agent's reply (returns
        once it has started; :meth:`wait_idle` waits for its end)."""
        conn = self._conn()
        await self._user_started(conn)
        await self._user_finished(conn, transcript)

    async def agent_says(self, text: str) -> None:
        """The agent speaks ``text`` unprompted (as a first message or a follow-up would)."""
        self._start_agent_turn(self._conn(), text=text)

    async def interrupt(self) -> None:
        """The service detects a barge-in on the current connection without a user turn
        following: ``interruption`` and ``agent_response_correction`` for the agent turn
        being spoken (if any)."""
        await self._interrupt(self._conn())

    async def correct_last_response(self, corrected: str) -> None:
        """Send ``agent_response_correction`` for the last agent response."""
        conn = self._conn()
        turn = conn.last_turn
        if turn is None:
            raise RuntimeError("the agent has not said anything yet")
        await self._correct(conn, turn, corrected)

    async def send_ping(self) -> int:
        """Send a ``ping`` now; returns its event id."""
        return await self._ping(self._conn())

    async def send_error(
        self, code: int, error_type: str | None, message: str, *, close: bool = True
    ) -> None:
        """Send an ``error`` event (the contract sends one "when the connection is closing
        due to an error") and, unless ``close`` is false, close with ``code``."""
        conn = self._conn()
        await self._send_error(conn, code, error_type, message)
        if close:
            await self._close(conn, code, message)

    async def drop_connection(self, *, code: int | None = None, reason: str = "") -> None:
        """Close the current connection: abruptly (TCP abort, the client sees 1006) when
        ``code`` is None, else with that close code."""
        conn = self._conn()
        if code is None:
            conn.ws.transport.abort()
        else:
            await self._close(conn, code, reason)

    def issue_signed_url(self, agent_id: str | None = None) -> str:
        """A signed URL, as ``get-signed-url`` would answer (without the HTTP request)."""
        signature = secrets.token_urlsafe(24)
        agent = agent_id or self.agent_id
        self._signatures[signature] = (agent, time.monotonic())
        query = urlencode({"agent_id": agent, "conversation_signature": signature})
        url = f"{self.ws_base_url}{CONVERSATION_PATH}?{query}"
        self.signed_urls.append(url)
        return url

    # ------------------------------------------------------------------ HTTP

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path == CONVERSATION_PATH:
            return None
        if parts.path == SIGNED_URL_PATH:
            self.http_requests.append((request.path, request.headers))
            return self._signed_url_response(connection, request)
        return _json_response(connection, HTTPStatus.NOT_FOUND, {"detail": "Not Found"})

    def _signed_url_response(self, connection: ServerConnection, request: Request) -> Response:
        key = request.headers.get("xi-api-key")
        if not key:
            return _json_response(
                connection,
                HTTPStatus.UNAUTHORIZED,
                _rest_error(
                    "authentication_error",
                    "unauthorized",
                    "needs_authorization",
                    "Neither authorization header nor xi-api-key received, please provide one.",
                ),
            )
        if key != self.api_key:
            return _json_response(
                connection,
                HTTPStatus.UNAUTHORIZED,
                _rest_error(
                    "authentication_error", "unauthorized", "invalid_api_key", "Invalid API key"
                ),
            )
        agent_id = parse_qs(urlsplit(request.path).query).get("agent_id", [""])[0]
        if not agent_id:
            return _json_response(
                connection,
                HTTPStatus.UNPROCESSABLE_ENTITY,
                {
                    "detail": [
                        {
                            "type": "missing",
                            "loc": ["query", "agent_id"],
                            "msg": "Field required",
                            "input": None,
                        }
                    ]
                },
            )
        if agent_id != self.agent_id:
            return _json_response(
                connection,
                HTTPStatus.NOT_FOUND,
                _rest_error(
                    "not_found", "agent_not_found", "agent_not_found", f"Agent {agent_id} not found"
                ),
            )
        return _json_response(
            connection, HTTPStatus.OK, {"signed_url": self.issue_signed_url(agent_id)}
        )

    # ------------------------------------------------------------------ connection handling

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.connections += 1
        self.request_headers.append(ws.request.headers)
        self.request_paths.append(ws.request.path)
        query = parse_qs(urlsplit(ws.request.path).query)
        conn = _Connection(
            index=self.connections - 1,
            ws=ws,
            agent_id=query.get("agent_id", [""])[0],
            prompt=self.prompt,
            first_message=self.first_message,
            language=self.language,
            voice_id=self.voice_id,
            client_events=self.client_events,
            input_rate=AUDIO_RATES[self.user_input_audio_format],
        )
        self._all.append(conn)
        self.received_per_connection.append(conn.events)
        self.sent_per_connection.append(conn.sent)
        try:
            self._check_access(conn, ws.request.headers, query)
            self._current = conn
            conn.tasks.append(asyncio.create_task(self._watchdog(conn)))
            async for raw in ws:
                await self._on_frame(conn, raw)
        except _EndConversation as end:
            await self._end(conn, end)
        except ConnectionClosed:
            pass
        finally:
            for task in conn.tasks:
                if task is not asyncio.current_task():
                    task.cancel()
            if conn.turn is not None:
                conn.turn.cancelled.set()
            await self._notify()

    def _check_access(
        self, conn: _Connection, headers: Headers, query: dict[str, list[str]]
    ) -> None:
        if conn.agent_id != self.agent_id:
            raise _EndConversation(3000, AGENT_NOT_FOUND, send_error=False)
        signature = query.get("conversation_signature", [None])[0]
        if signature is not None:
            issued = self._signatures.pop(signature, None)
            if issued is None or issued[0] != conn.agent_id:
                raise _EndConversation(1008, "Invalid conversation signature")
            if time.monotonic() - issued[1] > self.signed_url_ttl_s:
                raise _EndConversation(1008, "Conversation signature expired")
            return
        if self.requires_auth and headers.get("xi-api-key") != self.api_key:
            raise _EndConversation(
                1008, "This agent requires authentication: use a signed URL or an API key"
            )

    async def _end(self, conn: _Connection, end: _EndConversation) -> None:
        with contextlib.suppress(ConnectionClosed):
            if end.send_error:
                await self._send_error(conn, end.code, end.error_type, end.message)
        await self._close(conn, end.code, end.reason)

    async def _close(self, conn: _Connection, code: int, reason: str) -> None:
        reason = reason.encode()[:123].decode("utf-8", errors="ignore")
        conn.closed = (code, reason)
        self.closes.append((conn.index, code, reason))
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.close(code, reason)
        await self._notify()

    async def _watchdog(self, conn: _Connection) -> None:
        """The conversation's limits: maximum duration, and no user input for a while."""
        try:
            while conn.closed is None:
                await asyncio.sleep(0.05)
                now = time.monotonic()
                if self.max_duration_s is not None and now - conn.opened >= self.max_duration_s:
                    end = _EndConversation(
                        1000,
                        "Maximum conversation duration exceeded",
                        error_type="max_duration_exceeded",
                    )
                elif (
                    self.idle_timeout_s is not None and now - conn.last_input >= self.idle_timeout_s
                ):
                    end = _EndConversation(
                        1002, "No user input received", error_type="transport_receive_timeout"
                    )
                else:
                    continue
                if conn.turn is not None:
                    conn.turn.cancelled.set()
                await self._end(conn, end)
                return
        except ConnectionClosed:
            pass

    async def _ping_loop(self, conn: _Connection) -> None:
        assert self.ping_interval_s is not None
        with contextlib.suppress(ConnectionClosed):
            while conn.closed is None:
                await asyncio.sleep(self.ping_interval_s)
                await self._ping(conn)

    async def _ping(self, conn: _Connection) -> int:
        conn.ping_id += 1
        conn.pings[conn.ping_id] = time.monotonic()
        await self._emit(
            conn, "ping", {"ping_event": {"event_id": conn.ping_id, "ping_ms": conn.rtt_ms}}
        )
        return conn.ping_id

    # ------------------------------------------------------------------ client messages

    async def _on_frame(self, conn: _Connection, raw: str | bytes) -> None:
        text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")
        if self.client_validator is not None:
            try:
                self.client_validator(text)
            except Exception as exc:  # the hook's verdict is recorded, never raised
                self.invalid_client_frames.append((text, str(exc) or repr(exc)))
        try:
            message = json.loads(text)
        except ValueError:
            raise _EndConversation(1008, INVALID_MESSAGE, error_type="invalid_message") from None
        if not isinstance(message, dict):
            raise _EndConversation(1008, INVALID_MESSAGE, error_type="invalid_message")
        conn.events.append(message)
        self.received.append(message)
        await self._notify()
        kind = _client_type(message)
        if kind != "pong":
            conn.last_input = time.monotonic()
        if kind != "user_audio_chunk" and kind not in CLIENT_TYPES:
            raise _EndConversation(1008, INVALID_MESSAGE, error_type="invalid_message")
        missing = [name for name in REQUIRED_FIELDS.get(kind, ()) if name not in message]
        if missing:
            raise _EndConversation(
                1008,
                f"Missing required fields: {', '.join(missing)}",
                error_type="missing_fields",
            )
        if kind == "conversation_initiation_client_data":
            if not conn.started:
                await self._start(conn, message)
            return
        if not conn.started:
            await self._start(conn, None)
        if kind == "user_audio_chunk":
            await self._user_audio(conn, message["user_audio_chunk"])
        elif kind == "pong":
            sent_at = conn.pings.pop(message["event_id"], None)
            self.pongs.append(message)
            if sent_at is not None:
                conn.rtt_ms = max(1, round((time.monotonic() - sent_at) * 1000))
        elif kind == "client_tool_result":
            self.tool_results.append(message)
            turn = conn.turn
            if turn is not None and turn.tool_call_id == message["tool_call_id"]:
                turn.tool_result = message
                turn.tool_answered.set()
        elif kind == "contextual_update":
            conn.contextual_updates.append(str(message["text"]))
        elif kind == "user_message":
            typed = message.get("text")
            if isinstance(typed, str) and typed:
                await self._interrupt(conn)
                conn.transcript.append({"role": "user", "message": typed})
                self._start_agent_turn(conn)
        elif kind == "user_activity":
            self.user_activity += 1
        await self._notify()

    async def _start(self, conn: _Connection, initiation: JSON | None) -> None:
        """Apply the initiation (overrides, dynamic variables), send the metadata, and let
        the agent say its first message."""
        if initiation is not None:
            conn.initiation = initiation
            self.initiations.append(initiation)
            overrides = initiation.get("conversation_config_override") or {}
            for path in _override_paths(overrides):
                if self.allowed_overrides is not None and path not in self.allowed_overrides:
                    field_name = path.rsplit(".", 1)[-1]
                    raise _EndConversation(
                        1008,
                        f"Override for field '{field_name}' is not allowed by config.",
                        error_type="override_error",
                    )
            agent = overrides.get("agent") or {}
            conn.prompt = (agent.get("prompt") or {}).get("prompt") or conn.prompt
            if agent.get("first_message") is not None:
                conn.first_message = agent["first_message"]
            conn.language = agent.get("language") or conn.language
            conn.voice_id = (overrides.get("tts") or {}).get("voice_id") or conn.voice_id
            events = (overrides.get("conversation") or {}).get("client_events")
            if isinstance(events, list):
                conn.client_events = frozenset(str(e) for e in events)
            variables = initiation.get("dynamic_variables") or {}
            needed = {
                name
                for text in (conn.prompt, conn.first_message)
                for name in PLACEHOLDER.findall(text)
                if not name.startswith("system__")
            }
            missing = sorted(needed - set(variables))
            if missing:
                raise _EndConversation(
                    1008,
                    f"Missing required dynamic variables: {', '.join(missing)}",
                    error_type="missing_dynamic_variable",
                )

            def fill(text: str) -> str:
                return PLACEHOLDER.sub(lambda m: str(variables.get(m.group(1), m.group(0))), text)

            conn.prompt = fill(conn.prompt)
            conn.first_message = fill(conn.first_message)
        conn.started = True
        if self.auto_vad:
            conn.vad = EnergyVad(
                rate=conn.input_rate,
                threshold=self.speech_rms_threshold,
                silence_ms=self.silence_ms,
            )
        await self._emit(
            conn,
            "conversation_initiation_metadata",
            {
                "conversation_initiation_metadata_event": {
                    "conversation_id": conn.conversation_id,
                    "agent_output_audio_format": self.agent_output_audio_format,
                    "user_input_audio_format": self.user_input_audio_format,
                }
            },
        )
        self._ready += 1
        await self._notify()
        if self.ping_interval_s is not None:
            conn.tasks.append(asyncio.create_task(self._ping_loop(conn)))
        if conn.first_message:
            self._start_agent_turn(conn, text=conn.first_message)

    async def _user_audio(self, conn: _Connection, chunk: Any) -> None:
        try:
            data = base64.b64decode(chunk if isinstance(chunk, str) else "", validate=True)
        except binascii.Error:
            raise _EndConversation(1008, INVALID_MESSAGE, error_type="invalid_message") from None
        if self.user_input_audio_format == "ulaw_8000":
            pcm = ulaw_decode(data)
        else:
            pcm = data[: len(data) - len(data) % 2]
        conn.input_pcm.extend(pcm)
        if pcm:
            score = min(1.0, _rms(pcm) / (2 * self.speech_rms_threshold))
            await self._emit(conn, "vad_score", {"vad_score_event": {"vad_score": round(score, 3)}})
        if conn.vad is None:
            return
        for event, _position in conn.vad.feed(pcm):
            if event == "start":
                await self._user_started(conn)
            else:
                transcript = (
                    self.user_transcripts.popleft()
                    if self.user_transcripts
                    else DEFAULT_USER_TRANSCRIPT
                )
                await self._user_finished(conn, transcript)

    # ------------------------------------------------------------------ turns

    async def _user_started(self, conn: _Connection) -> None:
        conn.user_speaking = True
        await self._interrupt(conn)

    async def _user_finished(self, conn: _Connection, transcript: str) -> None:
        conn.user_speaking = False
        event_id = self._event_id(conn)
        words = _split_words(transcript, 3)
        heard = ""
        for piece in words[:-1]:
            heard += piece
            await self._emit(
                conn,
                "tentative_user_transcript",
                {
                    "tentative_user_transcription_event": {
                        "user_transcript": heard,
                        "event_id": event_id,
                    }
                },
            )
        await self._emit(
            conn,
            "user_transcript",
            {"user_transcription_event": {"user_transcript": transcript, "event_id": event_id}},
        )
        conn.transcript.append({"role": "user", "message": transcript})
        self._start_agent_turn(conn)

    async def _interrupt(self, conn: _Connection) -> None:
        """Barge-in: stop the agent turn being generated or played, ``interruption``, then
        the correction to what was heard."""
        loop = asyncio.get_running_loop()
        turn = conn.turn
        if turn is not None:
            turn.cancelled.set()
            if turn.task is not None and turn.task is not asyncio.current_task():
                await asyncio.shield(turn.task)
        else:
            turn = conn.last_turn
            if turn is None or loop.time() >= conn.playout_until:
                return
        conn.playout_until = 0.0
        if not turn.responded:
            return  # still thinking or waiting for a tool: nothing was said
        heard_ms = turn.audio_ms
        if turn.first_audio_at is not None:
            heard_ms = min(heard_ms, (loop.time() - turn.first_audio_at) * 1000)
        await self._emit(conn, "interruption", {"interruption_event": {"event_id": turn.event_id}})
        words = turn.text.split(" ")
        kept = math.floor(len(words) * heard_ms / turn.total_ms) if turn.total_ms else 0
        corrected = " ".join(words[:kept])
        if corrected != turn.text:
            await self._correct(conn, turn, corrected)

    async def _correct(self, conn: _Connection, turn: _AgentTurn, corrected: str) -> None:
        await self._emit(
            conn,
            "agent_response_correction",
            {
                "agent_response_correction_event": {
                    "original_agent_response": turn.text,
                    "corrected_agent_response": corrected,
                    "event_id": turn.event_id,
                }
            },
        )
        if turn.transcript_index is not None:
            conn.transcript[turn.transcript_index]["message"] = corrected

    def _start_agent_turn(self, conn: _Connection, *, text: str | None = None) -> None:
        turn = _AgentTurn()
        conn.turn = turn
        turn.task = asyncio.create_task(self._run_agent_turn(conn, turn, text))
        self._tasks.add(turn.task)
        turn.task.add_done_callback(self._tasks.discard)

    async def _run_agent_turn(self, conn: _Connection, turn: _AgentTurn, text: str | None) -> None:
        try:
            if text is None:
                tool_call, self.next_tool_call = self.next_tool_call, None
                if tool_call is not None and not await self._client_tool(conn, turn, tool_call):
                    return
                text = self.next_reply
            await self._speak(conn, turn, text)
        except ConnectionClosed:
            pass
        finally:
            if conn.turn is turn:
                conn.turn = None
            await self._notify()

    async def _client_tool(
        self, conn: _Connection, turn: _AgentTurn, tool_call: tuple[str, dict[str, Any]]
    ) -> bool:
        """``client_tool_call``, wait for the result, ``agent_tool_response``; False when the
        turn was cancelled meanwhile."""
        name, parameters = tool_call
        turn.tool_name = name
        turn.tool_call_id = _new_id("toolu")
        event_id = self._event_id(conn)
        await self._emit(
            conn,
            "client_tool_call",
            {
                "client_tool_call": {
                    "tool_name": name,
                    "tool_call_id": turn.tool_call_id,
                    "parameters": copy.deepcopy(parameters),
                    "event_id": event_id,
                }
            },
        )
        answered = asyncio.ensure_future(turn.tool_answered.wait())
        cancelled = asyncio.ensure_future(turn.cancelled.wait())
        await asyncio.wait({answered, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        answered.cancel()
        cancelled.cancel()
        if turn.tool_result is None:
            return False
        await self._emit(
            conn,
            "agent_tool_response",
            {
                "agent_tool_response": {
                    "tool_name": name,
                    "tool_call_id": turn.tool_call_id,
                    "tool_type": "client",
                    "is_error": bool(turn.tool_result.get("is_error")),
                    "is_called": True,
                    "event_id": event_id,
                }
            },
        )
        return not turn.cancelled.is_set()

    async def _speak(self, conn: _Connection, turn: _AgentTurn, text: str) -> None:
        loop = asyncio.get_running_loop()
        turn.text = text
        turn.event_id = self._event_id(conn)
        conn.last_turn = turn
        rate = AUDIO_RATES[self.agent_output_audio_format]
        pcm = _tone(self.reply_audio_ms, rate=rate)
        encoded = ulaw_encode(pcm) if self.agent_output_audio_format == "ulaw_8000" else pcm
        sample_bytes = 1 if self.agent_output_audio_format == "ulaw_8000" else 2
        chunk_size = rate * CHUNK_MS // 1000 * sample_bytes
        chunks = max(1, math.ceil(len(encoded) / chunk_size))
        turn.total_ms = len(encoded) / sample_bytes * 1000 / rate
        tentative = ""
        for piece in _split_words(text, 3):
            await asyncio.sleep(self.chunk_interval_s)
            if turn.cancelled.is_set():
                return
            tentative += piece
            await self._emit(
                conn,
                "internal_tentative_agent_response",
                {
                    "tentative_agent_response_internal_event": {
                        "tentative_agent_response": tentative
                    }
                },
            )
        for n in range(chunks):
            await asyncio.sleep(self.chunk_interval_s)
            if turn.cancelled.is_set():
                return
            if n == 0:
                turn.responded = True
                turn.transcript_index = len(conn.transcript)
                conn.transcript.append({"role": "agent", "message": text})
                await self._emit(
                    conn,
                    "agent_response",
                    {"agent_response_event": {"agent_response": text, "event_id": turn.event_id}},
                )
                turn.first_audio_at = loop.time()
            chunk = encoded[n * chunk_size : (n + 1) * chunk_size]
            await self._emit(
                conn,
                "audio",
                {
                    "audio_event": {
                        "audio_base_64": base64.b64encode(chunk).decode(),
                        "event_id": turn.event_id,
                    }
                },
            )
            turn.audio_ms += len(chunk) / sample_bytes * 1000 / rate
            conn.playout_until = (turn.first_audio_at or loop.time()) + turn.audio_ms / 1000

    # ------------------------------------------------------------------ helpers

    def _event_id(self, conn: _Connection) -> int:
        event_id = conn.next_event_id
        conn.next_event_id += 1
        return event_id

    def _conn(self, index: int | None = None) -> _Connection:
        if index is not None:
            return self._all[index]
        if self._current is None:
            raise RuntimeError("no conversation is open on the fake")
        return self._current

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _emit(self, conn: _Connection, kind: str, body: JSON) -> None:
        """Send a server event if the conversation's ``client_events`` include it."""
        if kind not in conn.client_events:
            return
        await self._send(conn, {"type": kind, **body})

    async def _send_error(
        self, conn: _Connection, code: int, error_type: str | None, message: str
    ) -> None:
        event: JSON = {"code": code, "message": message}
        if error_type is not None:
            event["error_type"] = error_type
        await self._send(conn, {"type": "error", "error_event": event})

    async def _send(self, conn: _Connection, message: JSON) -> None:
        await conn.ws.send(json.dumps(message))
        self.sent.append(message)
        conn.sent.append(message)
        await self._notify()


def _client_type(message: JSON) -> str:
    # The contract: audio is "detected by presence of user_audio_chunk" (a stray ``type``
    # beside it is not looked at; the validator, not the fake, flags it).
    if "user_audio_chunk" in message:
        return "user_audio_chunk"
    return str(message.get("type"))


def _rest_error(kind: str, code: str, status: str, message: str) -> JSON:
    return {
        "detail": {
            "type": kind,
            "code": code,
            "message": message,
            "status": status,
            "request_id": secrets.token_hex(16),
        }
    }


def _json_response(connection: ServerConnection, status: HTTPStatus, body: Any) -> Response:
    response = connection.respond(status, json.dumps(body))
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response
