"""A protocol-faithful fake of the xAI Grok Voice Agent API (``wss://api.x.ai/v1/realtime``).

xAI speaks the OpenAI Realtime GA event vocabulary with a hybrid session shape, so this fake
subclasses :class:`tests.fakes.openai_realtime.FakeOpenAIRealtime` and overrides its vendor
hooks. Test controls are the same (``user_speaks``, ``auto_vad``, ``next_reply``,
``next_tool_call``, ``drop_connection``, ``expire_session``, ``send_error``, ``wait_for``,
``wait_for_connections``, ``wait_idle``, ``received``, ``sent``, ``tool_outputs``, ...).

There is no official typed SDK for this API (provider-protocols.md section 3). Each
xAI-specific behaviour below names its source and a confidence: **high** = xAI's own docs
(docs.x.ai, as quoted by several independent readers of the guide, the REST reference and the
machine-readable schema https://docs.x.ai/voice-realtime.ws.json); **medium** = a maintained
integration that exercises the live API (pipecat ``services/xai/realtime``, LiveKit
``livekit-plugins-xai``) or an observed-on-the-wire note; **low** = inferred or assumed.

* Endpoint: path ``/v1/realtime``, ``?model=`` optional (default ``grok-voice-latest``).
  [high: docs.x.ai voice guide / REST reference]
* Auth: ``Authorization: Bearer <key>``. A bad key is refused *at the HTTP handshake*, never
  upgraded: no/malformed Authorization header -> HTTP 401; a wrong key -> HTTP 400 with xAI's
  REST error body ``{"code": "Client specified an invalid argument", "error": "Incorrect API key
  provided: xa***ey. You can obtain an API key from https://console.x.ai."}``. [medium-low:
  docs.x.ai/developers/debugging says, for *all endpoints*, "400 Bad Request ... an incorrect
  API key is supplied" and "401 Unauthorized: no authorization header or an invalid
  authorization token"; the body is the one xAI's REST API returns (continuedev/continue#10778).
  No source shows the WebSocket endpoint specifically; ephemeral ``xai-client-secret.<token>``
  subprotocol auth is not modelled.]
* Greeting: ``conversation.created`` (``{"conversation": {"id", "object":
  "realtime.conversation"}}``), then ``session.created``. [medium: the AsyncAPI/ws.json lists
  both; Voximplant's Grok reference and LiteLLM's docs call conversation.created "the first
  message at connection"; the audio-arena/multi-turn-eval Grok pipelines, which ran against the
  live API, note "Sends conversation.created before session.created". One third-party reading
  of the schema's exampleFlow lists session.created first: order is the uncertain part.]
* Session shape: top-level ``voice`` (default ``eve``; ``ara``, ``rex``, ``sal``, ``leo``,
  case-insensitive; other ids only when passed in ``custom_voices``) [high for the names and
  case-insensitivity (pipecat: "IDs are case-insensitive"); medium for ``eve`` as default:
  pipecat and the TTS docs, older guides said Ara]; top-level ``turn_detection`` = server_vad
  object (threshold 0.85, prefix_padding_ms 333 by default [high: guide table];
  silence_duration_ms default 500 [low: not documented]) or ``null`` (``{"type": null}`` also
  means manual [medium: a Go integration sends that]); ``semantic_vad`` or any other type gets
  an ``error`` event [high that there is no semantic_vad; low for the exact error];
  ``audio.input/output.format`` = ``{"type": "audio/pcm", "rate": R}`` with R in 8000, 16000,
  22050, 24000, 32000, 44100, 48000 (default 24000), ``audio/pcmu`` or ``audio/pcma`` (8 kHz)
  [high; pipecat's list says 21050, a typo]; ``audio/opus`` exists but the fake refuses it
  (not implemented here); ``audio.input.transcription`` ``{language_hint, keyterms, model}``.
  ``session.type`` is not part of xAI's session: ``"realtime"`` is accepted and ignored, as are
  unknown keys (``output_modalities``, ``tool_choice``, ``audio.output.voice``...) [medium: an
  integration reports sending ``type``/``output_modalities``/``tool_choice``/
  ``parallel_tool_calls`` works; LiveKit sends ``create_response``/``interrupt_response``].
* Tools: ``{"type": "function", name, description, parameters}`` (OpenAI's flat form, and the
  schema's nested ``{"type": "function", "function": {...}}``), native ``web_search``,
  ``x_search`` (``allowed_x_handles``), ``file_search`` (``vector_store_ids``,
  ``max_num_results``) and ``mcp``. A function named like a native tool it shadows
  (web_search/browse_page, x_keyword_search/x_semantic_search/x_user_search/x_thread_fetch,
  collections_search/file_search) is accepted by session.update, but each response then fails
  with an ``error`` event (type ``internal_error``, code ``server_error``). [medium: LiveKit
  tools.py "measured against grok-voice-latest: ... makes the first response.create return
  server_error"; the error's exact type/code is low]
* Keep-alive: ``{"type": "ping", "event_id", "timestamp": <unix ms>}`` every
  ``ping_interval_s`` (constructor; ``None`` disables). [medium: pipecat PingEvent and the
  audio-arena pipelines; interval unknown]
* Input transcription is always on (no ``transcription`` config needed) [medium: pipecat turns
  ``.completed`` into transcripts without configuring it]. Without ``transcription.model``,
  partials arrive as ``conversation.item.input_audio_transcription.completed`` with
  ``status: "in_progress"`` and a cumulative transcript, the final one with ``"completed"``
  [medium: LiveKit realtime_model.py]; with ``model`` set (``grok-transcribe``), partials are
  cumulative ``conversation.item.input_audio_transcription.updated`` events [high: the
  schema's ``.updated`` description; pipecat]. Partials stream while the user speaks (before
  ``speech_stopped``); the user item's ``conversation.item.added`` already carries the
  transcript and comes before the final ``.completed`` [medium-low: LiveKit's handler expects
  exactly that]. No ``.delta`` / ``.failed`` events, no ``usage`` on them.
* Not sent by xAI: ``conversation.item.done``, ``rate_limits.updated``,
  ``conversation.item.retrieved`` (``conversation.item.retrieve`` is an unknown event, error
  type ``invalid_event``) [high: xAI's OpenAI-compatibility page]. ``conversation.item.added``
  always has ``previous_item_id: null``; ``conversation.item.deleted`` has ``item_id: ""``
  [medium: LiveKit realtime_model.py].
* Responses: ``response.create`` takes ``modalities``, ``instructions``, ``metadata``
  [high: schema]; ``response.created`` carries ``usage: {}`` [medium: audio-arena "xAI sends
  empty usage object {}"]; ``response.done`` carries ``response.usage`` =
  ``{input_tokens, output_tokens, total_tokens}`` [high: schema] and the same ``usage`` at top
  level [medium: pipecat "also available at top level in Grok"].
* ``conversation.item.truncate`` is supported; ``conversation.item.truncated`` adds
  ``transcript``, the text kept up to the cut (xAI extension) [high: schema]. The fake cuts the
  transcript in proportion to the audio kept [low].
* ``input_audio_buffer.commit`` is "only available when turn_detection type is null": with
  server_vad it gets an ``error`` event [high for the rule, low for the error]. No minimum
  buffer length is documented: any non-empty buffer commits [low].
* ``force_message`` items (xAI extension): the server speaks the given text with a full
  response lifecycle; the client must not send ``response.create`` [high: schema].
* Errors: ``{"type": "error", "error": {type, code, message, param, event_id}}`` with
  ``type`` in invalid_request_error / invalid_event / internal_error / timeout / max_duration;
  most leave the session open [high: schema]. For "no active response" / "already has an
  active response" xAI's codes differ from OpenAI's (pipecat matches the message text): the
  fake keeps OpenAI's messages and sends ``code: null`` [low].
* Session length: 120 minutes [high: model card "Max session duration: 120 minutes"; older
  third-party notes say 1 hour]; :meth:`expire_session` sends an ``error`` of type
  ``max_duration`` then closes with 1000 [type high; code, message and close code low].
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import math
import time
from collections.abc import Callable, Coroutine, Iterable
from http import HTTPStatus
from typing import Any, ClassVar

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.fakes.openai_realtime import (
    SAMPLE_RATE,
    ClientProtocolError,
    FakeOpenAIRealtime,
    _Connection,
    _new_id,
    _Response,
    _split_words,
)

JSON = dict[str, Any]

XAI_CLIENT_EVENT_TYPES = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.create",
        "conversation.item.delete",
        "conversation.item.truncate",
        "response.create",
        "response.cancel",
        # WebRTC/SIP only, like OpenAI: known, but refused on WebSocket.
        "output_audio_buffer.clear",
    }
)
XAI_VOICES = frozenset({"eve", "ara", "rex", "sal", "leo"})
XAI_PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
XAI_FORMAT_TYPES = ("audio/pcm", "audio/pcmu", "audio/pcma")
XAI_VAD_DEFAULTS: JSON = {
    "type": "server_vad",
    "threshold": 0.85,
    "prefix_padding_ms": 333,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
}
XAI_VAD_RANGES: dict[str, tuple[float, float]] = {
    "threshold": (0.1, 0.9),
    "prefix_padding_ms": (0, 10_000),
    "silence_duration_ms": (0, 10_000),
}
# Function names a native tool answers to once enabled (LiveKit livekit-plugins-xai tools.py).
XAI_RESERVED_FUNCTION_NAMES: dict[str, frozenset[str]] = {
    "web_search": frozenset({"web_search", "browse_page"}),
    "x_search": frozenset(
        {"x_keyword_search", "x_semantic_search", "x_user_search", "x_thread_fetch"}
    ),
    "file_search": frozenset({"collections_search", "file_search"}),
}
XAI_TOOL_TYPES = ("function", "web_search", "x_search", "file_search", "mcp")
DEFAULT_MODEL = "grok-voice-latest"


def _bad(message: str, param: str, code: str | None = "invalid_value") -> ClientProtocolError:
    return ClientProtocolError(code, message, param=param)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _function_name(tool: JSON) -> Any:
    """The name of a function tool, flat (OpenAI) or nested (xAI schema) form."""
    nested = tool.get("function")
    return nested.get("name") if isinstance(nested, dict) else tool.get("name")


class FakeXAIRealtime(FakeOpenAIRealtime):
    """Fake ``wss://api.x.ai/v1/realtime`` on 127.0.0.1, any free port.

    Test-visible state is the OpenAI fake's (``connections``, ``received``, ``sent``,
    ``items_of(i)``...), plus ``refused_handshakes`` (upgrades refused with an HTTP status,
    which never become connections) and ``pings`` (keep-alives sent).
    """

    vendor: ClassVar[str] = "xai"
    client_event_types: ClassVar[frozenset[str]] = XAI_CLIENT_EVENT_TYPES
    min_commit_ms: ClassVar[float] = 0.0

    def __init__(
        self,
        *,
        api_key: str = "xai-test",
        next_reply: str = "Hello from the fake.",
        reply_audio_ms: int = 600,
        chunk_interval_s: float = 0.005,
        voice: str = "eve",
        instructions: str = "",
        auto_vad: bool = False,
        speech_rms_threshold: float = 300.0,
        max_session_s: int = 120 * 60,
        client_validator: Callable[[str], None] | None = None,
        ping_interval_s: float | None = 10.0,
        custom_voices: Iterable[str] = (),
    ) -> None:
        super().__init__(
            api_key=api_key,
            next_reply=next_reply,
            reply_audio_ms=reply_audio_ms,
            chunk_interval_s=chunk_interval_s,
            voice=voice,
            instructions=instructions,
            auto_vad=auto_vad,
            speech_rms_threshold=speech_rms_threshold,
            max_session_s=max_session_s,
            client_validator=client_validator,
        )
        self.ping_interval_s = ping_interval_s
        self.custom_voices = frozenset(custom_voices)
        self.refused_handshakes: list[tuple[int, Headers]] = []
        self.pings = 0

    # ------------------------------------------------------------------ handshake and greeting

    def _handshake_refusal(self, connection: ServerConnection, request: Request) -> Response | None:
        authorization = request.headers.get("Authorization", "")
        if authorization == f"Bearer {self.api_key}":
            return None
        if not authorization.startswith("Bearer ") or not authorization[7:].strip():
            status = HTTPStatus.UNAUTHORIZED
            # The status is documented (docs.x.ai debugging page); this body's wording is not.
            body = {
                "code": "Unauthenticated",
                "error": "No authorization header or an invalid authorization token was "
                "provided. Supply an Authorization: Bearer <XAI_API_KEY> header.",
            }
        else:
            key = authorization[7:].strip()
            masked = f"{key[:2]}***{key[-2:]}" if len(key) > 4 else "***"
            status = HTTPStatus.BAD_REQUEST
            body = {
                "code": "Client specified an invalid argument",
                "error": f"Incorrect API key provided: {masked}. You can obtain an API key "
                "from https://console.x.ai.",
            }
        self.refused_handshakes.append((int(status), request.headers))
        response = connection.respond(status, json.dumps(body))
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    def _connection_refusal(
        self, headers: Headers, query: dict[str, list[str]]
    ) -> ClientProtocolError | None:
        return None  # refused at the handshake instead

    def _default_session(self, model: str) -> JSON:
        return {
            "id": _new_id("sess"),
            "object": "realtime.session",
            "model": model or DEFAULT_MODEL,
            "instructions": self.default_instructions,
            "voice": self.default_voice,
            "turn_detection": dict(XAI_VAD_DEFAULTS),
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": SAMPLE_RATE}},
                "output": {"format": {"type": "audio/pcm", "rate": SAMPLE_RATE}, "speed": 1.0},
            },
            "tools": [],
        }

    async def _greet(self, conn: _Connection) -> None:
        await self._send(
            conn,
            {
                "type": "conversation.created",
                "conversation": {"id": conn.conversation_id, "object": "realtime.conversation"},
            },
        )
        await self._send(conn, {"type": "session.created", "session": conn.session})

    def _background(self, conn: _Connection) -> list[Coroutine[Any, Any, None]]:
        return [] if self.ping_interval_s is None else [self._ping_loop(conn)]

    async def _ping_loop(self, conn: _Connection) -> None:
        assert self.ping_interval_s is not None
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self.ping_interval_s)
                await self._send(conn, {"type": "ping", "timestamp": int(time.time() * 1000)})
                self.pings += 1

    # ------------------------------------------------------------------ session

    def _turn_detection(self, session: JSON) -> Any:
        return session.get("turn_detection")

    def _updated_session(self, conn: _Connection, update: Any) -> JSON:
        if not isinstance(update, dict):
            raise _bad(
                "Missing required parameter: 'session'.", "session", "missing_required_parameter"
            )
        session = copy.deepcopy(conn.session)
        if "type" in update and update["type"] != "realtime":
            raise _bad(f"Invalid value: {update['type']!r}.", "session.type")
        if "instructions" in update:
            if not isinstance(update["instructions"], str):
                raise _bad("Invalid 'instructions': expected a string.", "session.instructions")
            session["instructions"] = update["instructions"]
        if "voice" in update:
            session["voice"] = self._checked_voice(update["voice"])
        if "turn_detection" in update:
            session["turn_detection"] = self._checked_turn_detection(update["turn_detection"])
        if "audio" in update:
            self._merge_audio(session, update["audio"])
        if "tools" in update:
            tools = update["tools"]
            if not isinstance(tools, list):
                raise _bad("Invalid 'tools': expected an array.", "session.tools")
            for index, tool in enumerate(tools):
                self._check_tool(tool, f"session.tools[{index}]")
            session["tools"] = copy.deepcopy(tools)
        if "reasoning" in update:
            reasoning = update["reasoning"]
            if not isinstance(reasoning, dict) or reasoning.get("effort", "high") not in (
                "high",
                "none",
            ):
                raise _bad(
                    "Invalid 'reasoning.effort'. Supported values are: 'high', 'none'.",
                    "session.reasoning.effort",
                )
            session["reasoning"] = copy.deepcopy(reasoning)
        for key in ("resumption", "replace", "model"):
            if key in update:
                session[key] = copy.deepcopy(update[key])
        # Anything else (session.type, output_modalities, tool_choice, ...) is ignored.
        return session

    def _checked_voice(self, voice: Any) -> str:
        if not isinstance(voice, str) or (
            voice.lower() not in XAI_VOICES and voice not in self.custom_voices
        ):
            raise _bad(
                f"Invalid voice {voice!r}. Supported voices are: "
                + ", ".join(sorted(XAI_VOICES))
                + " (case-insensitive), or a custom voice id.",
                "session.voice",
            )
        return voice

    @staticmethod
    def _checked_turn_detection(value: Any) -> JSON | None:
        if value is None or (isinstance(value, dict) and value.get("type") is None):
            return None
        if not isinstance(value, dict) or value.get("type") != "server_vad":
            kind = value.get("type") if isinstance(value, dict) else value
            raise _bad(
                f"Invalid value: {kind!r}. Supported values are: 'server_vad' (or null for "
                "manual turn detection).",
                "session.turn_detection.type",
            )
        checked = dict(XAI_VAD_DEFAULTS)
        for key in ("threshold", "prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms"):
            if key not in value:
                continue
            number = value[key]
            low, high = XAI_VAD_RANGES.get(key, (0, math.inf))
            if not (number is None and key == "idle_timeout_ms") and (
                not _is_number(number) or not low <= number <= high
            ):
                raise _bad(f"Invalid '{key}': {number!r}.", f"session.turn_detection.{key}")
            checked[key] = number
        return checked

    def _merge_audio(self, session: JSON, audio: Any) -> None:
        if not isinstance(audio, dict):
            raise _bad("Invalid 'audio': expected an object.", "session.audio")
        for direction in ("input", "output"):
            part = audio.get(direction)
            if part is None:
                continue
            if not isinstance(part, dict):
                raise _bad(f"Invalid 'audio.{direction}'.", f"session.audio.{direction}")
            target = session["audio"][direction]
            if "format" in part:
                target["format"] = self._checked_format(
                    part["format"], f"session.audio.{direction}.format"
                )
            if direction == "input" and "transcription" in part:
                transcription = part["transcription"]
                if transcription is not None and not isinstance(transcription, dict):
                    raise _bad("Invalid 'transcription'.", "session.audio.input.transcription")
                target["transcription"] = copy.deepcopy(transcription)
            if direction == "output" and "speed" in part:
                speed = part["speed"]
                if not _is_number(speed) or not 0.7 <= speed <= 1.5:
                    raise _bad(
                        f"Invalid 'speed': {speed!r}. Range: 0.7-1.5.", "session.audio.output.speed"
                    )
                target["speed"] = speed

    @staticmethod
    def _checked_format(value: Any, param: str) -> JSON:
        kind = value.get("type") if isinstance(value, dict) else value
        if kind == "audio/opus":
            raise _bad("audio/opus is not implemented by the fake.", f"{param}.type")
        if not isinstance(value, dict) or kind not in XAI_FORMAT_TYPES:
            raise _bad(
                f"Invalid value: {kind!r}. Supported values are: "
                + ", ".join(f"'{k}'" for k in XAI_FORMAT_TYPES)
                + ".",
                f"{param}.type",
            )
        if kind != "audio/pcm":
            return {"type": kind}
        rate = value.get("rate", SAMPLE_RATE)
        if rate not in XAI_PCM_RATES or isinstance(rate, bool):
            raise _bad(
                f"Invalid value: {rate!r}. Supported values are: "
                + ", ".join(str(r) for r in XAI_PCM_RATES)
                + ".",
                f"{param}.rate",
            )
        return {"type": "audio/pcm", "rate": rate}

    @staticmethod
    def _check_tool(tool: Any, param: str) -> None:
        if not isinstance(tool, dict) or tool.get("type") not in XAI_TOOL_TYPES:
            kind = tool.get("type") if isinstance(tool, dict) else tool
            raise _bad(
                f"Invalid value: {kind!r}. Supported values are: "
                + ", ".join(f"'{t}'" for t in XAI_TOOL_TYPES)
                + ".",
                f"{param}.type",
            )
        kind = tool["type"]
        if kind == "function":
            name = _function_name(tool)
            if not isinstance(name, str) or not name:
                raise _bad(
                    "Missing required parameter: function 'name'.",
                    f"{param}.name",
                    "missing_required_parameter",
                )
        elif kind == "x_search":
            handles = tool.get("allowed_x_handles")
            if handles is not None and (
                not isinstance(handles, list) or not all(isinstance(h, str) for h in handles)
            ):
                raise _bad(
                    "Invalid 'allowed_x_handles': expected an array of strings.",
                    f"{param}.allowed_x_handles",
                )
        elif kind == "file_search":
            stores = tool.get("vector_store_ids")
            if not isinstance(stores, list) or not all(isinstance(s, str) for s in stores):
                raise _bad(
                    "Missing required parameter: 'vector_store_ids'.",
                    f"{param}.vector_store_ids",
                    "missing_required_parameter",
                )

    # ------------------------------------------------------------------ conversation

    async def _item_added(self, conn: _Connection, item: JSON, previous: str | None) -> None:
        # xAI's conversation.item.added always has previous_item_id null (LiveKit).
        await super()._item_added(conn, item, None)

    async def _item_done(self, conn: _Connection, item: JSON, previous: str | None) -> None:
        """xAI sends no conversation.item.done."""

    def _deleted_event(self, item_id: str) -> JSON:
        return {"type": "conversation.item.deleted", "item_id": ""}

    def _item_types(self) -> tuple[str, ...]:
        return ("message", "function_call", "function_call_output", "force_message")

    async def _item_created(self, conn: _Connection, item: JSON) -> bool:
        if item.get("type") != "force_message":
            return False
        content = item.get("content")
        text = (
            next(
                (
                    part.get("text")
                    for part in content or []
                    if isinstance(part, dict) and isinstance(part.get("text"), str)
                ),
                None,
            )
            if isinstance(content, list)
            else None
        )
        if text is None:
            raise _bad(
                "Missing required parameter: 'item.content[].text'.",
                "item.content",
                "missing_required_parameter",
            )
        if conn.response is not None:
            raise ClientProtocolError(
                None,
                "Conversation already has an active response in progress: "
                f"{conn.response.id}. Wait until the response is finished before "
                "creating a new one.",
            )
        self._start_response(conn, {}, text=text)
        return True

    def _commit_refusal(self, conn: _Connection) -> ClientProtocolError | None:
        if isinstance(self._turn_detection(conn.session), dict):
            return ClientProtocolError(
                None,
                "input_audio_buffer.commit is only available when turn_detection is null.",
                param="type",
            )
        return None

    async def _before_speech_stopped(
        self, conn: _Connection, item_id: str, transcript: str
    ) -> None:
        """Streamed partial transcripts, cumulative, while the user speaks."""
        if not transcript:
            return
        updated = self._transcription_model(conn) is not None
        said = ""
        for piece in _split_words(transcript, 3):
            said += piece
            if updated:
                event: JSON = {
                    "type": "conversation.item.input_audio_transcription.updated",
                    "item_id": item_id,
                    "transcript": said,
                }
            else:
                event = {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "transcript": said,
                    "status": "in_progress",
                }
            await self._send(conn, event)

    async def _user_turn_committed(
        self, conn: _Connection, item: JSON, previous: str | None, transcript: str, duration_ms: int
    ) -> None:
        item["content"][0]["transcript"] = transcript
        await self._add_item(conn, item, previous)
        await self._send(
            conn,
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item["id"],
                "transcript": transcript,
                "status": "completed",
            },
        )

    def _transcription_model(self, conn: _Connection) -> Any:
        config = self._transcription_config(conn.session)
        return config.get("model") if isinstance(config, dict) else None

    async def _send_truncated(
        self, conn: _Connection, item: JSON, end_ms: int, duration_ms: int
    ) -> None:
        kept = ""
        for part in item.get("content", []):
            if part.get("type") == "output_audio":
                words = str(part.get("transcript") or "").split()
                kept = " ".join(words[: len(words) * end_ms // max(1, duration_ms)])
                part["transcript"] = kept
        await self._send(
            conn,
            {
                "type": "conversation.item.truncated",
                "item_id": item["id"],
                "content_index": 0,
                "audio_end_ms": end_ms,
                "transcript": kept,
            },
        )

    # ------------------------------------------------------------------ responses

    def _response_modalities(self, conn: _Connection, params: JSON) -> list[str]:
        modalities = params.get("modalities")
        if isinstance(modalities, list) and modalities and "audio" not in modalities:
            return ["text"]
        return ["audio"]

    def _response_refusal(self, conn: _Connection) -> ClientProtocolError | None:
        tools = [t for t in conn.session.get("tools", []) if isinstance(t, dict)]
        names = {_function_name(t) for t in tools if t.get("type") == "function"}
        for tool in tools:
            shadowed = names & XAI_RESERVED_FUNCTION_NAMES.get(str(tool.get("type")), frozenset())
            if shadowed:
                return ClientProtocolError(
                    "server_error",
                    "The server had an error while processing your request.",
                    type="internal_error",
                )
        return None

    def _response_body(self, conn: _Connection, response: _Response, params: JSON) -> JSON:
        return {
            "id": response.id,
            "object": "realtime.response",
            "status": "in_progress",
            "status_details": None,
            "output": [],
            "usage": {},
            "metadata": params.get("metadata"),
        }

    async def _after_response_created(self, conn: _Connection) -> None:
        """xAI sends no rate_limits.updated."""

    def _usage(self, input_tokens: int, output_tokens: int, audio_out: int) -> JSON:
        return {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        }

    def _response_done_event(self, body: JSON) -> JSON:
        return {"type": "response.done", "response": body, "usage": copy.deepcopy(body["usage"])}

    # ------------------------------------------------------------------ errors and limits

    def _unknown_event_error(self, kind: Any) -> ClientProtocolError:
        return ClientProtocolError(
            None,
            f"Unknown or unsupported client event type: {kind!r}.",
            param="type",
            type="invalid_event",
        )

    def _error_code(self, name: str) -> str | None:
        return None

    def _expiry(self) -> tuple[ClientProtocolError, int, str]:
        minutes = self.max_session_s // 60
        message = f"Conversation exceeded the maximum duration of {minutes} minutes."
        return ClientProtocolError(None, message, type="max_duration"), 1000, "max_duration"
