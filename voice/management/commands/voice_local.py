"""``manage.py voice_local --agent A [--room R]``: talk to an agent through this machine's
microphone and speakers (PortAudio), for development.

The caller's side is :class:`~voice.transports.local.LocalAudioBackend`: the microphone's
audio goes to the engine at ``--sample-rate`` (the engine resamples it for the provider)
and the reply plays on the speakers, paced by the device, with the played position exact
so that a reply the caller speaks over is truncated to what they heard. Everything else is
``voice_call``'s (shared from it): the same admission rules, the session recorded by the
database store (transport ``local``), the command its host on the channel layer, the
transcripts and tool calls printed as they happen.

Without ``--room`` the agent's tenant's room ``local`` is used, created on first use with
the agent as its default: local sessions of a tenant land in one timeline.

The session runs until Ctrl-C (or SIGTERM), which ends it as the caller's
(``ended_by_caller``) and exits 0 once the transcript is stored; a second Ctrl-C stops at
once (exit 130). A session the provider or an operator ends exits 1.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.core.management.base import CommandError, CommandParser

from rooms import services as room_services
from rooms.management.commands.export_transcripts import find_room
from rooms.models import Room, Tenant
from roomvoice.lib.commandline import EXIT_FAILED, EXIT_USAGE, quiet_logging
from voice.admission import VoicePlan
from voice.management.commands.voice_call import (
    CallResult,
    CallState,
    Printer,
    SessionCommand,
    check_participant,
    run_hosted_session,
    show_client_message,
    voice_plan,
)
from voice.models import Agent
from voice.transports.local import (
    MAX_CHANNELS,
    AudioDeviceError,
    LocalAudioBackend,
    PortAudioUnavailable,
    device_rate_ok,
    list_devices,
)

DEFAULT_PARTICIPANT = "local"
DEFAULT_SAMPLE_RATE = 16000
LOCAL_ROOM_KEY = "local"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Command(SessionCommand):
    help = (
        "Talk to an agent through this machine's microphone and speakers (PortAudio): the "
        "transcripts and tool calls are printed as they happen, and Ctrl-C ends the session "
        "(recorded like any other, transport 'local'). --agent takes an agent's slug (add "
        "--tenant when several tenants use it); --room the room's key or id, else the "
        "agent's tenant's room 'local' (created on first use). --input-device and "
        "--output-device take an index or part of a name from --list-devices (default: "
        "the system's). Exit codes: 0 ended with Ctrl-C, 1 the session failed (the "
        "provider refused or broke off, an operator ended it, PortAudio missing), 2 bad "
        "usage (unknown agent or room, no such device, a rate or channel count the device "
        "refuses), 130 stopped by a second Ctrl-C. Logs below WARNING show with -v 2."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--agent", metavar="A", help="The agent's slug (required).")
        parser.add_argument(
            "--room", metavar="R", help=f"The room's key or id (default: '{LOCAL_ROOM_KEY}')."
        )
        parser.add_argument("--tenant", metavar="SLUG", help="The agent's and room's tenant.")
        parser.add_argument(
            "--input-device", metavar="DEVICE", help="The microphone (see --list-devices)."
        )
        parser.add_argument(
            "--output-device", metavar="DEVICE", help="The speakers (see --list-devices)."
        )
        parser.add_argument(
            "--sample-rate",
            type=int,
            default=DEFAULT_SAMPLE_RATE,
            metavar="HZ",
            help=f"The devices' rate (default {DEFAULT_SAMPLE_RATE}).",
        )
        parser.add_argument(
            "--channels", type=int, default=1, help="Device channels (default 1: mono)."
        )
        parser.add_argument(
            "--participant",
            default=DEFAULT_PARTICIPANT,
            help=f"The caller's participant id in the room (default {DEFAULT_PARTICIPANT}).",
        )
        parser.add_argument(
            "--list-devices", action="store_true", help="List the audio devices and exit."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["list_devices"]:
            try:
                self._write_out(list_devices())
            except AudioDeviceError as error:
                raise CommandError(str(error), returncode=EXIT_FAILED) from None
            return
        backend_options = self._backend_options(options)
        participant = check_participant(options["participant"])
        agent_slug = str(options["agent"] or "").strip().lower()
        if not agent_slug:
            raise CommandError("--agent is required", returncode=EXIT_USAGE)
        room = self._room(options["room"], options["tenant"], agent_slug)
        plan = voice_plan(room, agent_slug, participant)
        printer = Printer(self._write_out, self._write_err)
        state = CallState()
        backend = LocalAudioBackend(
            **backend_options,
            on_message=lambda message: show_client_message(state, printer, message),
        )
        agent = plan.agent
        self._write_err(
            f"talking to agent {agent.slug} ({agent.provider_kind}"
            f"{' ' + agent.model if agent.model else ''}) in room {room.key} "
            f"(tenant {room.tenant.slug})"
        )
        try:
            with quiet_logging(options["verbosity"]):
                result = asyncio.run(self._talk(plan, backend, state, printer, participant))
        except (KeyboardInterrupt, asyncio.CancelledError):
            result = CallResult("", "interrupted", reply_finished=False, interrupted=True)
        self._finish(result)

    # --- before the session: everything checked, nothing started ------------------------------

    @staticmethod
    def _backend_options(options: dict[str, Any]) -> dict[str, Any]:
        rate: int = options["sample_rate"]
        problem = device_rate_ok(rate)
        if problem is not None:
            raise CommandError(f"--sample-rate: {problem}", returncode=EXIT_USAGE)
        channels: int = options["channels"]
        if not 1 <= channels <= MAX_CHANNELS:
            raise CommandError(f"--channels must be 1-{MAX_CHANNELS}", returncode=EXIT_USAGE)
        return {
            "sample_rate": rate,
            "channels": channels,
            "input_device": _device(options["input_device"]),
            "output_device": _device(options["output_device"]),
        }

    def _room(self, room_ref: str | None, tenant_slug: str | None, agent_slug: str) -> Room:
        if room_ref is not None:
            return find_room(room_ref, tenant_slug)
        agents = Agent.objects.filter(slug=agent_slug).select_related("tenant")
        where = ""
        if tenant_slug is not None:
            tenant = Tenant.objects.filter(slug=tenant_slug).first()
            if tenant is None:
                raise CommandError(f"no tenant {tenant_slug!r}", returncode=EXIT_USAGE)
            agents, where = agents.filter(tenant=tenant), f" in tenant {tenant.slug}"
        found = list(agents.order_by("tenant__slug")[:10])
        if not found:
            raise CommandError(f"no agent {agent_slug!r}{where}", returncode=EXIT_USAGE)
        if len(found) > 1:
            tenants = ", ".join(agent.tenant.slug for agent in found)
            raise CommandError(
                f"agent {agent_slug!r} is in several tenants ({tenants}): add --tenant SLUG",
                returncode=EXIT_USAGE,
            )
        agent = found[0]
        room = Room.objects.filter(tenant=agent.tenant, key=LOCAL_ROOM_KEY).first()
        if room is not None:
            return room
        if not agent.tenant.is_active:
            raise CommandError(f"tenant {agent.tenant.slug} is inactive", returncode=EXIT_USAGE)
        room = room_services.room_create(
            tenant=agent.tenant, key=LOCAL_ROOM_KEY, name="Local audio", default_agent=agent
        )
        self._write_err(
            f"no --room: created room {room.key} in tenant {agent.tenant.slug} for local "
            f"sessions (agent {agent.slug} its default)"
        )
        return room

    # --- the session ------------------------------------------------------------------------------

    async def _talk(
        self,
        plan: VoicePlan,
        backend: LocalAudioBackend,
        state: CallState,
        printer: Printer,
        participant: str,
    ) -> CallResult:
        try:
            await backend.open()
        except PortAudioUnavailable as error:
            raise CommandError(str(error), returncode=EXIT_FAILED) from None
        except AudioDeviceError as error:
            raise CommandError(str(error), returncode=EXIT_USAGE) from None
        stop = StopOnSignal(state, printer)
        try:
            self._write_err(
                f"microphone: {backend.input_name}; speakers: {backend.output_name}; "
                f"{backend.sample_rate} Hz, {backend.channels} channel(s)"
            )
            stop.install()
            return await run_hosted_session(
                plan,
                backend,
                state=state,
                printer=printer,
                participant=participant,
                metadata={
                    "via": "voice_local",
                    "input_device": backend.input_name,
                    "output_device": backend.output_name,
                    "sample_rate": backend.sample_rate,
                },
                converse=lambda channel, session: stop.wait(),
            )
        finally:
            stop.remove()
            await backend.close()


class StopOnSignal:
    """Ctrl-C (SIGINT) or SIGTERM while the session runs: the first ends the session as the
    caller's (:meth:`wait` returns, and the session is ended and stored); a second one
    stops at once (the command's task is cancelled: the session ends as a hang-up)."""

    def __init__(self, state: CallState, printer: Printer) -> None:
        self.state = state
        self.printer = printer
        self.requested = False
        self._task: asyncio.Task[Any] | None = None

    def install(self) -> None:
        self._task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for number in STOP_SIGNALS:
            loop.add_signal_handler(number, self._on_signal)

    def remove(self) -> None:
        if self._task is None:
            return
        loop = asyncio.get_running_loop()
        for number in STOP_SIGNALS:
            loop.remove_signal_handler(number)
        self._task = None

    def _on_signal(self) -> None:
        if self.requested:
            if self._task is not None:
                self._task.cancel()
            return
        self.requested = True
        self.printer.note("ending the session (Ctrl-C again to stop at once)")
        self.state.touch()

    async def wait(self) -> bool:
        """The caller's part: until a stop is asked for, or the session ended."""
        self.printer.note("listening: speak into the microphone; Ctrl-C ends the session")
        while not self.requested and not self.state.over:
            self.state.changed.clear()
            await self.state.changed.wait()
        return True


def _device(value: str | None) -> int | str | None:
    """A device option: an index (all digits) or part of a name, as PortAudio takes it."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    return int(text) if text.isdigit() else text
