"""ElevenLabs Agents (Conversational AI) over ``websockets``: ``ElevenLabsRealtimeProvider``.

Wire format: ../shared/reference/provider-protocols.md §4. The agent (LLM, voice, tools,
turn-taking) lives on the ElevenLabs dashboard; a session connects to it, sends
``conversation_initiation_client_data`` with the overrides (prompt, first message, language,
voice, temperature, dynamic variables) and streams audio in the formats the agent reports in
``conversation_initiation_metadata`` (converted here from and to the channel's rates).

* Barge-in: ``interruption`` (the caller talked over the agent) fires ``speech_start``; audio
  of the interrupted turn (``event_id`` up to the interruption's) is dropped. The server
  later sends ``agent_response_correction`` with what was actually said: the assistant's
  transcript is corrected (``transcript_correction`` callback; the engine fixes the stored
  transcript too).
* The protocol has no "reply finished" event: a reply ends when its audio has stopped for
  :attr:`ElevenLabsRealtimeProvider.reply_idle_s` (after ``agent_response``), or at the next
  user transcript or interruption.
* Tools are the agent's (dashboard-defined client tools): ``client_tool_call`` →
  ``client_tool_result``. The channel's ``tools`` are ignored (with a warning), as the seed
  says; only the handler matters.
* ``ping`` is answered with ``pong`` (same ``event_id``).
* A conversation cannot be resumed: a dropped socket ends the session with a clear reason,
  and ``reconfigure`` is refused.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from providers.base import ProviderError, RealtimeVoiceProvider
from providers.elevenlabs.config import ElevenLabsProviderConfig, ElevenLabsRealtimeConfig
from providers.wire import checked_config, open_socket
from voice import g711
from voice.audio import StreamResampler
from voice.session import LiveSession

__all__ = ["ElevenLabsRealtimeConfig", "ElevenLabsRealtimeProvider"]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "wss://api.elevenlabs.io"
METADATA_TIMEOUT_S = 15.0
SIGNED_URL_TIMEOUT_S = 10.0
SIGNED_URL_MAX_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class _Format:
    rate: int
    ulaw: bool

    @classmethod
    def parse(cls, name: Any) -> _Format:
        text = str(name or "pcm_16000")
        kind, _, rate = text.partition("_")
        if kind not in ("pcm", "ulaw") or not rate.isdigit():
            raise ProviderError(
                "bad_audio_format",
                f"ElevenLabs reported an unknown audio format {text!r}",
                fatal=True,
            )
        return cls(int(rate), kind == "ulaw")

    @property
    def name(self) -> str:
        return f"{'ulaw' if self.ulaw else 'pcm'}_{self.rate}"


@dataclass(slots=True)
class _Conn:
    session: LiveSession
    socket: ClientConnection
    reader: asyncio.Task[None] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    setup_error: tuple[str, str] | None = None
    closing: bool = False
    fmt_in: _Format | None = None
    fmt_out: _Format | None = None
    resample_in: StreamResampler | None = None
    resample_out: StreamResampler | None = None
    last_interrupt_id: int = -1
    responding: bool = False
    response_text_seen: bool = False
    idle_timer: asyncio.TimerHandle | None = None
    error: tuple[str, str] | None = None  # the server's error event before it closed


class ElevenLabsRealtimeProvider(RealtimeVoiceProvider):
    """``ElevenLabsRealtimeProvider(ElevenLabsRealtimeConfig(api_key, agent_id, ...))``."""

    name = "elevenlabs"
    supports_mid_session_reconfigure = False
    #: A reply has ended when no audio came for this long after its text (the protocol has
    #: no end-of-reply event).
    reply_idle_s: float = 0.6
    #: ... and for this long when its text has not come.
    reply_idle_fallback_s: float = 3.0

    def __init__(
        self,
        config: ElevenLabsRealtimeConfig | None = None,
        *,
        api_key: str | None = None,
        agent_id: str | None = None,
        model: str | None = None,
        requires_auth: bool | None = None,
        base_url: str | None = None,
    ) -> None:
        super().__init__()
        config = config or ElevenLabsRealtimeConfig()
        key = api_key or config.api_key or os.environ.get("ELEVENLABS_API_KEY", "")
        # An Agent row's "model" names the ElevenLabs agent (the dashboard holds the model).
        agent = agent_id or model or config.agent_id or os.environ.get("ELEVENLABS_AGENT_ID", "")
        if not agent:
            raise ValueError("an ElevenLabs agent_id is required")
        self._api_key = key
        self.agent_id = agent
        self.requires_auth = config.requires_auth if requires_auth is None else requires_auth
        if self.requires_auth and not key:
            raise ValueError("requires_auth=True needs an API key to fetch a signed URL")
        self.base_url = (base_url or config.base_url or DEFAULT_BASE_URL).rstrip("/")
        self._conns: dict[str, _Conn] = {}

    def __repr__(self) -> str:  # never the key
        return f"ElevenLabsRealtimeProvider(agent_id={self.agent_id!r}, base_url={self.base_url!r})"

    @property
    def model_name(self) -> str:
        return self.agent_id

    # --- connecting ------------------------------------------------------------------------

    def _socket_url(self) -> str:
        query = urllib.parse.urlencode({"agent_id": self.agent_id})
        return f"{self.base_url}/v1/convai/conversation?{query}"

    def _signed_url_endpoint(self) -> str:
        parts = urllib.parse.urlsplit(self.base_url)
        scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
        query = urllib.parse.urlencode({"agent_id": self.agent_id})
        path = f"{parts.path.rstrip('/')}/v1/convai/conversation/get-signed-url"
        return urllib.parse.urlunsplit((scheme, parts.netloc, path, query, ""))

    def _fetch_signed_url(self) -> str:
        """Blocking (run in a thread): the signed URL for one conversation."""
        request = urllib.request.Request(  # noqa: S310 -- http(s) only: built from base_url
            self._signed_url_endpoint(), headers={"xi-api-key": self._api_key}
        )
        try:
            with urllib.request.urlopen(request, timeout=SIGNED_URL_TIMEOUT_S) as response:  # noqa: S310
                body = response.read(SIGNED_URL_MAX_BYTES)
        except urllib.error.HTTPError as error:
            code = "invalid_api_key" if error.code in (401, 403) else f"http_{error.code}"
            raise ProviderError(
                code, f"ElevenLabs refused the signed URL request (HTTP {error.code})", fatal=True
            ) from None
        except (OSError, TimeoutError) as error:
            raise ProviderError(
                "connect_failed", f"cannot reach ElevenLabs: {type(error).__name__}", fatal=True
            ) from None
        try:
            url = json.loads(body)["signed_url"]
        except (ValueError, KeyError, TypeError):
            raise ProviderError(
                "bad_response", "ElevenLabs sent no signed_url", fatal=True
            ) from None
        if not isinstance(url, str) or not url.startswith(("wss://", "ws://")):
            raise ProviderError(
                "bad_response", "ElevenLabs sent an unusable signed_url", fatal=True
            )
        return url

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
        config = checked_config(ElevenLabsProviderConfig, provider_config or {}, fatal=True)
        if tools:
            logger.warning(
                "ElevenLabs agents define their tools on the dashboard: the channel's %d "
                "tool definition(s) are ignored (the tool handler still answers)",
                len(tools),
            )
        if self.requires_auth:
            url, headers = await asyncio.to_thread(self._fetch_signed_url), {}
        else:
            url = self._socket_url()
            headers = {"xi-api-key": self._api_key} if self._api_key else {}
        socket = await open_socket(url, headers=headers, vendor="ElevenLabs")
        conn = _Conn(session=session, socket=socket)
        self._conns[session.id] = conn
        conn.reader = asyncio.create_task(self._read(conn), name=f"elevenlabs-read-{session.id}")
        try:
            with contextlib.suppress(websockets.ConnectionClosed):
                await self._send(
                    conn,
                    _initiation(
                        system_prompt=system_prompt,
                        voice=voice,
                        temperature=temperature,
                        config=config,
                    ),
                )
            try:
                async with asyncio.timeout(METADATA_TIMEOUT_S):
                    await conn.ready.wait()
            except TimeoutError:
                raise ProviderError(
                    "session_timeout", "ElevenLabs did not start the conversation", fatal=True
                ) from None
            if conn.setup_error is not None:
                code, message = conn.setup_error
                raise ProviderError(
                    code, f"ElevenLabs refused the conversation: {message}", fatal=True
                )
            assert conn.fmt_in is not None and conn.fmt_out is not None
            if input_sample_rate != conn.fmt_in.rate:
                conn.resample_in = StreamResampler(input_sample_rate, conn.fmt_in.rate)
            if conn.fmt_out.rate != output_sample_rate:
                conn.resample_out = StreamResampler(conn.fmt_out.rate, output_sample_rate)
            expected = config.get("audio_format")
            if expected and expected != conn.fmt_in.name:
                logger.warning(
                    "the ElevenLabs agent takes %s, provider_config expected %s: converting",
                    conn.fmt_in.name,
                    expected,
                )
        except BaseException:
            await self.disconnect(session)
            raise

    # --- client messages ---------------------------------------------------------------------

    async def _send(self, conn: _Conn, message: dict[str, Any]) -> None:
        if conn.closing:
            return
        await conn.socket.send(json.dumps(message, separators=(",", ":")))

    async def _send_soon(self, conn: _Conn, message: dict[str, Any]) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._send(conn, message)

    async def send_audio(self, session: LiveSession, audio: bytes) -> None:
        conn = self._conns.get(session.id)
        if conn is None or conn.closing or conn.fmt_in is None:
            return
        pcm = conn.resample_in.process(audio) if conn.resample_in else audio
        if not pcm:
            return
        data = g711.ulaw_encode(pcm) if conn.fmt_in.ulaw else pcm
        encoded = base64.b64encode(data).decode("ascii")
        with contextlib.suppress(websockets.ConnectionClosed):
            await conn.socket.send('{"user_audio_chunk":"' + encoded + '"}')

    async def submit_tool_result(self, session: LiveSession, call_id: str, result: str) -> None:
        conn = self._conns.get(session.id)
        if conn is None:
            return
        await self._send_soon(
            conn,
            {
                "type": "client_tool_result",
                "tool_call_id": call_id,
                "result": result,
                "is_error": _is_error(result),
            },
        )

    async def inject_text(
        self, session: LiveSession, text: str, *, role: str = "user", silent: bool = False
    ) -> None:
        """The caller's words as a ``user_message`` (the agent answers); anything else
        (silent context, system notes) as a ``contextual_update``, which does not interrupt."""
        conn = self._conns.get(session.id)
        if conn is None:
            raise ProviderError("not_connected", "the ElevenLabs session is not open", fatal=False)
        if role == "user" and not silent:
            await self._send_soon(conn, {"type": "user_message", "text": text})
        else:
            await self._send_soon(conn, {"type": "contextual_update", "text": text})

    async def interrupt(self, session: LiveSession) -> None:
        """No client cancel exists: the engine drops the reply's audio; the reply ends."""
        conn = self._conns.get(session.id)
        if conn is not None and conn.responding:
            await self._end_reply(conn)

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
        raise ProviderError(
            "not_supported",
            "ElevenLabs applies overrides when a conversation starts; it cannot change a live "
            "one. End the session and start a new one with the new settings.",
            fatal=False,
        )

    async def disconnect(self, session: LiveSession) -> None:
        conn = self._conns.pop(session.id, None)
        if conn is None:
            return
        conn.closing = True
        if conn.idle_timer is not None:
            conn.idle_timer.cancel()
        with contextlib.suppress(Exception):
            await conn.socket.close()
        reader = conn.reader
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def close(self) -> None:
        for conn in list(self._conns.values()):
            await self.disconnect(conn.session)

    # --- server messages ---------------------------------------------------------------------

    async def _read(self, conn: _Conn) -> None:
        try:
            async for frame in conn.socket:
                try:
                    message = json.loads(frame)
                except ValueError:
                    logger.warning("ElevenLabs sent a frame that is not JSON: ignored")
                    continue
                if isinstance(message, dict):
                    try:
                        await self._dispatch(conn, message)
                    except ProviderError as error:
                        conn.setup_error = (error.code, error.message)
                        conn.ready.set()
                    except Exception:
                        logger.exception("handling ElevenLabs %s failed", message.get("type"))
        except websockets.ConnectionClosed:
            pass
        except Exception:
            logger.exception("reading from ElevenLabs failed")
        if conn.closing:
            return
        code, reason = conn.socket.close_code, conn.socket.close_reason or ""
        detail = conn.error[1] if conn.error else reason or f"closed with {code}"
        error_code = conn.error[0] if conn.error else _close_code(code)
        if not conn.ready.is_set():
            conn.setup_error = (error_code, detail)
            conn.ready.set()
            return
        conn.closing = True
        self._conns.pop(conn.session.id, None)
        if conn.idle_timer is not None:
            conn.idle_timer.cancel()
        if code == 1000 and conn.error is None:
            detail = "the agent ended the conversation"
            error_code = "conversation_ended"
        logger.warning("the ElevenLabs conversation closed (%s): %s", code, detail)
        await self._fire(
            "error",
            conn.session,
            error_code,
            f"{detail} (an ElevenLabs conversation cannot be resumed)",
            True,
        )

    async def _dispatch(self, conn: _Conn, message: dict[str, Any]) -> None:
        session = conn.session
        kind = message.get("type")
        if kind == "audio":
            event = message.get("audio_event") or {}
            await self._on_audio(conn, event)
        elif kind == "ping":
            event = message.get("ping_event") or {}
            await self._send_soon(conn, {"type": "pong", "event_id": event.get("event_id")})
        elif kind == "conversation_initiation_metadata":
            event = message.get("conversation_initiation_metadata_event") or {}
            conn.fmt_in = _Format.parse(event.get("user_input_audio_format"))
            conn.fmt_out = _Format.parse(event.get("agent_output_audio_format"))
            session.provider_session_id = str(event.get("conversation_id", ""))
            conn.ready.set()
        elif kind == "user_transcript":
            event = message.get("user_transcription_event") or {}
            await self._end_reply(conn)
            await self._fire("speech_end", session)
            text = str(event.get("user_transcript", ""))
            await self._fire("transcription", session, text, "user", True)
        elif kind == "tentative_user_transcript":
            event = message.get("tentative_user_transcription_event") or {}
            text = str(event.get("user_transcript", ""))
            await self._fire("transcription", session, text, "user", False)
        elif kind == "agent_response":
            event = message.get("agent_response_event") or {}
            text = str(event.get("agent_response", ""))
            conn.response_text_seen = True
            await self._fire("transcription", session, text, "assistant", True)
            self._arm_idle(conn)
        elif kind == "agent_response_correction":
            event = message.get("agent_response_correction_event") or {}
            await self._fire(
                "transcript_correction",
                session,
                str(event.get("original_agent_response", "")),
                str(event.get("corrected_agent_response", "")),
            )
        elif kind == "interruption":
            event = message.get("interruption_event") or {}
            conn.last_interrupt_id = max(conn.last_interrupt_id, _int(event.get("event_id")))
            await self._fire("speech_start", session)
            await self._end_reply(conn)
        elif kind == "client_tool_call":
            event = message.get("client_tool_call") or {}
            parameters = event.get("parameters")
            await self._fire(
                "tool_call",
                session,
                str(event.get("tool_call_id", "")),
                str(event.get("tool_name", "")),
                parameters if parameters is not None else {},
            )
        elif kind == "error":
            event = message.get("error_event") or {}
            code = str(event.get("error_type") or event.get("code") or "error")
            text = str(event.get("message") or event.get("reason") or "ElevenLabs error")
            conn.error = (code, text)
            logger.warning("ElevenLabs error %s: %s", code, text)
        # vad_score, internal_*, agent_tool_*, context_usage… carry nothing we act on.

    async def _on_audio(self, conn: _Conn, event: dict[str, Any]) -> None:
        event_id = event.get("event_id")
        if event_id is not None and _int(event_id) <= conn.last_interrupt_id:
            return  # a chunk of the turn the caller interrupted
        try:
            data = base64.b64decode(str(event.get("audio_base_64", "")), validate=True)
        except ValueError:
            logger.warning("ElevenLabs audio is not base64: dropped")
            return
        if conn.fmt_out is None:
            return
        if not conn.responding:
            conn.responding = True
            await self._fire("response_start", conn.session)
        pcm = g711.ulaw_decode(data) if conn.fmt_out.ulaw else data
        out = conn.resample_out.process(pcm) if conn.resample_out else pcm
        if out:
            await self._fire("audio", conn.session, out)
        self._arm_idle(conn)

    def _arm_idle(self, conn: _Conn) -> None:
        if conn.idle_timer is not None:
            conn.idle_timer.cancel()
        loop = asyncio.get_running_loop()
        conn.idle_timer = loop.call_later(self.reply_idle_s, self._idle, conn)

    def _idle(self, conn: _Conn, waited: float = 0.0) -> None:
        conn.idle_timer = None
        if not conn.responding or conn.closing:
            return
        waited += self.reply_idle_s
        if not conn.response_text_seen and waited < self.reply_idle_fallback_s:
            # The reply's text has not come (or is not among the agent's client events):
            # a pause in its audio may be the TTS waiting for the LLM. Wait longer.
            loop = asyncio.get_running_loop()
            conn.idle_timer = loop.call_later(self.reply_idle_s, self._idle, conn, waited)
            return
        task = asyncio.ensure_future(self._end_reply(conn))
        task.add_done_callback(_log_failure)

    async def _end_reply(self, conn: _Conn) -> None:
        if not conn.responding:
            return
        conn.responding = False
        conn.response_text_seen = False
        if conn.idle_timer is not None:
            conn.idle_timer.cancel()
            conn.idle_timer = None
        if conn.resample_out is not None:
            tail = conn.resample_out.flush()
            if tail:
                await self._fire("audio", conn.session, tail)
        await self._fire("response_end", conn.session)


