"""OpenAI Realtime (GA interface) over ``websockets``: ``OpenAIRealtimeProvider``.

Wire format: ../shared/reference/provider-protocols.md §1 (checked against the official SDK).
One WebSocket per live session. The reader task turns server events into the ABC's
callbacks; client events are small JSON frames (audio as base64 PCM16 24 kHz).

Not yet here (issue 5, next steps): transparent reconnection before the 60-minute limit or
after a dropped socket, G.711 for 8 kHz telephony.
A dropped socket currently ends the session with a fatal ``connection_lost`` error.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import websockets
from websockets.asyncio.client import ClientConnection

from providers.base import ProviderError, RealtimeVoiceProvider
from providers.config import ProviderConfigError, config_to_dict, validate_config
from providers.openai.config import OpenAIProviderConfig
from voice.audio import StreamResampler
from voice.session import LiveSession

__all__ = ["OpenAIRealtimeProvider"]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "wss://api.openai.com/v1"
DEFAULT_MODEL = "gpt-realtime"
WIRE_RATE = 24000  # GA: audio/pcm is 24 kHz only (§1.6)
CONNECT_TIMEOUT_S = 15.0
SESSION_READY_TIMEOUT_S = 15.0

#: Error codes after which the session cannot go on (auth, billing, an expired session).
FATAL_ERROR_CODES = frozenset(
    {
        "invalid_api_key",
        "insufficient_quota",
        "session_expired",
        "model_not_found",
        "invalid_model",
    }
)


@dataclass(slots=True)
class _AssistantItem:
    item_id: str
    audio_ms: float = 0.0  # generated so far (24 kHz PCM16)


@dataclass(slots=True)
class _Conn:
    session: LiveSession
    socket: ClientConnection
    reader: asyncio.Task[None] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    response_active: bool = False
    pending_response: bool = False  # response.create wanted while one was active
    last_assistant: _AssistantItem | None = None
    resample_in: StreamResampler | None = None
    resample_out: StreamResampler | None = None
    closing: bool = False
    event_counter: int = 0
    setup_error: tuple[str, str] | None = None  # an error before the session was confirmed


class OpenAIRealtimeProvider(RealtimeVoiceProvider):
    """The seed's ``OpenAIRealtimeProvider(api_key, model, base_url=None)``."""

    name = "openai"

    def __init__(
        self,
        api_key: str | None = None,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
    ) -> None:
        super().__init__()
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        if not key:
            raise ValueError("an OpenAI API key is required (api_key= or OPENAI_API_KEY)")
        self._api_key = key
        self.model = model or DEFAULT_MODEL
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._conns: dict[str, _Conn] = {}

    def __repr__(self) -> str:  # never the key
        return f"OpenAIRealtimeProvider(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def model_name(self) -> str:
        return self.model

    # --- connecting ------------------------------------------------------------------------

    def _url(self) -> str:
        return f"{self.base_url}/realtime?{urlencode({'model': self.model})}"

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
        try:
            config = validate_config(OpenAIProviderConfig, provider_config or {})
        except ProviderConfigError as error:
            raise ProviderError("invalid_config", str(error), fatal=True) from None
        try:
            socket = await asyncio.wait_for(
                websockets.connect(
                    self._url(),
                    additional_headers={"Authorization": f"Bearer {self._api_key}"},
                    max_size=None,
                ),
                timeout=CONNECT_TIMEOUT_S,
            )
        except websockets.InvalidStatus as error:
            status = error.response.status_code
            code = "invalid_api_key" if status in (401, 403) else f"http_{status}"
            raise ProviderError(
                code, f"OpenAI refused the connection ({status})", fatal=True
            ) from None
        except (OSError, TimeoutError, websockets.WebSocketException) as error:
            raise ProviderError(
                "connect_failed",
                f"cannot reach OpenAI Realtime: {type(error).__name__}",
                fatal=True,
            ) from None
        conn = _Conn(session=session, socket=socket)
        if input_sample_rate != WIRE_RATE:
            conn.resample_in = StreamResampler(input_sample_rate, WIRE_RATE)
        if output_sample_rate != WIRE_RATE:
            conn.resample_out = StreamResampler(WIRE_RATE, output_sample_rate)
        self._conns[session.id] = conn
        conn.reader = asyncio.create_task(self._read(conn), name=f"openai-read-{session.id}")
        update = {
            "type": "session.update",
            "session": self._session_fields(
                system_prompt=system_prompt,
                voice=voice,
                tools=tools,
                config=config_to_dict(config),
                server_vad=server_vad,
            ),
        }
        with contextlib.suppress(websockets.ConnectionClosed):
            # Closed already (a refused key): the reader has the server's reason.
            await self._send(conn, update)
        try:
            async with asyncio.timeout(SESSION_READY_TIMEOUT_S):
                await conn.ready.wait()
        except TimeoutError:
            await self.disconnect(session)
            raise ProviderError(
                "session_timeout", "OpenAI did not confirm the session", fatal=True
            ) from None
        if conn.setup_error is not None:
            await self.disconnect(session)
            code, message = conn.setup_error
            raise ProviderError(code, f"OpenAI refused the session: {message}", fatal=True)
        if conn.closing:
            raise ProviderError("connect_failed", "OpenAI closed the session at once", fatal=True)

    def _session_fields(
        self,
        *,
        system_prompt: str | None = None,
        voice: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        config: dict[str, Any] | None = None,
        server_vad: bool = True,
        full: bool = True,
    ) -> dict[str, Any]:
        """The GA ``session`` object (§1.2) for the given settings."""
        config = config or {}
        fields: dict[str, Any] = {"type": "realtime"}
        audio_in: dict[str, Any] = {}
        audio_out: dict[str, Any] = {}
        if full:
            fields["output_modalities"] = ["audio"]
            audio_in["format"] = {"type": "audio/pcm", "rate": WIRE_RATE}
            audio_out["format"] = {"type": "audio/pcm", "rate": WIRE_RATE}
            transcription: dict[str, Any] = {
                "model": config.get("stt_model") or "gpt-4o-mini-transcribe"
            }
            if config.get("stt_language"):
                transcription["language"] = config["stt_language"]
            if config.get("stt_prompt"):
                transcription["prompt"] = config["stt_prompt"]
            audio_in["transcription"] = transcription
            if "turn_detection" in config:
                audio_in["turn_detection"] = config["turn_detection"]
            else:  # the vendor's server_vad with its defaults, or manual turns
                audio_in["turn_detection"] = {"type": "server_vad"} if server_vad else None
        elif "turn_detection" in config:
            audio_in["turn_detection"] = config["turn_detection"]
        if config.get("noise_reduction"):
            audio_in["noise_reduction"] = {"type": config["noise_reduction"]}
        if config.get("speed") is not None:
            audio_out["speed"] = config["speed"]
        if system_prompt is not None:
            fields["instructions"] = system_prompt
        if voice:
            audio_out["voice"] = voice
        if tools is not None:
            fields["tools"] = [_tool_definition(tool) for tool in tools]
            fields["tool_choice"] = "auto"
        if config.get("max_output_tokens") is not None:
            fields["max_output_tokens"] = config["max_output_tokens"]
        audio: dict[str, Any] = {}
        if audio_in:
            audio["input"] = audio_in
        if audio_out:
            audio["output"] = audio_out
        if audio:
            fields["audio"] = audio
        return fields

    # --- client events -----------------------------------------------------------------------

    async def _send(self, conn: _Conn, event: dict[str, Any]) -> None:
        if conn.closing:
            return
        conn.event_counter += 1
        event.setdefault("event_id", f"evt_rv_{conn.event_counter}")
        await conn.socket.send(json.dumps(event, separators=(",", ":")))

    def _conn(self, session: LiveSession) -> _Conn | None:
        return self._conns.get(session.id)

    async def send_audio(self, session: LiveSession, audio: bytes) -> None:
        conn = self._conn(session)
        if conn is None or conn.closing:
            return
        pcm = conn.resample_in.process(audio) if conn.resample_in else audio
        if pcm:
            # The hot path: the frame is assembled directly (base64 needs no JSON escaping)
            # and carries no event_id (nothing answers an append).
            data = base64.b64encode(pcm).decode("ascii")
            await conn.socket.send('{"type":"input_audio_buffer.append","audio":"' + data + '"}')

    async def _create_response(self, conn: _Conn) -> None:
        """One response in flight at a time: a second request waits for the first's end."""
        if conn.response_active:
            conn.pending_response = True
            return
        conn.response_active = True
        await self._send(conn, {"type": "response.create"})

    async def submit_tool_result(self, session: LiveSession, call_id: str, result: str) -> None:
        conn = self._conn(session)
        if conn is None:
            return
        await self._send(
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
            raise ProviderError("not_connected", "the OpenAI session is not open", fatal=False)
        content_type = "input_text" if role in ("user", "system") else "output_text"
        await self._send(
            conn,
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": role if role in ("user", "system", "assistant") else "user",
                    "content": [{"type": content_type, "text": text}],
                },
            },
        )
        if not silent:
            await self._create_response(conn)

    async def interrupt(self, session: LiveSession) -> None:
        conn = self._conn(session)
        if conn is not None and conn.response_active:
            conn.pending_response = False
            await self._send(conn, {"type": "response.cancel"})

    async def truncate_audio(self, session: LiveSession, played_ms: int) -> None:
        """Make the model's memory of its last reply match what the caller heard (§1.7):
        truncate at the played position, clamped to what was generated; delete the item
        when nothing was heard."""
        conn = self._conn(session)
        if conn is None or conn.last_assistant is None:
            return
        item = conn.last_assistant
        if played_ms <= 0:
            await self._send(conn, {"type": "conversation.item.delete", "item_id": item.item_id})
            conn.last_assistant = None
            return
        end_ms = int(min(played_ms, item.audio_ms))
        await self._send(
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
            raise ProviderError("not_connected", "the OpenAI session is not open", fatal=False)
        config: dict[str, Any] = {}
        if provider_config:
            try:
                config = config_to_dict(validate_config(OpenAIProviderConfig, provider_config))
            except ProviderConfigError as error:
                raise ProviderError("invalid_config", str(error), fatal=False) from None
        fields = self._session_fields(
            system_prompt=system_prompt, voice=voice, tools=tools, config=config, full=False
        )
        await self._send(conn, {"type": "session.update", "session": fields})

    async def disconnect(self, session: LiveSession) -> None:
        conn = self._conns.pop(session.id, None)
        if conn is None:
            return
        conn.closing = True
        with contextlib.suppress(Exception):
            await conn.socket.close()
        reader = conn.reader
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def close(self) -> None:
        for conn in list(self._conns.values()):
            await self.disconnect(conn.session)

    # --- server events -----------------------------------------------------------------------

    async def _read(self, conn: _Conn) -> None:
        session = conn.session
        try:
            async for frame in conn.socket:
                try:
                    event = json.loads(frame)
                except ValueError:
                    logger.warning("OpenAI sent a frame that is not JSON: ignored")
                    continue
                if isinstance(event, dict):
                    try:
                        await self._dispatch(conn, event)
                    except Exception:
                        logger.exception("handling OpenAI event %s failed", event.get("type"))
        except websockets.ConnectionClosed:
            pass
        except Exception:  # a broken socket must still end in the error below, not silence
            logger.exception("reading from OpenAI failed")
        if not conn.ready.is_set():  # closed before the session was confirmed
            conn.closing = True
            conn.ready.set()
            return
        if not conn.closing:
            conn.closing = True
            self._conns.pop(session.id, None)
            logger.warning("the OpenAI connection closed unexpectedly")
            await self._fire(
                "error", session, "connection_lost", "the connection to OpenAI was lost", True
            )

    async def _dispatch(self, conn: _Conn, event: dict[str, Any]) -> None:
        session = conn.session
        kind = event.get("type", "")
        if kind == "session.created":
            session.provider_session_id = str(event.get("session", {}).get("id", ""))
        elif kind == "session.updated":
            conn.ready.set()
        elif kind == "input_audio_buffer.speech_started":
            await self._fire("speech_start", session)
        elif kind == "input_audio_buffer.speech_stopped":
            await self._fire("speech_end", session)
        elif kind == "conversation.item.input_audio_transcription.delta":
            await self._fire("transcription", session, str(event.get("delta", "")), "user", False)
        elif kind == "conversation.item.input_audio_transcription.completed":
            await self._fire(
                "transcription", session, str(event.get("transcript", "")), "user", True
            )
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
            await self._fire(
                "transcription", session, str(event.get("transcript", "")), "assistant", True
            )
        elif kind == "response.function_call_arguments.done":
            await self._on_function_call(conn, event)
        elif kind == "response.done":
            await self._on_response_done(conn, event)
        elif kind == "error":
            await self._on_error(conn, event)
        # Everything else (rate_limits.updated, conversation.item.*, content parts, …) is
        # information we do not need.

    async def _on_audio_delta(self, conn: _Conn, event: dict[str, Any]) -> None:
        try:
            pcm = base64.b64decode(str(event.get("delta", "")), validate=True)
        except ValueError:
            logger.warning("OpenAI audio delta is not base64: dropped")
            return
        item_id = str(event.get("item_id", ""))
        if conn.last_assistant is None or conn.last_assistant.item_id != item_id:
            conn.last_assistant = _AssistantItem(item_id)
        conn.last_assistant.audio_ms += len(pcm) / 2 / WIRE_RATE * 1000
        out = conn.resample_out.process(pcm) if conn.resample_out else pcm
        if out:
            await self._fire("audio", conn.session, out)

    async def _on_function_call(self, conn: _Conn, event: dict[str, Any]) -> None:
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

    async def _on_response_done(self, conn: _Conn, event: dict[str, Any]) -> None:
        conn.response_active = False
        response = event.get("response") or {}
        if isinstance(response.get("usage"), dict):
            await self._fire("usage", conn.session, response["usage"])
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
        if conn.resample_out is not None:
            tail = conn.resample_out.flush()
            if tail:
                await self._fire("audio", conn.session, tail)
        await self._fire("response_end", conn.session)
        if conn.pending_response:
            conn.pending_response = False
            await self._create_response(conn)

    async def _on_error(self, conn: _Conn, event: dict[str, Any]) -> None:
        error = event.get("error") or {}
        code = str(error.get("code") or error.get("type") or "error")
        message = str(error.get("message") or "OpenAI reported an error")
        fatal = code in FATAL_ERROR_CODES
        if not conn.ready.is_set():  # the session.update was refused: connect() raises
            conn.setup_error = (code, message)
            conn.ready.set()
            return
        if code == "conversation_already_has_active_response":
            conn.pending_response = True
            conn.response_active = True
        await self._fire("error", conn.session, code, message, fatal)


def _tool_definition(tool: dict[str, Any]) -> dict[str, Any]:
    """A function tool in the GA shape ({type, name, description, parameters})."""
    if tool.get("type", "function") != "function":
        return dict(tool)
    definition = {
        "type": "function",
        "name": tool["name"],
        "description": tool.get("description", ""),
        "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
    }
    return definition
