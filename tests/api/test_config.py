"""Agents, tools, provider credentials and tool calls through ``/api/v1/``
(``api.views.config``): writes through the services, the admin's rules, write-only
secrets, tenant isolation and idempotent creates."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from api.models import IdempotencyRecord
from providers import services as provider_services
from providers.models import ProviderCredential
from rooms.models import User
from tests.fixtures.actors import PASSWORD, TenantWorld
from tests.fixtures.api import error_of
from tests.fixtures.tools import SignedReceiver
from voice import services as voice_services
from voice.models import Agent, Tool, ToolCall, ToolCallStatus, VoiceSession

API = "/api/v1"
WEBHOOK_SECRET = "whsec-0123456789abcdef-hunter2"
NEW_KEY = "sk-new-0123456789abcdefNEWKEY"

# --- helpers ---------------------------------------------------------------------------------


def _only_agent(world: TenantWorld, slug: str = "only-a") -> Agent:
    """An agent whose slug only this tenant has (tenant B also has "assistant")."""
    return voice_services.agent_create(
        tenant=world.tenant, slug=slug, name="Only A", provider_kind="mock"
    )


def _only_tool(world: TenantWorld, name: str = "only_a") -> Tool:
    return voice_services.tool_create(
        tenant=world.tenant,
        name=name,
        handler="tests.fixtures.tools.lookup_order",
        parameters={
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
        sample_arguments={"order_id": "SAMPLE-1"},
    )


def _webhook_tool(world: TenantWorld, name: str = "hook") -> Tool:
    return voice_services.tool_create(
        tenant=world.tenant,
        name=name,
        handler="https://hooks.example.com/orders",
        handler_kind="webhook",
        secret=WEBHOOK_SECRET,
    )


def _session(world: TenantWorld) -> VoiceSession:
    return voice_services.voice_session_create(
        tenant=world.tenant,
        room=world.room,
        participant_id="caller",
        transport="websocket",
        agent=world.agent,
    )


def _tool_call(
    world: TenantWorld,
    session: VoiceSession,
    call_id: str,
    *,
    tool: Tool | None,
    minutes_ago: int,
    finish: str | None = None,
) -> ToolCall:
    call = voice_services.tool_call_create(
        tenant=world.tenant,
        session=session,
        call_id=call_id,
        name=tool.name if tool else "unknown_tool",
        arguments={"city": "Paris"},
        tool=tool,
    )
    ToolCall.objects.filter(pk=call.pk).update(
        created_at=timezone.now() - timedelta(minutes=minutes_ago)
    )
    if finish:
        voice_services.tool_call_start(tenant=world.tenant, tool_call_id=call.pk)
        voice_services.tool_call_finish(
            tenant=world.tenant, tool_call_id=call.pk, status=finish, result='{"ok": true}'
        )
    call.refresh_from_db()
    return call


def _results(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.content
    results: list[dict[str, Any]] = response.json()["results"]
    return results


# --- agents ----------------------------------------------------------------------------------


def test_agents_list_shows_the_tenants_agents(api_a: APIClient, world_a: TenantWorld) -> None:
    results = _results(api_a.get(f"{API}/agents/"))

    assert [agent["slug"] for agent in results] == ["assistant"]
    agent = results[0]
    assert agent["name"] == "Assistant tenant-a"
    assert agent["provider_kind"] == "openai"
    assert agent["credential"] == str(world_a.credential.pk)
    assert agent["tools"] == ["get_weather"]
    assert agent["input_sample_rate"] == 16000
    assert agent["transport_sample_rate"] is None
    assert set(agent) == {
        "slug",
        "name",
        "provider_kind",
        "credential",
        "model",
        "voice",
        "system_prompt",
        "temperature",
        "provider_config",
        "input_sample_rate",
        "output_sample_rate",
        "transport_sample_rate",
        "mute_on_tool_call",
        "tool_result_max_length",
        "emit_transcription_events",
        "tools",
        "is_active",
        "created_at",
        "updated_at",
    }


def test_agent_retrieve_by_slug(api_a: APIClient, world_a: TenantWorld) -> None:
    response = api_a.get(f"{API}/agents/assistant/")

    assert response.status_code == 200
    assert response.json()["name"] == "Assistant tenant-a"


def test_agents_filter_by_provider_kind_and_is_active(
    api_a: APIClient, world_a: TenantWorld
) -> None:
    voice_services.agent_create(
        tenant=world_a.tenant, slug="off", name="Off", provider_kind="mock", is_active=False
    )
    _only_agent(world_a)

    mock = _results(api_a.get(f"{API}/agents/", {"provider_kind": "mock"}))
    inactive = _results(api_a.get(f"{API}/agents/", {"is_active": "false"}))

    assert [agent["slug"] for agent in mock] == ["off", "only-a"]
    assert [agent["slug"] for agent in inactive] == ["off"]


def test_agent_create_goes_through_the_service(api_a: APIClient, world_a: TenantWorld) -> None:
    _only_tool(world_a, "lookup")
    response = api_a.post(
        f"{API}/agents/",
        {
            "slug": "support",
            "name": "Support",
            "provider_kind": "openai",
            "credential": str(world_a.credential.pk),
            "tools": ["lookup", "get_weather"],
            "provider_config": {"speed": 1.2},
            "temperature": 0.7,
            "system_prompt": "Be brief.",
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["slug"] == "support"
    assert body["tools"] == ["get_weather", "lookup"]
    assert body["provider_config"] == {"speed": 1.2}
    agent = Agent.objects.get(tenant=world_a.tenant, slug="support")
    assert agent.credential == world_a.credential
    assert sorted(agent.tools.values_list("name", flat=True)) == ["get_weather", "lookup"]
    assert agent.temperature == 0.7


def test_agent_create_checks_provider_config_against_the_providers_schema(
    api_a: APIClient, world_a: TenantWorld
) -> None:
    response = api_a.post(
        f"{API}/agents/",
        {"slug": "bad", "name": "Bad", "provider_kind": "openai", "provider_config": {"speed": 9}},
        format="json",
    )

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert error["fields"] == {"provider_config": ["speed: must be <= 1.5"]}
    assert not Agent.objects.filter(slug="bad").exists()


def test_agent_credential_must_match_the_provider_kind(
    api_a: APIClient, world_a: TenantWorld
) -> None:
    response = api_a.post(
        f"{API}/agents/",
        {
            "slug": "mocky",
            "name": "Mocky",
            "provider_kind": "mock",
            "credential": str(world_a.credential.pk),
        },
        format="json",
    )

    assert response.status_code == 400
    assert list(error_of(response)["fields"]) == ["credential"]
    assert "OpenAI Realtime" in error_of(response)["fields"]["credential"][0]
    assert not Agent.objects.filter(slug="mocky").exists()


def test_agent_cannot_use_another_tenants_credential_or_tools(
    api_a: APIClient, world_a: TenantWorld, world_b: TenantWorld
) -> None:
    _only_tool(world_b, "only_b")
    response = api_a.post(
        f"{API}/agents/",
        {
            "slug": "thief",
            "name": "Thief",
            "provider_kind": "openai",
            "credential": str(world_b.credential.pk),
            "tools": ["only_b"],
        },
        format="json",
    )

    assert response.status_code == 400
    assert sorted(error_of(response)["fields"]) == ["credential", "tools"]
    assert not Agent.objects.filter(slug="thief").exists()


def test_agent_duplicate_slug_names_the_slug(api_a: APIClient, world_a: TenantWorld) -> None:
    response = api_a.post(
        f"{API}/agents/",
        {"slug": "assistant", "name": "Again", "provider_kind": "mock"},
        format="json",
    )

    assert response.status_code == 400
    assert error_of(response)["fields"] == {
        "slug": ["The tenant already has an agent with this slug."]
    }
    assert Agent.objects.filter(tenant=world_a.tenant).count() == 1


def test_agent_bad_slug_and_sample_rate_name_their_fields(
    api_a: APIClient, world_a: TenantWorld
) -> None:
    response = api_a.post(
        f"{API}/agents/",
        {"slug": "Not A Slug", "name": "x", "provider_kind": "mock", "input_sample_rate": 100},
        format="json",
    )

    assert response.status_code == 400
    assert sorted(error_of(response)["fields"]) == ["input_sample_rate", "slug"]


def test_agent_partial_update_changes_fields_and_tools(
    api_a: APIClient, world_a: TenantWorld
) -> None:
    response = api_a.patch(
        f"{API}/agents/assistant/",
        {"name": "Renamed", "tools": [], "voice": "alloy", "provider_config": {"speed": 0.5}},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["tools"] == []
    assert response.json()["name"] == "Renamed"
    world_a.agent.refresh_from_db()
    assert world_a.agent.name == "Renamed"
    assert world_a.agent.voice == "alloy"
    assert world_a.agent.provider_config == {"speed": 0.5}
    assert list(world_a.agent.tools.all()) == []


def test_agent_update_to_another_provider_kind_keeps_the_credential_check(
    api_a: APIClient, world_a: TenantWorld
) -> None:
    response = api_a.patch(f"{API}/agents/assistant/", {"provider_kind": "gemini"}, format="json")

    assert response.status_code == 400
    assert list(error_of(response)["fields"]) == ["credential"]
    world_a.agent.refresh_from_db()
    assert world_a.agent.provider_kind == "openai"


def test_agent_slug_cannot_be_changed(api_a: APIClient, world_a: TenantWorld) -> None:
    response = api_a.patch(f"{API}/agents/assistant/", {"slug": "other"}, format="json")

    assert response.status_code == 400
    assert error_of(response)["fields"] == {"slug": ["Unknown field."]}
    assert Agent.objects.filter(tenant=world_a.tenant, slug="assistant").exists()


def test_agent_delete_removes_it_and_clears_the_rooms_default(
    api_a: APIClient, world_a: TenantWorld
) -> None:
    response = api_a.delete(f"{API}/agents/assistant/")

    assert response.status_code == 204
    assert not Agent.objects.filter(pk=world_a.agent.pk).exists()
    world_a.room.refresh_from_db()
    assert world_a.room.default_agent is None


# --- tools -----------------------------------------------------------------------------------


def test_tools_list_and_retrieve(api_a: APIClient, world_a: TenantWorld) -> None:
    _only_tool(world_a, "lookup")

    results = _results(api_a.get(f"{API}/tools/"))
    detail = api_a.get(f"{API}/tools/lookup/")

    assert [tool["name"] for tool in results] == ["get_weather", "lookup"]
    assert detail.status_code == 200
    assert detail.json()["handler"] == "tests.fixtures.tools.lookup_order"
    assert detail.json()["secret_hint"] == ""
    assert "secret" not in detail.json()
    assert set(detail.json()) == {
        "name",
        "description",
        "parameters",
        "handler_kind",
        "handler",
        "execution",
        "timeout_seconds",
        "on_barge_in",
        "progress_message",
        "progress_delay_seconds",
        "sample_arguments",
        "enabled",
        "secret_hint",
        "created_at",
        "updated_at",
    }


def test_tools_filter_by_handler_kind(api_a: APIClient, world_a: TenantWorld) -> None:
    _webhook_tool(world_a)

    webhooks = _results(api_a.get(f"{API}/tools/", {"handler_kind": "webhook"}))

    assert [tool["name"] for tool in webhooks] == ["hook"]


def test_tool_create_python_handler(api_a: APIClient, world_a: TenantWorld) -> None:
    response = api_a.post(
        f"{API}/tools/",
        {
            "name": "lookup_order",
            "description": "Find an order",
            "handler": "tests.fixtures.tools.lookup_order",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
            "execution": "celery",
            "progress_message": "Let me check.",
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "lookup_order"
    assert body["handler_kind"] == "python"
    assert body["execution"] == "celery"
    tool = Tool.objects.get(tenant=world_a.tenant, name="lookup_order")
    assert tool.progress_message == "Let me check."


def test_tool_create_defaults_parameters_to_an_empty_object(
    api_a: APIClient, world_a: TenantWorld
) -> None:
    response = api_a.post(
        f"{API}/tools/",
        {"name": "ping", "handler": "tests.fixtures.tools.lookup_order"},
        format="json",
    )

    assert response.status_code == 201
    assert response.json()["parameters"] == {"type": "object", "properties": {}}


def test_tool_create_webhook_without_secret_names_secret(
    api_a: APIClient, world_a: TenantWorld
) -> None:
    response = api_a.post(
        f"{API}/tools/",
        {"name": "hook", "handler_kind": "webhook", "handler": "https://hooks.example.com/x"},
        format="json",
    )

    assert response.status_code == 400
    assert list(error_of(response)["fields"]) == ["secret"]
    assert not Tool.objects.filter(name="hook").exists()


def test_tool_create_webhook_stores_the_secret_encrypted_and_never_returns_it(
    api_a: APIClient, world_a: TenantWorld
) -> None:
    response = api_a.post(
        f"{API}/tools/",
        {
            "name": "hook",
            "handler_kind": "webhook",
            "handler": "https://hooks.example.com/orders",
            "secret": WEBHOOK_SECRET,
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    assert WEBHOOK_SECRET not in response.content.decode()
    assert "secret" not in response.json()
    tool = Tool.objects.get(tenant=world_a.tenant, name="hook")
    assert response.json()["secret_hint"] == tool.secret_hint == "whs…ter2"
    assert tool.encrypted_secret
    assert WEBHOOK_SECRET not in tool.encrypted_secret
    assert voice_services.tool_reveal_secret(tool) == WEBHOOK_SECRET


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("short", "Use a signing secret of at least 16 characters."),
        ("has whitespace in it, long enough", "The secret is too long or contains whitespace."),
    ],
)
def test_tool_secret_is_checked_by_the_service_rules(
    api_a: APIClient, world_a: TenantWorld, secret: str, message: str
) -> None:
    response = api_a.post(
        f"{API}/tools/",
        {
            "name": "hook",
            "handler_kind": "webhook",
            "handler": "https://hooks.example.com/orders",
            "secret": secret,
        },
        format="json",
    )

    assert response.status_code == 400
    assert error_of(response)["fields"] == {"secret": [message]}
    assert not Tool.objects.filter(name="hook").exists()


def test_tool_validation_errors_name_their_fields(api_a: APIClient, world_a: TenantWorld) -> None:
    response = api_a.post(
        f"{API}/tools/",
        {
            "name": "sneaky",
            "handler": "os.system",
            "parameters": {"type": "array"},
        },
        format="json",
    )

    assert response.status_code == 400
    fields = error_of(response)["fields"]
    assert sorted(fields) == ["handler", "parameters"]
    assert "ROOMVOICE_TOOL_HANDLER_ALLOWLIST" in fields["handler"][0]
    assert not Tool.objects.filter(name="sneaky").exists()


def test_tool_bad_name_and_duplicate_name(api_a: APIClient, world_a: TenantWorld) -> None:
    bad = api_a.post(
        f"{API}/tools/", {"name": "9 lives", "handler": "tests.fixtures.tools.huge"}, format="json"
    )
    duplicate = api_a.post(
        f"{API}/tools/",
        {"name": "get_weather", "handler": "tests.fixtures.tools.huge"},
        format="json",
    )

    assert bad.status_code == 400
    assert list(error_of(bad)["fields"]) == ["name"]
    assert duplicate.status_code == 400
    assert error_of(duplicate)["fields"] == {
        "name": ["The tenant already has a tool with this name."]
    }
    assert Tool.objects.filter(tenant=world_a.tenant).count() == 1


def test_tool_partial_update_replaces_the_secret(api_a: APIClient, world_a: TenantWorld) -> None:
    tool = _webhook_tool(world_a)
    new_secret = "whsec-ROTATED-0123456789abcdef"

    response = api_a.patch(
        f"{API}/tools/hook/", {"secret": new_secret, "timeout_seconds": 3}, format="json"
    )

    assert response.status_code == 200, response.content
    assert new_secret not in response.content.decode()
    tool.refresh_from_db()
    assert voice_services.tool_reveal_secret(tool) == new_secret
    assert response.json()["secret_hint"] == tool.secret_hint == "whs…cdef"
    assert tool.timeout_seconds == 3


def test_tool_partial_update_without_secret_keeps_it(
    api_a: APIClient, world_a: TenantWorld
) -> None:
    tool = _webhook_tool(world_a)

    response = api_a.patch(f"{API}/tools/hook/", {"description": "Orders"}, format="json")

    assert response.status_code == 200
    tool.refresh_from_db()
    assert tool.description == "Orders"
    assert voice_services.tool_reveal_secret(tool) == WEBHOOK_SECRET


def test_tool_switching_to_webhook_needs_a_secret(api_a: APIClient, world_a: TenantWorld) -> None:
    response = api_a.patch(
        f"{API}/tools/get_weather/",
        {"handler_kind": "webhook", "handler": "https://hooks.example.com/weather"},
        format="json",
    )

    assert response.status_code == 400
    assert list(error_of(response)["fields"]) == ["secret"]
    world_a.tool.refresh_from_db()
    assert world_a.tool.handler_kind == "python"


def test_tool_name_cannot_be_changed(api_a: APIClient, world_a: TenantWorld) -> None:
    response = api_a.patch(f"{API}/tools/get_weather/", {"name": "other"}, format="json")

    assert response.status_code == 400
    assert error_of(response)["fields"] == {"name": ["Unknown field."]}


def test_tool_delete_removes_it_from_agents(api_a: APIClient, world_a: TenantWorld) -> None:
    response = api_a.delete(f"{API}/tools/get_weather/")

    assert response.status_code == 204
    assert not Tool.objects.filter(pk=world_a.tool.pk).exists()
    assert list(world_a.agent.tools.all()) == []


def test_tool_test_runs_the_handler(api_a: APIClient, world_a: TenantWorld) -> None:
    _only_tool(world_a, "lookup")

    response = api_a.post(
        f"{API}/tools/lookup/test/", {"arguments": {"order_id": "A-17"}}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"status", "result", "duration_ms"}
    assert body["status"] == "succeeded"
    assert json.loads(body["result"]) == {"order_id": "A-17", "status": "shipped"}
    assert body["duration_ms"] >= 0


def test_tool_test_without_arguments_uses_the_sample_arguments(
    api_a: APIClient, world_a: TenantWorld
) -> None:
    _only_tool(world_a, "lookup")

    response = api_a.post(f"{API}/tools/lookup/test/", {}, format="json")

    assert response.status_code == 200
    assert json.loads(response.json()["result"])["order_id"] == "SAMPLE-1"


def test_tool_test_checks_arguments_against_the_parameters(
    api_a: APIClient, world_a: TenantWorld
) -> None:
    _only_tool(world_a, "lookup")

    wrong_type = api_a.post(
        f"{API}/tools/lookup/test/", {"arguments": {"order_id": 5}}, format="json"
    )
    missing = api_a.post(f"{API}/tools/lookup/test/", {"arguments": {}}, format="json")
    not_object = api_a.post(f"{API}/tools/lookup/test/", {"arguments": [1]}, format="json")

    assert wrong_type.status_code == 400
    assert error_of(wrong_type)["fields"] == {"arguments": ["order_id: 5 is not of type 'string'"]}
    assert missing.status_code == 400
    assert error_of(missing)["fields"] == {
        "arguments": ["(top level): 'order_id' is a required property"]
    }
    assert not_object.status_code == 400
    assert list(error_of(not_object)["fields"]) == ["arguments"]


def test_tool_test_failure_shows_no_internals(api_a: APIClient, world_a: TenantWorld) -> None:
    voice_services.tool_create(
        tenant=world_a.tenant, name="boom", handler="tests.fixtures.tools.explode"
    )

    response = api_a.post(f"{API}/tools/boom/test/", {"arguments": {}}, format="json")

    assert response.status_code == 200
    assert response.json()["status"] == "failed"
    assert json.loads(response.json()["result"]) == {"error": "Tool 'boom' failed (RuntimeError)"}
    assert "hunter2" not in response.content.decode()


def test_tool_test_calls_a_webhook_signed_with_its_secret(
    api_a: APIClient, world_a: TenantWorld, settings: Any
) -> None:
    settings.ROOMVOICE_TOOL_WEBHOOK_ALLOW_PRIVATE = True  # the receiver is on 127.0.0.1
    receiver = SignedReceiver(WEBHOOK_SECRET, {"status": "shipped"})
    try:
        voice_services.tool_create(
            tenant=world_a.tenant,
            name="hook",
            handler=receiver.url,
            handler_kind="webhook",
            secret=WEBHOOK_SECRET,
        )
        response = api_a.post(
            f"{API}/tools/hook/test/", {"arguments": {"order_id": "A-1"}}, format="json"
        )
    finally:
        receiver.close()

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "succeeded"
    assert json.loads(response.json()["result"]) == {"status": "shipped"}
    assert receiver.requests == [
        ({"tool": "hook", "call_id": "admin-test", "arguments": {"order_id": "A-1"}}, True)
    ]
    assert WEBHOOK_SECRET not in response.content.decode()


def test_tool_test_retried_with_the_same_idempotency_key_runs_once(
    api_a: APIClient, world_a: TenantWorld, settings: Any
) -> None:
    settings.ROOMVOICE_TOOL_WEBHOOK_ALLOW_PRIVATE = True
    receiver = SignedReceiver(WEBHOOK_SECRET)
    try:
        voice_services.tool_create(
            tenant=world_a.tenant,
            name="hook",
            handler=receiver.url,
            handler_kind="webhook",
            secret=WEBHOOK_SECRET,
        )
        body = {"arguments": {"order_id": "A-1"}}
        first = api_a.post(f"{API}/tools/hook/test/", body, format="json", HTTP_IDEMPOTENCY_KEY="t")
        again = api_a.post(f"{API}/tools/hook/test/", body, format="json", HTTP_IDEMPOTENCY_KEY="t")
    finally:
        receiver.close()

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert len(receiver.requests) == 1


def test_tool_test_rejects_unknown_body_fields(api_a: APIClient, world_a: TenantWorld) -> None:
    response = api_a.post(f"{API}/tools/get_weather/test/", {"args": {"city": "x"}}, format="json")

    assert response.status_code == 400
    assert error_of(response)["fields"] == {"args": ["Unknown field."]}


# --- credentials -----------------------------------------------------------------------------

CREDENTIAL_FIELDS = {
    "id",
    "name",
    "kind",
    "base_url",
    "secret_hint",
    "created_at",
    "secret_updated_at",
}


def test_credentials_list_is_masked(api_a: APIClient, world_a: TenantWorld) -> None:
    response = api_a.get(f"{API}/credentials/")

    results = _results(response)
    assert [credential["name"] for credential in results] == ["openai-main"]
    assert set(results[0]) == CREDENTIAL_FIELDS
    assert results[0]["id"] == str(world_a.credential.pk)
    assert results[0]["kind"] == "openai"
    assert results[0]["secret_hint"] == world_a.credential.secret_hint
    assert "sk-tenant-a-0123456789abcdefXYZ" not in response.content.decode()


def test_credential_retrieve_is_masked(api_a: APIClient, world_a: TenantWorld) -> None:
    response = api_a.get(f"{API}/credentials/{world_a.credential.pk}/")

    assert response.status_code == 200
    assert set(response.json()) == CREDENTIAL_FIELDS
    assert "sk-tenant-a-0123456789abcdefXYZ" not in response.content.decode()


def test_credential_create_encrypts_the_secret_and_never_returns_it(
    api_a: APIClient, world_a: TenantWorld
) -> None:
    response = api_a.post(
        f"{API}/credentials/",
        {
            "name": "gemini-main",
            "kind": "gemini",
            "secret": NEW_KEY,
            "base_url": "wss://gateway.example.com/v1",
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    assert NEW_KEY not in response.content.decode()
    body = response.json()
    assert set(body) == CREDENTIAL_FIELDS
    credential = ProviderCredential.objects.get(tenant=world_a.tenant, name="gemini-main")
    assert body["id"] == str(credential.pk)
    assert body["secret_hint"] == credential.secret_hint == "sk-…WKEY"
    assert body["base_url"] == "wss://gateway.example.com/v1"
    assert NEW_KEY not in credential.encrypted_secret
    assert provider_services.credential_reveal(tenant=world_a.tenant, credential=credential) == (
        NEW_KEY
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "kind": "openai", "secret": "has a space"}, "secret"),
        ({"name": "x", "kind": "openai"}, "secret"),
        ({"name": "x", "kind": "nope", "secret": NEW_KEY}, "kind"),
        ({"name": "x", "kind": "openai", "secret": NEW_KEY, "base_url": "ws://remote"}, "base_url"),
        ({"name": "openai-main", "kind": "openai", "secret": NEW_KEY}, "name"),
    ],
)
def test_credential_validation_errors_name_their_field(
    api_a: APIClient, world_a: TenantWorld, body: dict[str, Any], field: str
) -> None:
    response = api_a.post(f"{API}/credentials/", body, format="json")

    assert response.status_code == 400
    assert list(error_of(response)["fields"]) == [field]
    assert NEW_KEY not in response.content.decode()
    assert ProviderCredential.objects.filter(tenant=world_a.tenant).count() == 1


def test_credential_rotate_replaces_the_secret(api_a: APIClient, world_a: TenantWorld) -> None:
    before = world_a.credential.secret_updated_at

    response = api_a.post(
        f"{API}/credentials/{world_a.credential.pk}/rotate/", {"secret": NEW_KEY}, format="json"
    )

    assert response.status_code == 200, response.content
    assert NEW_KEY not in response.content.decode()
    assert response.json()["secret_hint"] == "sk-…WKEY"
    credential = ProviderCredential.objects.get(pk=world_a.credential.pk)
    assert credential.secret_updated_at is not None and before is not None
    assert credential.secret_updated_at > before
    assert provider_services.credential_reveal(tenant=world_a.tenant, credential=credential) == (
        NEW_KEY
    )


def test_credential_rotate_replayed_with_the_same_idempotency_key(
    api_a: APIClient, world_a: TenantWorld
) -> None:
    url = f"{API}/credentials/{world_a.credential.pk}/rotate/"

    first = api_a.post(url, {"secret": NEW_KEY}, format="json", HTTP_IDEMPOTENCY_KEY="r")
    stored = ProviderCredential.objects.get(pk=world_a.credential.pk).encrypted_secret
    again = api_a.post(url, {"secret": NEW_KEY}, format="json", HTTP_IDEMPOTENCY_KEY="r")

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    # Not encrypted a second time (Fernet makes new ciphertext on every encryption).
    assert ProviderCredential.objects.get(pk=world_a.credential.pk).encrypted_secret == stored
    assert NEW_KEY not in json.dumps(IdempotencyRecord.objects.get(key="r").response_body)


def test_credential_rotate_checks_the_secret(api_a: APIClient, world_a: TenantWorld) -> None:
    empty = api_a.post(
        f"{API}/credentials/{world_a.credential.pk}/rotate/", {"secret": ""}, format="json"
    )
    unknown = api_a.post(
        f"{API}/credentials/{world_a.credential.pk}/rotate/",
        {"secret": NEW_KEY, "name": "x"},
        format="json",
    )

    assert empty.status_code == 400
    assert list(error_of(empty)["fields"]) == ["secret"]
    assert unknown.status_code == 400
    assert error_of(unknown)["fields"] == {"name": ["Unknown field."]}
    credential = ProviderCredential.objects.get(pk=world_a.credential.pk)
    assert credential.encrypted_secret == world_a.credential.encrypted_secret


def test_credential_cannot_be_edited_in_place(api_a: APIClient, world_a: TenantWorld) -> None:
    patch = api_a.patch(
        f"{API}/credentials/{world_a.credential.pk}/", {"secret": NEW_KEY}, format="json"
    )
    put = api_a.put(
        f"{API}/credentials/{world_a.credential.pk}/",
        {"name": "n", "kind": "openai", "secret": NEW_KEY},
        format="json",
    )

    assert patch.status_code == 405
    assert put.status_code == 405
    credential = ProviderCredential.objects.get(pk=world_a.credential.pk)
    assert credential.encrypted_secret == world_a.credential.encrypted_secret


def test_credential_delete_unused(api_a: APIClient, world_a: TenantWorld) -> None:
    spare = provider_services.credential_create(
        tenant=world_a.tenant, name="spare", kind="xai", secret=NEW_KEY
    )

    response = api_a.delete(f"{API}/credentials/{spare.pk}/")

    assert response.status_code == 204
    assert not ProviderCredential.objects.filter(pk=spare.pk).exists()


def test_credential_used_by_an_agent_cannot_be_deleted(
    api_a: APIClient, world_a: TenantWorld
) -> None:
    response = api_a.delete(f"{API}/credentials/{world_a.credential.pk}/")

    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "conflict"
    assert error["message"] == (
        "Agents use this credential (assistant): point them at another credential or delete "
        "them first."
    )
    assert ProviderCredential.objects.filter(pk=world_a.credential.pk).exists()


# --- tool calls ------------------------------------------------------------------------------


@pytest.fixture
def calls_a(world_a: TenantWorld) -> dict[str, ToolCall]:
    session = _session(world_a)
    other_session = _session(world_a)
    return {
        "old": _tool_call(
            world_a, session, "c1", tool=world_a.tool, minutes_ago=3, finish="succeeded"
        ),
        "mid": _tool_call(world_a, session, "c2", tool=None, minutes_ago=2, finish="failed"),
        "new": _tool_call(world_a, other_session, "c3", tool=world_a.tool, minutes_ago=1),
    }


def test_tool_calls_list_newest_first(
    api_a: APIClient, world_a: TenantWorld, calls_a: dict[str, ToolCall]
) -> None:
    results = _results(api_a.get(f"{API}/tool-calls/"))

    assert [call["call_id"] for call in results] == ["c3", "c2", "c1"]
    old = results[2]
    assert set(old) == {
        "id",
        "session",
        "tool",
        "call_id",
        "name",
        "arguments",
        "status",
        "execution",
        "task_id",
        "result",
        "error",
        "late_result",
        "late_at",
        "delivered_at",
        "created_at",
        "started_at",
        "finished_at",
        "duration_ms",
    }
    assert old["id"] == str(calls_a["old"].pk)
    assert old["session"] == str(calls_a["old"].session_id)
    assert old["tool"] == "get_weather"
    assert old["status"] == "succeeded"
    assert old["result"] == '{"ok": true}'
    assert old["arguments"] == {"city": "Paris"}
    assert old["duration_ms"] == calls_a["old"].duration_ms
    assert results[1]["tool"] is None
    assert results[0]["duration_ms"] is None


def test_tool_call_retrieve(
    api_a: APIClient, world_a: TenantWorld, calls_a: dict[str, ToolCall]
) -> None:
    response = api_a.get(f"{API}/tool-calls/{calls_a['new'].pk}/")

    assert response.status_code == 200
    assert response.json()["status"] == ToolCallStatus.PENDING
    assert response.json()["finished_at"] is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"tool": "get_weather"}, ["c3", "c1"]),
        ({"status": "failed"}, ["c2"]),
        ({"execution": "inline"}, ["c3", "c2", "c1"]),
        ({"execution": "celery"}, []),
    ],
)
def test_tool_calls_filters(
    api_a: APIClient,
    world_a: TenantWorld,
    calls_a: dict[str, ToolCall],
    query: dict[str, str],
    expected: list[str],
) -> None:
    results = _results(api_a.get(f"{API}/tool-calls/", query))

    assert [call["call_id"] for call in results] == expected


def test_tool_calls_filter_by_session(
    api_a: APIClient, world_a: TenantWorld, calls_a: dict[str, ToolCall]
) -> None:
    results = _results(api_a.get(f"{API}/tool-calls/", {"session": calls_a["old"].session_id}))
    bad = api_a.get(f"{API}/tool-calls/", {"session": "not-a-uuid"})

    assert [call["call_id"] for call in results] == ["c2", "c1"]
    assert bad.status_code == 400
    assert list(error_of(bad)["fields"]) == ["session"]


def test_tool_calls_are_read_only(
    api_a: APIClient, world_a: TenantWorld, calls_a: dict[str, ToolCall]
) -> None:
    post = api_a.post(f"{API}/tool-calls/", {"call_id": "x"}, format="json")
    delete = api_a.delete(f"{API}/tool-calls/{calls_a['old'].pk}/")

    assert post.status_code == 405
    assert delete.status_code == 405
    assert ToolCall.objects.count() == 3


# --- across resources: strictness, scopes, tenants, idempotency, secrets ---------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("agents/", {"slug": "x", "name": "x", "provider_kind": "mock", "colour": "red"}),
        ("tools/", {"name": "x", "handler": "tests.fixtures.tools.huge", "colour": "red"}),
        ("credentials/", {"name": "x", "kind": "openai", "secret": NEW_KEY, "colour": "red"}),
        ("credentials/", {"name": "x", "kind": "openai", "secret": NEW_KEY, "secret_hint": "x"}),
        ("agents/assistant/", {"colour": "red"}),
        ("tools/get_weather/", {"colour": "red"}),
    ],
)
def test_unknown_fields_are_rejected(
    api_a: APIClient, world_a: TenantWorld, path: str, body: dict[str, Any]
) -> None:
    method = api_a.patch if path.endswith("/") and path.count("/") == 2 else api_a.post
    before = (Agent.objects.count(), Tool.objects.count(), ProviderCredential.objects.count())

    response = method(f"{API}/{path}", body, format="json")

    assert response.status_code == 400
    unknown = next(name for name in body if name in ("colour", "secret_hint"))
    assert error_of(response)["fields"] == {unknown: ["Unknown field."]}
    after = (Agent.objects.count(), Tool.objects.count(), ProviderCredential.objects.count())
    assert after == before
    world_a.agent.refresh_from_db()
    assert world_a.agent.name == "Assistant tenant-a"


def _write_requests(world: TenantWorld) -> list[tuple[str, str, dict[str, Any]]]:
    credential = world.credential.pk
    return [
        ("post", "agents/", {"slug": "new", "name": "New", "provider_kind": "mock"}),
        ("patch", "agents/assistant/", {"name": "Changed"}),
        ("delete", "agents/assistant/", {}),
        ("post", "tools/", {"name": "new", "handler": "tests.fixtures.tools.huge"}),
        ("patch", "tools/get_weather/", {"description": "Changed"}),
        ("delete", "tools/get_weather/", {}),
        ("post", "tools/get_weather/test/", {"arguments": {"city": "Paris"}}),
        ("post", "credentials/", {"name": "new", "kind": "openai", "secret": NEW_KEY}),
        ("post", f"credentials/{credential}/rotate/", {"secret": NEW_KEY}),
        ("delete", f"credentials/{credential}/", {}),
    ]


def _snapshot(world: TenantWorld) -> tuple[Any, ...]:
    agent = Agent.objects.filter(pk=world.agent.pk).values_list("name", flat=True).first()
    tool = Tool.objects.filter(pk=world.tool.pk).values_list("description", flat=True).first()
    secret = (
        ProviderCredential.objects.filter(pk=world.credential.pk)
        .values_list("encrypted_secret", flat=True)
        .first()
    )
    return (
        agent,
        tool,
        secret,
        Agent.objects.count(),
        Tool.objects.count(),
        ProviderCredential.objects.count(),
    )


def test_read_scoped_key_cannot_write(api_a_read: APIClient, world_a: TenantWorld) -> None:
    before = _snapshot(world_a)

    for method, path, body in _write_requests(world_a):
        response = getattr(api_a_read, method)(f"{API}/{path}", body, format="json")
        assert response.status_code == 403, (method, path)
        assert error_of(response)["code"] == "permission_denied"

    assert _snapshot(world_a) == before


def test_read_scoped_key_reads_everything(
    api_a_read: APIClient, world_a: TenantWorld, calls_a: dict[str, ToolCall]
) -> None:
    for path in ("agents/", "tools/", "credentials/", "tool-calls/"):
        assert len(_results(api_a_read.get(f"{API}/{path}"))) >= 1
    assert api_a_read.get(f"{API}/agents/assistant/").status_code == 200


def test_member_may_read_but_not_write(member_a: User, world_a: TenantWorld) -> None:
    client = APIClient()
    assert client.login(username=member_a.username, password=PASSWORD)

    read = client.get(f"{API}/agents/")
    write = client.post(
        f"{API}/agents/", {"slug": "new", "name": "New", "provider_kind": "mock"}, format="json"
    )

    assert read.status_code == 200
    assert write.status_code == 403
    assert not Agent.objects.filter(slug="new").exists()


def test_owner_may_write(owner_a: User, world_a: TenantWorld) -> None:
    client = APIClient()
    assert client.login(username=owner_a.username, password=PASSWORD)

    response = client.post(
        f"{API}/agents/", {"slug": "new", "name": "New", "provider_kind": "mock"}, format="json"
    )

    assert response.status_code == 201
    assert Agent.objects.get(slug="new").tenant == world_a.tenant


def test_other_tenant_sees_nothing_of_tenant_a(
    api_b: APIClient, world_a: TenantWorld, world_b: TenantWorld, calls_a: dict[str, ToolCall]
) -> None:
    _only_agent(world_a)
    _only_tool(world_a)
    a_call_ids = {str(call.pk) for call in calls_a.values()}

    agents = {agent["slug"] for agent in _results(api_b.get(f"{API}/agents/"))}
    tools = {tool["name"] for tool in _results(api_b.get(f"{API}/tools/"))}
    credentials = {item["id"] for item in _results(api_b.get(f"{API}/credentials/"))}
    calls = _results(api_b.get(f"{API}/tool-calls/"))
    by_tool = _results(api_b.get(f"{API}/tool-calls/", {"tool": "get_weather"}))
    by_session = _results(api_b.get(f"{API}/tool-calls/", {"session": calls_a["old"].session_id}))

    assert agents == {"assistant"}
    assert tools == {"get_weather"}
    assert credentials == {str(world_b.credential.pk)}
    assert calls == by_tool == by_session == []
    assert not a_call_ids & {call["id"] for call in calls}


def test_other_tenant_gets_404_for_tenant_a_objects(
    api_b: APIClient, world_a: TenantWorld, world_b: TenantWorld, calls_a: dict[str, ToolCall]
) -> None:
    _only_agent(world_a)
    _only_tool(world_a)
    credential = world_a.credential.pk
    before = _snapshot(world_a)
    requests = [
        ("get", "agents/only-a/", {}),
        ("patch", "agents/only-a/", {"name": "Stolen"}),
        ("delete", "agents/only-a/", {}),
        ("get", "tools/only_a/", {}),
        ("patch", "tools/only_a/", {"description": "Stolen"}),
        ("delete", "tools/only_a/", {}),
        ("post", "tools/only_a/test/", {"arguments": {"order_id": "1"}}),
        ("get", f"credentials/{credential}/", {}),
        ("post", f"credentials/{credential}/rotate/", {"secret": NEW_KEY}),
        ("delete", f"credentials/{credential}/", {}),
        ("get", f"tool-calls/{calls_a['old'].pk}/", {}),
    ]

    for method, path, body in requests:
        response = getattr(api_b, method)(f"{API}/{path}", body, format="json")
        assert response.status_code == 404, (method, path)
        assert error_of(response)["code"] == "not_found"

    assert _snapshot(world_a) == before
    assert Agent.objects.get(tenant=world_a.tenant, slug="only-a").name == "Only A"
    assert Tool.objects.filter(tenant=world_a.tenant, name="only_a").exists()


def test_same_slug_in_another_tenant_is_its_own_agent(
    api_b: APIClient, world_a: TenantWorld, world_b: TenantWorld
) -> None:
    response = api_b.patch(f"{API}/agents/assistant/", {"name": "B's"}, format="json")

    assert response.status_code == 200
    world_a.agent.refresh_from_db()
    world_b.agent.refresh_from_db()
    assert world_a.agent.name == "Assistant tenant-a"
    assert world_b.agent.name == "B's"


@pytest.mark.parametrize(
    ("path", "body", "model"),
    [
        ("agents/", {"slug": "twice", "name": "Twice", "provider_kind": "mock"}, Agent),
        ("tools/", {"name": "twice", "handler": "tests.fixtures.tools.huge"}, Tool),
        (
            "credentials/",
            {"name": "twice", "kind": "xai", "secret": NEW_KEY},
            ProviderCredential,
        ),
    ],
)
def test_idempotent_create_replays_the_first_answer(
    api_a: APIClient, world_a: TenantWorld, path: str, body: dict[str, Any], model: Any
) -> None:
    before = model.objects.count()

    first = api_a.post(f"{API}/{path}", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = api_a.post(f"{API}/{path}", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    different = api_a.post(
        f"{API}/{path}", {**body, "name": "other"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert different.status_code == 422
    assert model.objects.count() == before + 1
    assert NEW_KEY not in again.content.decode()
    stored = IdempotencyRecord.objects.get(key="k-1")
    assert NEW_KEY not in json.dumps(stored.response_body)


def test_no_response_shows_a_secret(
    api_a: APIClient, world_a: TenantWorld, calls_a: dict[str, ToolCall]
) -> None:
    _webhook_tool(world_a)
    plaintexts = [WEBHOOK_SECRET, "sk-tenant-a-0123456789abcdefXYZ"]
    encrypted = [
        world_a.credential.encrypted_secret,
        Tool.objects.get(name="hook", tenant=world_a.tenant).encrypted_secret,
    ]
    paths = [
        "agents/",
        "agents/assistant/",
        "tools/",
        "tools/hook/",
        "credentials/",
        f"credentials/{world_a.credential.pk}/",
        "tool-calls/",
    ]

    bodies = [api_a.get(f"{API}/{path}").content.decode() for path in paths]
    bodies.append(
        api_a.patch(f"{API}/tools/hook/", {"description": "d"}, format="json").content.decode()
    )

    for body in bodies:
        for secret in plaintexts + encrypted:
            assert secret not in body
        assert "encrypted_secret" not in body


def test_anonymous_caller_is_refused(db: None) -> None:
    response = APIClient().get(f"{API}/agents/")

    assert response.status_code == 401
    assert error_of(response)["code"] == "not_authenticated"
