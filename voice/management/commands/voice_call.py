"""``manage.py voice_call --room R --agent A --wav in.wav``: one whole voice session,
headless, through the real engine and the agent's provider.

The command is the caller: a transport of its own (``CommandLineTransport``) feeds the WAV
to the engine at the file's own sample rate (the engine resamples it for the provider, as it
does for any transport that declares its rate), prints what a caller's client is told as it
happens, and writes the reply audio it receives to ``--out``. The session is recorded by the
database store like any other (``VoiceSession``, the room's timeline, ``ToolCall`` rows), and
the command is its host on the channel layer: an operator's end or reconfigure request, a
binding change and a Celery tool's result reach it as they reach a WebSocket consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from rooms.management.commands.export_transcripts import find_room
from rooms.models import Room
from roomvoice.lib.commandline import (
    EXIT_FAILED,
    EXIT_USAGE,
    format_clock,
    one_line,
    plain,
    quiet_logging,
)
from voice.admission import Admission, Refusal, VoicePlan, plan_voice
from voice.agents import channel_for_agent
from voice.channels import RealtimeVoiceChannel
from voice.control import RoomControlListener
from voice.django_store import DjangoStore
from voice.host import serve_host_channel
from voice.models import MAX_SAMPLE_RATE, EndReason, TransportKind, VoiceSession
from voice.session import LiveSession
from voice.store import StoredToolCall
from voice.transports.base import RealtimeTransport

logger = logging.getLogger(__name__)

FRAME_MS = 20
MIN_SAMPLE_RATE = 8000
DEFAULT_WAIT_S = 10.0
MAX_WAIT_S = 3600.0
MAX_SPEED = 1000.0
#: The reply is over once nothing has happened for this long (a tool result's follow-up, a
#: transcript still on its way).
QUIET_S = 0.75
SUBSCRIBE_TIMEOUT_S = 10.0
DEFAULT_PARTICIPANT = "cli"
EXIT_INTERRUPTED = 130
TOOL_RESULT_STATUSES = ("succeeded", "failed", "timed_out", "cancelled")


class WavError(ValueError):
    """The WAV file cannot be used (unreadable, not PCM16, too many channels...)."""


@dataclass(frozen=True, slots=True)
class WavAudio:
    name: str
    rate: int
    channels: int  # in the file; ``pcm`` is mono
    pcm: bytes  # PCM16 LE mono at ``rate``

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / self.rate


def read_wav(path: Path) -> WavAudio:
    """A mono or stereo 16-bit PCM WAV file (any rate from 8 to 192 kHz), as mono PCM16
    (stereo is mixed down: the engine carries one channel)."""
    try:
        with wave.open(str(path), "rb") as reader:
            channels, width, rate = (
                reader.getnchannels(),
                reader.getsampwidth(),
                reader.getframerate(),
            )
            data = reader.readframes(reader.getnframes())
    except FileNotFoundError:
        raise WavError(f"no such file: {path}") from None
    except OSError as error:
        raise WavError(f"cannot read {path}: {error.strerror or error}") from None
    except (wave.Error, EOFError) as error:
        raise WavError(f"{path} is not a PCM WAV file ({error or 'truncated'})") from None
    if width != 2:
        raise WavError(
            f"{path} has {8 * width}-bit samples; use 16-bit PCM "
            f"(e.g. sox {path.name} -b 16 out.wav)"
        )
    if channels not in (1, 2):
        raise WavError(f"{path} has {channels} channels; use a mono or stereo file")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise WavError(f"{path} is at {rate} Hz; use {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    usable = len(data) - len(data) % (2 * channels)
    if usable == 0:
        raise WavError(f"{path} holds no audio")
    pcm = data[:usable]
    if channels == 2:
        stereo = np.frombuffer(pcm, dtype="<i2").reshape(-1, 2).astype(np.int32)
        pcm = ((stereo[:, 0] + stereo[:, 1]) // 2).astype("<i2").tobytes()
    return WavAudio(name=path.name, rate=rate, channels=channels, pcm=pcm)


class Printer:
    """Lines for people, stamped with the time since the session started: what was said and
    done on stdout, progress and problems on stderr. Flushed at once (output may be piped)."""

    def __init__(self, out: Callable[[str], None], err: Callable[[str], None]) -> None:
        self._out = out
        self._err = err
        self.started = time.monotonic()

    def _stamp(self) -> str:
        return f"[{format_clock(time.monotonic() - self.started)}]"

    def said(self, text: str) -> None:
        self._out(f"{self._stamp()} {text}")

    def note(self, text: str) -> None:
        self._err(f"{self._stamp()} {text}")


@dataclass
class CallState:
    """What the caller's client has been told so far, and from it whether the agent's reply
    is over: the caller is not speaking, no response or tool call is in progress, every
    finished tool call has had its answer (a response started after the call did), a
    response has ended since the caller last stopped speaking, and nothing has happened for
    ``QUIET_S``."""

    user_speaking: bool = False
    assistant_speaking: bool = False
    answered: bool = False
    responses: int = 0  # responses started so far
    #: Running tool calls, by call id: how many responses had started when each began.
    tools_running: dict[str, int] = field(default_factory=dict)
    #: Finished tool calls whose answer has not started yet: the same count.
    awaiting_answer: dict[str, int] = field(default_factory=dict)
    last_activity: float = field(default_factory=time.monotonic)
    ended: bool = False
    ended_reason: str = ""
    last_error: str = ""
    #: An operator asked (over the channel layer) to end the session, with this reason.
    stop_reason: str = ""
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def touch(self) -> None:
        self.last_activity = time.monotonic()
        self.changed.set()

    def handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "speaking":
            speaking = bool(message.get("speaking"))
            if message.get("who") == "user":
                self.user_speaking = speaking
                if not speaking:
                    self.answered = False  # a new turn: it wants an answer
            else:
                self.assistant_speaking = speaking
                if speaking:
                    self.responses += 1
                    self.awaiting_answer.clear()
                elif not self.user_speaking:
                    self.answered = True
        elif kind == "tool_call":
            call_id = str(message.get("call_id", ""))
            status = message.get("status")
            if status == "running":
                self.tools_running[call_id] = self.responses
            elif status in TOOL_RESULT_STATUSES:
                began = self.tools_running.pop(call_id, self.responses)
                # The model answers the result, unless its answer has started already
                # (the result reached the provider before this message reached us).
                if self.responses == began:
                    self.awaiting_answer[call_id] = began
        elif kind == "error":
            self.last_error = f"{message.get('code')}: {message.get('message')}"
        elif kind == "session_ended":
            self.ended = True
            self.ended_reason = str(message.get("reason", ""))
        self.touch()

    def idle(self) -> bool:
        return (
            self.answered
            and not self.user_speaking
            and not self.assistant_speaking
            and not self.tools_running
            and not self.awaiting_answer
        )

    def quiet_for(self) -> float:
        return time.monotonic() - self.last_activity

    def reply_finished(self) -> bool:
        return self.idle() and self.quiet_for() >= QUIET_S

    @property
    def over(self) -> bool:
        return self.ended or bool(self.stop_reason)


class CommandLineTransport(RealtimeTransport):
    """The command's side of the call: audio in at the WAV's rate (declared, so the engine
    resamples it), the reply audio out to a WAV writer, the client messages printed."""

    name = TransportKind.CLI

    def __init__(
        self,
        *,
        sample_rate: int,
        state: CallState,
        printer: Printer,
        out: wave.Wave_write | None,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.state = state
        self.printer = printer
        self.out = out
        self.reply_bytes = 0

    def transport_sample_rate(self, session: LiveSession) -> int | None:
        return self.sample_rate

    def feed(self, session: LiveSession, pcm: bytes) -> None:
        """Caller audio (PCM16 mono at ``sample_rate``) into the engine."""
        self._deliver_audio(session, pcm)

    async def accept(self, session: LiveSession, connection: Any) -> None:
        return None  # nothing to accept: the command is the caller

    async def send_audio(self, session: LiveSession, audio: bytes) -> None:
        if self.out is not None:
            self.out.writeframes(audio)
        self.reply_bytes += len(audio)
        self.state.touch()

    async def send_message(self, session: LiveSession, message: dict[str, Any]) -> None:
        show_client_message(self.state, self.printer, message)

    async def disconnect(self, session: LiveSession) -> None:
        self.state.ended = True
        self.state.touch()


def show_client_message(state: CallState, printer: Printer, message: dict[str, Any]) -> None:
    """A message a caller's client is told: noted in ``state``, printed for people."""
    state.handle(message)
    kind = message.get("type")
    if kind == "transcription" and message.get("is_final"):
        printer.said(f"{message.get('role')}: {message.get('text')}")
    elif kind == "transcript_corrected":
        printer.said(f"{message.get('role')} (as heard): {message.get('text')}")
    elif kind == "error":
        printer.note(f"error {message.get('code')}: {message.get('message')}")
    elif kind == "access":
        printer.note(
            f"access changed: can speak {message.get('can_speak')}, "
            f"can hear {message.get('can_hear')}"
        )
    elif kind == "clear_audio":
        printer.note("the caller spoke over the reply (barge-in)")


