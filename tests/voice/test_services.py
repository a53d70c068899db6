"""voice.services: agents and tools, the session state machine and tool call lifecycle."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from rooms.services import TenantMismatch
from tests.fixtures.actors import TenantWorld
from voice import services as voice_services
from voice.models import Agent, Tool, ToolCall, VoiceSession
from voice.services import InvalidTransition

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(timezone, "now", clock)
    return clock


def _session(world: TenantWorld, **fields: Any) -> VoiceSession:
    values: dict[str, Any] = {
        "room": world.room,
        "agent": world.agent,
        "participant_id": "caller",
        "transport": "websocket",
    }
    values.update(fields)
    return voice_services.voice_session_create(tenant=world.tenant, **values)


def _row(model: type[Any], pk: Any) -> dict[str, Any]:
    row: dict[str, Any] = model.objects.filter(pk=pk).values().get()
    return row


def _tool_call(world: TenantWorld, session: VoiceSession | None = None) -> ToolCall:
    return voice_services.tool_call_create(
        tenant=world.tenant,
        session=session or _session(world),
        call_id="call-1",
        name="get_weather",
        arguments={"city": "Paris"},
        tool=world.tool,
    )


# --- voice_session_create ---------------------------------------------------------------------


def test_session_create_starts_connecting_with_the_agents_provider_and_model(
    world_a: TenantWorld, clock: Clock
) -> None:
    world_a.agent.model = "gpt-realtime"
    world_a.agent.save(update_fields=["model"])

    session = _session(world_a)

    assert _row(VoiceSession, session.pk) == {
        "id": session.pk,
        "created_at": T0,
        "tenant_id": world_a.tenant.pk,
        "room_id": world_a.room.pk,
        "agent_id": world_a.agent.pk,
        "channel_id": "voice",
        "participant_id": "caller",
        "transport": "websocket",
        "state": "connecting",
        "provider_kind": "openai",
        "model": "gpt-realtime",
        "provider_session_id": "",
        "resumption_handle": "",
        "host_channel_name": "",
        "end_reason": "",
        "end_detail": "",
        "usage": {},
        "reconnects": 0,
        "metrics": {},
        "metadata": {},
        "activated_at": None,
        "ended_at": None,
    }


def test_session_create_with_an_explicit_provider_kind_overrides_the_agents(
    world_a: TenantWorld,
) -> None:
    session = _session(world_a, provider_kind="mock")

    assert VoiceSession.objects.get(pk=session.pk).provider_kind == "mock"


def test_session_create_refuses_a_room_of_another_tenant_and_creates_nothing(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    with pytest.raises(TenantMismatch):
        voice_services.voice_session_create(
            tenant=world_a.tenant,
            room=world_b.room,
            agent=world_a.agent,
            participant_id="caller",
            transport="websocket",
        )

    assert VoiceSession.objects.count() == 0


def test_session_create_refuses_an_agent_of_another_tenant_and_creates_nothing(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    with pytest.raises(TenantMismatch):
        voice_services.voice_session_create(
            tenant=world_a.tenant,
            room=world_a.room,
            agent=world_b.agent,
            participant_id="caller",
            transport="websocket",
        )

    assert VoiceSession.objects.count() == 0


def test_session_create_refuses_an_unknown_transport_and_creates_nothing(
    world_a: TenantWorld,
) -> None:
    with pytest.raises(ValidationError) as caught:
        _session(world_a, transport="pigeon")

    assert list(caught.value.message_dict) == ["transport"]
    assert VoiceSession.objects.count() == 0


# --- voice_session_activate -------------------------------------------------------------------


def test_session_activate_moves_connecting_to_active_once(
    world_a: TenantWorld, clock: Clock
) -> None:
    session = _session(world_a)
    activated_at = clock.advance(1)

    first = voice_services.voice_session_activate(
        tenant=world_a.tenant, session_id=session.pk, provider_session_id="sess_1"
    )
    clock.advance(1)
    second = voice_services.voice_session_activate(
        tenant=world_a.tenant, session_id=session.pk, provider_session_id="sess_2"
    )

    assert (first, second) == (True, False)
    session.refresh_from_db()
    assert (session.state, session.activated_at, session.provider_session_id) == (
        "active",
        activated_at,
        "sess_1",
    )


def test_session_activate_after_end_raises_invalid_transition_and_changes_nothing(
    world_a: TenantWorld,
) -> None:
    session = _session(world_a)
    voice_services.voice_session_end(
        tenant=world_a.tenant, session_id=session.pk, reason="client_hangup"
    )
    before = _row(VoiceSession, session.pk)

    with pytest.raises(InvalidTransition):
        voice_services.voice_session_activate(tenant=world_a.tenant, session_id=session.pk)

    assert _row(VoiceSession, session.pk) == before


def test_session_activate_of_an_unknown_id_raises_does_not_exist(world_a: TenantWorld) -> None:
    with pytest.raises(VoiceSession.DoesNotExist):
        voice_services.voice_session_activate(tenant=world_a.tenant, session_id=uuid.uuid4())


def test_session_activate_with_another_tenant_raises_does_not_exist_and_changes_nothing(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    session = _session(world_a)
    before = _row(VoiceSession, session.pk)

    with pytest.raises(VoiceSession.DoesNotExist):
        voice_services.voice_session_activate(tenant=world_b.tenant, session_id=session.pk)

    assert _row(VoiceSession, session.pk) == before


# --- voice_session_end ------------------------------------------------------------------------


def test_session_end_records_reason_detail_and_ended_at(world_a: TenantWorld, clock: Clock) -> None:
    session = _session(world_a)
    voice_services.voice_session_activate(tenant=world_a.tenant, session_id=session.pk)
    ended_at = clock.advance(30)

    ended = voice_services.voice_session_end(
        tenant=world_a.tenant, session_id=session.pk, reason="provider_error", detail="HTTP 500"
    )

    assert ended is True
    session.refresh_from_db()
    assert (session.state, session.end_reason, session.end_detail, session.ended_at) == (
        "ended",
        "provider_error",
        "HTTP 500",
        ended_at,
    )


def test_session_end_truncates_the_detail_to_2000_characters(world_a: TenantWorld) -> None:
    session = _session(world_a)

    voice_services.voice_session_end(
        tenant=world_a.tenant, session_id=session.pk, reason="transport_error", detail="x" * 5000
    )

    assert VoiceSession.objects.get(pk=session.pk).end_detail == "x" * 2000


def test_session_end_twice_returns_false_and_keeps_the_first_outcome(
    world_a: TenantWorld, clock: Clock
) -> None:
    session = _session(world_a)
    voice_services.voice_session_end(
        tenant=world_a.tenant, session_id=session.pk, reason="client_hangup", detail="bye"
    )
    before = _row(VoiceSession, session.pk)
    clock.advance(5)

    ended_again = voice_services.voice_session_end(
        tenant=world_a.tenant, session_id=session.pk, reason="timeout", detail="late"
    )

    assert ended_again is False
    assert _row(VoiceSession, session.pk) == before


def test_session_end_refuses_an_unknown_reason_and_changes_nothing(world_a: TenantWorld) -> None:
    session = _session(world_a)
    before = _row(VoiceSession, session.pk)

    with pytest.raises(ValidationError) as caught:
        voice_services.voice_session_end(
            tenant=world_a.tenant, session_id=session.pk, reason="bored"
        )

    assert caught.value.message_dict == {"reason": ["Unknown end reason 'bored'."]}
    assert _row(VoiceSession, session.pk) == before


def test_session_end_from_connecting_ends_without_an_activation_time(
    world_a: TenantWorld,
) -> None:
    session = _session(world_a)

    ended = voice_services.voice_session_end(
        tenant=world_a.tenant, session_id=session.pk, reason="connect_failed"
    )

    assert ended is True
    session.refresh_from_db()
    assert (session.state, session.end_reason, session.activated_at) == (
        "ended",
        "connect_failed",
        None,
    )


def test_session_end_with_another_tenant_raises_does_not_exist_and_changes_nothing(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    session = _session(world_a)
    before = _row(VoiceSession, session.pk)

    with pytest.raises(VoiceSession.DoesNotExist):
        voice_services.voice_session_end(
            tenant=world_b.tenant, session_id=session.pk, reason="ended_by_operator"
        )

    assert _row(VoiceSession, session.pk) == before


@pytest.mark.django_db(transaction=True)
def test_two_threads_racing_to_end_a_session_have_exactly_one_winner(
    world_a: TenantWorld,
) -> None:
    session = _session(world_a)
    reasons = ["client_hangup", "timeout"]
    barrier = threading.Barrier(len(reasons))
    results: dict[str, bool | BaseException] = {}

    def end(reason: str) -> None:
        try:
            barrier.wait(timeout=10)
            results[reason] = voice_services.voice_session_end(
                tenant=world_a.tenant, session_id=session.pk, reason=reason
            )
        except BaseException as error:  # reported by the assertion below
            results[reason] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=end, args=(reason,)) for reason in reasons]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(results.values(), key=repr) == [False, True]
    winner = next(reason for reason, won in results.items() if won is True)
    assert VoiceSession.objects.get(pk=session.pk).end_reason == winner


# --- tool calls -------------------------------------------------------------------------------


def test_tool_call_create_is_pending_and_takes_execution_from_the_tool(
    world_a: TenantWorld,
) -> None:
    world_a.tool.execution = "celery"
    world_a.tool.save(update_fields=["execution"])

    call = _tool_call(world_a)

    assert ToolCall.objects.filter(pk=call.pk).values_list(
        "status", "execution", "started_at", "finished_at"
    ).get() == ("pending", "celery", None, None)


def test_tool_call_create_refuses_a_session_of_another_tenant_and_creates_nothing(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    session_b = _session(world_b)

    with pytest.raises(TenantMismatch):
        voice_services.tool_call_create(
            tenant=world_a.tenant,
            session=session_b,
            call_id="call-1",
            name="get_weather",
            arguments={},
        )

    assert ToolCall.objects.count() == 0


def test_tool_call_start_claims_a_pending_call_exactly_once(
    world_a: TenantWorld, clock: Clock
) -> None:
    call = _tool_call(world_a)
    started_at = clock.advance(1)

    first = voice_services.tool_call_start(
        tenant=world_a.tenant, tool_call_id=call.pk, task_id="task-1"
    )
    clock.advance(1)
    second = voice_services.tool_call_start(
        tenant=world_a.tenant, tool_call_id=call.pk, task_id="task-2"
    )

    assert (first, second) == (True, False)
    assert ToolCall.objects.filter(pk=call.pk).values_list(
        "status", "started_at", "task_id"
    ).get() == ("running", started_at, "task-1")


def test_tool_call_start_with_another_tenant_claims_nothing(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    call = _tool_call(world_a)
    before = _row(ToolCall, call.pk)

    started = voice_services.tool_call_start(tenant=world_b.tenant, tool_call_id=call.pk)

    assert started is False
    assert _row(ToolCall, call.pk) == before


def test_tool_call_finish_records_status_result_error_and_finished_at(
    world_a: TenantWorld, clock: Clock
) -> None:
    call = _tool_call(world_a)
    started_at = clock.advance(1)
    voice_services.tool_call_start(tenant=world_a.tenant, tool_call_id=call.pk)
    finished_at = clock.advance(2)

    finished = voice_services.tool_call_finish(
        tenant=world_a.tenant,
        tool_call_id=call.pk,
        status="failed",
        result='{"partial": true}',
        error="upstream said no",
    )

    assert finished is True
    call.refresh_from_db()
    assert (call.status, call.result, call.error, call.started_at, call.finished_at) == (
        "failed",
        '{"partial": true}',
        "upstream said no",
        started_at,
        finished_at,
    )
    assert call.duration_ms == 2000


@pytest.mark.parametrize("status", ["pending", "running", "done"])
def test_tool_call_finish_refuses_a_status_that_is_not_final_and_changes_nothing(
    world_a: TenantWorld, status: str
) -> None:
    call = _tool_call(world_a)
    voice_services.tool_call_start(tenant=world_a.tenant, tool_call_id=call.pk)
    before = _row(ToolCall, call.pk)

    with pytest.raises(ValidationError) as caught:
        voice_services.tool_call_finish(
            tenant=world_a.tenant, tool_call_id=call.pk, status=status, result="x"
        )

    assert caught.value.message_dict == {"status": [f"{status!r} is not a final tool call status."]}
    assert _row(ToolCall, call.pk) == before


def test_late_success_never_overwrites_a_cancelled_tool_call(
    world_a: TenantWorld, clock: Clock
) -> None:
    call = _tool_call(world_a)
    voice_services.tool_call_start(tenant=world_a.tenant, tool_call_id=call.pk)
    clock.advance(1)
    voice_services.tool_call_finish(
        tenant=world_a.tenant, tool_call_id=call.pk, status="cancelled", error="caller hung up"
    )
    before = _row(ToolCall, call.pk)
    clock.advance(5)

    late = voice_services.tool_call_finish(
        tenant=world_a.tenant, tool_call_id=call.pk, status="succeeded", result='{"ok": true}'
    )

    assert late is False
    assert _row(ToolCall, call.pk) == before
    assert (before["status"], before["result"]) == ("cancelled", "")


def test_finishing_a_call_that_never_started_sets_started_at_to_finished_at(
    world_a: TenantWorld, clock: Clock
) -> None:
    call = _tool_call(world_a)
    finished_at = clock.advance(3)

    voice_services.tool_call_finish(tenant=world_a.tenant, tool_call_id=call.pk, status="timed_out")

    assert ToolCall.objects.filter(pk=call.pk).values_list(
        "status", "started_at", "finished_at"
    ).get() == ("timed_out", finished_at, finished_at)


def test_tool_call_finish_with_another_tenant_changes_nothing(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    call = _tool_call(world_a)
    before = _row(ToolCall, call.pk)

    finished = voice_services.tool_call_finish(
        tenant=world_b.tenant, tool_call_id=call.pk, status="succeeded", result="stolen"
    )

    assert finished is False
    assert _row(ToolCall, call.pk) == before


def test_tool_call_mark_delivered_records_the_first_delivery_only(
    world_a: TenantWorld, clock: Clock
) -> None:
    call = _tool_call(world_a)
    voice_services.tool_call_finish(
        tenant=world_a.tenant, tool_call_id=call.pk, status="succeeded", result="{}"
    )
    delivered_at = clock.advance(1)

    first = voice_services.tool_call_mark_delivered(tenant=world_a.tenant, tool_call_id=call.pk)
    clock.advance(1)
    second = voice_services.tool_call_mark_delivered(tenant=world_a.tenant, tool_call_id=call.pk)

    assert (first, second) == (True, False)
    assert ToolCall.objects.get(pk=call.pk).delivered_at == delivered_at


# --- agents and tools -------------------------------------------------------------------------


def test_agent_create_with_a_tool_of_another_tenant_raises_and_saves_nothing(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    with pytest.raises(TenantMismatch):
        voice_services.agent_create(
            tenant=world_a.tenant,
            slug="second",
            name="Second",
            provider_kind="openai",
            tools=[world_a.tool, world_b.tool],
        )

    assert list(Agent.objects.filter(tenant=world_a.tenant).values_list("slug", flat=True)) == [
        "assistant"
    ]


def test_agent_create_with_a_credential_of_another_tenant_raises_and_saves_nothing(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    with pytest.raises(TenantMismatch):
        voice_services.agent_create(
            tenant=world_a.tenant,
            slug="second",
            name="Second",
            provider_kind="openai",
            credential=world_b.credential,
        )

    assert list(Agent.objects.filter(tenant=world_a.tenant).values_list("slug", flat=True)) == [
        "assistant"
    ]


def test_agent_create_normalises_slug_and_links_its_tools(world_a: TenantWorld) -> None:
    agent = voice_services.agent_create(
        tenant=world_a.tenant,
        slug="  Front-Desk ",
        name=" Front desk ",
        provider_kind="mock",
        tools=[world_a.tool],
    )

    stored = Agent.objects.get(pk=agent.pk)
    assert (stored.slug, stored.name, list(stored.tools.all())) == (
        "front-desk",
        "Front desk",
        [world_a.tool],
    )


def test_agent_update_with_a_tool_of_another_tenant_raises_and_saves_nothing(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    agent = Agent.objects.get(pk=world_a.agent.pk)

    with pytest.raises(TenantMismatch):
        voice_services.agent_update(
            tenant=world_a.tenant, agent=agent, name="Renamed", tools=[world_b.tool]
        )

    stored = Agent.objects.get(pk=world_a.agent.pk)
    assert (stored.name, list(stored.tools.all())) == ("Assistant tenant-a", [world_a.tool])


def test_agent_update_of_another_tenants_agent_raises_and_saves_nothing(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    agent_b = Agent.objects.get(pk=world_b.agent.pk)

    with pytest.raises(TenantMismatch):
        voice_services.agent_update(tenant=world_a.tenant, agent=agent_b, name="Hijacked")

    assert Agent.objects.get(pk=world_b.agent.pk).name == "Assistant tenant-b"


def test_agent_update_with_invalid_provider_config_raises_and_saves_nothing(
    world_a: TenantWorld,
) -> None:
    agent = Agent.objects.get(pk=world_a.agent.pk)
    before = _row(Agent, agent.pk)

    with pytest.raises(ValidationError) as caught:
        voice_services.agent_update(
            tenant=world_a.tenant, agent=agent, provider_config={"speed": 3}
        )

    assert caught.value.message_dict == {"provider_config": ["speed: must be <= 1.5"]}
    assert _row(Agent, agent.pk) == before


def test_agent_update_replaces_tools_only_when_given(world_a: TenantWorld) -> None:
    second_tool = voice_services.tool_create(
        tenant=world_a.tenant, name="get_time", handler="tests.fixtures.actors.get_weather"
    )
    agent = Agent.objects.get(pk=world_a.agent.pk)

    voice_services.agent_update(tenant=world_a.tenant, agent=agent, name="Renamed")
    tools_after_rename = list(agent.tools.order_by("name"))
    voice_services.agent_update(tenant=world_a.tenant, agent=agent, tools=[second_tool])

    assert tools_after_rename == [world_a.tool]
    assert list(Agent.objects.get(pk=agent.pk).tools.all()) == [second_tool]


def test_tool_create_strips_name_and_handler(world_a: TenantWorld) -> None:
    tool = voice_services.tool_create(
        tenant=world_a.tenant,
        name="  get_time ",
        handler=" tests.fixtures.actors.get_weather\n",
        parameters={"type": "object"},
    )

    assert Tool.objects.filter(pk=tool.pk).values_list("name", "handler").get() == (
        "get_time",
        "tests.fixtures.actors.get_weather",
    )


def test_tool_create_without_parameters_stores_an_empty_object_schema(
    world_a: TenantWorld,
) -> None:
    tool = voice_services.tool_create(
        tenant=world_a.tenant, name="get_time", handler="tests.fixtures.actors.get_weather"
    )

    assert Tool.objects.get(pk=tool.pk).parameters == {"type": "object", "properties": {}}


@pytest.mark.parametrize(
    ("fields", "field_in_error"),
    [
        ({"name": "1st-tool"}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": "get_weather"}, "__all__"),  # taken in this tenant
        ({"parameters": {"type": "array"}}, "parameters"),
        ({"handler": "http://hooks.example.com/x", "handler_kind": "webhook"}, "handler"),
        ({"timeout_seconds": 0.0}, "timeout_seconds"),
        ({"execution": "thread"}, "execution"),
    ],
)
def test_tool_create_refuses_invalid_fields_and_creates_nothing(
    world_a: TenantWorld, fields: dict[str, Any], field_in_error: str
) -> None:
    values: dict[str, Any] = {"name": "get_time", "handler": "tests.fixtures.actors.get_weather"}
    values.update(fields)

    with pytest.raises(ValidationError) as caught:
        voice_services.tool_create(tenant=world_a.tenant, **values)

    assert list(caught.value.message_dict) == [field_in_error]
    assert list(Tool.objects.filter(tenant=world_a.tenant).values_list("name", flat=True)) == [
        "get_weather"
    ]


def test_tool_update_of_another_tenants_tool_raises_and_saves_nothing(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    tool_b = Tool.objects.get(pk=world_b.tool.pk)

    with pytest.raises(TenantMismatch):
        voice_services.tool_update(tenant=world_a.tenant, tool=tool_b, description="hijacked")

    assert Tool.objects.get(pk=world_b.tool.pk).description == "Weather for a city"
