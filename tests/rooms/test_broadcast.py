"""Room control events on the channel layer: sent after commit, never on rollback, and made
of JSON primitives so channels-redis can pack them with msgpack."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers, get_channel_layer
from django.core.exceptions import ValidationError
from django.db import transaction

from rooms import services
from rooms.broadcast import BINDING_CHANGED, EVENT_APPENDED, room_group_name
from rooms.models import Room, RoomEvent
from rooms.services import NewRoomEvent
from tests.fixtures.actors import TenantWorld
from voice import services as voice_services

PRIMITIVES = (str, int, bool, type(None))


@pytest.fixture(autouse=True)
def fresh_channel_layer(settings: Any) -> Iterator[None]:
    """The in-memory layer in both passes: these tests hop event loops between calls, which
    channels-redis does not support (a consumer lives in one loop). The Redis path has its
    own single-loop tests in tests/integration."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


def _listen(room: Room) -> str:
    """A channel in the room's group, as an observer or session host would hold."""
    layer = get_channel_layer()

    async def join() -> str:
        channel = await layer.new_channel()
        await layer.group_add(room_group_name(room.pk), channel)
        return channel

    return async_to_sync(join)()


def _received(channel: str) -> list[dict[str, Any]]:
    """Every message waiting on the channel (stops at the first 50 ms of silence)."""
    layer = get_channel_layer()

    async def drain() -> list[dict[str, Any]]:
        messages = []
        while True:
            try:
                messages.append(await asyncio.wait_for(layer.receive(channel), timeout=0.05))
            except TimeoutError:
                return messages

    return async_to_sync(drain)()


def _assert_msgpack_safe(message: dict[str, Any]) -> None:
    assert all(type(key) is str for key in message)
    for key, value in message.items():
        assert type(value) in PRIMITIVES, f"{key}={value!r} is a {type(value).__name__}"
    assert msgpack.unpackb(msgpack.packb(message)) == message


@pytest.mark.django_db(transaction=True)
def test_binding_update_sends_binding_changed_to_the_room_group_after_commit(
    world_a: TenantWorld,
) -> None:
    channel = _listen(world_a.room)

    services.binding_update(
        tenant=world_a.tenant, binding=world_a.binding, access="read_only", muted=True
    )

    messages = _received(channel)
    assert [message["type"] for message in messages] == [EVENT_APPENDED, BINDING_CHANGED]
    assert messages[1] == {
        "type": "room.binding_changed",
        "room_id": str(world_a.room.pk),
        "binding_id": str(world_a.binding.pk),
        "channel_id": "voice",
        "participant_id": "caller",
        "access": "read_only",
        "muted": True,
        "output_muted": False,
        "visibility": "all",
        "detached": False,
    }
    for message in messages:
        _assert_msgpack_safe(message)


@pytest.mark.django_db(transaction=True)
def test_binding_update_sends_nothing_before_the_outer_transaction_commits(
    world_a: TenantWorld,
) -> None:
    channel = _listen(world_a.room)

    with transaction.atomic():
        services.binding_update(tenant=world_a.tenant, binding=world_a.binding, access="none")
        assert _received(channel) == []

    assert [message["type"] for message in _received(channel)] == [
        EVENT_APPENDED,
        BINDING_CHANGED,
    ]


@pytest.mark.django_db(transaction=True)
def test_binding_update_sends_nothing_when_the_transaction_rolls_back(
    world_a: TenantWorld,
) -> None:
    channel = _listen(world_a.room)

    with pytest.raises(RuntimeError), transaction.atomic():
        services.binding_update(tenant=world_a.tenant, binding=world_a.binding, access="none")
        raise RuntimeError("the caller's later step failed")

    assert _received(channel) == []
    world_a.binding.refresh_from_db()
    assert world_a.binding.access == "read_write"


@pytest.mark.django_db(transaction=True)
def test_binding_update_refused_sends_nothing(world_a: TenantWorld) -> None:
    channel = _listen(world_a.room)

    with pytest.raises(ValidationError):
        services.binding_update(tenant=world_a.tenant, binding=world_a.binding, access="admin")

    assert _received(channel) == []


@pytest.mark.django_db(transaction=True)
def test_binding_update_without_a_change_sends_nothing(world_a: TenantWorld) -> None:
    channel = _listen(world_a.room)

    services.binding_update(
        tenant=world_a.tenant, binding=world_a.binding, access="read_write", visibility=" all "
    )

    assert _received(channel) == []


