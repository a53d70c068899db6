"""Steering a live session through the API: ``end`` and ``reconfigure`` reach the process
holding it (the voice consumer, over its host channel), wherever the API call was served."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from rest_framework.test import APIClient

from rooms.models import User
from tests.fixtures.actors import TenantWorld
from tests.fixtures.api import key_client
from tests.fixtures.tools import session_with_tools
from tests.fixtures.voice_ws import receive_until
from voice import services as voice_services
from voice.mock import MockRealtimeProvider
from voice.models import VoiceSession

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def _post(client: APIClient, url: str, body: dict[str, Any]) -> Any:
    return await database_sync_to_async(client.post)(url, body, format="json")


async def test_reconfigure_reaches_the_live_session(
    world_a: TenantWorld, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    extra = await database_sync_to_async(voice_services.tool_create)(
        tenant=world_a.tenant, name="lookup_order", handler="tests.fixtures.tools.lookup_order"
    )
    live = await session_with_tools(world_a, member_a, built_providers)
    client = await database_sync_to_async(key_client)(world_a.tenant)

    response = await _post(
        client,
        f"/api/v1/sessions/{live.session_id}/reconfigure/",
        {"system_prompt": "Be brief.", "voice": "verse", "tools": [extra.name]},
    )
    await live.provider.wait_until(
        lambda: any(call.method == "reconfigure" for call in live.provider.calls)
    )
    await live.communicator.disconnect()

    assert response.status_code == 202
    [call] = [call for call in live.provider.calls if call.method == "reconfigure"]
    assert call.kwargs["system_prompt"] == "Be brief." and call.kwargs["voice"] == "verse"
    assert [tool["name"] for tool in call.kwargs["tools"]] == ["lookup_order"]


async def test_end_reaches_the_live_session_and_the_row_says_who_ended_it(
    world_a: TenantWorld, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    live = await session_with_tools(world_a, member_a, built_providers)
    client = await database_sync_to_async(key_client)(world_a.tenant)

    response = await _post(client, f"/api/v1/sessions/{live.session_id}/end/", {})
    ended = await receive_until(live.communicator, "session_ended")
    await live.communicator.disconnect()
    row = await database_sync_to_async(VoiceSession.objects.get)(pk=live.session_id)

    assert response.status_code == 202
    assert ended["reason"] == "ended_by_operator"
    assert (row.state, row.end_reason) == ("ended", "ended_by_operator")
