"""Google Gemini Live (BidiGenerateContent) over ``websockets``: ``GeminiLiveProvider``.

Wire format: ../shared/reference/provider-protocols.md §2 (checked against google-genai's
typed models; tests validate every client frame against ``LiveClientMessage``). One
WebSocket per session; each client frame has exactly one top-level field (``setup``,
``realtimeInput``, ``clientContent``, ``toolResponse``).

* Audio: PCM16 16 kHz up (``audio/pcm;rate=16000``), 24 kHz down; the channel's rates are
  resampled here.
* Turns: Gemini's automatic activity detection finds them. It sends no speech-start event;
  ``serverContent.interrupted`` (the caller talked over a reply) is the barge-in, so it
  fires ``speech_start``. With ``automatic_activity_detection: false`` the client marks
  turns: ``activityStart`` before the first audio of a turn, ``activityEnd`` on ``end_turn``.
* Transcripts: ``inputTranscription`` / ``outputTranscription`` pieces are partials; a
  user turn is final when the model starts answering (or the piece says ``finished``), the
  assistant's at ``turnComplete`` (or ``interrupted``, cut to what was sent).
* Tools: ``toolCall.functionCalls`` → ``toolResponse.functionResponses`` (id, name,
  response); ``toolCallCancellation`` cancels the running calls (the ``tool_cancel``
  callback).
* Sessions live past the connection: ``sessionResumptionUpdate`` hands out resumable
  handles (the newest is kept, and reported through the ``resumption`` callback so the
  engine persists it); on ``goAway`` (the connection ends in ``timeLeft``), an unexpected
  drop or a ``reconfigure`` (agent handoff: new prompt, voice, tools), a new connection is
  opened with the handle and the new setup, so the model keeps the conversation. Caller audio
  in the gap is buffered (bounded) and replayed. Without a usable handle (resumption off, or
  refused) the conversation is restored as text turns instead. ``contextWindowCompression``
  (a sliding window) is on by default, so audio sessions are not capped at 15 minutes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from providers.base import ProviderError, RealtimeVoiceProvider
from providers.gemini.config import GeminiProviderConfig
from providers.wire import GapAudio, checked_config, open_socket
from voice.audio import StreamResampler
from voice.session import LiveSession

__all__ = ["GeminiLiveProvider"]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "wss://generativelanguage.googleapis.com"
DEFAULT_MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"
API_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
INPUT_RATE = 16000
OUTPUT_RATE = 24000
INPUT_MIME = f"audio/pcm;rate={INPUT_RATE}"
SETUP_TIMEOUT_S = 15.0
#: Close codes after which a new connection would fail the same way (§2.6): a policy
#: violation (a bad key, a model the key may not use).
FATAL_CLOSE_CODES = frozenset({1008})
#: Close code for an invalid argument: with a resumption handle, the handle was refused.
INVALID_ARGUMENT_CLOSE = 1007
_SENSITIVITY = {
    "start": {"HIGH": "START_SENSITIVITY_HIGH", "LOW": "START_SENSITIVITY_LOW"},
    "end": {"HIGH": "END_SENSITIVITY_HIGH", "LOW": "END_SENSITIVITY_LOW"},
}


@dataclass(slots=True)
class _Settings:
    system_prompt: str | None
    voice: str | None
    tools: list[dict[str, Any]] | None
    temperature: float | None
    config: dict[str, Any]


@dataclass(slots=True)
class _Turn:
    role: str  # "user" | "model"
    text: str


@dataclass(slots=True)
class _Conn:
    session: LiveSession
    settings: _Settings
    socket: ClientConnection | None = None
    reader: asyncio.Task[None] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    setup_error: tuple[str, str] | None = None
    live: bool = False
    closing: bool = False
    resample_in: StreamResampler | None = None
    resample_out: StreamResampler | None = None
    handle: str = ""  # the newest resumable handle
    # A model turn is in progress (audio or text coming).
    responding: bool = False
    user_text: str = ""  # the caller's turn so far (input transcription pieces)
    model_text: str = ""  # the model's turn so far (output transcription pieces)
    history: deque[_Turn] = field(default_factory=deque)
    history_chars: int = 0
    pending_calls: dict[str, str] = field(default_factory=dict)  # call id → function name
    manual_turns: bool = False
    in_activity: bool = False  # manual turns: activityStart sent, activityEnd not yet
    # Reconnection
    reconnecting: bool = False
    reconnect_task: asyncio.Task[None] | None = None
    go_away_task: asyncio.Task[None] | None = None
    gap_audio: GapAudio = field(default_factory=lambda: GapAudio(0))


class GeminiLiveProvider(RealtimeVoiceProvider):
    """The seed's ``GeminiLiveProvider(api_key, model)``; ``base_url`` for proxies and tests."""

    name = "gemini"
    #: Reconnection: delays before each attempt (their count is the attempt limit).
    reconnect_delays_s: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)
    #: Caller audio kept while reconnecting (seconds at 16 kHz; the newest is kept).
    gap_audio_max_s: float = 10.0
    #: Text restored when no handle can resume the session (characters, newest kept).
    history_max_chars: int = 24_000
    #: After goAway, how long to wait for a resumable moment before switching anyway,
    #: as a fraction of the time left.
    go_away_wait_fraction: float = 0.5

    def __init__(
        self,
        api_key: str | None = None,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
    ) -> None:
        super().__init__()
        key = api_key or os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")
        if not key:
            raise ValueError(
                "a Gemini API key is required (api_key=, GEMINI_API_KEY or GOOGLE_API_KEY)"
            )
        self._api_key = key
        self.model = model or DEFAULT_MODEL
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._conns: dict[str, _Conn] = {}

    def __repr__(self) -> str:  # never the key
        return f"GeminiLiveProvider(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def model_name(self) -> str:
        return self.model

    def manual_turns(self, provider_config: dict[str, Any] | None) -> bool:
        return (provider_config or {}).get("automatic_activity_detection") is False

    # --- connecting ------------------------------------------------------------------------

    def _url(self) -> str:
        return f"{self.base_url}{API_PATH}"

    @staticmethod
    def _validate(provider_config: dict[str, Any], *, fatal: bool) -> dict[str, Any]:
        return checked_config(GeminiProviderConfig, provider_config, fatal=fatal)

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
        config = self._validate(provider_config or {}, fatal=True)
        conn = _Conn(
            session=session,
            settings=_Settings(system_prompt, voice, tools, temperature, config),
            manual_turns=config.get("automatic_activity_detection") is False,
            gap_audio=GapAudio(int(self.gap_audio_max_s * INPUT_RATE * 2)),
        )
        if input_sample_rate != INPUT_RATE:
            conn.resample_in = StreamResampler(input_sample_rate, INPUT_RATE)
        if output_sample_rate != OUTPUT_RATE:
            conn.resample_out = StreamResampler(OUTPUT_RATE, output_sample_rate)
        self._conns[session.id] = conn
        try:
            await self._open(conn, handle="")
        except BaseException:
            await self.disconnect(session)
            raise
        conn.live = True

    async def _open(self, conn: _Conn, *, handle: str) -> None:
        """Connect, send ``setup`` (resuming ``handle`` when given), wait for setupComplete."""
        socket = await open_socket(
            self._url(), headers={"x-goog-api-key": self._api_key}, vendor="Gemini Live"
        )
        conn.socket = socket
        conn.ready = asyncio.Event()
        conn.setup_error = None
        conn.responding = False
        conn.in_activity = False
        conn.reader = asyncio.create_task(
            self._read(conn, socket), name=f"gemini-read-{conn.session.id}"
        )
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._send(conn, {"setup": self._setup(conn.settings, handle=handle)})
        try:
            async with asyncio.timeout(SETUP_TIMEOUT_S):
                await conn.ready.wait()
        except TimeoutError:
            raise ProviderError(
                "session_timeout", "Gemini did not confirm the setup", fatal=True
            ) from None
        setup_error = _setup_error(conn)
        if setup_error is not None:
            code, message = setup_error
            raise ProviderError(code, f"Gemini refused the session: {message}", fatal=True)

    def _setup(self, settings: _Settings, *, handle: str) -> dict[str, Any]:
        """BidiGenerateContentSetup (§2.2): generation options inside generationConfig, the
        rest beside it."""
        config = settings.config
        generation: dict[str, Any] = {"responseModalities": ["AUDIO"]}
        speech: dict[str, Any] = {}
        if settings.voice:
            speech["voiceConfig"] = {"prebuiltVoiceConfig": {"voiceName": settings.voice}}
        if config.get("language_code"):
            speech["languageCode"] = config["language_code"]
        if speech:
            generation["speechConfig"] = speech
        if settings.temperature is not None:
            generation["temperature"] = settings.temperature
        for key, wire in (
            ("top_p", "topP"),
            ("top_k", "topK"),
            ("max_output_tokens", "maxOutputTokens"),
        ):
            if config.get(key) is not None:
                generation[wire] = config[key]
        thinking: dict[str, Any] = {}
        if config.get("thinking_budget") is not None:
            thinking["thinkingBudget"] = config["thinking_budget"]
        if config.get("include_thoughts") is not None:
            thinking["includeThoughts"] = config["include_thoughts"]
        if thinking:
            generation["thinkingConfig"] = thinking
        if config.get("enable_affective_dialog") is not None:
            generation["enableAffectiveDialog"] = config["enable_affective_dialog"]
        setup: dict[str, Any] = {"model": f"models/{self.model}", "generationConfig": generation}
        if settings.system_prompt:
            setup["systemInstruction"] = {"parts": [{"text": settings.system_prompt}]}
        if settings.tools:
            setup["tools"] = _tools(settings.tools)
        realtime = _realtime_input_config(config)
        if realtime:
            setup["realtimeInputConfig"] = realtime
        if config.get("proactive_audio") is not None:
            setup["proactivity"] = {"proactiveAudio": config["proactive_audio"]}
        setup["inputAudioTranscription"] = {}
        setup["outputAudioTranscription"] = {}
        if config.get("session_resumption", True):
            setup["sessionResumption"] = {"handle": handle} if handle else {}
        compression = config.get("context_window_compression", True)
        if compression is not False:
            window: dict[str, Any] = {"slidingWindow": {}}
            if isinstance(compression, dict):
                if compression.get("target_tokens") is not None:
                    window["slidingWindow"]["targetTokens"] = compression["target_tokens"]
                if compression.get("trigger_tokens") is not None:
                    window["triggerTokens"] = compression["trigger_tokens"]
            setup["contextWindowCompression"] = window
        return setup

    # --- client messages ---------------------------------------------------------------------

    async def _send(self, conn: _Conn, message: dict[str, Any]) -> None:
        if conn.closing or conn.socket is None:
            return
        await conn.socket.send(json.dumps(message, separators=(",", ":")))

    async def _send_soon(self, conn: _Conn, message: dict[str, Any]) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._send(conn, message)

    async def send_audio(self, session: LiveSession, audio: bytes) -> None:
        conn = self._conns.get(session.id)
        if conn is None or conn.closing:
            return
        pcm = conn.resample_in.process(audio) if conn.resample_in else audio
        if not pcm:
            return
        if conn.reconnecting:
            conn.gap_audio.push(pcm)
            return
        socket = conn.socket
        if socket is None:
            return
        if conn.manual_turns and not conn.in_activity:
            conn.in_activity = True
            await self._send_soon(conn, {"realtimeInput": {"activityStart": {}}})
        data = base64.b64encode(pcm).decode("ascii")
        try:
            await socket.send(
                '{"realtimeInput":{"audio":{"mimeType":"'
                + INPUT_MIME
                + '","data":"'
                + data
                + '"}}}'
            )
        except websockets.ConnectionClosed:
            if conn.live and not conn.closing:
                conn.gap_audio.push(pcm)
                self._start_reconnect(conn, "connection_lost")

    async def end_turn(self, session: LiveSession) -> None:
        conn = self._conns.get(session.id)
        if conn is None or not conn.manual_turns or not conn.in_activity or conn.reconnecting:
            return
        conn.in_activity = False
        await self._send_soon(conn, {"realtimeInput": {"activityEnd": {}}})

    async def submit_tool_result(self, session: LiveSession, call_id: str, result: str) -> None:
        conn = self._conns.get(session.id)
        if conn is None:
            return
        name = conn.pending_calls.pop(call_id, None)
        if name is None:
            logger.info("Gemini: the result of call %s is no longer wanted (cancelled)", call_id)
            return
        response = {
            "functionResponses": [
                {"id": call_id, "name": name, "response": _function_response(result)}
            ]
        }
        if conn.reconnecting:  # the new connection's setup resumes; then the answer
            await self._wait_reconnected(conn)
        await self._send_soon(conn, {"toolResponse": response})

    async def inject_text(
        self, session: LiveSession, text: str, *, role: str = "user", silent: bool = False
    ) -> None:
        conn = self._conns.get(session.id)
        if conn is None:
            raise ProviderError("not_connected", "the Gemini session is not open", fatal=False)
        gemini_role = "model" if role == "assistant" else "user"
        if role == "system":
            text = f"[system] {text}"
        if conn.reconnecting:
            await self._wait_reconnected(conn)
        await self._send_soon(
            conn,
            {
                "clientContent": {
                    "turns": [{"role": gemini_role, "parts": [{"text": text}]}],
                    "turnComplete": not silent,
                }
            },
        )
        self._remember(conn, "model" if role == "assistant" else "user", text)

    async def interrupt(self, session: LiveSession) -> None:
        """Gemini has no cancel message: the engine drops the reply's audio (barge-in) and
        the model's turn ends on its own (or at the caller's next speech)."""
        conn = self._conns.get(session.id)
        if conn is not None:
            conn.model_text = ""

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
        """Agent handoff: a new connection resumes the session with the new setup (the
        model keeps the conversation; the earlier provider_config stays unless changed)."""
        conn = self._conns.get(session.id)
        if conn is None:
            raise ProviderError("not_connected", "the Gemini session is not open", fatal=False)
        config = self._validate(provider_config, fatal=False) if provider_config else {}
        settings = conn.settings
        merged = _Settings(
            system_prompt if system_prompt is not None else settings.system_prompt,
            voice or settings.voice,
            tools if tools is not None else settings.tools,
            temperature if temperature is not None else settings.temperature,
            {**settings.config, **config},
        )
        self._validate(merged.config, fatal=False)  # the combination must hold too
        conn.settings = merged
        conn.manual_turns = merged.config.get("automatic_activity_detection") is False
        if conn.reconnecting:
            return  # the reconnect in progress uses the new settings
        self._start_reconnect(conn, "reconfigure")
        await self._wait_reconnected(conn)

    async def _wait_reconnected(self, conn: _Conn) -> None:
        task = conn.reconnect_task
        if task is not None and task is not asyncio.current_task():
            await asyncio.shield(task)

    async def disconnect(self, session: LiveSession) -> None:
        conn = self._conns.pop(session.id, None)
        if conn is None:
            return
        conn.closing = True
        current = asyncio.current_task()
        tasks = [
            task
            for task in (conn.reader, conn.reconnect_task, conn.go_away_task)
            if task is not None and task is not current
        ]
        for task in tasks:
            if task is not conn.reader:
                task.cancel()
        if conn.socket is not None:
            with contextlib.suppress(Exception):
                await conn.socket.close()
        if conn.reader is not None and conn.reader is not current:
            conn.reader.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        for conn in list(self._conns.values()):
            await self.disconnect(conn.session)

    # --- server messages ---------------------------------------------------------------------

    async def _read(self, conn: _Conn, socket: ClientConnection) -> None:
        try:
            async for frame in socket:
                if conn.socket is not socket:
                    break
                try:
                    message = json.loads(frame)
                except ValueError:
                    logger.warning("Gemini sent a frame that is not JSON: ignored")
                    continue
                if isinstance(message, dict):
                    try:
                        await self._dispatch(conn, message)
                    except Exception:
                        logger.exception("handling a Gemini message failed (%s)", sorted(message))
        except websockets.ConnectionClosed:
            pass
        except Exception:
            logger.exception("reading from Gemini failed")
        if conn.closing or conn.socket is not socket:
            return
        code, reason = socket.close_code, socket.close_reason or ""
        if not conn.ready.is_set():  # refused during setup: connect() or the reconnect says so
            conn.setup_error = (_close_error_code(code, reason), reason or f"closed with {code}")
            conn.socket = None
            conn.ready.set()
            return
        if not conn.live or conn.reconnecting:
            return
        if code in FATAL_CLOSE_CODES:
            await self._fail(
                conn, _close_error_code(code, reason), f"Gemini closed the session: {reason}"
            )
            return
        logger.warning("the Gemini connection closed (code %s %s): reconnecting", code, reason)
        self._start_reconnect(conn, "connection_lost")

    async def _dispatch(self, conn: _Conn, message: dict[str, Any]) -> None:
        session = conn.session
        if "setupComplete" in message:
            setup = message.get("setupComplete") or {}
            if setup.get("sessionId"):
                session.provider_session_id = str(setup["sessionId"])
            conn.ready.set()
        content = message.get("serverContent")
        if isinstance(content, dict):
            await self._on_content(conn, content)
        tool_call = message.get("toolCall")
        if isinstance(tool_call, dict):
            for call in tool_call.get("functionCalls") or []:
                if isinstance(call, dict):
                    call_id, name = str(call.get("id", "")), str(call.get("name", ""))
                    conn.pending_calls[call_id] = name
                    args = call.get("args")
                    await self._fire(
                        "tool_call", session, call_id, name, args if args is not None else {}
                    )
        cancellation = message.get("toolCallCancellation")
        if isinstance(cancellation, dict):
            ids = [str(i) for i in cancellation.get("ids") or []]
            for call_id in ids:
                conn.pending_calls.pop(call_id, None)
            if ids:
                await self._fire("tool_cancel", session, ids)
        update = message.get("sessionResumptionUpdate")
        if isinstance(update, dict):
            handle = update.get("newHandle")
            if update.get("resumable") and handle:
                conn.handle = str(handle)
                await self._fire("resumption", session, conn.handle)
        usage = message.get("usageMetadata")
        if isinstance(usage, dict):
            await self._fire("usage", session, usage)
        go_away = message.get("goAway")
        if isinstance(go_away, dict):
            left = _duration_s(go_away.get("timeLeft"))
            logger.info("Gemini will close the connection in %.1f s: moving on", left)
            if conn.go_away_task is None or conn.go_away_task.done():
                conn.go_away_task = asyncio.create_task(self._on_go_away(conn, left))

    async def _on_content(self, conn: _Conn, content: dict[str, Any]) -> None:
        session = conn.session
        transcription = content.get("inputTranscription")
        if isinstance(transcription, dict) and transcription.get("text"):
            conn.user_text += str(transcription["text"])
            await self._fire("transcription", session, conn.user_text, "user", False)
            if transcription.get("finished"):
                await self._finish_user_turn(conn)
        if content.get("interrupted"):
            # The caller talked over the reply: the model stopped (what was sent stays).
            await self._fire("speech_start", session)
            await self._end_model_turn(conn, interrupted=True)
        turn = content.get("modelTurn")
        if isinstance(turn, dict):
            for part in turn.get("parts") or []:
                inline = part.get("inlineData") if isinstance(part, dict) else None
                if isinstance(inline, dict) and str(inline.get("mimeType", "")).startswith(
                    "audio/pcm"
                ):
                    await self._on_audio(conn, str(inline.get("data", "")))
        output = content.get("outputTranscription")
        if isinstance(output, dict) and output.get("text"):
            await self._start_model_turn(conn)
            conn.model_text += str(output["text"])
            await self._fire("transcription", session, conn.model_text, "assistant", False)
        if content.get("turnComplete"):
            await self._end_model_turn(conn, interrupted=False)

    async def _on_audio(self, conn: _Conn, data: str) -> None:
        try:
            pcm = base64.b64decode(data, validate=True)
        except ValueError:
            logger.warning("Gemini audio is not base64: dropped")
            return
        await self._start_model_turn(conn)
        out = conn.resample_out.process(pcm) if conn.resample_out else pcm
        if out:
            await self._fire("audio", conn.session, out)

    async def _start_model_turn(self, conn: _Conn) -> None:
        if conn.responding:
            return
        await self._finish_user_turn(conn)
        conn.responding = True
        if conn.manual_turns:
            conn.in_activity = False
        await self._fire("speech_end", conn.session)
        await self._fire("response_start", conn.session)

    async def _finish_user_turn(self, conn: _Conn) -> None:
        if conn.user_text:
            text, conn.user_text = conn.user_text.strip(), ""
            self._remember(conn, "user", text)
            await self._fire("transcription", conn.session, text, "user", True)

    async def _end_model_turn(self, conn: _Conn, *, interrupted: bool) -> None:
        await self._finish_user_turn(conn)
        if conn.model_text:
            text, conn.model_text = conn.model_text.strip(), ""
            self._remember(conn, "model", text + (" …" if interrupted else ""))
            await self._fire("transcription", conn.session, text, "assistant", True)
        if conn.responding:
            conn.responding = False
            if conn.resample_out is not None:
                tail = conn.resample_out.flush()
                if tail and not interrupted:
                    await self._fire("audio", conn.session, tail)
            await self._fire("response_end", conn.session)

    def _remember(self, conn: _Conn, role: str, text: str) -> None:
        if not text.strip():
            return
        conn.history.append(_Turn(role, text))
        conn.history_chars += len(text)
        while conn.history_chars > self.history_max_chars and len(conn.history) > 1:
            conn.history_chars -= len(conn.history.popleft().text)

    async def _fail(self, conn: _Conn, code: str, message: str) -> None:
        conn.closing = True
        self._conns.pop(conn.session.id, None)
        await self._fire("error", conn.session, code, message, True)

    # --- reconnection ------------------------------------------------------------------------

    async def _on_go_away(self, conn: _Conn, time_left_s: float) -> None:
        """Move before the server cuts off: at a resumable moment (no reply in progress, no
        tool running), at the latest halfway through the time left."""
        deadline = time.monotonic() + time_left_s * self.go_away_wait_fraction
        # A coarse look at flags the reader updates, 10 times a second, for at most the
        # time left: simpler than every writer signalling an event.
        while (conn.responding or conn.pending_calls) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        if not conn.closing:
            self._start_reconnect(conn, "go_away")

    def _start_reconnect(self, conn: _Conn, reason: str) -> None:
        if conn.closing or conn.reconnecting:
            return
        conn.reconnecting = True
        conn.reconnect_task = asyncio.create_task(
            self._reconnect(conn, reason), name=f"gemini-reconnect-{conn.session.id}"
        )

    async def _reconnect(self, conn: _Conn, reason: str) -> None:
        started = time.monotonic()
        old = conn.socket
        conn.socket = None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        if conn.responding:  # a reply cut by the drop ends here for the engine
            await self._end_model_turn(conn, interrupted=True)
        if conn.resample_out is not None:
            conn.resample_out.reset()
        handle = conn.handle if conn.settings.config.get("session_resumption", True) else ""
        resumed = bool(handle)
        failure: ProviderError | None = None
        attempts = 0
        for delay in self.reconnect_delays_s:
            attempts += 1
            if delay:
                await asyncio.sleep(delay)
            if _closing(conn):
                return
            try:
                await self._open(conn, handle=handle)
            except ProviderError as error:
                failure = error
                logger.warning("Gemini reconnect attempt %d failed: %s", attempts, error.message)
                half_open = _socket_of(conn)
                if half_open is not None:
                    with contextlib.suppress(Exception):
                        await half_open.close()
                    conn.socket = None
                if error.code == "invalid_api_key":
                    break
                if handle:
                    # The handle was refused (expired, unknown): start afresh, restoring the
                    # conversation as text.
                    handle, resumed = "", False
                    continue
                if error.code == "policy_violation":
                    break
                continue
            failure = None
            break
        if _closing(conn):
            return
        if failure is not None:
            conn.reconnecting = False
            await self._fail(
                conn,
                "connection_lost",
                "the connection to Gemini was lost and could not be restored after "
                f"{attempts} attempt(s): {failure.message}",
            )
            return
        try:
            if not resumed:
                await self._restore_text(conn)
            await self._replay_gap_audio(conn)
        except websockets.ConnectionClosed:
            pass
        conn.reconnecting = False
        socket = _socket_of(conn)
        if socket is None or socket.close_code is not None:
            self._start_reconnect(conn, "connection_lost")
            return
        gap_ms = round((time.monotonic() - started) * 1000)
        dropped_ms = round(conn.gap_audio.take_dropped() / (INPUT_RATE * 2) * 1000)
        logger.info(
            "Gemini session %s (%s) after %d ms, %d attempt(s)",
            "resumed" if resumed else "restored from text",
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
                "resumed": resumed,
                "provider_session_id": conn.session.provider_session_id,
            },
        )

    async def _restore_text(self, conn: _Conn) -> None:
        """No handle: the finished turns go in as history (no reply asked for)."""
        turns = [{"role": turn.role, "parts": [{"text": turn.text}]} for turn in conn.history]
        if turns:
            await self._send(conn, {"clientContent": {"turns": turns, "turnComplete": False}})

    async def _replay_gap_audio(self, conn: _Conn) -> None:
        for pcm in conn.gap_audio.drain():
            data = base64.b64encode(pcm).decode("ascii")
            await self._send(
                conn, {"realtimeInput": {"audio": {"mimeType": INPUT_MIME, "data": data}}}
            )


