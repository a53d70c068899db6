"""A protocol-faithful fake of the OpenAI Realtime API (GA interface) over WebSocket.

Written against /work/shared/reference/provider-protocols.md section 1: GA event names and
fields only (``response.output_audio.delta``, ``conversation.item.added``/``done``, ...), every
server event carries an ``event_id``, errors are ``error`` events that leave the session open.

Voice activity is driven by the test (:meth:`FakeOpenAIRealtime.user_speaks`), not by analysing
the audio the client sends. Usage::

    async with FakeOpenAIRealtime() as fake:
        url = f"{fake.base_url}/realtime?model=gpt-realtime"
        ...  # connect a client with ``Authorization: Bearer sk-test``
        await fake.wait_for("session.update")
        await fake.user_speaks("what's the weather?")
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import json
import math
import secrets
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

JSON = dict[str, Any]

SAMPLE_RATE = 24_000
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000  # PCM16 mono: 48 bytes per millisecond
CHUNK_MS = 40
MAX_EVENT_BYTES = 16 * 1024 * 1024  # input_audio_buffer.append may carry up to 15 MiB

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
# Parts of the session that session.update replaces wholesale instead of merging into.
_REPLACED_KEYS = frozenset(
    {"turn_detection", "format", "transcription", "noise_reduction", "tools", "tool_choice"}
)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(11)}"


def _tone(duration_ms: int, *, freq: float = 440.0, amplitude: int = 800) -> bytes:
    """A quiet sine tone, PCM16 LE mono at 24 kHz."""
    samples = SAMPLE_RATE * duration_ms // 1000
    step = 2 * math.pi * freq / SAMPLE_RATE
    return struct.pack(
        f"<{samples}h", *(int(amplitude * math.sin(step * i)) for i in range(samples))
    )


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

    def __init__(self, code: str | None, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


@dataclass
class _Response:
    id: str
    task: asyncio.Task[None] | None = None
    cancel_reason: str | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Connection:
    index: int
    ws: ServerConnection
    session: JSON
    items: dict[str, JSON] = field(default_factory=dict)
    audio_ms: dict[str, int] = field(default_factory=dict)  # assistant item id -> audio sent
    input_buffer: bytearray = field(default_factory=bytearray)
    input_ms_total: int = 0
    vad_cursor_ms: int = 0
    response: _Response | None = None
    audio_output_sent: bool = False
    conversation_id: str = field(default_factory=lambda: _new_id("conv"))


class FakeOpenAIRealtime:
    """Fake ``wss://api.openai.com/v1/realtime`` (GA) on 127.0.0.1, any free port.

    Test-visible state (all connections, in order):

    * ``connections``: WebSocket connections opened (including ones refused for auth)
    * ``request_headers`` / ``request_paths``: the handshake of each connection
    * ``received``: every client event (decoded dict), in order; ``received_per_connection``
      holds the same split by connection
    * ``sent``: every server event sent, in order
    * ``audio_bytes``: PCM bytes received through ``input_audio_buffer.append``
    * ``tool_outputs``: ``function_call_output`` items received
    * ``truncations``: accepted ``conversation.item.truncate`` events
    """

    def __init__(
        self,
        *,
        api_key: str = "sk-test",
        next_reply: str = "Hello from the fake.",
        reply_audio_ms: int = 600,
        chunk_interval_s: float = 0.005,
        voice: str = "marin",
        instructions: str = "",
    ) -> None:
        self.api_key = api_key
        self.next_reply = next_reply
        self.reply_audio_ms = reply_audio_ms
        self.chunk_interval_s = chunk_interval_s
        self.default_voice = voice
        self.default_instructions = instructions
        self.next_tool_call: tuple[str, dict[str, Any]] | None = None

        self.connections = 0
        self.request_headers: list[Headers] = []
        self.request_paths: list[str] = []
        self.received: list[JSON] = []
        self.received_per_connection: list[list[JSON]] = []
        self.sent: list[JSON] = []
        self.audio_bytes = 0
        self.tool_outputs: list[JSON] = []
        self.truncations: list[JSON] = []

        self._server: Server | None = None
        self._current: _Connection | None = None
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self.base_url = ""

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> FakeOpenAIRealtime:
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

    async def wait_for_connections(self, count: int = 1, timeout: float = 5) -> None:  # noqa: ASYNC109
        """Wait until ``count`` clients have connected and been sent ``session.created``."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(
                lambda: self.sent_types().count("session.created") >= count
            )

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
        vad = conn.session["audio"]["input"].get("turn_detection")
        if not isinstance(vad, dict):
            raise RuntimeError("turn_detection is null: the server does no VAD")
        item_id = _new_id("item")
        start_ms = max(conn.vad_cursor_ms, conn.input_ms_total - duration_ms)
        end_ms = start_ms + duration_ms
        conn.vad_cursor_ms = end_ms + int(vad.get("silence_duration_ms", 500))
        await self._send(
            conn,
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": start_ms,
                "item_id": item_id,
            },
        )
        if conn.response is not None and vad.get("interrupt_response", True):
            await self._cancel_response(conn, "turn_detected")
        await self._send(
            conn,
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": end_ms,
                "item_id": item_id,
            },
        )
        previous = self._last_item_id(conn)
        conn.input_buffer.clear()
        await self._send(
            conn,
            {
                "type": "input_audio_buffer.committed",
                "previous_item_id": previous,
                "item_id": item_id,
            },
        )
        item: JSON = {
            "id": item_id,
            "type": "message",
            "object": "realtime.item",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        await self._add_item(conn, item, previous)
        await self._transcribe(conn, item, transcript, duration_ms)
        if vad.get("create_response", True) and conn.response is None:
            self._start_response(conn, {})

    async def drop_connection(self, *, code: int | None = None, reason: str = "") -> None:
        """Close the current connection: abruptly (TCP abort, the client sees 1006) when
        ``code`` is None, else with that close code."""
        conn = self._conn()
        if code is None:
            conn.ws.transport.abort()
        else:
            await conn.ws.close(code, reason)

    async def send_error(
        self,
        code: str | None,
        message: str,
        type: str = "invalid_request_error",
        *,
        param: str | None = None,
    ) -> None:
        """Send an ``error`` event on the current connection (the session stays open)."""
        await self._send_error(self._conn(), ClientProtocolError(code, message, param=param), type)

    # ------------------------------------------------------------------ connection handling

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != "/v1/realtime":
            return connection.respond(HTTPStatus.NOT_FOUND, "Not found\n")
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
            "expires_at": int(time.time()) + 60 * 60,
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

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.connections += 1
        self.request_headers.append(ws.request.headers)
        self.request_paths.append(ws.request.path)
        events: list[JSON] = []
        self.received_per_connection.append(events)
        query = parse_qs(urlsplit(ws.request.path).query)
        model = query.get("model", [""])[0]
        conn = _Connection(index=self.connections - 1, ws=ws, session=self._default_session(model))
        # The real service completes the handshake, then reports bad credentials as an error
        # event and closes with 3000 "invalid_request_error.invalid_api_key".
        authorization = ws.request.headers.get("Authorization")
        if authorization != f"Bearer {self.api_key}":
            message = (
                "Incorrect API key provided."
                if authorization
                else "You didn't provide an API key. Provide it in the Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            await self._refuse(conn, ClientProtocolError("invalid_api_key", message))
            return
        if not model and "call_id" not in query:
            await self._refuse(
                conn,
                ClientProtocolError(
                    "missing_required_parameter",
                    "Missing required parameter: 'model'.",
                    param="model",
                ),
            )
            return
        self._current = conn
        try:
            await self._send(conn, {"type": "session.created", "session": conn.session})
            async for raw in ws:
                await self._on_message(conn, events, raw)
        except ConnectionClosed:
            pass
        finally:
            if conn.response is not None:
                conn.response.cancel_reason = "client_cancelled"
                conn.response.cancelled.set()

    async def _refuse(self, conn: _Connection, error: ClientProtocolError) -> None:
        try:
            await self._send_error(conn, error)
            await conn.ws.close(3000, f"invalid_request_error.{error.code}")
        except ConnectionClosed:
            pass

    async def _on_message(self, conn: _Connection, events: list[JSON], raw: str | bytes) -> None:
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
        events.append(event)
        self.received.append(event)
        async with self._changed:
            self._changed.notify_all()
        try:
            await self._dispatch(conn, event)
        except ClientProtocolError as error:
            await self._send_error(conn, error, client_event_id=event.get("event_id"))

    async def _dispatch(self, conn: _Connection, event: JSON) -> None:
        kind = event.get("type")
        if kind not in CLIENT_EVENT_TYPES:
            raise ClientProtocolError(
                "invalid_value",
                f"Invalid value: {kind!r}. Supported values are: "
                + ", ".join(f"'{t}'" for t in sorted(CLIENT_EVENT_TYPES))
                + ".",
                param="type",
            )
        if kind == "session.update":
            await self._session_update(conn, event)
        elif kind == "input_audio_buffer.append":
            self._append(conn, event)
        elif kind == "input_audio_buffer.commit":
            await self._commit(conn)
        elif kind == "input_audio_buffer.clear":
            conn.input_buffer.clear()
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
            await self._send(conn, {"type": "conversation.item.deleted", "item_id": item["id"]})
        elif kind == "conversation.item.truncate":
            await self._truncate(conn, event)
        elif kind == "response.create":
            if conn.response is not None:
                raise ClientProtocolError(
                    "conversation_already_has_active_response",
                    "Conversation already has an active response in progress: "
                    f"{conn.response.id}. Wait until the response is finished before "
                    "creating a new one.",
                )
            params = event.get("response")
            self._start_response(conn, params if isinstance(params, dict) else {})
        elif kind == "response.cancel":
            if conn.response is None or (event.get("response_id") not in (None, conn.response.id)):
                raise ClientProtocolError(
                    "response_cancel_not_active", "Cancellation failed: no active response found."
                )
            await self._cancel_response(conn, "client_cancelled")

    # ------------------------------------------------------------------ client events

    async def _session_update(self, conn: _Connection, event: JSON) -> None:
        update = event.get("session")
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
        voice = update.get("audio", {}).get("output", {}).get("voice")
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
        conn.session = session
        await self._send(conn, {"type": "session.updated", "session": session})

    def _append(self, conn: _Connection, event: JSON) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise ClientProtocolError(
                "missing_required_parameter",
                "Missing required parameter: 'audio'.",
                param="audio",
            )
        try:
            pcm = base64.b64decode(audio, validate=True)
        except binascii.Error as exc:
            raise ClientProtocolError(
                "invalid_value",
                "Invalid 'audio'. Expected base64-encoded audio bytes.",
                param="audio",
            ) from exc
        conn.input_buffer.extend(pcm)
        conn.input_ms_total += len(pcm) // BYTES_PER_MS
        self.audio_bytes += len(pcm)

    async def _commit(self, conn: _Connection) -> None:
        buffered_ms = len(conn.input_buffer) / BYTES_PER_MS
        if buffered_ms < 100:
            raise ClientProtocolError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {buffered_ms:.2f}ms of audio.",
            )
        item_id = _new_id("item")
        previous = self._last_item_id(conn)
        conn.input_buffer.clear()
        await self._send(
            conn,
            {
                "type": "input_audio_buffer.committed",
                "previous_item_id": previous,
                "item_id": item_id,
            },
        )
        item: JSON = {
            "id": item_id,
            "type": "message",
            "object": "realtime.item",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        await self._add_item(conn, item, previous)

    async def _item_create(self, conn: _Connection, event: JSON) -> None:
        given = event.get("item")
        if not isinstance(given, dict) or given.get("type") not in (
            "message",
            "function_call",
            "function_call_output",
        ):
            raise ClientProtocolError("invalid_value", "Invalid 'item.type'.", param="item.type")
        item = copy.deepcopy(given)
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
        for part in item.get("content", []):
            if part.get("type") == "output_audio":
                part["transcript"] = ""
        self.truncations.append(event)
        await self._send(
            conn,
            {
                "type": "conversation.item.truncated",
                "item_id": item["id"],
                "content_index": 0,
                "audio_end_ms": end_ms,
            },
        )

    # ------------------------------------------------------------------ responses

    def _start_response(self, conn: _Connection, params: JSON) -> None:
        response = _Response(id=_new_id("resp"))
        conn.response = response
        response.task = asyncio.create_task(self._run_response(conn, response, params))
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

    async def _run_response(self, conn: _Connection, response: _Response, params: JSON) -> None:
        try:
            await self._stream_response(conn, response, params)
        except ConnectionClosed:
            pass
        finally:
            if conn.response is response:
                conn.response = None

    async def _pause(self, response: _Response) -> bool:
        """Yield between chunks; True when the response has been cancelled."""
        await asyncio.sleep(self.chunk_interval_s)
        return response.cancelled.is_set()

    async def _stream_response(self, conn: _Connection, response: _Response, params: JSON) -> None:
        session = conn.session
        modalities = params.get("output_modalities") or session["output_modalities"]
        audio_cfg = copy.deepcopy(session["audio"]["output"])
        audio_cfg.pop("speed", None)
        body: JSON = {
            "object": "realtime.response",
            "id": response.id,
            "status": "in_progress",
            "status_details": None,
            "output": [],
            "conversation_id": conn.conversation_id,
            "output_modalities": list(modalities),
            "max_output_tokens": params.get("max_output_tokens", session["max_output_tokens"]),
            "audio": {"output": audio_cfg},
            "usage": None,
            "metadata": params.get("metadata"),
        }
        await self._send(conn, {"type": "response.created", "response": body})
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
        tool_call, self.next_tool_call = self.next_tool_call, None
        cancelled = await self._pause(response)
        output_tokens = 0
        if not cancelled and tool_call is not None:
            item, cancelled = await self._stream_tool_call(conn, response, tool_call)
            output_tokens = len(item["arguments"]) // 4 + 5
            body["output"].append(item)
        elif not cancelled:
            item, cancelled, output_tokens = await self._stream_message(conn, response, modalities)
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
        body["usage"] = {
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
        await self._send(conn, {"type": "response.done", "response": body})

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
        await self._send(
            conn,
            {
                "type": "conversation.item.added",
                "previous_item_id": previous,
                "item": copy.deepcopy(item),
            },
        )
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
        await self._send(
            conn,
            {
                "type": "conversation.item.done",
                "previous_item_id": previous,
                "item": copy.deepcopy(item),
            },
        )
        return copy.deepcopy(item), cancelled

    async def _stream_message(
        self, conn: _Connection, response: _Response, modalities: Iterable[str]
    ) -> tuple[JSON, bool, int]:
        text = self.next_reply
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
        await self._send(
            conn,
            {
                "type": "conversation.item.added",
                "previous_item_id": previous,
                "item": copy.deepcopy(item),
            },
        )
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
            conn.audio_ms[item["id"]] = 0
            chunks = max(1, math.ceil(self.reply_audio_ms / CHUNK_MS))
            pieces = _split_words(text, chunks)
            pcm = _tone(self.reply_audio_ms)
            chunk_bytes = CHUNK_MS * BYTES_PER_MS
            for n in range(chunks):
                if cancelled := await self._pause(response):
                    break
                chunk = pcm[n * chunk_bytes : (n + 1) * chunk_bytes]
                await self._send(
                    conn,
                    {
                        "type": "response.output_audio.delta",
                        **ref,
                        "delta": base64.b64encode(chunk).decode(),
                    },
                )
                conn.audio_output_sent = True
                conn.audio_ms[item["id"]] += len(chunk) // BYTES_PER_MS
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
        await self._send(
            conn,
            {
                "type": "conversation.item.done",
                "previous_item_id": previous,
                "item": copy.deepcopy(item),
            },
        )
        return copy.deepcopy(item), cancelled, max(1, len(text) // 4) * (6 if audio else 1)

    # ------------------------------------------------------------------ helpers

    def _conn(self) -> _Connection:
        if self._current is None:
            raise RuntimeError("no client is connected to the fake")
        return self._current

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
        await self._send(
            conn,
            {
                "type": "conversation.item.added",
                "previous_item_id": previous,
                "item": copy.deepcopy(item),
            },
        )
        await self._send(
            conn,
            {
                "type": "conversation.item.done",
                "previous_item_id": previous,
                "item": copy.deepcopy(item),
            },
        )

    async def _transcribe(
        self, conn: _Connection, item: JSON, transcript: str, duration_ms: int
    ) -> None:
        """Input transcription events: sent only when the session configures transcription."""
        config = conn.session["audio"]["input"].get("transcription")
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
        self.sent.append(event)
        async with self._changed:
            self._changed.notify_all()
        await conn.ws.send(json.dumps(event))

    async def _send_error(
        self,
        conn: _Connection,
        error: ClientProtocolError,
        type: str = "invalid_request_error",
        *,
        client_event_id: Any = None,
    ) -> None:
        await self._send(
            conn,
            {
                "type": "error",
                "error": {
                    "type": type,
                    "code": error.code,
                    "message": error.message,
                    "param": error.param,
                    "event_id": client_event_id,
                },
            },
        )