class ReportingStore(DjangoStore):
    """The database store, printing each tool call with its arguments and outcome, and
    keeping the session's id (known from the start, even when the start then fails)."""

    def __init__(self, *, printer: Printer, **options: Any) -> None:
        super().__init__(**options)
        self.printer = printer
        self.session_id = ""

    async def session_created(self, session: LiveSession) -> None:
        self.session_id = session.id
        await super().session_created(session)

    async def tool_call_started(self, record: StoredToolCall) -> None:
        await super().tool_call_started(record)
        arguments = json.dumps(record.arguments, ensure_ascii=False, default=str)
        self.printer.said(f"tool {record.name}({one_line(arguments)})")

    async def tool_call_finished(self, record: StoredToolCall) -> None:
        await super().tool_call_finished(record)
        outcome = record.result if record.status == "succeeded" else record.error
        self.printer.said(f"tool {record.name} {record.status}: {one_line(outcome)}")


class Host:
    """The command as the session's host on the channel layer (``host_channel_name``):
    what reaches a WebSocket consumer's channel reaches it too. An end request is handed to
    the command (which ends the session itself); tool results and reconfigure requests are
    applied here."""

    def __init__(self, layer: Any, state: CallState, store: DjangoStore) -> None:
        self.layer = layer
        self.state = state
        self.store = store
        self.name = ""

    async def open(self) -> str:
        if self.layer is not None:
            self.name = str(await self.layer.new_channel())
        return self.name

    async def run(self, channel: RealtimeVoiceChannel, session: LiveSession) -> None:
        await serve_host_channel(self.layer, self.name, channel, session, on_end=self.stop)

    async def stop(self, reason: str) -> None:
        """An operator's end request: the command ends the session itself."""
        self.state.stop_reason = reason
        self.state.touch()


