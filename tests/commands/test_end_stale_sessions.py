"""``manage.py end_stale_sessions``: sessions whose host died end as host_lost; live ones,
and ones that show signs of life, are left alone."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from rooms import services as room_services
from rooms.models import EventKind, EventRole, RoomEvent
from tests.fixtures.actors import TenantWorld
from voice import services as voice_services
from voice.models import EndReason, SessionState, VoiceSession

HOUR = timedelta(hours=1)


def _run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("end_stale_sessions", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def _session(world: TenantWorld, participant: str, *, age: timedelta, active: bool) -> str:
    """A session created ``age`` ago (activated then too, when ``active``)."""
    session = voice_services.voice_session_create(
        tenant=world.tenant,
        room=world.room,
        agent=world.agent,
        participant_id=participant,
        transport="websocket",
        host_channel_name=f"specific.{participant}!dead",
    )
    if active:
        voice_services.voice_session_activate(tenant=world.tenant, session_id=session.pk)
    then = timezone.now() - age
    VoiceSession.objects.filter(pk=session.pk).update(
        created_at=then, **({"activated_at": then} if active else {})
    )
    return str(session.pk)


def _state(session_id: str) -> tuple[str, str]:
    row = VoiceSession.objects.get(pk=session_id)
    return row.state, row.end_reason


@pytest.mark.django_db
def test_sessions_without_a_sign_of_life_end_as_host_lost_and_live_ones_stay(
    world_a: TenantWorld,
) -> None:
    silent = _session(world_a, "silent", age=7 * HOUR, active=True)
    stuck = _session(world_a, "stuck", age=timedelta(minutes=20), active=False)
    recent = _session(world_a, "recent", age=timedelta(minutes=5), active=True)
    connecting = _session(world_a, "connecting", age=timedelta(minutes=2), active=False)
    talking = _session(world_a, "talking", age=7 * HOUR, active=True)
    room_services.room_event_append(
        tenant=world_a.tenant,
        room=world_a.room,
        kind=EventKind.TRANSCRIPT,
        role=EventRole.USER,
        text="still here",
        session=VoiceSession.objects.get(pk=talking),
    )
    done = _session(world_a, "done", age=9 * HOUR, active=True)
    voice_services.voice_session_end(
        tenant=world_a.tenant, session_id=done, reason=EndReason.CLIENT_HANGUP
    )

    out, _ = _run()

    assert _state(silent) == (SessionState.ENDED, EndReason.HOST_LOST)
    assert _state(stuck) == (SessionState.ENDED, EndReason.HOST_LOST)
    assert _state(recent) == (SessionState.ACTIVE, "")
    assert _state(connecting) == (SessionState.CONNECTING, "")
    assert _state(talking) == (SessionState.ACTIVE, "")
    assert _state(done) == (SessionState.ENDED, EndReason.CLIENT_HANGUP)
    assert "no activity for 7h 00m" in VoiceSession.objects.get(pk=silent).end_detail
    assert "connecting for 20m" in VoiceSession.objects.get(pk=stuck).end_detail
    lines = out.splitlines()
    assert lines[0].split() == [
        "SESSION", "TENANT", "ROOM", "STATE", "PARTICIPANT", "LAST", "ACTIVITY", "WHY", "RESULT"
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[1:3]] == [silent, stuck]
    assert "no activity for 7h 00m" in lines[1] and lines[1].endswith("ended")
    assert "connecting for 20m" in lines[2]
    assert lines[-1] == "ended 2 of 2 stale session(s) as host_lost"


@pytest.mark.django_db
def test_older_than_moves_the_bound(world_a: TenantWorld) -> None:
    idle = _session(world_a, "idle", age=2 * HOUR, active=True)

    out, _ = _run()
    assert _state(idle) == (SessionState.ACTIVE, "")
    assert out.startswith("no stale sessions (no activity for 6h 00m, or connecting for 15m)")

    _run("--older-than", "3600")
    assert _state(idle) == (SessionState.ENDED, EndReason.HOST_LOST)


@pytest.mark.django_db
def test_a_recent_tool_call_is_a_sign_of_life(world_a: TenantWorld) -> None:
    busy = _session(world_a, "busy", age=7 * HOUR, active=True)
    voice_services.tool_call_create(
        tenant=world_a.tenant,
        session=VoiceSession.objects.get(pk=busy),
        call_id="call-1",
        name="get_weather",
        arguments={"city": "Paris"},
    )

    out, _ = _run()

    assert _state(busy) == (SessionState.ACTIVE, "")
    assert out.startswith("no stale sessions")


@pytest.mark.django_db
def test_dry_run_lists_and_ends_nothing(world_a: TenantWorld) -> None:
    silent = _session(world_a, "silent", age=7 * HOUR, active=True)

    out, _ = _run("--dry-run")

    assert _state(silent) == (SessionState.ACTIVE, "")
    assert silent in out and "would end" in out
    assert out.splitlines()[-1] == "dry run: 1 stale session(s), none ended"


@pytest.mark.django_db
def test_tenant_limits_what_is_ended(world_a: TenantWorld, world_b: TenantWorld) -> None:
    mine = _session(world_a, "mine", age=7 * HOUR, active=True)
    theirs = _session(world_b, "theirs", age=7 * HOUR, active=True)

    out, _ = _run("--tenant", "tenant-a")

    assert _state(mine) == (SessionState.ENDED, EndReason.HOST_LOST)
    assert _state(theirs) == (SessionState.ACTIVE, "")
    assert theirs not in out


@pytest.mark.django_db
def test_a_session_its_host_ended_meanwhile_keeps_the_hosts_reason(
    world_a: TenantWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    silent = _session(world_a, "silent", age=7 * HOUR, active=True)
    command_end = voice_services.voice_session_end

    def host_wins(**kwargs: object) -> bool:  # the host's own end lands first
        command_end(tenant=world_a.tenant, session_id=silent, reason=EndReason.CLIENT_HANGUP)
        return command_end(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(voice_services, "voice_session_end", host_wins)
    out, _ = _run()

    assert _state(silent) == (SessionState.ENDED, EndReason.CLIENT_HANGUP)
    assert "skipped (ended or active meanwhile)" in out
    assert out.splitlines()[-1] == "ended 0 of 1 stale session(s) as host_lost"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "10"], "--older-than must be at least 60 seconds"),
        (["--connecting-older-than", "0"], "--connecting-older-than must be at least 60"),
        (["--tenant", "nope"], "no tenant 'nope'"),
    ],
)
def test_bad_input_is_a_usage_error_and_ends_nothing(
    world_a: TenantWorld, args: list[str], message: str
) -> None:
    silent = _session(world_a, "silent", age=7 * HOUR, active=True)

    with pytest.raises(CommandError, match=message) as raised:
        _run(*args)

    assert raised.value.returncode == 2
    assert _state(silent) == (SessionState.ACTIVE, "")
    assert not RoomEvent.objects.filter(session_id=silent).exists()
