"""The worker's side of a Celery tool call (voice.tools.worker.execute_tool_call), called
directly: claim, outcome texts, truncation, late results, the message to the session host."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers, get_channel_layer

from tests.fixtures.actors import TenantWorld
from voice import services as voice_services
from voice.models import ToolCall, ToolExecution, VoiceSession
from voice.tools.worker import execute_tool_call

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]


@pytest.fixture
def fresh_layer() -> Iterator[None]:
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


def _session(world: TenantWorld, *, limit: int = 16384, host: str | None = None) -> VoiceSession:
    agent = voice_services.agent_create(
        tenant=world.tenant,
        slug="w",
        name="W",
        provider_kind="mock",
        tool_result_max_length=limit,
    )
    return voice_services.voice_session_create(
        tenant=world.tenant,
        room=world.room,
        participant_id="caller",
        transport="websocket",
        agent=agent,
        # A channel of its own per test (Redis keeps what earlier tests left unread).
        host_channel_name=f"tool-host-{uuid.uuid4().hex}" if host is None else host,
    )


def _pending_call(
    world: TenantWorld, session: VoiceSession, handler: str, arguments: dict[str, Any]
) -> ToolCall:
    tool = voice_services.tool_create(
        tenant=world.tenant,
        name=handler.rsplit(".", 1)[1],
        handler=handler,
        execution=ToolExecution.CELERY,
        timeout_seconds=5,
    )
    return voice_services.tool_call_create(
        tenant=world.tenant,
        session=session,
        call_id="call-1",
        name=tool.name,
        arguments=arguments,
        tool=tool,
    )


def _receive(session: VoiceSession) -> dict[str, Any]:
    layer = get_channel_layer()
    assert layer is not None

    async def receive() -> dict[str, Any]:
        import asyncio

        async with asyncio.timeout(10):
            message: dict[str, Any] = await layer.receive(session.host_channel_name)
            return message

    return async_to_sync(receive)()


def test_a_claimed_call_runs_and_its_result_goes_to_the_session_host(
    world_a: TenantWorld, fresh_layer: None
) -> None:
    session = _session(world_a)
    call = _pending_call(world_a, session, "tests.fixtures.tools.lookup_order", {"order_id": "A1"})

    execute_tool_call(str(call.pk), task_id=str(call.pk))

    call.refresh_from_db()
    assert (call.status, call.task_id) == ("succeeded", str(call.pk))
    assert json.loads(call.result) == {"order_id": "A1", "status": "shipped"}
    assert _receive(session) == {
        "type": "tool.result",
        "session_id": str(session.pk),
        "call_id": "call-1",
        "tool_call_id": str(call.pk),
        "status": "succeeded",
        "result": call.result,
    }


def test_a_call_that_is_no_longer_pending_is_not_run(world_a: TenantWorld) -> None:
    session = _session(world_a)
    call = _pending_call(world_a, session, "tests.fixtures.tools.explode", {})
    voice_services.tool_call_finish(
        tenant=world_a.tenant, tool_call_id=call.pk, status="timed_out", error="timed out"
    )

    execute_tool_call(str(call.pk), task_id="redelivered")

    call.refresh_from_db()
    assert (call.status, call.task_id, call.late_at) == ("timed_out", "", None)


def test_a_handler_exception_is_logged_and_the_model_hears_only_its_type(
    world_a: TenantWorld, fresh_layer: None, caplog: pytest.LogCaptureFixture
) -> None:
    session = _session(world_a)
    call = _pending_call(world_a, session, "tests.fixtures.tools.explode", {})

    with caplog.at_level(logging.ERROR, logger="voice.tools.worker"):
        execute_tool_call(str(call.pk))

    call.refresh_from_db()
    assert call.status == "failed"
    assert json.loads(call.error) == {"error": "Tool 'explode' failed (RuntimeError)"}
    assert "hunter2" not in call.error and "hunter2" not in _receive(session)["result"]
    [record] = [r for r in caplog.records if r.name == "voice.tools.worker"]
    assert record.exc_info is not None or "RuntimeError" in (record.exc_text or "")


def test_a_tool_error_reaches_the_model_verbatim(world_a: TenantWorld, fresh_layer: None) -> None:
    session = _session(world_a)
    call = _pending_call(world_a, session, "tests.fixtures.tools.refuse", {"order_id": "Q9"})

    execute_tool_call(str(call.pk))

    call.refresh_from_db()
    assert (call.status, json.loads(call.error)) == (
        "failed",
        {"error": "order Q9 does not exist"},
    )


def test_a_result_over_the_agents_limit_is_cut_with_a_notice(
    world_a: TenantWorld, fresh_layer: None
) -> None:
    session = _session(world_a, limit=200)
    call = _pending_call(world_a, session, "tests.fixtures.tools.huge", {"size": 5000})

    execute_tool_call(str(call.pk))

    call.refresh_from_db()
    assert len(call.result) <= 200
    assert "[truncated: the result was 5000 characters" in call.result
    assert _receive(session)["result"] == call.result


def test_a_result_with_no_session_host_to_go_to_is_stored_as_late(
    world_a: TenantWorld,
) -> None:
    session = _session(world_a, host="")
    call = _pending_call(world_a, session, "tests.fixtures.tools.lookup_order", {"order_id": "A1"})

    execute_tool_call(str(call.pk))

    call.refresh_from_db()
    assert call.status == "succeeded" and call.late_at is not None
    assert json.loads(call.late_result)["status"] == "shipped"
    assert call.delivered_at is None


def test_a_missing_row_is_ignored(world_a: TenantWorld) -> None:
    execute_tool_call("00000000-0000-0000-0000-000000000000")
    assert not ToolCall.objects.exists()
