"""Database constraints on agents, tools, sessions and tool calls (proven by bypassing
Python validation with ``update()``), and ``Agent.clean`` / ``Tool.clean``."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from providers import services as provider_services
from rooms import services as room_services
from tests.fixtures.actors import TenantWorld
from voice import services as voice_services
from voice.models import Agent, SessionState, Tool, ToolCall, VoiceSession

# --- helpers --------------------------------------------------------------------------------


def _session(world: TenantWorld) -> VoiceSession:
    return voice_services.voice_session_create(
        tenant=world.tenant,
        room=world.room,
        agent=world.agent,
        participant_id="caller",
        transport="websocket",
    )


def _tool_call(world: TenantWorld, *, call_id: str = "call-1") -> ToolCall:
    return voice_services.tool_call_create(
        tenant=world.tenant,
        session=_session(world),
        call_id=call_id,
        name="get_weather",
        arguments={"city": "Paris"},
        tool=world.tool,
    )


def _row(instance: models.Model) -> dict[str, Any]:
    row: dict[str, Any] = type(instance)._default_manager.filter(pk=instance.pk).values().get()
    return row


def _assert_update_refused(instance: models.Model, **values: Any) -> None:
    """The UPDATE violates a database constraint and the row is left exactly as it was."""
    before = _row(instance)
    with pytest.raises(IntegrityError), transaction.atomic():
        type(instance)._default_manager.filter(pk=instance.pk).update(**values)
    assert _row(instance) == before


# --- VoiceSession -----------------------------------------------------------------------------


def test_session_state_outside_the_enum_is_refused_by_the_database(world_a: TenantWorld) -> None:
    _assert_update_refused(_session(world_a), state="paused")


def test_active_session_without_activated_at_is_refused_by_the_database(
    world_a: TenantWorld,
) -> None:
    _assert_update_refused(_session(world_a), state=SessionState.ACTIVE)


def test_ended_session_without_ended_at_is_refused_by_the_database(world_a: TenantWorld) -> None:
    _assert_update_refused(_session(world_a), state=SessionState.ENDED, end_reason="timeout")


def test_ended_session_without_end_reason_is_refused_by_the_database(
    world_a: TenantWorld,
) -> None:
    _assert_update_refused(_session(world_a), state=SessionState.ENDED, ended_at=timezone.now())


def test_connecting_session_with_ended_at_is_refused_by_the_database(
    world_a: TenantWorld,
) -> None:
    _assert_update_refused(_session(world_a), ended_at=timezone.now())


def test_connecting_session_with_end_reason_is_refused_by_the_database(
    world_a: TenantWorld,
) -> None:
    _assert_update_refused(_session(world_a), end_reason="timeout")


def test_active_session_with_ended_at_is_refused_by_the_database(world_a: TenantWorld) -> None:
    session = _session(world_a)
    voice_services.voice_session_activate(tenant=world_a.tenant, session_id=session.pk)
    _assert_update_refused(session, ended_at=timezone.now())


def test_session_end_reason_outside_the_enum_is_refused_by_the_database(
    world_a: TenantWorld,
) -> None:
    _assert_update_refused(
        _session(world_a),
        state=SessionState.ENDED,
        ended_at=timezone.now(),
        end_reason="bored",
    )


def test_session_state_and_timestamps_that_agree_are_accepted_by_the_database(
    world_a: TenantWorld,
) -> None:
    session = _session(world_a)
    now = timezone.now()

    with transaction.atomic():
        updated = VoiceSession.objects.filter(pk=session.pk).update(
            state=SessionState.ENDED, ended_at=now, end_reason="timeout"
        )

    assert updated == 1
    session.refresh_from_db()
    assert (session.state, session.ended_at, session.end_reason) == ("ended", now, "timeout")


# --- ToolCall ---------------------------------------------------------------------------------


def test_final_tool_call_status_without_finished_at_is_refused_by_the_database(
    world_a: TenantWorld,
) -> None:
    _assert_update_refused(_tool_call(world_a), status="succeeded")


def test_pending_tool_call_with_finished_at_is_refused_by_the_database(
    world_a: TenantWorld,
) -> None:
    _assert_update_refused(_tool_call(world_a), finished_at=timezone.now())


def test_running_tool_call_with_finished_at_is_refused_by_the_database(
    world_a: TenantWorld,
) -> None:
    _assert_update_refused(_tool_call(world_a), status="running", finished_at=timezone.now())


def test_tool_call_status_outside_the_enum_is_refused_by_the_database(
    world_a: TenantWorld,
) -> None:
    _assert_update_refused(_tool_call(world_a), status="lost")


def test_tool_call_id_is_unique_within_a_session(world_a: TenantWorld) -> None:
    first = _tool_call(world_a, call_id="call-1")
    second = voice_services.tool_call_create(
        tenant=world_a.tenant,
        session=first.session,
        call_id="call-2",
        name="get_weather",
        arguments={},
    )

    _assert_update_refused(second, call_id="call-1")


def test_the_same_tool_call_id_in_another_session_is_accepted(world_a: TenantWorld) -> None:
    first = _tool_call(world_a, call_id="call-1")
    other = _tool_call(world_a, call_id="call-9")

    with transaction.atomic():
        ToolCall.objects.filter(pk=other.pk).update(call_id="call-1")

    assert sorted(ToolCall.objects.values_list("session_id", "call_id")) == sorted(
        [(first.session_id, "call-1"), (other.session_id, "call-1")]
    )


# --- Agent ------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [-0.1, 2.01])
def test_agent_temperature_outside_0_to_2_is_refused_by_the_database(
    world_a: TenantWorld, temperature: float
) -> None:
    _assert_update_refused(world_a.agent, temperature=temperature)


@pytest.mark.parametrize("temperature", [None, 0.0, 2.0])
def test_agent_temperature_null_or_within_0_to_2_is_accepted_by_the_database(
    world_a: TenantWorld, temperature: float | None
) -> None:
    with transaction.atomic():
        Agent.objects.filter(pk=world_a.agent.pk).update(temperature=temperature)

    world_a.agent.refresh_from_db()
    assert world_a.agent.temperature == temperature


@pytest.mark.parametrize(
    "values",
    [
        {"input_sample_rate": 7999},
        {"input_sample_rate": 192_001},
        {"output_sample_rate": 7999},
        {"output_sample_rate": 192_001},
        {"transport_sample_rate": 7999},
        {"transport_sample_rate": 192_001},
    ],
)
def test_agent_sample_rate_outside_8000_to_192000_is_refused_by_the_database(
    world_a: TenantWorld, values: dict[str, int]
) -> None:
    _assert_update_refused(world_a.agent, **values)


def test_agent_sample_rates_at_the_bounds_are_accepted_by_the_database(
    world_a: TenantWorld,
) -> None:
    with transaction.atomic():
        Agent.objects.filter(pk=world_a.agent.pk).update(
            input_sample_rate=8000, output_sample_rate=192_000, transport_sample_rate=8000
        )

    world_a.agent.refresh_from_db()
    assert (
        world_a.agent.input_sample_rate,
        world_a.agent.output_sample_rate,
        world_a.agent.transport_sample_rate,
    ) == (8000, 192_000, 8000)


def test_agent_tool_result_max_length_of_zero_is_refused_by_the_database(
    world_a: TenantWorld,
) -> None:
    _assert_update_refused(world_a.agent, tool_result_max_length=0)


def test_agent_provider_kind_outside_the_enum_is_refused_by_the_database(
    world_a: TenantWorld,
) -> None:
    _assert_update_refused(world_a.agent, provider_kind="skype")


def test_agent_slug_is_unique_within_a_tenant(world_a: TenantWorld) -> None:
    other = voice_services.agent_create(
        tenant=world_a.tenant, slug="other", name="Other", provider_kind="mock"
    )

    _assert_update_refused(other, slug="assistant")


def test_agent_slug_used_in_another_tenant_is_accepted(world_a: TenantWorld) -> None:
    tenant_c = room_services.tenant_create(slug="tenant-c", name="Tenant C")
    agent_c = voice_services.agent_create(
        tenant=tenant_c, slug="other", name="Other", provider_kind="mock"
    )

    with transaction.atomic():
        Agent.objects.filter(pk=agent_c.pk).update(slug="assistant")

    assert sorted(
        Agent.objects.filter(slug="assistant").values_list("tenant__slug", flat=True)
    ) == [
        "tenant-a",
        "tenant-c",
    ]


# --- Tool -------------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout_seconds", [0.09, 600.01])
def test_tool_timeout_outside_0_1_to_600_seconds_is_refused_by_the_database(
    world_a: TenantWorld, timeout_seconds: float
) -> None:
    _assert_update_refused(world_a.tool, timeout_seconds=timeout_seconds)


def test_tool_name_is_unique_within_a_tenant(world_a: TenantWorld) -> None:
    other = voice_services.tool_create(
        tenant=world_a.tenant, name="get_time", handler="tests.fixtures.actors.get_weather"
    )

    _assert_update_refused(other, name="get_weather")


def test_tool_name_used_in_another_tenant_is_accepted(world_a: TenantWorld) -> None:
    tenant_c = room_services.tenant_create(slug="tenant-c", name="Tenant C")
    tool_c = voice_services.tool_create(
        tenant=tenant_c, name="get_time", handler="tests.fixtures.actors.get_weather"
    )

    with transaction.atomic():
        Tool.objects.filter(pk=tool_c.pk).update(name="get_weather")

    assert sorted(
        Tool.objects.filter(name="get_weather").values_list("tenant__slug", flat=True)
    ) == [
        "tenant-a",
        "tenant-c",
    ]


@pytest.mark.parametrize(("field", "value"), [("execution", "thread"), ("handler_kind", "shell")])
def test_tool_enum_outside_its_choices_is_refused_by_the_database(
    world_a: TenantWorld, field: str, value: str
) -> None:
    _assert_update_refused(world_a.tool, **{field: value})


@pytest.mark.parametrize(("field", "value"), [("transport", "pigeon"), ("provider_kind", "skype")])
def test_session_enum_outside_its_choices_is_refused_by_the_database(
    world_a: TenantWorld, field: str, value: str
) -> None:
    _assert_update_refused(_session(world_a), **{field: value})


def test_tool_call_execution_outside_its_choices_is_refused_by_the_database(
    world_a: TenantWorld,
) -> None:
    _assert_update_refused(_tool_call(world_a), execution="thread")


# --- Agent.clean ------------------------------------------------------------------------------


def _new_agent(world: TenantWorld, **fields: Any) -> Agent:
    values: dict[str, Any] = {
        "tenant": world.tenant,
        "slug": "new-agent",
        "name": "New agent",
        "provider_kind": "openai",
    }
    values.update(fields)
    return Agent(**values)


def test_agent_clean_refuses_invalid_provider_config_naming_the_option(
    world_a: TenantWorld,
) -> None:
    agent = _new_agent(
        world_a, provider_config={"turn_detection": {"type": "server_vad", "threshold": 2}}
    )

    with pytest.raises(ValidationError) as caught:
        agent.full_clean()

    assert caught.value.message_dict == {
        "provider_config": ["turn_detection.threshold: must be <= 1"]
    }


def test_agent_clean_refuses_provider_config_that_is_not_an_object(world_a: TenantWorld) -> None:
    agent = _new_agent(world_a, provider_config=["speed", 1.0])

    with pytest.raises(ValidationError) as caught:
        agent.full_clean()

    assert caught.value.message_dict == {
        "provider_config": ["provider_config: must be a JSON object, not an array"]
    }


def test_agent_clean_refuses_an_option_of_another_provider(world_a: TenantWorld) -> None:
    agent = _new_agent(world_a, provider_kind="mock", provider_config={"speed": 1.0})

    with pytest.raises(ValidationError) as caught:
        agent.full_clean()

    assert caught.value.message_dict == {"provider_config": ["speed: unknown option 'speed'"]}


def test_agent_clean_normalises_provider_config_to_the_keys_that_were_set(
    world_a: TenantWorld,
) -> None:
    agent = _new_agent(
        world_a,
        provider_config={"stt_model": "  whisper-1  ", "turn_detection": {"type": "semantic_vad"}},
    )

    agent.full_clean()

    assert agent.provider_config == {
        "stt_model": "whisper-1",
        "turn_detection": {"type": "semantic_vad"},
    }


def test_agent_clean_keeps_an_explicit_null_turn_detection_for_openai(
    world_a: TenantWorld,
) -> None:
    agent = _new_agent(world_a, provider_config={"turn_detection": None})

    agent.full_clean()

    assert agent.provider_config == {"turn_detection": None}


def test_agent_clean_reports_an_unknown_provider_kind_as_a_validation_error(
    world_a: TenantWorld,
) -> None:
    agent = _new_agent(world_a, provider_kind="skype", provider_config={})

    with pytest.raises(ValidationError) as caught:
        agent.full_clean()

    assert caught.value.message_dict == {
        "provider_kind": [
            "Value 'skype' is not a valid choice.",
            "unknown provider kind 'skype'; "
            "known kinds: echo, elevenlabs, gemini, local, mock, openai, xai",
        ]
    }


def test_agent_clean_refuses_a_credential_of_another_tenant(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    agent = _new_agent(world_a, credential=world_b.credential)

    with pytest.raises(ValidationError) as caught:
        agent.full_clean()

    assert caught.value.message_dict == {
        "credential": ["The credential belongs to another tenant."]
    }


def test_agent_clean_refuses_a_credential_for_another_provider_kind(
    world_a: TenantWorld,
) -> None:
    xai_credential = provider_services.credential_create(
        tenant=world_a.tenant, name="xai-main", kind="xai", secret="xai-0123456789abcdefXYZ"
    )
    agent = _new_agent(world_a, credential=xai_credential)

    with pytest.raises(ValidationError) as caught:
        agent.full_clean()

    assert caught.value.message_dict == {
        "credential": ["The credential is for xAI Grok Realtime, not OpenAI Realtime."]
    }


def test_agent_clean_accepts_a_credential_of_the_same_tenant_and_kind(
    world_a: TenantWorld,
) -> None:
    agent = _new_agent(world_a, credential=world_a.credential, provider_config={"speed": 1.25})

    agent.full_clean()

    assert agent.provider_config == {"speed": 1.25}


# --- Tool.clean -------------------------------------------------------------------------------


PYTHON_HANDLER_MESSAGE = "A Python handler is a dotted path such as 'package.module.function'."
WEBHOOK_HANDLER_MESSAGE = "A webhook handler is an https:// URL with a host."
WEBHOOK_CREDENTIALS_MESSAGE = "Put webhook credentials in the tool's secret, not in the URL."


def _new_tool(world: TenantWorld, **fields: Any) -> Tool:
    values: dict[str, Any] = {
        "tenant": world.tenant,
        "name": "lookup",
        "handler": "tests.fixtures.actors.get_weather",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    values.update(fields)
    return Tool(**values)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (["q"], 'Parameters must be a JSON Schema object, e.g. {"type": "object"}.'),
        ("object", 'Parameters must be a JSON Schema object, e.g. {"type": "object"}.'),
        ({"type": "string"}, 'Parameters must describe an object: set "type": "object".'),
        ({"properties": {}}, 'Parameters must describe an object: set "type": "object".'),
        (
            {"type": "object", "properties": 3},
            "Not a valid JSON Schema at properties: 3 is not of type 'object'",
        ),
        (
            {"type": "object", "properties": {"q": {"type": "strin"}}},
            "Not a valid JSON Schema at properties/q/type: "
            "'strin' is not valid under any of the given schemas",
        ),
        (
            {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["city"]},
            '"required" names \'city\', which is not in "properties".',
        ),
    ],
)
def test_tool_clean_refuses_parameters_that_are_not_an_object_json_schema(
    world_a: TenantWorld, parameters: Any, message: str
) -> None:
    tool = _new_tool(world_a, parameters=parameters)

    with pytest.raises(ValidationError) as caught:
        tool.full_clean()

    assert caught.value.message_dict == {"parameters": [message]}


@pytest.mark.parametrize(
    ("handler_kind", "handler", "message"),
    [
        ("python", "get_weather", PYTHON_HANDLER_MESSAGE),
        ("python", "tests.fixtures.actors.get-weather", PYTHON_HANDLER_MESSAGE),
        ("python", "https://hooks.example.com/weather", PYTHON_HANDLER_MESSAGE),
        ("webhook", "http://hooks.example.com/weather", WEBHOOK_HANDLER_MESSAGE),
        ("webhook", "https:///weather", WEBHOOK_HANDLER_MESSAGE),
        ("webhook", "tests.fixtures.actors.get_weather", WEBHOOK_HANDLER_MESSAGE),
        ("webhook", "https://bot:hunter2@hooks.example.com/weather", WEBHOOK_CREDENTIALS_MESSAGE),
        ("webhook", "https://bot@hooks.example.com/weather", WEBHOOK_CREDENTIALS_MESSAGE),
    ],
)
def test_tool_clean_refuses_a_handler_that_does_not_fit_its_kind(
    world_a: TenantWorld, handler_kind: str, handler: str, message: str
) -> None:
    tool = _new_tool(world_a, handler_kind=handler_kind, handler=handler)

    with pytest.raises(ValidationError) as caught:
        tool.full_clean()

    assert caught.value.message_dict == {"handler": [message]}


def test_tool_clean_reports_parameters_and_handler_problems_together(
    world_a: TenantWorld,
) -> None:
    tool = _new_tool(world_a, parameters={"type": "array"}, handler="nodots")

    with pytest.raises(ValidationError) as caught:
        tool.full_clean()

    assert sorted(caught.value.message_dict) == ["handler", "parameters"]


def test_a_webhook_tool_needs_a_signing_secret(world_a: TenantWorld) -> None:
    with pytest.raises(ValidationError) as caught:
        voice_services.tool_create(
            tenant=world_a.tenant,
            name="lookup",
            handler_kind="webhook",
            handler="https://hooks.example.com/weather",
        )
    assert list(caught.value.message_dict) == ["secret"]
    with pytest.raises(ValidationError) as short:
        voice_services.tool_create(
            tenant=world_a.tenant,
            name="lookup",
            handler_kind="webhook",
            handler="https://hooks.example.com/weather",
            secret="short",
        )
    assert list(short.value.message_dict) == ["secret"]
    assert not Tool.objects.filter(tenant=world_a.tenant, name="lookup").exists()


def test_a_webhook_secret_is_stored_encrypted_and_masked(world_a: TenantWorld) -> None:
    secret = "whsec-0123456789abcdef"
    tool = voice_services.tool_create(
        tenant=world_a.tenant,
        name="lookup",
        handler_kind="webhook",
        handler="https://hooks.example.com/weather",
        secret=secret,
    )
    tool.refresh_from_db()
    assert secret not in tool.encrypted_secret
    assert secret not in tool.secret_hint and tool.secret_hint.endswith(secret[-4:])
    assert voice_services.tool_reveal_secret(tool) == secret
    # Saving other changes keeps it; a new one replaces it.
    voice_services.tool_update(tenant=world_a.tenant, tool=tool, description="weather")
    assert voice_services.tool_reveal_secret(Tool.objects.get(pk=tool.pk)) == secret
    voice_services.tool_update(tenant=world_a.tenant, tool=tool, secret="whsec-rotated-000000")
    assert voice_services.tool_reveal_secret(Tool.objects.get(pk=tool.pk)) == "whsec-rotated-000000"


@pytest.mark.parametrize(
    ("handler_kind", "handler"),
    [
        ("python", "tests.fixtures.actors.get_weather"),
        ("webhook", "https://hooks.example.com/weather?v=2"),
        ("webhook", "https://hooks.example.com:8443/weather"),
    ],
)
def test_tool_clean_accepts_a_handler_that_fits_its_kind(
    world_a: TenantWorld, handler_kind: str, handler: str
) -> None:
    secret = "whsec-0123456789abcdef" if handler_kind == "webhook" else ""
    voice_services.tool_create(
        tenant=world_a.tenant,
        name="lookup",
        handler_kind=handler_kind,
        handler=handler,
        secret=secret,
    )

    assert list(
        Tool.objects.filter(tenant=world_a.tenant, name="lookup").values_list(
            "handler_kind", "handler"
        )
    ) == [(handler_kind, handler)]
