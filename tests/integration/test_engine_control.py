"""A binding change made in another process reaches a live session through PostgreSQL and
the Redis channel layer, and applies to the session's very next frame."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from tests.fixtures.actors import TenantWorld
from tests.fixtures.services import binding_muted_elsewhere
from voice import services as voice_services
from voice.agents import agent_config_load, channel_for_agent
from voice.control import RoomControlListener
from voice.django_store import DjangoStore
from voice.mock import MockRealtimeProvider, MockRealtimeTransport

pytestmark = pytest.mark.integration

FRAME = b"\x10\x00" * 320


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_mute_from_another_process_stops_the_next_frame_and_unmute_restores_it(
    world_a: TenantWorld, redis_layer: None
) -> None:
    agent = await database_sync_to_async(voice_services.agent_create)(
        tenant=world_a.tenant, slug="mock", name="Mock", provider_kind="mock"
    )
    config = await database_sync_to_async(agent_config_load)(tenant=world_a.tenant, agent=agent)
    transport = MockRealtimeTransport()
    channel = channel_for_agent(
        config,
        transport=transport,
        store=DjangoStore(tenant=world_a.tenant, agent=agent, transport="mock"),
    )
    provider = channel.provider
    assert isinstance(provider, MockRealtimeProvider)
    listener = RoomControlListener(channel, room_uuid=str(world_a.room.pk), room_id="room-1")
    listening = asyncio.create_task(listener.run())
    try:
        await asyncio.wait_for(listener.wait_subscribed(), timeout=10)
        session = await channel.start_session("room-1", "caller")
        await transport.simulate_client_audio(session, FRAME)
        assert len(provider.sent_audio) == 1

        await binding_muted_elsewhere(str(world_a.binding.pk), muted=True)
        await asyncio.wait_for(listener.wait_applied(1), timeout=30)
        await transport.simulate_client_audio(session, FRAME)
        assert len(provider.sent_audio) == 1  # the very next frame was dropped

        await binding_muted_elsewhere(str(world_a.binding.pk), muted=False)
        await asyncio.wait_for(listener.wait_applied(2), timeout=30)
        await transport.simulate_client_audio(session, FRAME)
        assert len(provider.sent_audio) == 2

        await channel.end_session(session.id)
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
