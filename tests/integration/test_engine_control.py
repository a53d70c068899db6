"""A binding change made in another process reaches a live session through PostgreSQL and
the Redis channel layer, and applies to the session's very next frame."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.db import connection

from tests.fixtures.actors import TenantWorld
from voice import services as voice_services
from voice.agents import agent_config_load, channel_for_agent
from voice.control import RoomControlListener
from voice.django_store import DjangoStore
from voice.mock import MockRealtimeProvider, MockRealtimeTransport

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FRAME = b"\x10\x00" * 320


async def _in_another_process(binding_id: str, muted: bool) -> None:
    """`binding_set_muted` run by a separate Python process on the same database and layer."""
    settings = connection.settings_dict
    database_url = (
        f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"
    )
    script = (
        "import django; django.setup()\n"
        "from rooms.models import ChannelBinding\n"
        "from rooms.services import binding_set_muted\n"
        f"binding = ChannelBinding.objects.select_related('tenant').get(pk='{binding_id}')\n"
        f"binding_set_muted(tenant=binding.tenant, binding=binding, muted={muted})\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": "roomvoice.settings_test",
        },
    )
    assert await asyncio.wait_for(process.wait(), timeout=60) == 0


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

        await _in_another_process(str(world_a.binding.pk), muted=True)
        await asyncio.wait_for(listener.wait_applied(1), timeout=30)
        await transport.simulate_client_audio(session, FRAME)
        assert len(provider.sent_audio) == 1  # the very next frame was dropped

        await _in_another_process(str(world_a.binding.pk), muted=False)
        await asyncio.wait_for(listener.wait_applied(2), timeout=30)
        await transport.simulate_client_audio(session, FRAME)
        assert len(provider.sent_audio) == 2

        await channel.end_session(session.id)
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
