"""The live room view's WebSocket: who may watch, and what they see."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async

from rooms import services as room_services
from rooms.models import ChannelBinding, EventKind, EventRole, User
from tests.fixtures.actors import TenantWorld
from tests.fixtures.voice_ws import receive_until, ws_connect
from voice import services as voice_services

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


def _path(world: TenantWorld, query: str = "") -> str:
    return f"/ws/rooms/{world.room.pk}/live/{query}"


async def _refused(path: str, user: User | None = None) -> tuple[str, int]:
    communicator, connected = await ws_connect(path, user=user)
    assert connected
    error: dict[str, Any] = json.loads(await communicator.receive_from(timeout=10))
    closed = await communicator.receive_output(timeout=10)
    await communicator.disconnect()
    return error["code"], int(closed["code"])


async def test_member_gets_the_room_state_then_live_events(
    world_a: TenantWorld, member_a: User
) -> None:
    communicator, connected = await ws_connect(_path(world_a), user=member_a)
    assert connected
    sync = await receive_until(communicator, "sync")

    await database_sync_to_async(room_services.binding_set_muted)(
        tenant=world_a.tenant, binding=world_a.binding, muted=True
    )
    binding = await receive_until(communicator, "binding")
    session = await database_sync_to_async(voice_services.voice_session_create)(
        tenant=world_a.tenant,
        room=world_a.room,
        participant_id="caller",
        transport="websocket",
        provider_kind="mock",
    )
    started = await receive_until(communicator, "session")
    await database_sync_to_async(room_services.room_event_append)(
        tenant=world_a.tenant,
        room=world_a.room,
        kind=EventKind.TRANSCRIPT,
        role=EventRole.USER,
        text="hello room",
        session=session,
    )
    event = await receive_until(communicator, "event")
    await communicator.disconnect()

    assert sync["last_index"] == 1  # the caller's binding was attached (a system event)
    assert [b["participant_id"] for b in sync["bindings"]] == ["caller"]
    assert sync["sessions"] == []
    assert (binding["binding_id"], binding["muted"]) == (str(world_a.binding.pk), True)
    assert "room_id" not in binding
    assert started == {
        "type": "session",
        "session_id": str(session.pk),
        "state": "connecting",
        "participant_id": "caller",
        "agent": "",
        "transport": "websocket",
        "end_reason": "",
    }
    # the mute above appended a system event first (index 2)
    assert (event["index"], event["text"], event["role"]) == (3, "hello room", "user")


async def test_sync_after_a_reconnect_lists_live_sessions(
    world_a: TenantWorld, member_a: User
) -> None:
    session = await database_sync_to_async(voice_services.voice_session_create)(
        tenant=world_a.tenant,
        room=world_a.room,
        participant_id="caller",
        transport="sip",
        provider_kind="mock",
    )

    communicator, _ = await ws_connect(_path(world_a), user=member_a)
    sync = await receive_until(communicator, "sync")
    await communicator.disconnect()

    assert [(s["session_id"], s["state"], s["transport"]) for s in sync["sessions"]] == [
        (str(session.pk), "connecting", "sip")
    ]


async def test_watching_is_for_members_of_the_room_tenant(
    world_a: TenantWorld, world_b: TenantWorld, owner_b: User
) -> None:
    anonymous = await _refused(_path(world_a))
    other_tenant = await _refused(_path(world_a), owner_b)
    other_by_key = await _observe_key_of_b(owner_b)

    assert anonymous == ("unauthenticated", 4401)
    assert other_tenant == ("not_found", 4404)
    assert other_by_key == str(world_b.room.pk)  # "room-1" is B's own room for B's owner


async def _observe_key_of_b(owner_b: User) -> str:
    """Observe "room-1" by key as B's owner: the room the sync describes."""
    communicator, connected = await ws_connect("/ws/rooms/room-1/live/", user=owner_b)
    assert connected
    sync = await receive_until(communicator, "sync")
    await communicator.disconnect()
    return await database_sync_to_async(
        lambda: str(ChannelBinding.objects.get(pk=sync["bindings"][0]["binding_id"]).room_id)
    )()


async def test_room_tokens_watch_only_with_the_observe_permission(
    world_a: TenantWorld,
) -> None:
    def token(permissions: list[str]) -> str:
        return room_services.room_token_create(
            tenant=world_a.tenant, room=world_a.room, participant_id="tv", permissions=permissions
        )

    speaker = await database_sync_to_async(token)(["speak", "listen"])
    observer = await database_sync_to_async(token)(["observe"])

    refused = await _refused(_path(world_a, f"?token={speaker}"))
    communicator, connected = await ws_connect(_path(world_a, f"?token={observer}"))
    sync = await receive_until(communicator, "sync")
    await communicator.disconnect()

    assert refused == ("forbidden", 4403)
    assert connected and sync["type"] == "sync"


async def test_client_frames_are_answered_not_acted_on(
    world_a: TenantWorld, member_a: User
) -> None:
    communicator, _ = await ws_connect(_path(world_a), user=member_a)
    await receive_until(communicator, "sync")

    await communicator.send_to(text_data=json.dumps({"type": "mute", "binding": "x"}))
    error = await receive_until(communicator, "error")
    await communicator.disconnect()
    binding = await database_sync_to_async(
        lambda: type(world_a.binding).objects.get(pk=world_a.binding.pk)
    )()

    assert error["code"] == "unknown_type"
    assert binding.muted is False