@dataclass(frozen=True, slots=True)
class CallResult:
    session_id: str  # "" when the session never started
    failure: str  # "" when the call went as planned
    reply_finished: bool
    interrupted: bool = False


@dataclass(frozen=True, slots=True)
class CallPlan:
    plan: VoicePlan
    wav: WavAudio
    speed: float
    wait_s: float
    participant: str


#: ``converse(channel, session)``: the caller's part of a started session, until it is over;
#: True when it went as planned (voice_call: the reply was over before ``--wait`` ran out).
Converse = Callable[[RealtimeVoiceChannel, LiveSession], Awaitable[bool]]


def check_participant(value: object) -> str:
    participant = str(value).strip()
    if not participant or len(participant) > 128 or participant.startswith("user:"):
        raise CommandError(
            "--participant must be 1-128 characters, not starting with 'user:'",
            returncode=EXIT_USAGE,
        )
    return participant


def voice_plan(room: Room, agent_slug: str, participant: str) -> VoicePlan:
    """The same admission rules as the WebSocket path (tenant active, room open, access not
    revoked, the agent's provider buildable)."""
    if not room.tenant.is_active:
        raise CommandError(f"tenant {room.tenant.slug} is inactive", returncode=EXIT_USAGE)
    admission = Admission(tenant=room.tenant, room=room, participant_id=participant, via="cli")
    try:
        return plan_voice(admission, agent_slug=agent_slug)
    except Refusal as refusal:
        if refusal.code == "not_found" and "agent" in refusal.message:
            message = f"no agent {agent_slug!r} in tenant {room.tenant.slug}"
        else:
            message = refusal.message
        code = EXIT_FAILED if refusal.code == "unavailable" else EXIT_USAGE
        raise CommandError(message, returncode=code) from None
    except Exception as error:  # a provider that cannot be built from the agent's settings
        raise CommandError(
            f"agent {agent_slug!r} cannot be used: {type(error).__name__}: {error}",
            returncode=EXIT_FAILED,
        ) from None