def _initiation(
    *,
    system_prompt: str | None,
    voice: str | None,
    temperature: float | None,
    config: dict[str, Any],
) -> dict[str, Any]:
    """conversation_initiation_client_data (§4.2): only what is set is overridden (each
    override must be allowed in the agent's security settings)."""
    agent: dict[str, Any] = {}
    prompt: dict[str, Any] = {}
    if system_prompt:
        prompt["prompt"] = system_prompt
    if config.get("llm"):
        prompt["llm"] = config["llm"]
    if prompt:
        agent["prompt"] = prompt
    if config.get("first_message") is not None:
        agent["first_message"] = config["first_message"]
    if config.get("language"):
        agent["language"] = config["language"]
    tts: dict[str, Any] = {}
    if voice:
        tts["voice_id"] = voice
    for key, wire in (
        ("tts_stability", "stability"),
        ("tts_similarity_boost", "similarity_boost"),
        ("tts_speed", "speed"),
    ):
        if config.get(key) is not None:
            tts[wire] = config[key]
    override: dict[str, Any] = {}
    if agent:
        override["agent"] = agent
    if tts:
        override["tts"] = tts
    if config.get("asr_keywords"):
        override["asr"] = {"keywords": list(config["asr_keywords"])}
    message: dict[str, Any] = {"type": "conversation_initiation_client_data"}
    if override:
        message["conversation_config_override"] = override
    if temperature is not None:
        message["custom_llm_extra_body"] = {"temperature": temperature}
    if config.get("dynamic_variables"):
        message["dynamic_variables"] = dict(config["dynamic_variables"])
    return message


def _is_error(result: str) -> bool:
    try:
        value = json.loads(result)
    except ValueError:
        return False
    return isinstance(value, dict) and set(value) == {"error"}


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _close_code(code: int | None) -> str:
    return {1008: "policy_violation", 1002: "protocol_error", 1011: "server_error"}.get(
        code or 0, "connection_lost"
    )


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("ending an ElevenLabs reply failed", exc_info=task.exception())