def _setup_error(conn: _Conn) -> tuple[str, str] | None:
    return conn.setup_error


def _closing(conn: _Conn) -> bool:
    return conn.closing


def _socket_of(conn: _Conn) -> ClientConnection | None:
    return conn.socket


def _close_error_code(code: int | None, reason: str = "") -> str:
    if "api key" in reason.lower():
        return "invalid_api_key"  # 1007 "API key not valid. Please pass a valid API key."
    if code == 1008:
        return "policy_violation"
    if code == INVALID_ARGUMENT_CLOSE:
        return "invalid_argument"
    return f"closed_{code}" if code is not None else "connection_lost"


def _duration_s(value: Any) -> float:
    """A protobuf Duration as JSON ("50s", "1.5s") in seconds; 0 when unreadable."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.endswith("s"):
        with contextlib.suppress(ValueError):
            return float(value[:-1])
    if isinstance(value, dict):  # {"seconds": 50, "nanos": 0}
        with contextlib.suppress(TypeError, ValueError):
            return float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
    return 0.0


def _realtime_input_config(config: dict[str, Any]) -> dict[str, Any]:
    detection: dict[str, Any] = {}
    if config.get("automatic_activity_detection") is False:
        detection["disabled"] = True
    start = _SENSITIVITY["start"].get(str(config.get("start_of_speech_sensitivity")))
    end = _SENSITIVITY["end"].get(str(config.get("end_of_speech_sensitivity")))
    # MEDIUM (the seed's word) has no Gemini level: left unspecified, the vendor's default.
    if start:
        detection["startOfSpeechSensitivity"] = start
    if end:
        detection["endOfSpeechSensitivity"] = end
    if config.get("prefix_padding_ms") is not None:
        detection["prefixPaddingMs"] = config["prefix_padding_ms"]
    if config.get("silence_duration_ms") is not None:
        detection["silenceDurationMs"] = config["silence_duration_ms"]
    realtime: dict[str, Any] = {}
    if detection:
        realtime["automaticActivityDetection"] = detection
    if config.get("activity_handling"):
        realtime["activityHandling"] = config["activity_handling"]
    return realtime


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Function tools as one functionDeclarations entry (JSON Schema parameters as
    ``parametersJsonSchema``); Gemini's own tools (``{"googleSearch": {}}``…) pass through."""
    declarations = []
    native = []
    for tool in tools:
        if tool.get("type", "function") == "function" and "name" in tool:
            declaration: dict[str, Any] = {
                "name": tool["name"],
                "description": tool.get("description", ""),
            }
            if tool.get("parameters"):
                declaration["parametersJsonSchema"] = tool["parameters"]
            declarations.append(declaration)
        else:
            native.append({key: value for key, value in tool.items() if key != "type"})
    result: list[dict[str, Any]] = []
    if declarations:
        result.append({"functionDeclarations": declarations})
    return result + native


def _function_response(result: str) -> dict[str, Any]:
    """A tool's answer as FunctionResponse.response: ``{"output": …}``, or ``{"error": …}``
    for the engine's error answers (``{"error": "…"}``), as the API documents the keys."""
    try:
        value = json.loads(result)
    except ValueError:
        return {"output": result}
    if isinstance(value, dict) and set(value) == {"error"}:
        return {"error": value["error"]}
    return {"output": value}
