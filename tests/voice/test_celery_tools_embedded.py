"""Operator tools in the embedded default: a Celery tool runs eagerly in a worker thread (the
event loop keeps moving audio), results come back through the in-memory layer; webhooks
run inline with the SSRF guard on. The same operator path as the integration pass."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async

from rooms.models import User
from tests.fixtures.actors import TenantWorld
from tests.fixtures.operator_flow import operator_flow
from tests.fixtures.tools import SignedReceiver, session_with_tools, stream_until_answered
from voice import services as voice_services
from voice.mock import MockRealtimeProvider
from voice.models import ToolCall, ToolExecution

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

SECRET = "whsec-embedded-0123456789"


@pytest.fixture
def receiver() -> Iterator[SignedReceiver]:
    server = SignedReceiver(SECRET, {"order_id": "A1", "status": "shipped"})
    yield server
    server.close()


@pytest.mark.embedded
async def test_an_eager_celery_tool_runs_in_a_thread_while_audio_flows(
    world_a: TenantWorld, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    tool = await database_sync_to_async(voice_services.tool_create)(
        tenant=world_a.tenant,
        name="slow_lookup",
        handler="tests.fixtures.tools.slow_lookup",
        execution=ToolExecution.CELERY,
        timeout_seconds=10,
    )
    communicator, session_id, provider, session = await session_with_tools(
        world_a, member_a, built_providers, tool
    )

    await provider._fire(
        "tool_call", session, "call-1", "slow_lookup", {"order_id": "A1", "seconds": 1}
    )
    forwarded_while_running = await stream_until_answered(communicator, provider, within=20)
    await communicator.disconnect()
    row = await database_sync_to_async(ToolCall.objects.get)(
        session_id=session_id, call_id="call-1"
    )

    answer = json.loads(provider.tool_results[0][2])
    assert answer["status"] == "shipped" and answer["pid"] == os.getpid()  # eager: in-process
    assert forwarded_while_running >= 20  # the loop moved audio during the blocking second
    assert (row.status, row.execution, row.task_id) == ("succeeded", "celery", str(row.pk))
    assert row.delivered_at is not None and row.duration_ms is not None
    assert row.duration_ms >= 1000


@pytest.mark.embedded
async def test_the_operator_path_for_a_celery_webhook_tool_in_the_embedded_default(
    world_a: TenantWorld,
    owner_a: User,
    member_a: User,
    built_providers: list[MockRealtimeProvider],
    receiver: SignedReceiver,
    settings: Any,
) -> None:
    settings.ROOMVOICE_TOOL_WEBHOOK_ALLOW_PRIVATE = True  # the receiver is plain http, local
    call = await operator_flow(
        world_a, owner_a, member_a, built_providers, receiver, execution="celery"
    )

    assert call.task_id == str(call.pk)  # enqueued (and run eagerly) with the id only


async def test_the_operator_path_for_an_inline_webhook_tool(
    world_a: TenantWorld,
    owner_a: User,
    member_a: User,
    built_providers: list[MockRealtimeProvider],
    receiver: SignedReceiver,
    settings: Any,
) -> None:
    settings.ROOMVOICE_TOOL_WEBHOOK_ALLOW_PRIVATE = True
    call = await operator_flow(
        world_a, owner_a, member_a, built_providers, receiver, execution="inline"
    )

    assert call.task_id == "" and call.delivered_at is not None


async def test_an_inline_webhook_to_a_private_address_is_refused_by_the_ssrf_guard(
    world_a: TenantWorld,
    member_a: User,
    built_providers: list[MockRealtimeProvider],
    receiver: SignedReceiver,
    settings: Any,
) -> None:
    settings.ROOMVOICE_TOOL_WEBHOOK_ALLOW_PRIVATE = False
    port = receiver.server.server_address[1]
    tool = await database_sync_to_async(voice_services.tool_create)(
        tenant=world_a.tenant,
        name="order_status",
        handler=f"https://localhost:{port}/hooks/order",
        handler_kind="webhook",
        secret=SECRET,
        timeout_seconds=5,
    )
    communicator, session_id, provider, session = await session_with_tools(
        world_a, member_a, built_providers, tool
    )

    await provider.simulate_tool_call(session, "call-1", "order_status", {})
    await provider.wait_until(lambda: provider.tool_results, within=10)
    await communicator.disconnect()
    row = await database_sync_to_async(ToolCall.objects.get)(
        session_id=session_id, call_id="call-1"
    )

    error = json.loads(provider.tool_results[0][2])["error"]
    assert error == "the webhook host resolves to a private or reserved address"
    assert receiver.requests == []  # nothing reached the private address
    assert row.status == "failed" and row.error == provider.tool_results[0][2]


async def test_an_inline_webhook_tool_answers_with_a_signed_request(
    world_a: TenantWorld,
    member_a: User,
    built_providers: list[MockRealtimeProvider],
    receiver: SignedReceiver,
    settings: Any,
) -> None:
    settings.ROOMVOICE_TOOL_WEBHOOK_ALLOW_PRIVATE = True
    tool = await database_sync_to_async(voice_services.tool_create)(
        tenant=world_a.tenant,
        name="order_status",
        handler=receiver.url,
        handler_kind="webhook",
        secret=SECRET,
        timeout_seconds=5,
    )
    communicator, session_id, provider, session = await session_with_tools(
        world_a, member_a, built_providers, tool
    )

    await provider.simulate_tool_call(session, "call-9", "order_status", {"order_id": "Z9"})
    await provider.wait_until(lambda: provider.tool_results, within=10)
    await communicator.disconnect()

    assert json.loads(provider.tool_results[0][2]) == {"order_id": "A1", "status": "shipped"}
    assert receiver.requests == [
        ({"tool": "order_status", "call_id": "call-9", "arguments": {"order_id": "Z9"}}, True)
    ]
