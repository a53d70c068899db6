"""``manage.py export_transcripts``: a room's timeline as JSON lines or readable text."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from rooms import services as room_services
from rooms.models import EventKind, EventRole, EventStatus, RoomEvent
from tests.fixtures.actors import TenantWorld
from voice import services as voice_services

T0 = datetime(2025, 3, 4, 9, 15, 0, tzinfo=UTC)


def _run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("export_transcripts", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def _timeline(world: TenantWorld) -> str:
    """A call in room-1 after the fixture's own "binding attached" event (index 1)."""
    session = voice_services.voice_session_create(
        tenant=world.tenant,
        room=world.room,
        agent=world.agent,
        participant_id="caller",
        transport="websocket",
    )
    events = [
        room_services.NewRoomEvent(
            kind=EventKind.TRANSCRIPT,
            role=EventRole.USER,
            text="What is the weather in Paris?",
            session=session,
            participant_id="caller",
            occurred_at=T0,
        ),
        room_services.NewRoomEvent(
            kind=EventKind.TOOL_CALL,
            role=EventRole.TOOL,
            text='get_weather({"city": "Paris"})',
            session=session,
            occurred_at=T0.replace(second=2),
        ),
        room_services.NewRoomEvent(
            kind=EventKind.TRANSCRIPT,
            role=EventRole.USER,
            text="something rude",
            status=EventStatus.BLOCKED,
            blocked_by="hook:moderation",
            session=session,
            participant_id="caller",
            occurred_at=T0.replace(second=3),
        ),
        room_services.NewRoomEvent(
            kind=EventKind.TRANSCRIPT,
            role=EventRole.ASSISTANT,
            text="It is sunny,\nand 21 degrees.",
            session=session,
            occurred_at=T0.replace(day=5, hour=0, minute=0, second=1),
        ),
    ]
    room_services.room_events_append(tenant=world.tenant, room=world.room, events=events)
    return str(session.pk)


@pytest.mark.django_db
def test_jsonl_has_one_object_per_event_in_index_order(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    session_id = _timeline(world_a)
    _timeline(world_b)  # the other tenant's room-1: never in tenant A's export

    out, err = _run("--room", "room-1", "--tenant", "tenant-a", "--format", "jsonl")

    records = [json.loads(line) for line in out.splitlines()]
    assert [record["index"] for record in records] == [1, 2, 3, 4, 5]
    assert records[1] == {
        "index": 2,
        "kind": "transcript",
        "role": "user",
        "text": "What is the weather in Paris?",
        "status": "delivered",
        "blocked_by": "",
        "session_id": session_id,
        "participant_id": "caller",
        "occurred_at": "2025-03-04T09:15:00+00:00",
    }
    assert (records[0]["kind"], records[0]["session_id"]) == ("system", None)
    assert (records[3]["status"], records[3]["blocked_by"]) == ("blocked", "hook:moderation")
    event_ids = set(RoomEvent.objects.filter(room=world_a.room).values_list("index", flat=True))
    assert {record["index"] for record in records} == event_ids
    assert "exported 5 event(s) of room room-1 (tenant tenant-a) to stdout" in err


@pytest.mark.django_db
@override_settings(TIME_ZONE="UTC")
def test_txt_reads_as_a_transcript_with_blocked_text_withheld(
    world_a: TenantWorld, tmp_path: Path
) -> None:
    _timeline(world_a)
    RoomEvent.objects.filter(room=world_a.room, index=1).update(occurred_at=T0)
    target = tmp_path / "room-1.txt"

    out, err = _run("--room", str(world_a.room.pk), "--format", "txt", "--output", str(target))

    assert out == ""
    assert target.read_text(encoding="utf-8").splitlines() == [
        "--- 2025-03-04 ---",
        "[09:15:00] system: binding voice/caller attached",
        "[09:15:00] user: What is the weather in Paris?",
        '[09:15:02] tool: get_weather({"city": "Paris"})',
        "[09:15:03] user: [blocked by hook:moderation; text withheld]",
        "--- 2025-03-05 ---",
        "[00:00:01] assistant: It is sunny,",
        "    and 21 degrees.",
    ]
    assert "something rude" not in target.read_text(encoding="utf-8")
    assert f"exported 5 event(s) of room room-1 (tenant tenant-a) to {target}" in err
    assert [path.name for path in tmp_path.iterdir()] == ["room-1.txt"]  # no leftovers


@pytest.mark.django_db
def test_an_empty_room_exports_nothing(world_a: TenantWorld) -> None:
    RoomEvent.objects.filter(room=world_a.room).delete()

    out, err = _run("--room", "room-1", "--format", "jsonl")

    assert out == ""
    assert "exported 0 event(s)" in err


@pytest.mark.django_db
def test_a_room_key_in_two_tenants_needs_the_tenant(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    with pytest.raises(CommandError, match=r"several tenants \(tenant-a, tenant-b\)") as raised:
        _run("--room", "room-1", "--format", "jsonl")

    assert raised.value.returncode == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--room", "nowhere"], "no room 'nowhere'"),
        (["--room", "room-1", "--tenant", "nope"], "no tenant 'nope'"),
        (["--room", "00000000-0000-0000-0000-000000000000"], "no room with id"),
    ],
)
def test_unknown_rooms_and_tenants_are_usage_errors(
    world_a: TenantWorld, args: list[str], message: str
) -> None:
    with pytest.raises(CommandError, match=message) as raised:
        _run(*args, "--format", "txt")

    assert raised.value.returncode == 2


@pytest.mark.django_db
def test_an_unwritable_output_is_a_usage_error_and_writes_nothing(
    world_a: TenantWorld, tmp_path: Path
) -> None:
    target = tmp_path / "missing-dir" / "out.jsonl"

    with pytest.raises(CommandError, match="cannot write") as raised:
        _run("--room", "room-1", "--format", "jsonl", "--output", str(target))

    assert raised.value.returncode == 2
    assert list(tmp_path.iterdir()) == []