async def run_hosted_session(
    plan: VoicePlan,
    transport: RealtimeTransport,
    *,
    state: CallState,
    printer: Printer,
    participant: str,
    metadata: dict[str, Any],
    converse: Converse,
) -> CallResult:
    """One whole session of ``plan``'s agent with ``transport``'s caller, recorded by the
    database store (as ``transport.name``), the command its host on the channel layer and
    the room's control listener running: ``converse`` is the caller's part. The session is
    ended as the caller's (``ended_by_caller``) when ``converse`` returns, with an
    operator's reason when one ended it, as a hang-up when the command is cancelled."""
    try:
        room = plan.admission.room
        layer = get_channel_layer()
        store = ReportingStore(
            printer=printer,
            tenant=plan.admission.tenant,
            agent=plan.agent,
            transport=TransportKind(transport.name),
        )
        host = Host(layer, state, store)
        store.host_channel_name = await host.open()
        channel = channel_for_agent(
            plan.config, transport=transport, store=store, provider=plan.provider
        )
        background: list[asyncio.Task[None]] = []
        session: LiveSession | None = None
        reason: str = EndReason.ENDED_BY_CALLER
        try:
            if layer is not None:
                listener = RoomControlListener(
                    channel, room_uuid=str(room.pk), room_id=str(room.pk)
                )
                background.append(asyncio.create_task(listener.run(), name="voice-call-control"))
                try:
                    async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                        await listener.wait_subscribed()
                except TimeoutError:
                    return CallResult("", "the channel layer did not answer", False)
            try:
                session = await channel.start_session(str(room.pk), participant, metadata=metadata)
            except Exception as error:
                failure = f"the session did not start: {_describe(error)}"
                return CallResult(store.session_id, failure, False)
            printer.started = time.monotonic()
            printer.note(f"session {session.id} started")
            if layer is not None:
                background.append(
                    asyncio.create_task(host.run(channel, session), name="voice-call-host")
                )
            finished = await converse(channel, session)
            if state.stop_reason:
                reason = state.stop_reason
            return CallResult(session.id, _failure(state), finished)
        except asyncio.CancelledError:
            reason = EndReason.CLIENT_HANGUP  # Ctrl-C: the caller hung up
            raise
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if session is not None:
                await channel.end_session(session, reason=reason)
                printer.note(f"session ended ({state.ended_reason or reason})")
            await channel.close()
    finally:
        # The engine's database calls ran on a worker thread: close its connection.
        await database_sync_to_async(connections.close_all)()


