"""``manage.py end_stale_sessions``: end the sessions whose host process died.

A session is held by one process (a daphne worker, a ``voice_call``); when that process is
killed, its rows stay CONNECTING or ACTIVE. Nothing on the channel layer tells whether a
process is still there (channels has no presence, and a message to a host channel that no
handler knows would crash a live consumer), so staleness is judged from the database: a
live host writes the timeline as the call goes (every final transcript and tool call), and
connects in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from rooms.models import RoomEvent, Tenant
from roomvoice.lib.commandline import EXIT_USAGE, format_age, format_table
from voice import services as voice_services
from voice.models import EndReason, SessionState, ToolCall, VoiceSession

DEFAULT_OLDER_THAN_S = 6 * 3600
DEFAULT_CONNECTING_OLDER_THAN_S = 15 * 60
MINIMUM_S = 60
LIVE_STATES = (SessionState.CONNECTING, SessionState.ACTIVE)


@dataclass(frozen=True, slots=True)
class Bounds:
    idle_before: datetime  # no sign of life since then: stale
    connecting_before: datetime  # still connecting since then: stale


def stale_sessions(bounds: Bounds) -> QuerySet[VoiceSession]:
    """CONNECTING/ACTIVE sessions whose host is taken for dead: no sign of life (created,
    activated, a timeline event, a tool call created, started or finished) since
    ``idle_before``, or still CONNECTING since ``connecting_before``."""
    since = bounds.idle_before
    recent_event = RoomEvent.objects.filter(session=OuterRef("pk"), created_at__gte=since)
    recent_call = ToolCall.objects.filter(session=OuterRef("pk")).filter(
        Q(created_at__gte=since) | Q(started_at__gte=since) | Q(finished_at__gte=since)
    )
    silent = (
        Q(created_at__lt=since)
        & (Q(activated_at__isnull=True) | Q(activated_at__lt=since))
        & ~Exists(recent_event)
        & ~Exists(recent_call)
    )
    stuck = Q(state=SessionState.CONNECTING, created_at__lt=bounds.connecting_before)
    return VoiceSession.objects.filter(state__in=LIVE_STATES).filter(silent | stuck)


def _last_activity(session: Any) -> datetime:
    times: list[datetime | None] = [
        session.created_at,
        session.activated_at,
        session.last_event_at,
        session.last_call_at,
    ]
    return max(moment for moment in times if moment is not None)


class Command(BaseCommand):
    help = (
        "End the voice sessions whose host process died, as ENDED with reason host_lost. "
        "The channel layer cannot tell whether a host is alive, so the rule is conservative "
        "and read from the database: a CONNECTING or ACTIVE session is stale when nothing "
        "has shown it alive (its creation or activation, an event on the room's timeline, a "
        "tool call created, started or finished) for --older-than seconds (default "
        f"{DEFAULT_OLDER_THAN_S} = 6 h), or when it has been CONNECTING for "
        f"--connecting-older-than seconds (default {DEFAULT_CONNECTING_OLDER_THAN_S}; a live "
        "host connects in seconds). Each end is a conditional update: a session its host "
        "ends meanwhile keeps the host's reason. --dry-run lists without ending. Prints what "
        "it ended. Exit codes: 0 done (also when nothing was stale), 2 bad input."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=int,
            default=DEFAULT_OLDER_THAN_S,
            metavar="SECONDS",
            help=f"Inactivity after which a session is stale (default {DEFAULT_OLDER_THAN_S}).",
        )
        parser.add_argument(
            "--connecting-older-than",
            type=int,
            default=DEFAULT_CONNECTING_OLDER_THAN_S,
            metavar="SECONDS",
            help="Time after which a session still connecting is stale "
            f"(default {DEFAULT_CONNECTING_OLDER_THAN_S}).",
        )
        parser.add_argument("--tenant", metavar="SLUG", help="Only this tenant's sessions.")
        parser.add_argument(
            "--dry-run", action="store_true", help="List the stale sessions; end none."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        older_than: int = options["older_than"]
        connecting_older_than: int = options["connecting_older_than"]
        for name, value in (
            ("--older-than", older_than),
            ("--connecting-older-than", connecting_older_than),
        ):
            if value < MINIMUM_S:
                raise CommandError(
                    f"{name} must be at least {MINIMUM_S} seconds, got {value}",
                    returncode=EXIT_USAGE,
                )
        now = timezone.now()
        bounds = Bounds(
            idle_before=now - timedelta(seconds=older_than),
            connecting_before=now - timedelta(seconds=connecting_older_than),
        )
        sessions = stale_sessions(bounds)
        if options["tenant"] is not None:
            tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"no tenant {options['tenant']!r}", returncode=EXIT_USAGE)
            sessions = sessions.filter(tenant=tenant)
        last_event = (
            RoomEvent.objects.filter(session=OuterRef("pk"))
            .order_by("-index")
            .values("created_at")[:1]
        )
        last_call = (
            ToolCall.objects.filter(session=OuterRef("pk"))
            .order_by("-created_at")
            .values("created_at")[:1]
        )
        candidates = list(
            sessions.select_related("tenant", "room")
            .annotate(last_event_at=Subquery(last_event), last_call_at=Subquery(last_call))
            .order_by("created_at")
        )
        rows: list[list[object]] = []
        ended = 0
        for session in candidates:
            last = _last_activity(session)
            stuck = session.state == SessionState.CONNECTING and (
                session.created_at < bounds.connecting_before
            )
            why = (
                f"connecting for {format_age((now - session.created_at).total_seconds())}"
                if stuck
                else f"no activity for {format_age((now - last).total_seconds())}"
            )
            if options["dry_run"]:
                outcome = "would end"
            elif self._end(session, bounds, why):
                outcome = "ended"
                ended += 1
            else:
                outcome = "skipped (ended or active meanwhile)"
            rows.append(
                [
                    session.pk,
                    session.tenant.slug,
                    session.room.key,
                    session.state,
                    session.participant_id,
                    last.isoformat(timespec="seconds"),
                    why,
                    outcome,
                ]
            )
        if not rows:
            self.stdout.write(
                f"no stale sessions (no activity for {format_age(older_than)}, or connecting "
                f"for {format_age(connecting_older_than)})"
            )
            return
        headers = ["SESSION", "TENANT", "ROOM", "STATE", "PARTICIPANT", "LAST ACTIVITY"]
        for line in format_table([*headers, "WHY", "RESULT"], rows):
            self.stdout.write(line)
        if options["dry_run"]:
            self.stdout.write(f"dry run: {len(rows)} stale session(s), none ended")
        else:
            self.stdout.write(f"ended {ended} of {len(rows)} stale session(s) as host_lost")

    @staticmethod
    def _end(session: VoiceSession, bounds: Bounds, why: str) -> bool:
        """Ends the session if it is still stale (a conditional transition: a host that ends
        it meanwhile wins)."""
        if not stale_sessions(bounds).filter(pk=session.pk).exists():
            return False
        try:
            return voice_services.voice_session_end(
                tenant=session.tenant,
                session_id=session.pk,
                reason=EndReason.HOST_LOST,
                detail=f"end_stale_sessions: {why}; its host is taken for dead",
            )
        except VoiceSession.DoesNotExist:
            return False
