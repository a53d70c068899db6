"""``RealtimeVoiceChannel``: joins a caller's transport to a realtime provider (the seed's API).

Per session, one owner task supervises three loops in a TaskGroup (DESIGN §5):

- **input**: caller frames from a bounded queue (overflow: drop the *oldest*, so latency stays
  low) → access check (binding snapshot) → tool-call mute gate → resample → level meter →
  ``provider.send_audio``;
- **output**: provider audio from a bounded queue tagged with a generation (overflow: drop the
  *newest*; stale generations are skipped after a barge-in) → resample → ``output_muted``
  check → level meter → ``transport.send_audio``;
- **control**: transcripts in arrival order (sync ON_TRANSCRIPTION hooks, client message,
  store) and tool calls, started only after the transcripts that preceded them.

Nothing on the audio path touches the ORM or the channel layer; the store and hooks run in
the control loop and tool tasks. Ending a session cancels and awaits every task it owns.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from providers.base import RealtimeVoiceProvider
from roomvoice.lib.logging import log_context
from voice.audio import (
    AudioFormatError,
    LevelThrottle,
    Pcm16Framer,
    StreamResampler,
    rms_dbfs,
)
from voice.events import (
    AudioLevelEvent,
    BargeInEvent,
    DtmfEvent,
    ProviderErrorEvent,
    SessionEndedEvent,
    SessionStartedEvent,
    ToolCallEvent,
    TranscriptionEvent,
)
from voice.kit import _CURRENT_CALL_ID, HookContext, HookTrigger, Tool, ToolError
from voice.session import LiveSession, SessionState, SessionStateError
from voice.store import (
    BindingSnapshot,
    MemoryStore,
    SessionStore,
    StoredCorrection,
    StoredToolCall,
    StoredTranscript,
)
from voice.tools.runner import (
    error_json,
    failure_text,
    result_text,
    timeout_text,
    truncate_result,
)
from voice.transports.base import RealtimeTransport

logger = logging.getLogger(__name__)

__all__ = ["RealtimeVoiceChannel"]

MAX_SAMPLE_RATE = 192_000
PRECONNECT_MAX_BYTES = 1 << 20  # ≈ 32 s of 16 kHz PCM16 while the provider connects
INBOUND_QUEUE_FRAMES = 100  # ≈ 2 s of 20 ms frames
OUTBOUND_QUEUE_CHUNKS = 500  # ≈ 10 s of provider audio
SETTLE_TIMEOUT_S = 30.0
DTMF_DIGITS = frozenset("0123456789*#ABCD")
CONTROL_DRAIN_TIMEOUT_S = 5.0  # how long an ending session waits for queued transcripts

ToolHandler = Callable[[str, dict[str, Any]], Awaitable[Any]]


class _EndOfResponse:
    """Queued after the last audio of a reply: flush the resampler, then tell the transport."""


END_OF_RESPONSE = _EndOfResponse()


def _check_rate(name: str, value: object, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_SAMPLE_RATE:
        raise ValueError(
            f"{name} must be a positive integer up to {MAX_SAMPLE_RATE} Hz, got {value!r}"
        )
    return value


def _warn_counted(runtime: _Runtime, counter: str, message: str) -> None:
    """Counts a failure on the audio path; logs the first and every 500th (with the
    traceback), so a dead peer cannot flood the log at frame rate."""
    count = runtime.stats.get(counter, 0) + 1
    runtime.stats[counter] = count
    if count == 1 or count % 500 == 0:
        logger.warning("%s (%d so far)", message, count, exc_info=True)


def _check_temperature(value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 2.0:
        raise ValueError(f"temperature must be between 0 and 2, got {value!r}")


@dataclass
class _ToolTable:
    """The tools one session exposes: definitions for the provider, schemas, handlers."""

    definitions: list[dict[str, Any]] = field(default_factory=list)
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects: dict[str, Tool] = field(default_factory=dict)

    @classmethod
    def build(cls, tools: Iterable[Tool | dict[str, Any]] | None) -> _ToolTable:
        table = cls()
        for tool in tools or ():
            if isinstance(tool, Tool):
                table.definitions.append(tool.definition)
                table.schemas[tool.name] = tool.parameters
                table.objects[tool.name] = tool
            elif isinstance(tool, dict):
                kind = tool.get("type", "function")
                if kind == "function":
                    name = tool.get("name")
                    if not isinstance(name, str) or not name:
                        raise ValueError(f"a function tool needs a name: {tool!r}")
                    parameters = tool.get("parameters") or {"type": "object", "properties": {}}
                    try:
                        Draft202012Validator.check_schema(parameters)
                    except SchemaError as error:
                        raise ValueError(
                            f"tool {name!r} has invalid parameters: {error.message}"
                        ) from None
                    table.schemas[name] = parameters
                table.definitions.append(dict(tool))  # native tools (web_search…) pass through
            else:
                raise TypeError(f"tools must be Tool objects or dicts, got {type(tool).__name__}")
        return table


@dataclass
class _Runtime:
    """Everything the engine keeps for one live session."""

    session: LiveSession
    tools: _ToolTable
    system_prompt: str | None
    voice: str | None
    temperature: float | None
    provider_config: dict[str, Any]
    binding: BindingSnapshot = field(default_factory=BindingSnapshot)
    inbound: asyncio.Queue[bytes] = field(
        default_factory=lambda: asyncio.Queue(INBOUND_QUEUE_FRAMES)
    )
    outbound: asyncio.Queue[tuple[int, bytes] | _EndOfResponse] = field(
        default_factory=lambda: asyncio.Queue(OUTBOUND_QUEUE_CHUNKS)
    )
    control: asyncio.Queue[tuple[str, tuple[Any, ...]]] = field(default_factory=asyncio.Queue)
    framer: Pcm16Framer = field(default_factory=Pcm16Framer)
    resampler_in: StreamResampler | None = None
    resampler_out: StreamResampler | None = None
    transport_rate: int = 0
    preconnect: list[bytes] = field(default_factory=list)
    preconnect_bytes: int = 0
    generation: int = 0
    accepting_audio: bool = True
    #: Between the provider's response start and end: a reply is being generated.
    responding: bool = False
    speech_started_at: datetime | None = None
    was_barge_in: bool = False
    sent_ms: float = 0.0  # reply audio handed to the transport since the reply started
    first_sent_at: float | None = None  # monotonic time of the reply's first audio
    played_ms: int | None = None  # the client's own playback report, when it sends them
    last_assistant_text: str = ""
    tool_mutes: int = 0
    # Running tool calls by call id; why some were cancelled ("provider" | "barge_in");
    # the calls to cancel when the caller starts speaking; remote calls awaiting a result.
    tool_tasks: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    cancelled_calls: dict[str, str] = field(default_factory=dict)
    cancel_on_barge_in: set[str] = field(default_factory=set)
    remote_results: dict[str, asyncio.Future[tuple[str, str]]] = field(default_factory=dict)
    level_in: LevelThrottle = field(default_factory=LevelThrottle)
    level_out: LevelThrottle = field(default_factory=LevelThrottle)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    owner: asyncio.Task[None] | None = None
    #: provider.connect() in flight: an end_session during the start cancels it.
    connecting: asyncio.Future[None] | None = None
    control_task: asyncio.Task[None] | None = None
    ending: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    stats: dict[str, int] = field(
        default_factory=lambda: {
            "inbound_dropped_overflow": 0,
            "inbound_dropped_access": 0,
            "inbound_dropped_tool_mute": 0,
            "inbound_dropped_preconnect": 0,
            "inbound_bad_frames": 0,
            "outbound_dropped_overflow": 0,
            "outbound_dropped_stale": 0,
            "outbound_dropped_output_muted": 0,
        }
    )


class RealtimeVoiceChannel:
    """A realtime speech-to-speech channel; see ``../shared/seed/realtime-voice.txt``."""

    channel_type = "realtime_voice"

    def __init__(
        self,
        channel_id: str,
        *,
        provider: RealtimeVoiceProvider,
        transport: RealtimeTransport,
        system_prompt: str | None = None,
        voice: str | None = None,
        tools: list[Tool | dict[str, Any]] | None = None,
        temperature: float | None = None,
        input_sample_rate: int = 16000,
        output_sample_rate: int = 24000,
        transport_sample_rate: int | None = None,
        emit_transcription_events: bool = True,
        tool_handler: ToolHandler | None = None,
        mute_on_tool_call: bool = False,
        tool_result_max_length: int = 16384,
        provider_config: dict[str, Any] | None = None,
        tool_timeout: float = 30.0,
        store: SessionStore | None = None,
    ) -> None:
        if not isinstance(channel_id, str) or not channel_id:
            raise ValueError("channel_id must be a non-empty string")
        if not isinstance(provider, RealtimeVoiceProvider):
            raise TypeError("provider must be a RealtimeVoiceProvider")
        if not isinstance(transport, RealtimeTransport):
            raise TypeError("transport must be a RealtimeTransport")
        self.input_sample_rate = _check_rate("input_sample_rate", input_sample_rate) or 0
        self.output_sample_rate = _check_rate("output_sample_rate", output_sample_rate) or 0
        self.transport_sample_rate = _check_rate(
            "transport_sample_rate", transport_sample_rate, optional=True
        )
        if (
            isinstance(tool_result_max_length, bool)
            or not isinstance(tool_result_max_length, int)
            or tool_result_max_length < 1
        ):
            raise ValueError(
                f"tool_result_max_length must be a positive integer, got {tool_result_max_length!r}"
            )
        _check_temperature(temperature)
        if not tool_timeout > 0:
            raise ValueError(f"tool_timeout must be positive, got {tool_timeout!r}")
        if provider_config is not None and not isinstance(provider_config, dict):
            raise TypeError("provider_config must be a dict")
        if tool_handler is not None and not callable(tool_handler):
            raise TypeError("tool_handler must be an async callable (name, arguments) -> str")

        self.channel_id = channel_id
        self.provider = provider
        self.transport = transport
        self.system_prompt = system_prompt
        self.voice = voice
        self.tools = _ToolTable.build(tools)
        self.temperature = temperature
        self.emit_transcription_events = emit_transcription_events
        self.tool_handler = tool_handler
        self.mute_on_tool_call = mute_on_tool_call
        self.tool_result_max_length = tool_result_max_length
        self.provider_config = dict(provider_config or {})
        self.tool_timeout = tool_timeout
        self.store: SessionStore = store if store is not None else MemoryStore()
        self.kit: Any = None  # set by RoomKit.register_channel
        self._runtimes: dict[str, _Runtime] = {}
        self._background: set[asyncio.Task[Any]] = set()

        provider.on_audio(self._on_provider_audio)
        provider.on_transcription(self._on_transcription)
        provider.on_speech_start(self._on_speech_start)
        provider.on_speech_end(self._on_speech_end)
        provider.on_tool_call(self._on_tool_call)
        provider.on_response_start(self._on_response_start)
        provider.on_response_end(self._on_response_end)
        provider.on_error(self._on_provider_error)
        provider.on_usage(self._on_usage)
        provider.on_reconnect(self._on_provider_reconnect)
        provider.on_tool_cancel(self._on_tool_cancel)
        provider.on_resumption(self._on_resumption)
        provider.on_transcript_correction(self._on_transcript_correction)
        transport.on_audio_received(self._on_client_audio)
        transport.on_client_disconnected(self._on_client_disconnected)
        transport.on_playback(self._on_playback)
        transport.on_client_message(self._on_client_message)
        transport.on_dtmf(self.receive_dtmf)
        for double in (provider, transport):
            add_settler = getattr(double, "add_settler", None)  # test doubles (voice.mock)
            if add_settler is not None:
                add_settler(self.settle)

    # --- public API --------------------------------------------------------------------------

    @property
    def sessions(self) -> list[LiveSession]:
        return [runtime.session for runtime in self._runtimes.values()]

    def get_session(self, session_id: str) -> LiveSession | None:
        runtime = self._runtimes.get(session_id)
        return runtime.session if runtime else None

    async def start_session(
        self,
        room_id: str,
        participant_id: str,
        connection: Any = None,
        metadata: dict[str, Any] | None = None,
    ) -> LiveSession:
        """Accept the caller, connect the provider, go ACTIVE. All or nothing: on any failure
        (or cancellation) everything started is undone, the client is told, and it raises."""
        meta = dict(metadata or {})
        session = LiveSession(
            room_id=str(room_id),
            participant_id=str(participant_id),
            channel_id=self.channel_id,
            metadata=meta,
        )
        overrides = meta.get("provider_config") or {}
        if not isinstance(overrides, dict):
            raise TypeError("metadata['provider_config'] must be a dict")
        runtime = _Runtime(
            session=session,
            tools=_ToolTable.build(meta["tools"]) if "tools" in meta else self.tools,
            system_prompt=meta.get("system_prompt", self.system_prompt),
            voice=meta.get("voice", self.voice),
            temperature=meta.get("temperature", self.temperature),
            provider_config={**self.provider_config, **overrides},
        )
        self._runtimes[session.id] = runtime
        with log_context(session=session.id, room=session.room_id):
            try:
                await self.store.session_created(session)
                runtime.binding = await self.store.load_binding(session)
                await self.transport.accept(session, connection)
                # After accept: a transport's authenticate hook may have added permissions
                # to the metadata. Capping what is current keeps a change that came meanwhile.
                runtime.binding = self._effective(session, runtime.binding)
                self._configure_audio(runtime)
                await self._connect_provider(runtime)
                self._check_not_ended(runtime)
                session.move_to(SessionState.ACTIVE)
                await self.store.session_activated(session)
                # Audio that came while the provider connected goes first, in order; frames
                # arriving from now on queue behind it for the input loop.
                preconnect, runtime.preconnect = runtime.preconnect, []
                for frame in preconnect:
                    await self._forward_inbound(runtime, frame)
                self._check_not_ended(runtime)
                runtime.owner = asyncio.create_task(
                    self._run_session(runtime), name=f"voice-session-{session.id}"
                )
                turns = (
                    "manual" if self.provider.manual_turns(runtime.provider_config) else "provider"
                )
                await self._send(
                    runtime,
                    {"type": "session_started", "session_id": session.id, "turn_detection": turns},
                )
            except BaseException as error:
                # All or nothing, up to the last await: whatever fails or is cancelled before
                # start_session returns leaves no live session behind.
                await asyncio.shield(self._abort_start(runtime, error))
                raise
            self._fire(
                HookTrigger.ON_SESSION_STARTED,
                SessionStartedEvent(session, self.channel_id),
                session,
            )
            logger.info("voice session started: participant=%s", session.participant_id)
        return session

    async def reconfigure_session(
        self,
        session_id: str | LiveSession,
        *,
        system_prompt: str | None = None,
        voice: str | None = None,
        tools: list[Tool | dict[str, Any]] | None = None,
        temperature: float | None = None,
        provider_config: dict[str, Any] | None = None,
    ) -> None:
        runtime = self._live_runtime(session_id, "reconfigure")
        _check_temperature(temperature)
        if not self.provider.supports_mid_session_reconfigure:
            raise NotImplementedError(f"{self.provider.name} cannot reconfigure a live session")
        table = _ToolTable.build(tools) if tools is not None else None
        await self.provider.reconfigure(
            runtime.session,
            system_prompt=system_prompt,
            voice=voice,
            tools=table.definitions if table is not None else None,
            temperature=temperature,
            provider_config=provider_config,
        )
        if system_prompt is not None:
            runtime.system_prompt = system_prompt
        if voice is not None:
            runtime.voice = voice
        if temperature is not None:
            runtime.temperature = temperature
        if table is not None:
            runtime.tools = table
        if provider_config is not None:
            runtime.provider_config = {**runtime.provider_config, **provider_config}

    async def end_session(
        self, session_id: str | LiveSession, reason: str = "ended_by_operator", detail: str = ""
    ) -> bool:
        """End the session; False (and nothing done) if it had already ended or is unknown."""
        key = session_id.id if isinstance(session_id, LiveSession) else session_id
        runtime = self._runtimes.get(key)
        if runtime is None:
            logger.info("end_session: no live session %s (already ended?)", key)
            return False
        if runtime.ending:
            await runtime.ended.wait()
            return False
        runtime.ending = True
        if runtime.connecting is not None:
            runtime.connecting.cancel()  # the start sees it and undoes itself
        session = runtime.session
        with log_context(session=session.id, room=session.room_id):
            try:
                session.end_reason = reason
                await self._send(runtime, {"type": "session_ended", "reason": reason})
                if not session.is_ended:
                    session.move_to(SessionState.ENDED)
                await self._finish_control(runtime)
                await self._cancel_tasks(runtime)
                for close in (self.provider.disconnect, self.transport.disconnect):
                    try:
                        await close(session)
                    except Exception:
                        logger.exception("%s failed while ending the session", close.__qualname__)
                session.stats = dict(runtime.stats)
                try:
                    await self.store.session_ended(session, reason, detail)
                    await self.store.flush()
                except Exception:
                    logger.exception("store failed to record the end of the session")
            finally:
                # Even when the end itself is cancelled (the process is shutting down),
                # nobody waiting for it may hang.
                self._runtimes.pop(session.id, None)
                runtime.ended.set()
            self._fire(
                HookTrigger.ON_SESSION_ENDED,
                SessionEndedEvent(session, self.channel_id, reason),
                session,
            )
            logger.info("voice session ended: reason=%s stats=%s", reason, runtime.stats)
        return True

    def apply_binding(self, room_id: str, participant_id: str, binding: BindingSnapshot) -> int:
        """A binding changed (anywhere): it applies to the next frame of every live session of
        that participant in that room. Returns how many sessions it reached."""
        reached = 0
        for runtime in self._runtimes.values():
            session = runtime.session
            if session.room_id == str(room_id) and session.participant_id == str(participant_id):
                effective = self._effective(session, binding)
                if effective != runtime.binding:
                    runtime.binding = effective
                    self._tell_access(runtime)
                reached += 1
        return reached

    async def inject_text(
        self, session_id: str | LiveSession, text: str, *, role: str = "user", silent: bool = False
    ) -> None:
        runtime = self._live_runtime(session_id, "inject text into")
        await self.provider.inject_text(runtime.session, text, role=role, silent=silent)

    async def interrupt(self, session_id: str | LiveSession) -> None:
        """Stop the assistant now (the caller's ``interrupt`` message, an operator)."""
        runtime = self._live_runtime(session_id, "interrupt")
        await self.provider.interrupt(runtime.session)
        await self._barge_in(runtime)

    async def settle(self, session: LiveSession) -> None:
        """Wait until everything received so far for the session has been handled."""
        async with asyncio.timeout(SETTLE_TIMEOUT_S):
            for _ in range(3):  # a tool result or hook may queue a little more work
                runtime = self._runtimes.get(session.id)
                if runtime is not None and runtime.owner is not None and not runtime.ending:
                    await runtime.inbound.join()
                    await runtime.control.join()
                    if runtime.tasks:
                        await asyncio.gather(*list(runtime.tasks), return_exceptions=True)
                    await runtime.outbound.join()
                if self._background:
                    await asyncio.gather(*list(self._background), return_exceptions=True)
                if self.kit is not None:
                    await self.kit.hooks.drain()

    async def close(self) -> None:
        for session in self.sessions:
            await self.end_session(session, reason="server_shutdown")
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        await self.provider.close()
        await self.transport.close()

    # --- session internals -------------------------------------------------------------------

    def _tell_access(self, runtime: _Runtime) -> None:
        """Tell the caller what they may do now (an operator muted or revoked them)."""
        binding = runtime.binding
        message = {
            "type": "access",
            "access": binding.access,
            "muted": binding.muted,
            "output_muted": binding.output_muted,
            "can_speak": binding.can_speak,
            "can_hear": binding.can_hear,
        }
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # applied from plain code with no loop: nobody to tell yet
        self._spawn(runtime, self._send(runtime, message))

    @staticmethod
    def _effective(session: LiveSession, binding: BindingSnapshot) -> BindingSnapshot:
        """The binding capped by the session's credential (``metadata["permissions"]``, set
        by a transport that admitted the caller with a room token)."""
        permissions = session.metadata.get("permissions")
        return binding.limited(permissions if isinstance(permissions, list | tuple) else None)

    def _live_runtime(self, session_id: str | LiveSession, action: str) -> _Runtime:
        key = session_id.id if isinstance(session_id, LiveSession) else session_id
        runtime = self._runtimes.get(key)
        if runtime is None or runtime.ending or runtime.session.is_ended:
            raise SessionStateError(f"cannot {action} session {key}: it is not live")
        return runtime

    def _configure_audio(self, runtime: _Runtime) -> None:
        session = runtime.session
        rate = session.metadata.get("transport_sample_rate")
        if rate is not None:
            rate = _check_rate("metadata['transport_sample_rate']", rate)
        else:
            rate = self.transport.transport_sample_rate(session) or self.transport_sample_rate
        if rate is None:  # the transport speaks the provider's rates
            runtime.transport_rate = self.output_sample_rate
            return
        runtime.transport_rate = rate
        if rate != self.input_sample_rate:
            runtime.resampler_in = StreamResampler(rate, self.input_sample_rate)
        if rate != self.output_sample_rate:
            runtime.resampler_out = StreamResampler(self.output_sample_rate, rate)

    async def _connect_provider(self, runtime: _Runtime) -> None:
        """provider.connect() as its own task, so that ending the session while it connects
        (the caller hung up) stops it instead of waiting for a slow vendor."""
        connecting = asyncio.ensure_future(
            self.provider.connect(
                runtime.session,
                system_prompt=runtime.system_prompt,
                voice=runtime.voice,
                tools=runtime.tools.definitions or None,
                temperature=runtime.temperature,
                input_sample_rate=self.input_sample_rate,
                output_sample_rate=self.output_sample_rate,
                server_vad=True,
                provider_config=runtime.provider_config,
            )
        )
        runtime.connecting = connecting
        try:
            await connecting
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if runtime.ending and (current is None or current.cancelling() == 0):
                # end_session cancelled the connect, not our caller: report it as such.
                raise SessionStateError(
                    f"session {runtime.session.id} ended while connecting"
                ) from None
            raise
        finally:
            runtime.connecting = None

    @staticmethod
    def _check_not_ended(runtime: _Runtime) -> None:
        if runtime.ending:  # end_session (or a fatal provider error) came while starting
            raise SessionStateError(f"session {runtime.session.id} ended while connecting")

    async def _abort_start(self, runtime: _Runtime, error: BaseException) -> None:
        session = runtime.session
        if runtime.ending:
            # Ended while starting: that end told the client and recorded it. Undo only what
            # connected after it ran (the provider), then wait for it to finish.
            try:
                await self.provider.disconnect(session)
            except Exception:
                logger.exception("provider disconnect failed while undoing a start")
            await runtime.ended.wait()
            return
        cancelled = isinstance(error, asyncio.CancelledError)
        detail = "cancelled while connecting" if cancelled else f"{type(error).__name__}: {error}"
        if cancelled:
            logger.info("voice session start cancelled")
        else:
            logger.warning("voice session failed to start: %s", detail)
        session.end_reason = "connect_failed"
        runtime.ending = True
        await self._send(
            runtime,
            {
                "type": "error",
                "code": "connect_failed",
                "message": "the voice provider could not be reached",
            },
        )
        await self._send(runtime, {"type": "session_ended", "reason": "connect_failed"})
        await self._cancel_tasks(runtime)  # the owner, if the start failed after creating it
        for close in (self.provider.disconnect, self.transport.disconnect):
            try:
                await close(session)
            except Exception:
                logger.exception("%s failed while undoing a start", close.__qualname__)
        if not session.is_ended:
            session.move_to(SessionState.ENDED)
        try:
            await self.store.session_ended(session, "connect_failed", detail)
        except Exception:
            logger.exception("store failed to record a failed start")
        self._runtimes.pop(session.id, None)
        runtime.ended.set()

    async def _run_session(self, runtime: _Runtime) -> None:
        session = runtime.session
        with log_context(session=session.id, room=session.room_id):
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._input_loop(runtime))
                    group.create_task(self._output_loop(runtime))
                    runtime.control_task = group.create_task(self._control_loop(runtime))
            except* Exception as failure:
                logger.error(
                    "voice session loop failed; ending the session",
                    exc_info=failure.exceptions[0],
                )
                self._spawn_background(
                    self.end_session(
                        session, reason="internal_error", detail=str(failure.exceptions[0])
                    )
                )

    async def _finish_control(self, runtime: _Runtime) -> None:
        """Let the control loop finish what was queued before the end (final transcripts are
        never lost); what it cannot finish in time is recorded without hooks, as blocked."""
        loop_task = runtime.control_task
        current = asyncio.current_task()
        if loop_task is not None and not loop_task.done() and current is not loop_task:
            try:
                async with asyncio.timeout(CONTROL_DRAIN_TIMEOUT_S):
                    await runtime.control.join()
            except TimeoutError:
                logger.warning("control queue not drained in %ss", CONTROL_DRAIN_TIMEOUT_S)
        while not runtime.control.empty():
            kind, payload = runtime.control.get_nowait()
            runtime.control.task_done()
            session = runtime.session
            if kind == "transcript":
                text, role, is_final, started = payload
                if is_final:
                    await self._record_transcript(
                        runtime, text, role, "blocked", "session_ended_before_hooks", started
                    )
            elif kind == "message":
                await self._record_transcript(
                    runtime,
                    payload[0],
                    "user",
                    "blocked",
                    "session_ended_before_hooks",
                    None,
                    kind="message",
                )
            else:
                call_id, name, arguments = payload
                record = StoredToolCall(
                    session.id, call_id, name, arguments if isinstance(arguments, dict) else {}
                )
                await self.store.tool_call_started(record)
                record.status, record.error = "cancelled", "the session ended before the call ran"
                record.finished_at = datetime.now(UTC)
                await self.store.tool_call_finished(record)

    async def _cancel_tasks(self, runtime: _Runtime) -> None:
        tasks = [task for task in (runtime.owner, *runtime.tasks) if task is not None]
        current = asyncio.current_task()
        tasks = [task for task in tasks if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, runtime: _Runtime, coroutine: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coroutine)
        runtime.tasks.add(task)
        task.add_done_callback(runtime.tasks.discard)

    def _spawn_background(self, coroutine: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _send(self, runtime: _Runtime, message: dict[str, Any]) -> None:
        try:
            await self.transport.send_message(runtime.session, message)
        except Exception:
            logger.warning("could not send %s to the client", message.get("type"), exc_info=True)

    # --- hooks -------------------------------------------------------------------------------

    def _hook_context(self, session: LiveSession) -> HookContext:
        return HookContext(
            kit=self.kit, room_id=session.room_id, channel_id=self.channel_id, session=session
        )

    def _has_hooks(self, trigger: HookTrigger) -> bool:
        return self.kit is not None and bool(self.kit.hooks.has_hooks(trigger))

    def _fire(self, trigger: HookTrigger, event: Any, session: LiveSession) -> None:
        if self._has_hooks(trigger):
            self.kit.hooks.fire(trigger, event, self._hook_context(session))

    # --- caller → provider -------------------------------------------------------------------

    def _on_client_audio(self, session: LiveSession, data: bytes) -> None:
        runtime = self._runtimes.get(session.id)
        if runtime is None or runtime.ending:
            return
        try:
            frame = runtime.framer.push(data)
        except AudioFormatError as error:
            runtime.stats["inbound_bad_frames"] += 1
            self._spawn(
                runtime,
                self._send(runtime, {"type": "error", "code": "bad_audio", "message": str(error)}),
            )
            return
        if not frame:
            return
        if session.state is SessionState.CONNECTING:
            if runtime.preconnect_bytes + len(frame) > PRECONNECT_MAX_BYTES:
                if runtime.stats["inbound_dropped_preconnect"] == 0:
                    logger.warning(
                        "pre-connect audio buffer full (%d bytes): dropping", PRECONNECT_MAX_BYTES
                    )
                runtime.stats["inbound_dropped_preconnect"] += 1
                return
            runtime.preconnect.append(frame)
            runtime.preconnect_bytes += len(frame)
            return
        try:
            runtime.inbound.put_nowait(frame)
        except asyncio.QueueFull:
            # Keep the newest audio: what the caller says now matters more than 2 s ago.
            runtime.inbound.get_nowait()
            runtime.inbound.task_done()
            runtime.inbound.put_nowait(frame)
            runtime.stats["inbound_dropped_overflow"] += 1

    async def _input_loop(self, runtime: _Runtime) -> None:
        while True:
            frame = await runtime.inbound.get()
            try:
                await self._forward_inbound(runtime, frame)
            except Exception:
                _warn_counted(runtime, "inbound_send_failures", "sending caller audio failed")
            finally:
                runtime.inbound.task_done()

    async def _forward_inbound(self, runtime: _Runtime, frame: bytes) -> None:
        if not runtime.binding.can_speak:
            runtime.stats["inbound_dropped_access"] += 1
            return
        if runtime.tool_mutes:
            runtime.stats["inbound_dropped_tool_mute"] += 1
            return
        pcm = runtime.resampler_in.process(frame) if runtime.resampler_in else frame
        if not pcm:
            return
        if self._has_hooks(HookTrigger.ON_INPUT_AUDIO_LEVEL) and runtime.level_in.due(
            time.monotonic()
        ):
            self._fire(
                HookTrigger.ON_INPUT_AUDIO_LEVEL,
                AudioLevelEvent(runtime.session, rms_dbfs(pcm)),
                runtime.session,
            )
        await self.provider.send_audio(runtime.session, pcm)

    # --- provider → caller -------------------------------------------------------------------

    def _on_provider_audio(self, session: LiveSession, audio: bytes) -> None:
        runtime = self._runtimes.get(session.id)
        if runtime is None or runtime.ending or not runtime.accepting_audio:
            return
        try:
            runtime.outbound.put_nowait((runtime.generation, audio))
        except asyncio.QueueFull:
            runtime.stats["outbound_dropped_overflow"] += 1
            if runtime.stats["outbound_dropped_overflow"] % 100 == 1:
                logger.warning("outbound audio queue full: dropping new audio (transport too slow)")

    async def _output_loop(self, runtime: _Runtime) -> None:
        session = runtime.session
        while True:
            item = await runtime.outbound.get()
            try:
                if isinstance(item, _EndOfResponse):
                    tail = runtime.resampler_out.flush() if runtime.resampler_out else b""
                    if tail and runtime.binding.can_hear:
                        await self._send_audio(runtime, tail)
                    await self.transport.end_of_response(session)
                    continue
                generation, audio = item
                if generation != runtime.generation:
                    runtime.stats["outbound_dropped_stale"] += 1
                    continue
                pcm = runtime.resampler_out.process(audio) if runtime.resampler_out else audio
                if not runtime.binding.can_hear:
                    runtime.stats["outbound_dropped_output_muted"] += 1
                    continue
                if pcm:
                    await self._send_audio(runtime, pcm)
            except Exception:
                _warn_counted(runtime, "outbound_send_failures", "sending reply audio failed")
            finally:
                runtime.outbound.task_done()

    async def _send_audio(self, runtime: _Runtime, pcm: bytes) -> None:
        generation = runtime.generation
        await self.transport.send_audio(runtime.session, pcm)
        if generation != runtime.generation:
            return  # a barge-in came while this chunk was in flight: not part of the new count
        if runtime.first_sent_at is None:
            runtime.first_sent_at = time.monotonic()
        runtime.sent_ms += len(pcm) / 2 / runtime.transport_rate * 1000
        if self._has_hooks(HookTrigger.ON_OUTPUT_AUDIO_LEVEL) and runtime.level_out.due(
            time.monotonic()
        ):
            self._fire(
                HookTrigger.ON_OUTPUT_AUDIO_LEVEL,
                AudioLevelEvent(runtime.session, rms_dbfs(pcm)),
                runtime.session,
            )

    def _on_playback(self, session: LiveSession, played_ms: int) -> None:
        runtime = self._runtimes.get(session.id)
        if (
            runtime is None
            or isinstance(played_ms, bool)
            or not isinstance(played_ms, int)
            or played_ms < 0
        ):
            return
        runtime.played_ms = max(runtime.played_ms or 0, played_ms)

    def _played_ms(self, runtime: _Runtime) -> int:
        """What the caller heard of the current reply: their own report when they send one,
        else the time since its first audio left; never more than was sent."""
        if runtime.played_ms is not None:
            heard = float(runtime.played_ms)
        elif runtime.first_sent_at is not None:
            heard = (time.monotonic() - runtime.first_sent_at) * 1000
        else:
            heard = 0.0
        return int(max(0.0, min(heard, runtime.sent_ms)))

    # --- speech, barge-in, responses ---------------------------------------------------------

    async def _on_speech_start(self, session: LiveSession) -> None:
        runtime = self._runtimes.get(session.id)
        if runtime is None or runtime.ending:
            return
        runtime.speech_started_at = datetime.now(UTC)
        await self._barge_in(runtime)
        for call_id in list(runtime.cancel_on_barge_in):
            self._cancel_tool(runtime, call_id, "barge_in")
        self._fire(HookTrigger.ON_SPEECH_START, session, session)
        await self._send(runtime, {"type": "speaking", "speaking": True, "who": "user"})

    async def _barge_in(self, runtime: _Runtime) -> None:
        """Drop queued reply audio, clear the client's buffer, and tell the model how much
        of its reply was heard. A no-op when no reply audio was queued or sent."""
        session = runtime.session
        had_audio = runtime.sent_ms > 0 or not runtime.outbound.empty()
        runtime.generation += 1
        while not runtime.outbound.empty():
            runtime.outbound.get_nowait()
            runtime.outbound.task_done()
        if runtime.resampler_out:
            runtime.resampler_out.reset()
        if runtime.responding:
            # The caller spoke over a reply being generated: whatever audio of it is still on
            # its way (vendors stream ahead of playback) is stale, even if none came yet.
            runtime.accepting_audio = False
        if not had_audio:
            return
        played = self._played_ms(runtime)
        sent = runtime.sent_ms
        runtime.accepting_audio = False  # the rest of the interrupted reply is stale
        runtime.was_barge_in = True
        runtime.sent_ms, runtime.first_sent_at, runtime.played_ms = 0.0, None, None
        try:
            await self.transport.interrupt(session)
        except Exception:
            logger.warning("transport interrupt failed", exc_info=True)
        await self._send(runtime, {"type": "clear_audio"})
        if sent > 0:
            try:
                await self.provider.truncate_audio(session, played)
            except Exception:
                logger.warning("provider truncate failed", exc_info=True)
        self._fire(
            HookTrigger.ON_BARGE_IN,
            BargeInEvent(session, runtime.last_assistant_text, played),
            session,
        )

    async def _on_speech_end(self, session: LiveSession) -> None:
        runtime = self._runtimes.get(session.id)
        if runtime is None or runtime.ending:
            return
        self._fire(HookTrigger.ON_SPEECH_END, session, session)
        await self._send(runtime, {"type": "speaking", "speaking": False, "who": "user"})

    async def _on_response_start(self, session: LiveSession) -> None:
        runtime = self._runtimes.get(session.id)
        if runtime is None or runtime.ending:
            return
        runtime.accepting_audio = True
        runtime.responding = True
        runtime.sent_ms, runtime.first_sent_at, runtime.played_ms = 0.0, None, None
        await self._send(runtime, {"type": "speaking", "speaking": True, "who": "assistant"})

    async def _on_response_end(self, session: LiveSession) -> None:
        runtime = self._runtimes.get(session.id)
        if runtime is None or runtime.ending:
            return
        runtime.responding = False
        try:
            runtime.outbound.put_nowait(END_OF_RESPONSE)
        except asyncio.QueueFull:
            runtime.stats["outbound_dropped_overflow"] += 1
        await self._send(runtime, {"type": "speaking", "speaking": False, "who": "assistant"})

    # --- transcripts and tool calls (the control loop) ---------------------------------------

    def _on_transcription(self, session: LiveSession, text: str, role: str, is_final: bool) -> None:
        runtime = self._runtimes.get(session.id)
        if runtime is None or runtime.ending:
            return
        started = runtime.speech_started_at if role == "user" else None
        runtime.control.put_nowait(("transcript", (str(text), str(role), bool(is_final), started)))

    def _on_tool_call(self, session: LiveSession, call_id: str, name: str, arguments: Any) -> None:
        runtime = self._runtimes.get(session.id)
        if runtime is None or runtime.ending:
            return
        runtime.control.put_nowait(("tool_call", (str(call_id), str(name), arguments)))

    async def _control_loop(self, runtime: _Runtime) -> None:
        while True:
            kind, payload = await runtime.control.get()
            try:
                if kind == "transcript":
                    await self._handle_transcript(runtime, *payload)
                elif kind == "message":
                    await self._handle_typed_message(runtime, *payload)
                elif kind == "correction":
                    await self._handle_correction(runtime, *payload)
                else:
                    # Started here, after every transcript queued before it; runs on its own.
                    call_id = str(payload[0])
                    task = asyncio.ensure_future(self._run_tool(runtime, *payload))
                    runtime.tasks.add(task)
                    runtime.tool_tasks[call_id] = task
                    task.add_done_callback(runtime.tasks.discard)
                    task.add_done_callback(functools.partial(_forget_tool, runtime, call_id))
            except Exception:
                logger.exception("handling a %s failed", kind)
            finally:
                runtime.control.task_done()

    async def _handle_transcript(
        self, runtime: _Runtime, text: str, role: str, is_final: bool, started: datetime | None
    ) -> None:
        session = runtime.session
        if not is_final:
            await self._send(
                runtime, {"type": "transcription", "text": text, "role": role, "is_final": False}
            )
            self._fire(
                HookTrigger.ON_PARTIAL_TRANSCRIPTION,
                TranscriptionEvent(session, text, role, False, channel_id=self.channel_id),
                session,
            )
            return
        event = TranscriptionEvent(
            session,
            text,
            role,
            True,
            was_barge_in=role == "user" and runtime.was_barge_in,
            channel_id=self.channel_id,
        )
        if role == "user":
            runtime.was_barge_in = False
        event, status, blocked_by = await self._moderate(runtime, event)
        if status == "delivered":
            if role == "user" and not runtime.binding.can_speak:
                status, blocked_by = "blocked", self._speak_refusal(runtime)
            await self._send(
                runtime,
                {"type": "transcription", "text": event.text, "role": role, "is_final": True},
            )
            if role == "assistant":
                runtime.last_assistant_text = event.text
        await self._record_transcript(runtime, event.text, role, status, blocked_by, started)

    async def _moderate(
        self, runtime: _Runtime, event: TranscriptionEvent
    ) -> tuple[TranscriptionEvent, str, str]:
        """ON_TRANSCRIPTION hooks (fail closed): (the event as they left it, status,
        blocked_by)."""
        if not self._has_hooks(HookTrigger.ON_TRANSCRIPTION):
            return event, "delivered", ""
        outcome = await self.kit.hooks.run_sync(
            HookTrigger.ON_TRANSCRIPTION, event, self._hook_context(runtime.session)
        )
        if not outcome.allowed:
            logger.info("transcript blocked by hook %s: %s", outcome.blocked_by, outcome.reason)
            return event, "blocked", f"hook:{outcome.blocked_by}"
        changed = outcome.event if isinstance(outcome.event, TranscriptionEvent) else event
        return changed, "delivered", ""

    @staticmethod
    def _speak_refusal(runtime: _Runtime) -> str:
        return "source_muted" if runtime.binding.muted else "source_read_only"

    async def _record_transcript(
        self,
        runtime: _Runtime,
        text: str,
        role: str,
        status: str,
        blocked_by: str,
        started: datetime | None,
        *,
        kind: str = "transcript",
    ) -> None:
        """A final transcript (or typed message) to the store (user turns dated by their
        speech start)."""
        if not self.emit_transcription_events or not text.strip():
            return
        session = runtime.session
        await self.store.transcript(
            StoredTranscript(
                session_id=session.id,
                room_id=session.room_id,
                participant_id=session.participant_id if role == "user" else "",
                role=role,
                text=text,
                status=status,
                blocked_by=blocked_by,
                occurred_at=started or datetime.now(UTC),
                kind=kind,
            )
        )

    async def _run_tool(self, runtime: _Runtime, call_id: str, name: str, arguments: Any) -> None:
        session = runtime.session
        tool = runtime.tools.objects.get(name)
        record = StoredToolCall(
            session.id,
            call_id,
            name,
            arguments if isinstance(arguments, dict) else {"_raw": arguments},
            execution="remote" if tool is not None and tool.remote is not None else "inline",
        )
        _CURRENT_CALL_ID.set(call_id)  # this task's own context: what handlers may read
        await self.store.tool_call_started(record)
        await self._send(
            runtime, {"type": "tool_call", "call_id": call_id, "name": name, "status": "running"}
        )
        if tool is not None and tool.on_barge_in == "cancel":
            runtime.cancel_on_barge_in.add(call_id)
        progress = None
        if tool is not None and tool.progress_message:
            progress = asyncio.ensure_future(self._tool_progress(runtime, record, tool))
        if self.mute_on_tool_call:
            runtime.tool_mutes += 1
        try:
            status, result = await self._resolve_tool(runtime, record, tool, arguments)
        except asyncio.CancelledError:
            reason = "" if runtime.ending else runtime.cancelled_calls.get(call_id, "")
            record.status = "cancelled"
            record.error = {
                "provider": "the model cancelled the call (the caller interrupted)",
                "barge_in": "cancelled: the caller started speaking (the tool's barge-in "
                "policy is 'cancel')",
            }.get(reason, "the session ended before the tool finished")
            record.finished_at = datetime.now(UTC)
            if reason == "barge_in":
                # The protocol expects an answer to the call: say plainly what happened.
                record.delivered = await self._submit_result(
                    runtime,
                    name,
                    call_id,
                    error_json(f"Tool '{name}' was cancelled: the caller interrupted"),
                )
            await asyncio.shield(self.store.tool_call_finished(record))
            if not reason:
                raise
            await self._send(
                runtime,
                {"type": "tool_call", "call_id": call_id, "name": name, "status": "cancelled"},
            )
            return
        finally:
            if progress is not None:
                progress.cancel()
            runtime.cancel_on_barge_in.discard(call_id)
            if self.mute_on_tool_call:
                runtime.tool_mutes -= 1
        result = truncate_result(result, self.tool_result_max_length)
        record.status = status
        record.finished_at = datetime.now(UTC)
        if status == "succeeded":
            record.result = result
        else:
            record.error = result
        record.delivered = await self._submit_result(runtime, name, call_id, result)
        if not record.delivered:
            record.error = record.error or "the result could not be delivered to the provider"
        await self.store.tool_call_finished(record)
        await self._send(
            runtime, {"type": "tool_call", "call_id": call_id, "name": name, "status": status}
        )

    async def _submit_result(self, runtime: _Runtime, name: str, call_id: str, text: str) -> bool:
        try:
            await self.provider.submit_tool_result(runtime.session, call_id, text)
        except Exception:
            logger.warning("submitting the result of tool %s failed", name, exc_info=True)
            return False
        return True

    async def _tool_progress(self, runtime: _Runtime, record: StoredToolCall, tool: Tool) -> None:
        """The call still runs after the tool's delay: the model says the progress message
        (so the caller is not left in silence), and the client is told."""
        await asyncio.sleep(tool.progress_delay)
        if runtime.ending:
            return
        instruction = (
            f"The tool '{tool.name}' is still working. Without waiting for its result, tell "
            f'the caller briefly, in their language: "{tool.progress_message}"'
        )
        try:
            await self.provider.inject_text(runtime.session, instruction, role="system")
        except Exception:
            logger.warning("the progress message of tool %s was not sent", tool.name, exc_info=True)
        await self._send(
            runtime,
            {
                "type": "tool_call",
                "call_id": record.call_id,
                "name": tool.name,
                "status": "progress",
                "message": tool.progress_message,
            },
        )

    async def _resolve_tool(
        self, runtime: _Runtime, record: StoredToolCall, tool: Tool | None, arguments: Any
    ) -> tuple[str, str]:
        """(status, text for the model): the handler's answer, a hook's, or a clear error."""
        name = record.name
        table = runtime.tools
        hooks = self._has_hooks(HookTrigger.ON_TOOL_CALL)
        if not isinstance(arguments, dict):
            return "failed", error_json(f"Invalid arguments for '{name}': expected a JSON object")
        if table.schemas and name not in table.schemas and name not in table.objects:
            if not hooks:
                return "failed", error_json(f"Tool '{name}' is not declared")
        schema = table.schemas.get(name)
        if schema is not None:
            problems = sorted(
                Draft202012Validator(schema).iter_errors(arguments), key=lambda e: list(e.path)
            )
            if problems:
                where = "/".join(str(part) for part in problems[0].absolute_path) or "arguments"
                return "failed", error_json(
                    f"Invalid arguments for '{name}': {where}: {problems[0].message}"
                )

        status: str = "succeeded"
        result: str | None = None
        handler: Callable[[], Awaitable[Any]] | None = None
        if tool is not None and tool.remote is not None:
            remote_tool = tool
            handler = lambda: self._call_remote(runtime, record, remote_tool)  # noqa: E731
        elif tool is not None:
            handler = lambda: tool.call(arguments)  # noqa: E731
        elif self.tool_handler is not None:
            tool_handler = self.tool_handler
            handler = lambda: tool_handler(name, arguments)  # noqa: E731
        if handler is not None:
            timeout = (tool.timeout if tool is not None else None) or self.tool_timeout
            try:
                async with asyncio.timeout(timeout):
                    value = await _call(handler)
                if isinstance(value, _RemoteOutcome):
                    status, result = value.status, value.text
                else:
                    result = result_text(value)
            except TimeoutError:
                logger.warning("tool %s timed out after %ss", name, timeout)
                status, result = "timed_out", timeout_text(name, timeout)
            except Exception as error:
                if not isinstance(error, ToolError):
                    logger.exception("tool %s raised", name)
                # A ToolError's message is meant for the model; any other exception's text
                # stays in the log (it may hold internals).
                status, result = "failed", failure_text(name, error)

        if hooks:
            event = ToolCallEvent(
                runtime.session,
                record.call_id,
                name,
                arguments,
                result,
                channel_id=self.channel_id,
            )
            outcome = await self.kit.hooks.run_sync(
                HookTrigger.ON_TOOL_CALL, event, self._hook_context(runtime.session)
            )
            if not outcome.allowed:
                return "failed", error_json(outcome.reason or f"Tool '{name}' was blocked")
            if "result" in outcome.metadata:
                return "succeeded", result_text(outcome.metadata["result"])
        if result is None:
            return "failed", error_json(f"No handler for tool '{name}'")
        return status, result

    async def _call_remote(
        self, runtime: _Runtime, record: StoredToolCall, tool: Tool
    ) -> _RemoteOutcome:
        """Hand the call to ``tool.remote`` and wait for its result to be delivered
        (``deliver_tool_result``). A call given up on (timeout, cancellation) is revoked."""
        remote = tool.remote
        assert remote is not None
        future: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
        runtime.remote_results[record.call_id] = future
        # The submission runs on its own: an eager executor (the embedded default) runs the
        # whole call inside it, and its result still arrives through deliver_tool_result.
        submit = asyncio.ensure_future(remote.submit(record, tool))
        answered = False
        try:
            waiting: set[asyncio.Future[Any]] = {submit, future}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            failure = submit.exception() if submit.done() and not future.done() else None
            if failure is not None:
                raise failure
            status, text = await future
            answered = True
            return _RemoteOutcome(status, text)
        finally:
            runtime.remote_results.pop(record.call_id, None)
            refused = submit.done() and not submit.cancelled() and submit.exception() is not None
            if not answered and not refused:
                # Given up on: withdraw it. A cancelled call (barge-in, the provider, the
                # session's end) is stopped even if running; a timed-out one only if still
                # queued (one that finishes anyway is stored as late, for the operator).
                future.cancel()
                terminate = runtime.ending or record.call_id in runtime.cancelled_calls
                self._spawn_background(_revoke(remote, record, tool, terminate))

    # --- errors and disconnects --------------------------------------------------------------

    async def _on_provider_error(
        self, session: LiveSession, code: str, message: str, fatal: bool = False
    ) -> None:
        runtime = self._runtimes.get(session.id)
        if runtime is None or runtime.ending:
            return
        with log_context(session=session.id, room=session.room_id):
            logger.warning("provider error %s (fatal=%s): %s", code, fatal, message)
        await self._send(runtime, {"type": "error", "code": str(code), "message": str(message)})
        self._fire(
            HookTrigger.ON_ERROR,
            ProviderErrorEvent(session, str(code), str(message), bool(fatal)),
            session,
        )
        if fatal:
            self._spawn_background(
                self.end_session(session, reason="provider_error", detail=f"{code}: {message}")
            )

    async def _on_client_message(
        self, session: LiveSession, kind: str, fields: dict[str, Any]
    ) -> None:
        """The caller's "text", "interrupt" and "end" (the WebSocket protocol's additions)."""
        runtime = self._runtimes.get(session.id)
        if kind == "end":
            if runtime is not None:
                await self.end_session(session, reason="ended_by_caller")
            return
        if runtime is None or runtime.ending or not session.is_active:
            await self.transport.send_message(
                session,
                {
                    "type": "error",
                    "code": "not_live",
                    "message": f"the session is not live ({kind})",
                },
            )
            return
        if kind == "interrupt":
            await self.interrupt(session)
        elif kind == "end_turn":
            if runtime.binding.can_speak:  # manual turns: what the caller said is a turn
                await self.provider.end_turn(session)
        elif kind == "text":
            # In order with the transcripts (the control loop), through the same hooks.
            runtime.control.put_nowait(("message", (str(fields.get("text", "")),)))
        else:
            logger.warning("unknown client message %r ignored", kind)

    async def _handle_typed_message(self, runtime: _Runtime, text: str) -> None:
        """Text the caller typed: moderated like speech (ON_TRANSCRIPTION), refused when the
        caller may not speak, else given to the model and recorded as a message."""
        session = runtime.session
        event = TranscriptionEvent(session, text, "user", True, channel_id=self.channel_id)
        event, status, blocked_by = await self._moderate(runtime, event)
        if status == "delivered" and not runtime.binding.can_speak:
            status, blocked_by = "blocked", self._speak_refusal(runtime)
        if status == "delivered":
            await self.provider.inject_text(session, event.text, role="user")
            await self._send(
                runtime,
                {"type": "transcription", "text": event.text, "role": "user", "is_final": True},
            )
        else:
            await self._send(
                runtime,
                {
                    "type": "error",
                    "code": "message_blocked",
                    "message": "your message was not passed on"
                    + (" (you are muted)" if blocked_by == "source_muted" else ""),
                },
            )
        await self._record_transcript(
            runtime, event.text, "user", status, blocked_by, None, kind="message"
        )

    def _on_usage(self, session: LiveSession, usage: Any) -> None:
        """Add a response's usage to the session's totals (recorded when it ends)."""
        if session.id not in self._runtimes or not isinstance(usage, dict):
            return
        _add_counts(session.usage, usage)
        session.usage["responses"] = int(session.usage.get("responses", 0)) + 1

    async def _on_provider_reconnect(self, session: LiveSession, info: Any) -> None:
        """The provider replaced its vendor session without ending ours: recorded on the
        session (and the timeline, by the store); the caller is not interrupted."""
        runtime = self._runtimes.get(session.id)
        if runtime is None or runtime.ending or not isinstance(info, dict):
            return
        session.reconnects.append(dict(info))
        with log_context(session=session.id, room=session.room_id):
            logger.info(
                "provider session replaced (%s) after %s ms", info.get("reason"), info.get("gap_ms")
            )
        try:
            await self.store.provider_reconnected(session, dict(info))
        except Exception:
            logger.exception("could not record the provider reconnect")

    async def receive_dtmf(
        self, session: LiveSession | str, digit: str, duration_ms: int | None = None
    ) -> bool:
        """A key the caller pressed on a phone (the SIP and Twilio transports report it):
        recorded on the room's timeline and handed to ``ON_DTMF`` hooks, which may act on it
        (``channel.inject_text`` to tell the model, say). Not sent to the model by itself:
        what a key means is the application's to decide. False for an unknown digit or a
        session that is not live."""
        session_id = session if isinstance(session, str) else session.id
        runtime = self._runtimes.get(session_id)
        digit = str(digit).upper()
        if runtime is None or runtime.ending or len(digit) != 1 or digit not in DTMF_DIGITS:
            return False
        if isinstance(duration_ms, bool) or not isinstance(duration_ms, int) or duration_ms < 0:
            duration_ms = None
        live = runtime.session
        self._fire(HookTrigger.ON_DTMF, DtmfEvent(live, digit, duration_ms), live)
        try:
            await self.store.dtmf(live, digit, duration_ms)
        except Exception:
            logger.exception("could not record the key the caller pressed")
        return True

    def _on_tool_cancel(self, session: LiveSession, call_ids: Any) -> None:
        """The model cancelled tool calls (Gemini, on barge-in): stop them; no result goes
        back, and each is recorded as cancelled."""
        runtime = self._runtimes.get(session.id)
        if runtime is None or runtime.ending:
            return
        for call_id in call_ids if isinstance(call_ids, list | tuple) else ():
            self._cancel_tool(runtime, str(call_id), "provider")

    @staticmethod
    def _cancel_tool(runtime: _Runtime, call_id: str, reason: str) -> None:
        task = runtime.tool_tasks.get(call_id)
        if task is not None and not task.done() and call_id not in runtime.cancelled_calls:
            runtime.cancelled_calls[call_id] = reason
            task.cancel()

    def deliver_tool_result(self, session_id: str, call_id: str, status: str, text: str) -> bool:
        """A remote tool call's result (``Tool.remote``), arriving on the session host's
        channel. False when nothing waits for it any more (the call timed out, was cancelled,
        or the session ended): the caller then records it as late."""
        runtime = self._runtimes.get(str(session_id))
        future = runtime.remote_results.get(str(call_id)) if runtime is not None else None
        if future is None or future.done():
            return False
        if status not in ("succeeded", "failed", "timed_out"):
            status = "failed"  # an outcome we do not know is not a success
        future.set_result((str(status), str(text)))
        return True

    def _on_transcript_correction(
        self, session: LiveSession, original: Any, corrected: Any
    ) -> None:
        """The vendor says its final reply text was not all spoken: the caller's transcript
        and the stored one are corrected, in order with the transcripts before it."""
        runtime = self._runtimes.get(session.id)
        if runtime is None or runtime.ending:
            return
        runtime.control.put_nowait(("correction", (str(original), str(corrected))))

    async def _handle_correction(self, runtime: _Runtime, original: str, corrected: str) -> None:
        if original == corrected:
            return
        if runtime.last_assistant_text == original:
            runtime.last_assistant_text = corrected
        await self._send(
            runtime,
            {
                "type": "transcript_corrected",
                "role": "assistant",
                "original": original,
                "text": corrected,
            },
        )
        if self.emit_transcription_events:
            await self.store.transcript_corrected(
                StoredCorrection(runtime.session.id, "assistant", original, corrected)
            )

    def _on_resumption(self, session: LiveSession, handle: Any) -> None:
        """The newest handle that resumes the vendor session: kept on the session and
        persisted (in the background: not on the provider's receive path)."""
        runtime = self._runtimes.get(session.id)
        if runtime is None or runtime.ending or not isinstance(handle, str):
            return
        session.resumption_handle = handle
        self._spawn(runtime, self._persist_handle(session, handle))

    async def _persist_handle(self, session: LiveSession, handle: str) -> None:
        try:
            await self.store.resumption_handle(session, handle)
        except Exception:
            logger.exception("could not store the session's resumption handle")

    async def _on_client_disconnected(self, session: LiveSession) -> None:
        await self.end_session(session, reason="client_hangup")


@dataclass(frozen=True, slots=True)
class _RemoteOutcome:
    status: str
    text: str


async def _revoke(remote: Any, record: StoredToolCall, tool: Tool, terminate: bool) -> None:
    try:
        await remote.revoke(record, tool, terminate=terminate)
    except Exception:
        logger.warning("revoking tool call %s failed", record.call_id, exc_info=True)


def _forget_tool(runtime: _Runtime, call_id: str, task: asyncio.Task[Any]) -> None:
    if runtime.tool_tasks.get(call_id) is task:
        del runtime.tool_tasks[call_id]
    runtime.cancelled_calls.pop(call_id, None)
    runtime.cancel_on_barge_in.discard(call_id)


def _add_counts(total: dict[str, Any], usage: dict[str, Any]) -> None:
    """Sum the numbers of ``usage`` into ``total``, nested dicts too; other values (a
    "type" label, say) are kept as last seen."""
    for key, value in usage.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            current = total.get(key, 0)
            total[key] = (current if isinstance(current, int | float) else 0) + value
        elif isinstance(value, dict):
            nested = total.get(key)
            if not isinstance(nested, dict):
                nested = total[key] = {}
            _add_counts(nested, value)
        elif isinstance(value, str):
            total[key] = value


async def _call(handler: Callable[[], Any]) -> Any:
    value = handler()
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value