class SessionCommand(BaseCommand):
    """What the commands running one session (voice_call, voice_local) share: lines for
    people, flushed at once (output may be piped), and the outcome at the end."""

    def _finish(self, result: CallResult) -> None:
        """Say how the session was recorded; raise the exit code of a failed one."""
        if result.session_id:
            row = (
                VoiceSession.objects.filter(pk=result.session_id)
                .values("state", "end_reason", "end_detail")
                .first()
            )
            if row is not None:
                detail = f": {one_line(row['end_detail'])}" if row["end_detail"] else ""
                self._write_err(
                    f"session {result.session_id} recorded: {row['state']}, "
                    f"{row['end_reason']}{detail}"
                )
        if result.interrupted:
            raise CommandError("interrupted: the session was ended", returncode=EXIT_INTERRUPTED)
        if result.failure:
            raise CommandError(result.failure, returncode=EXIT_FAILED)

    def _write_out(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()

    def _write_err(self, line: str) -> None:
        self.stderr.write(line, style_func=plain)
        self.stderr.flush()


class Command(SessionCommand):
    help = (
        "Run one whole voice session headless: stream a WAV file (16-bit PCM, mono or "
        "stereo, 8-192 kHz) as the caller, through the engine and the agent's provider (or "
        "a fake one, through the credential's endpoint), print the transcripts and tool "
        "calls as they happen, and write the reply audio (at the WAV's rate, without the "
        "pauses) to --out. --speed 1 streams in real time, 2 twice as fast, 0 as fast as "
        "the engine takes it. After the WAV the line stays open (silence, in real time, as "
        "a listening caller sends) until the reply is over: the caller's turn answered, no "
        "response or tool call in progress, nothing new for a moment; at most --wait "
        "seconds. The session is then ended and recorded like any other. --room takes the "
        "room's key or id (--tenant when several tenants use the key); --agent an agent's "
        "slug in the room's tenant. Exit codes: 0 done, 1 the session failed (the provider "
        "refused or broke off, an operator ended it), 2 bad usage (unknown room or agent, "
        "unreadable or unsupported WAV), 130 interrupted. Logs below WARNING show with -v 2."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--room", required=True, metavar="R", help="The room's key or id.")
        parser.add_argument(
            "--agent", required=True, metavar="A", help="The agent's slug (room's tenant)."
        )
        parser.add_argument("--tenant", metavar="SLUG", help="The room's tenant.")
        parser.add_argument("--wav", required=True, metavar="IN.WAV", help="The caller audio.")
        parser.add_argument("--out", metavar="OUT.WAV", help="Write the reply audio here.")
        parser.add_argument(
            "--speed",
            type=float,
            default=1.0,
            help="1 real time (default), 2 twice as fast, 0 as fast as possible.",
        )
        parser.add_argument(
            "--wait",
            type=float,
            default=DEFAULT_WAIT_S,
            metavar="SECONDS",
            help=f"Longest wait for the reply after the WAV (default {DEFAULT_WAIT_S:g}).",
        )
        parser.add_argument(
            "--participant",
            default=DEFAULT_PARTICIPANT,
            help=f"The caller's participant id in the room (default {DEFAULT_PARTICIPANT}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        call = self._plan(options)
        out_path = Path(options["out"]) if options["out"] else None
        writer = _open_out(out_path, call.wav.rate) if out_path is not None else None
        printer = Printer(self._write_out, self._write_err)
        transport = CommandLineTransport(
            sample_rate=call.wav.rate, state=CallState(), printer=printer, out=writer
        )
        room, agent, wav = call.plan.admission.room, call.plan.agent, call.wav
        pace = "as fast as possible" if call.speed == 0 else f"at speed {call.speed:g}"
        self._write_err(
            f"calling agent {agent.slug} ({agent.provider_kind}"
            f"{' ' + agent.model if agent.model else ''}) in room {room.key} "
            f"(tenant {room.tenant.slug}) with {wav.name} ({wav.seconds:.2f} s, {wav.rate} Hz, "
            f"{'stereo' if wav.channels == 2 else 'mono'}) {pace}"
        )
        try:
            with quiet_logging(options["verbosity"]):
                result = asyncio.run(self._session(call, transport))
        except KeyboardInterrupt:
            result = CallResult("", "interrupted", reply_finished=False, interrupted=True)
        finally:
            if writer is not None:
                writer.close()
        self._summarize(result, out_path, transport.reply_bytes / 2 / wav.rate)

    # --- before the call: everything checked, nothing started -------------------------------

    def _plan(self, options: dict[str, Any]) -> CallPlan:
        speed: float = options["speed"]
        if not 0 <= speed <= MAX_SPEED:
            raise CommandError(
                f"--speed must be between 0 and {MAX_SPEED:g}", returncode=EXIT_USAGE
            )
        wait_s: float = options["wait"]
        if not 0 <= wait_s <= MAX_WAIT_S:
            raise CommandError(
                f"--wait must be between 0 and {MAX_WAIT_S:g} seconds", returncode=EXIT_USAGE
            )
        participant = check_participant(options["participant"])
        try:
            wav = read_wav(Path(options["wav"]))
        except WavError as error:
            raise CommandError(str(error), returncode=EXIT_USAGE) from None
        room = find_room(options["room"], options["tenant"])
        return CallPlan(
            plan=voice_plan(room, str(options["agent"]).strip().lower(), participant),
            wav=wav,
            speed=speed,
            wait_s=wait_s,
            participant=participant,
        )

    # --- the call -----------------------------------------------------------------------------

    async def _session(self, call: CallPlan, transport: CommandLineTransport) -> CallResult:
        state, printer = transport.state, transport.printer

        async def converse(channel: RealtimeVoiceChannel, session: LiveSession) -> bool:
            await self._stream(channel, transport, session, call)
            if state.over:
                return False
            printer.note(f"{call.wav.name} sent; waiting up to {call.wait_s:g} s for the reply")
            line = asyncio.create_task(self._keep_line_open(transport, session, call.wav.rate))
            try:
                return await self._wait_for_reply(channel, session, state, call.wait_s)
            finally:
                line.cancel()
                await asyncio.gather(line, return_exceptions=True)

        return await run_hosted_session(
            call.plan,
            transport,
            state=state,
            printer=printer,
            participant=call.participant,
            metadata={"via": "voice_call", "wav": call.wav.name, "speed": call.speed},
            converse=converse,
        )

    @staticmethod
    async def _stream(
        channel: RealtimeVoiceChannel,
        transport: CommandLineTransport,
        session: LiveSession,
        call: CallPlan,
    ) -> None:
        """The WAV in 20 ms frames, paced at ``speed`` (0: each frame once the engine has
        taken the last, so nothing is dropped from its bounded queue)."""
        rate, pcm, speed = call.wav.rate, call.wav.pcm, call.speed
        frame_bytes = max(1, rate * FRAME_MS // 1000) * 2
        loop = asyncio.get_running_loop()
        started = loop.time()
        for offset in range(0, len(pcm), frame_bytes):
            if transport.state.over:
                return
            frame = pcm[offset : offset + frame_bytes]
            transport.feed(session, frame)
            if speed == 0:
                with contextlib.suppress(TimeoutError):
                    await channel.settle(session)
                continue
            sent_s = (offset + len(frame)) / 2 / rate
            await asyncio.sleep(max(0.0, started + sent_s / speed - loop.time()))

    @staticmethod
    async def _keep_line_open(
        transport: CommandLineTransport, session: LiveSession, rate: int
    ) -> None:
        """Silence in real time after the WAV, as a listening caller's microphone sends: a
        provider's voice detection closes the caller's turn on it."""
        samples = max(1, rate * FRAME_MS // 1000)
        silence = bytes(2 * samples)
        loop = asyncio.get_running_loop()
        started = loop.time()
        frames = 0
        while not transport.state.over:
            transport.feed(session, silence)
            frames += 1
            await asyncio.sleep(max(0.0, started + frames * samples / rate - loop.time()))

    @staticmethod
    async def _wait_for_reply(
        channel: RealtimeVoiceChannel, session: LiveSession, state: CallState, wait_s: float
    ) -> bool:
        """True once the reply is over (see CallState); False when ``wait_s`` ran out or the
        session ended first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while not state.over:
            remaining = deadline - loop.time()
            if state.reply_finished():
                # Everything the engine has received is handled (a tool call queued behind
                # the response's end has started): still over?
                try:
                    async with asyncio.timeout(max(0.0, remaining)):
                        await channel.settle(session)
                except TimeoutError:
                    continue
                if state.reply_finished():
                    return True
                continue
            if remaining <= 0:
                return False
            pause = remaining
            if state.idle():
                pause = min(remaining, QUIET_S - state.quiet_for() + 0.01)
            state.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, pause)):
                    await state.changed.wait()
        return False

    # --- after the call -------------------------------------------------------------------------

    def _summarize(self, result: CallResult, out_path: Path | None, reply_s: float) -> None:
        if out_path is not None:
            self._write_err(f"wrote {reply_s:.2f} s of reply audio to {out_path}")
        self._finish(result)
        if not result.reply_finished:
            self.stderr.write(
                "the reply was not over when --wait ran out (or none came): the session was "
                "ended anyway",
                style_func=self.style.WARNING,
            )


def _open_out(path: Path, rate: int) -> wave.Wave_write:
    try:
        writer = wave.open(str(path), "wb")
    except OSError as error:
        raise CommandError(
            f"cannot write {path}: {error.strerror or error}", returncode=EXIT_USAGE
        ) from None
    writer.setnchannels(1)
    writer.setsampwidth(2)
    writer.setframerate(rate)
    return writer


def _describe(error: BaseException) -> str:
    code = getattr(error, "code", None)
    message = getattr(error, "message", None)
    if isinstance(code, str) and isinstance(message, str):  # a ProviderError
        return f"{code}: {message}"
    return f"{type(error).__name__}: {error}"


def _failure(state: CallState) -> str:
    """Why the call failed ("" when it did not): the session ended before the command
    ended it, or an operator ended it."""
    if state.stop_reason:
        return f"the session was ended from outside ({state.stop_reason})"
    if state.ended:
        detail = f": {state.last_error}" if state.last_error else ""
        return f"the session ended early ({state.ended_reason or 'unknown reason'}){detail}"
    return ""
