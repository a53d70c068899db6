"""Celery tool calls end to end: a real prefork worker (concurrency 1) on the Redis broker and
the PostgreSQL test database, the voice consumer on the channels-redis layer, the mock
provider playing the vendor. The ToolCall row is the record of what happened."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from rooms.models import User
from tests.fixtures.actors import TenantWorld
from tests.fixtures.operator_flow import operator_flow
from tests.fixtures.services import kill_worker
from tests.fixtures.tools import SignedReceiver, session_with_tools, stream_until_answered
from voice import services as voice_services
from voice.mock import MockRealtimeProvider
from voice.models import Tool, ToolCall, ToolExecution, VoiceSession

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(90),
]

SECRET = "whsec-integration-0123456789"


def _celery_tool(world: TenantWorld, name: str, handler: str, **fields: Any) -> Tool:
    return voice_services.tool_create(
        tenant=world.tenant,
        name=name,
        handler=handler,
        execution=ToolExecution.CELERY,
        parameters={"type": "object", "properties": {}},
        **fields,
    )


async def _call(session_id: str, call_id: str) -> ToolCall:
    row: ToolCall = await database_sync_to_async(ToolCall.objects.select_related("tool").get)(
        session_id=session_id, call_id=call_id
    )
    return row


async def eventually(check: Callable[[], Any], *, within: float = 20.0) -> Any:
    """Poll a database condition (another process changes it) until it holds."""
    async with asyncio.timeout(within):
        while True:
            value = await database_sync_to_async(check)()
            if value:
                return value
            await asyncio.sleep(0.05)


def _status(session_id: str, call_id: str) -> Callable[[], str]:
    return lambda: str(
        ToolCall.objects.filter(session_id=session_id, call_id=call_id)
        .values_list("status", flat=True)
        .first()
        or ""
    )


def _result(provider: MockRealtimeProvider, call_id: str) -> str:
    return next(result for _, cid, result in provider.tool_results if cid == call_id)


@pytest.fixture
def receiver() -> Iterator[SignedReceiver]:
    server = SignedReceiver(SECRET, {"order_id": "A1", "status": "shipped"})
    yield server
    server.close()


async def test_a_slow_tool_answers_from_the_worker_while_caller_audio_keeps_flowing(
    tool_worker: subprocess.Popen[bytes],
    world_a: TenantWorld,
    member_a: User,
    built_providers: list[MockRealtimeProvider],
) -> None:
    tool = await database_sync_to_async(_celery_tool)(
        world_a, "slow_lookup", "tests.fixtures.tools.slow_lookup", timeout_seconds=20
    )
    communicator, session_id, provider, session = await session_with_tools(
        world_a, member_a, built_providers, tool
    )

    await provider._fire("tool_call", session, "call-1", "slow_lookup", {"order_id": "A1"})
    forwarded_while_running = await stream_until_answered(communicator, provider, within=30)
    row = await eventually(
        lambda: ToolCall.objects.filter(
            session_id=session_id, call_id="call-1", delivered_at__isnull=False
        ).first()
    )
    await communicator.disconnect()

    answer = json.loads(_result(provider, "call-1"))
    assert answer["order_id"] == "A1" and answer["status"] == "shipped"
    assert answer["pid"] != os.getpid()  # it ran in the worker
    assert forwarded_while_running >= 50  # a second of audio, at the least, went through
    assert (row.status, row.execution, row.tool_id) == ("succeeded", "celery", tool.pk)
    assert row.task_id == str(row.pk)  # enqueued with the id only
    assert row.duration_ms is not None and row.duration_ms >= 2000
    assert json.loads(row.result) == answer
    assert row.late_at is None


async def test_a_tool_slower_than_its_timeout_times_out_and_its_late_result_is_kept(
    tool_worker: subprocess.Popen[bytes],
    world_a: TenantWorld,
    member_a: User,
    built_providers: list[MockRealtimeProvider],
) -> None:
    tool = await database_sync_to_async(_celery_tool)(
        world_a, "slow_lookup", "tests.fixtures.tools.slow_lookup", timeout_seconds=1
    )
    communicator, session_id, provider, session = await session_with_tools(
        world_a, member_a, built_providers, tool
    )

    await provider._fire(
        "tool_call", session, "call-1", "slow_lookup", {"order_id": "A1", "seconds": 2.5}
    )
    await provider.wait_until(lambda: provider.tool_results, within=15)
    late = await eventually(
        lambda: ToolCall.objects.filter(
            session_id=session_id, call_id="call-1", late_at__isnull=False
        ).first()
    )
    await communicator.disconnect()

    assert json.loads(_result(provider, "call-1")) == {
        "error": "Tool 'slow_lookup' timed out after 1 s"
    }
    assert late.status == "timed_out"  # what the model was told stays the record
    assert json.loads(late.late_result)["status"] == "shipped"  # stored, never delivered
    assert [cid for _, cid, _ in provider.tool_results] == ["call-1"]


async def test_barge_in_cancels_a_cancel_policy_call_and_revokes_the_running_task(
    tool_worker: subprocess.Popen[bytes],
    world_a: TenantWorld,
    member_a: User,
    built_providers: list[MockRealtimeProvider],
) -> None:
    slow = await database_sync_to_async(_celery_tool)(
        world_a,
        "slow_lookup",
        "tests.fixtures.tools.slow_lookup",
        timeout_seconds=60,
        on_barge_in="cancel",
    )
    quick = await database_sync_to_async(_celery_tool)(
        world_a, "lookup_order", "tests.fixtures.tools.lookup_order", timeout_seconds=20
    )
    communicator, session_id, provider, session = await session_with_tools(
        world_a, member_a, built_providers, slow, quick
    )

    await provider._fire(
        "tool_call", session, "call-1", "slow_lookup", {"order_id": "A1", "seconds": 45}
    )
    await eventually(lambda: _status(session_id, "call-1")() == "running")
    await provider._fire("speech_start", session)
    await provider.wait_until(lambda: provider.tool_results, within=15)
    # The worker (concurrency 1) is free again at once: the running task was terminated,
    # not left to sleep its 45 s.
    await provider._fire("tool_call", session, "call-2", "lookup_order", {"order_id": "B2"})
    await provider.wait_until(lambda: len(provider.tool_results) == 2, within=20)
    cancelled = await _call(session_id, "call-1")
    await communicator.disconnect()

    assert json.loads(_result(provider, "call-1")) == {
        "error": "Tool 'slow_lookup' was cancelled: the caller interrupted"
    }
    assert json.loads(_result(provider, "call-2")) == {"order_id": "B2", "status": "shipped"}
    assert cancelled.status == "cancelled"
    assert cancelled.late_at is None  # it never finished


async def test_a_worker_killed_mid_call_gives_a_timeout_and_later_calls_time_out_too(
    tool_worker: subprocess.Popen[bytes],
    world_a: TenantWorld,
    member_a: User,
    built_providers: list[MockRealtimeProvider],
) -> None:
    tool = await database_sync_to_async(_celery_tool)(
        world_a, "slow_lookup", "tests.fixtures.tools.slow_lookup", timeout_seconds=3
    )
    communicator, session_id, provider, session = await session_with_tools(
        world_a, member_a, built_providers, tool
    )

    await provider._fire(
        "tool_call", session, "call-1", "slow_lookup", {"order_id": "A1", "seconds": 30}
    )
    await eventually(lambda: _status(session_id, "call-1")() == "running")
    await asyncio.to_thread(kill_worker, tool_worker)
    await provider.wait_until(lambda: provider.tool_results, within=15)
    # No worker at all now: the next call waits in the queue and times out as well.
    await provider._fire("tool_call", session, "call-2", "slow_lookup", {"order_id": "B2"})
    await provider.wait_until(lambda: len(provider.tool_results) == 2, within=15)
    first, second = await _call(session_id, "call-1"), await _call(session_id, "call-2")
    await communicator.disconnect()

    timeout = {"error": "Tool 'slow_lookup' timed out after 3 s"}
    assert json.loads(_result(provider, "call-1")) == timeout
    assert json.loads(_result(provider, "call-2")) == timeout
    assert (first.status, second.status) == ("timed_out", "timed_out")
    assert second.task_id == ""  # never claimed by any worker


async def test_a_result_for_a_call_nobody_waits_for_is_stored_as_late_by_the_host(
    world_a: TenantWorld,
    member_a: User,
    built_providers: list[MockRealtimeProvider],
    redis_layer: None,
) -> None:
    """The host side of the race a worker can lose: its result reaches the session after
    the engine gave up on the call."""
    tool = await database_sync_to_async(_celery_tool)(
        world_a, "slow_lookup", "tests.fixtures.tools.slow_lookup", timeout_seconds=0.5
    )
    communicator, session_id, provider, session = await session_with_tools(
        world_a, member_a, built_providers, tool
    )
    await provider._fire("tool_call", session, "call-1", "slow_lookup", {"order_id": "A1"})
    await provider.wait_until(lambda: provider.tool_results, within=15)  # timed out: no worker
    row = await _call(session_id, "call-1")
    host = await database_sync_to_async(
        lambda: VoiceSession.objects.get(pk=session_id).host_channel_name
    )()

    layer = get_channel_layer()
    assert layer is not None
    await layer.send(
        host,
        {
            "type": "tool.result",
            "session_id": session_id,
            "call_id": "call-1",
            "tool_call_id": str(row.pk),
            "status": "succeeded",
            "result": '{"status": "shipped"}',
        },
    )
    late = await eventually(
        lambda: ToolCall.objects.filter(pk=row.pk, late_at__isnull=False).first()
    )
    await communicator.disconnect()

    assert late.status == "timed_out"
    assert late.late_result == '{"status": "shipped"}'
    assert len(provider.tool_results) == 1  # the model heard only the timeout


async def test_the_operator_path_for_a_celery_webhook_tool_with_a_real_worker(
    tool_worker: subprocess.Popen[bytes],
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

    assert call.task_id == str(call.pk)  # claimed by the worker
