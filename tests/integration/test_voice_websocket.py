"""The voice and live-room consumers on PostgreSQL and the channels-redis layer: a caller
talks, an operator in another process mutes them, an observer watches it all."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from rooms.broadcast import room_group_name, session_changed_message, tool_call_changed_message
from rooms.models import ChannelBinding, User
from tests.fixtures.actors import TenantWorld
from tests.fixtures.services import binding_muted_elsewhere
from tests.fixtures.voice_ws import mock_agent_for, receive_until, ws_connect
from voice.mock import MockRealtimeProvider
from voice.models import VoiceSession

pytestmark = pytest.mark.integration


@pytest.mark.django_db(transaction=True)
def test_session_and_tool_call_events_round_trip_through_the_redis_layer(
    world_a: TenantWorld, redis_layer: None
) -> None:
    messages = [
        session_changed_message(
            room_id=world_a.room.pk,
            session_id="5d0c7f52-3c4b-4f5e-9d59-1f3a0f4f6a10",
            state="ended",
            participant_id="caller",
            agent="Assistant",
            transport="websocket",
            end_reason="client_hangup",
        ),
        tool_call_changed_message(
            room_id=world_a.room.pk,
            session_id="5d0c7f52-3c4b-4f5e-9d59-1f3a0f4f6a10",
            call_id="call-1",
            name="get_weather",
            status="succeeded",
        ),
    ]

    async def round_trip() -> list[dict[str, Any]]:
        layer = get_channel_layer()
        assert type(layer).__name__ == "RedisChannelLayer"
        channel = await layer.new_channel()
        group = room_group_name(world_a.room.pk)
        await layer.group_add(group, channel)
        received = []
        for message in messages:
            await layer.group_send(group, message)
            received.append(await layer.receive(channel))
        await layer.group_discard(group, channel)
        return received

    assert async_to_sync(round_trip)() == messages


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_caller_observer_and_operator_across_processes(
    world_a: TenantWorld,
    member_a: User,
    owner_a: User,
    redis_layer: None,
    built_providers: list[MockRealtimeProvider],
) -> None:
    await database_sync_to_async(mock_agent_for)(world_a.tenant, world_a.room)
    observer, connected = await ws_connect(f"/ws/rooms/{world_a.room.pk}/live/", user=owner_a)
    assert connected
    await receive_until(observer, "sync")

    caller, connected = await ws_connect(
        f"/ws/rooms/{world_a.room.pk}/voice/?sample_rate=16000", user=member_a
    )
    assert connected
    started = await receive_until(caller, "session_started")
    provider = built_providers[0]
    session = provider.sessions[started["session_id"]]
    states = [(await receive_until(observer, "session"))["state"] for _ in range(2)]

    binding = await database_sync_to_async(ChannelBinding.objects.get)(
        room=world_a.room, participant_id=f"user:{member_a.pk}"
    )
    await binding_muted_elsewhere(str(binding.pk), True)
    seen = await receive_until(observer, "binding")
    told = await receive_until(caller, "access")
    await caller.send_to(bytes_data=b"\x10\x00" * 320)
    await caller.send_to(text_data=json.dumps({"type": "text", "text": "hello?"}))
    blocked = await receive_until(caller, "error")

    await provider.simulate_transcription(session, "you are muted", role="assistant")
    event = await receive_until(observer, "event")
    while event["kind"] != "transcript":
        event = await receive_until(observer, "event")
    await caller.disconnect()
    ended = await receive_until(observer, "session")
    await observer.disconnect()

    assert states == ["connecting", "active"]
    assert (told["muted"], told["can_speak"]) == (True, False)
    assert (seen["participant_id"], seen["muted"]) == (f"user:{member_a.pk}", True)
    assert blocked["code"] == "message_blocked"
    assert provider.sent_audio == []
    assert (event["role"], event["text"], event["session_id"]) == (
        "assistant",
        "you are muted",
        started["session_id"],
    )
    assert (ended["state"], ended["end_reason"]) == ("ended", "client_hangup")


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_operator_end_reaches_the_host_over_the_redis_layer(
    world_a: TenantWorld, member_a: User, redis_layer: None
) -> None:
    from voice import services as voice_services

    await database_sync_to_async(mock_agent_for)(world_a.tenant, world_a.room)
    caller, connected = await ws_connect(
        f"/ws/rooms/{world_a.room.pk}/voice/?sample_rate=16000", user=member_a
    )
    assert connected
    started = await receive_until(caller, "session_started")

    requested = await database_sync_to_async(voice_services.voice_session_request_end)(
        tenant=world_a.tenant, session_id=started["session_id"]
    )
    ended = await receive_until(caller, "session_ended")
    await caller.disconnect()
    row = await database_sync_to_async(VoiceSession.objects.get)(pk=started["session_id"])

    assert requested is True
    assert ended["reason"] == "ended_by_operator"
    assert (row.state, row.end_reason) == ("ended", "ended_by_operator")