@pytest.mark.django_db(transaction=True)
def test_broadcast_reaches_only_the_group_of_the_changed_room(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    channel_b = _listen(world_b.room)

    services.binding_update(tenant=world_a.tenant, binding=world_a.binding, muted=True)

    assert _received(channel_b) == []


@pytest.mark.django_db(transaction=True)
def test_room_events_append_sends_event_appended_per_event_in_index_order(
    world_a: TenantWorld,
) -> None:
    channel = _listen(world_a.room)

    rows = services.room_events_append(
        tenant=world_a.tenant,
        room=world_a.room,
        events=[
            NewRoomEvent(kind="transcript", role="user", text="hello", channel_id="voice"),
            NewRoomEvent(
                kind="message",
                role="assistant",
                text="hidden",
                status="blocked",
                blocked_by="moderation",
            ),
        ],
    )

    messages = _received(channel)
    stored = {event.index: event for event in RoomEvent.objects.filter(room=world_a.room)}
    assert messages == [
        {
            "type": "room.event_appended",
            "room_id": str(world_a.room.pk),
            "event_id": str(rows[0].pk),
            "index": 2,
            "kind": "transcript",
            "role": "user",
            "text": "hello",
            "status": "delivered",
            "session_id": None,
            "channel_id": "voice",
            "participant_id": "",
            "occurred_at": stored[2].occurred_at.isoformat(),
        },
        {
            "type": "room.event_appended",
            "room_id": str(world_a.room.pk),
            "event_id": str(rows[1].pk),
            "index": 3,
            "kind": "message",
            "role": "assistant",
            "text": "hidden",
            "status": "blocked",
            "session_id": None,
            "channel_id": "",
            "participant_id": "",
            "occurred_at": stored[3].occurred_at.isoformat(),
        },
    ]
    for message in messages:
        _assert_msgpack_safe(message)


@pytest.mark.django_db(transaction=True)
def test_event_appended_names_the_session_as_a_string(world_a: TenantWorld) -> None:
    session = voice_services.voice_session_create(
        tenant=world_a.tenant,
        room=world_a.room,
        participant_id="caller",
        transport="websocket",
        agent=world_a.agent,
    )
    channel = _listen(world_a.room)

    services.room_event_append(
        tenant=world_a.tenant,
        room=world_a.room,
        kind="transcript",
        role="assistant",
        text="hi",
        session=session,
    )

    [message] = _received(channel)
    assert message["session_id"] == str(session.pk)
    _assert_msgpack_safe(message)


@pytest.mark.django_db(transaction=True)
def test_every_room_message_is_made_of_msgpack_safe_primitives(world_a: TenantWorld) -> None:
    channel = _listen(world_a.room)
    tenant = world_a.tenant

    binding, _created = services.binding_attach(
        tenant=tenant, room=world_a.room, channel_id="text", visibility="voice, text"
    )
    services.binding_set_access(tenant=tenant, binding=binding, access="write_only")
    services.binding_set_output_muted(tenant=tenant, binding=binding, output_muted=True)
    services.room_set_status(tenant=tenant, room=world_a.room, status="paused")
    services.binding_detach(tenant=tenant, binding=binding)

    messages = _received(channel)
    assert [message["type"] for message in messages] == [
        EVENT_APPENDED,
        BINDING_CHANGED,
        EVENT_APPENDED,
        BINDING_CHANGED,
        EVENT_APPENDED,
        BINDING_CHANGED,
        EVENT_APPENDED,
        EVENT_APPENDED,
        BINDING_CHANGED,
    ]
    for message in messages:
        _assert_msgpack_safe(message)
    assert [
        (m["access"], m["output_muted"], m["visibility"], m["detached"])
        for m in messages
        if m["type"] == BINDING_CHANGED
    ] == [
        ("read_write", False, "voice,text", False),
        ("write_only", False, "voice,text", False),
        ("write_only", True, "voice,text", False),
        ("none", True, "voice,text", True),
    ]
    assert [m["index"] for m in messages if m["type"] == EVENT_APPENDED] == [2, 3, 4, 5, 6]


def test_binding_update_broadcast_runs_on_commit_callbacks(
    world_a: TenantWorld, django_capture_on_commit_callbacks: Any
) -> None:
    channel = _listen(world_a.room)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.binding_update(tenant=world_a.tenant, binding=world_a.binding, muted=True)

    assert len(callbacks) == 2
    assert _received(channel) == []
    for callback in callbacks:
        callback()
    assert [message["type"] for message in _received(channel)] == [
        EVENT_APPENDED,
        BINDING_CHANGED,
    ]
