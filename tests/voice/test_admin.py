"""The voice admin: agents and tools are validated like the API and only take their own
tenant's tools and credentials; sessions and tool calls are read-only history. Tenant isolation
and roles across every admin model are in tests/test_admin_isolation.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from rooms.models import User
from tests.fixtures.admin import (
    INVALID_CHOICE,
    MODEL_CLASSES,
    Side,
    add_url,
    admin_url,
    agent_form,
    change_payload,
    form_errors,
    snapshot,
    tool_form,
)
from voice.models import Agent

READ_ONLY = ["voicesession", "toolcall"]


@pytest.fixture
def side_apps() -> tuple[str, ...]:
    return ("voice",)


# --- Agents and their tenant's tools and credentials ----------------------------------------


@pytest.mark.parametrize("view", ["add", "change"])
def test_owner_cannot_give_an_agent_other_tenants_tool_or_credential(
    client: Client, a: Side, b: Side, view: str
) -> None:
    agent = a.world.agent
    before, count = snapshot(agent), Agent.objects.count()
    url = add_url("agent") if view == "add" else admin_url(agent, "change")
    client.force_login(a.owner)
    response = client.post(
        url,
        agent_form(a.world, slug="second" if view == "add" else "assistant")
        | {"tools": [a.world.tool.pk, b.world.tool.pk], "credential": b.world.credential.pk},
    )
    errors = form_errors(response)
    assert errors["credential"] == [INVALID_CHOICE]
    assert errors["tools"] == [
        f"Select a valid choice. {b.world.tool.pk} is not one of the available choices."
    ]
    assert (snapshot(agent), Agent.objects.count()) == (before, count)


@pytest.mark.parametrize("view", ["add", "change"])
@pytest.mark.parametrize(
    ("field", "error"),
    [
        ("tools", "These tools belong to another tenant: get_weather"),
        ("credential", "The credential belongs to another tenant."),
    ],
)
def test_superuser_cannot_give_an_agent_other_tenants_tool_or_credential(
    client: Client, a: Side, b: Side, superuser: User, view: str, field: str, error: str
) -> None:
    agent = a.world.agent
    before, count = snapshot(agent), Agent.objects.count()
    foreign = {"tools": [b.world.tool.pk], "credential": b.world.credential.pk}[field]
    url = add_url("agent") if view == "add" else admin_url(agent, "change")
    client.force_login(superuser)
    response = client.post(
        url,
        agent_form(a.world, slug="second" if view == "add" else "assistant", **{field: foreign}),
    )
    assert response.status_code == 200
    assert form_errors(response)[field] == [error]
    assert (snapshot(agent), Agent.objects.count()) == (before, count)


# --- Validation -----------------------------------------------------------------------------


def test_agent_with_out_of_range_provider_config_is_refused(client: Client, a: Side) -> None:
    agent = a.world.agent
    before = snapshot(agent)
    config = {"turn_detection": {"type": "server_vad", "threshold": 5}}
    client.force_login(a.owner)
    response = client.post(
        admin_url(agent, "change"), agent_form(a.world, provider_config=json.dumps(config))
    )
    assert response.status_code == 200
    assert form_errors(response) == {"provider_config": ["turn_detection.threshold: must be <= 1"]}
    assert snapshot(agent) == before


def test_agent_with_valid_provider_config_is_saved(client: Client, a: Side) -> None:
    config = {"turn_detection": {"type": "server_vad", "threshold": 0.6}}
    client.force_login(a.owner)
    response = client.post(
        admin_url(a.world.agent, "change"), agent_form(a.world, provider_config=json.dumps(config))
    )
    assert response.status_code == 302
    assert Agent.objects.get(pk=a.world.agent.pk).provider_config == config


def test_tool_handler_outside_the_operators_allowlist_is_refused(client: Client, a: Side) -> None:
    tool = a.world.tool
    before = snapshot(tool)
    client.force_login(a.owner)
    response = client.post(admin_url(tool, "change"), tool_form(a.world, handler="os.system"))
    assert response.status_code == 200
    assert form_errors(response) == {
        "handler": [
            "'os.system' is not an allowed tool handler: the server operator lists the "
            "importable handlers in ROOMVOICE_TOOL_HANDLER_ALLOWLIST."
        ]
    }
    assert snapshot(tool) == before


@pytest.mark.parametrize(
    ("parameters", "error"),
    [
        ({"type": "string"}, 'Parameters must describe an object: set "type": "object".'),
        (
            {"type": "object", "properties": 3},
            "Not a valid JSON Schema at properties: 3 is not of type 'object'",
        ),
        (
            {"type": "object", "required": ["city"]},
            '"required" names \'city\', which is not in "properties".',
        ),
    ],
)
def test_tool_parameters_that_are_not_an_object_schema_are_refused(
    client: Client, a: Side, parameters: dict[str, Any], error: str
) -> None:
    tool = a.world.tool
    before = snapshot(tool)
    client.force_login(a.owner)
    response = client.post(
        admin_url(tool, "change"), tool_form(a.world, parameters=json.dumps(parameters))
    )
    assert response.status_code == 200
    assert form_errors(response) == {"parameters": [error]}
    assert snapshot(tool) == before


# --- Read-only history ----------------------------------------------------------------------


@pytest.mark.parametrize("model", READ_ONLY)
def test_history_is_read_only_for_owners(client: Client, a: Side, model: str) -> None:
    target = a.objects[model][0]
    before = snapshot(target)
    client.force_login(a.owner)
    add = client.get(add_url(model))
    change_page = client.get(admin_url(target, "change"))
    change = client.post(admin_url(target, "change"), change_payload(model, a))
    delete = client.post(admin_url(target, "delete"), {"post": "yes"})
    assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)
    assert change_page.status_code == 200
    assert b'name="_save"' not in change_page.content
    assert snapshot(target) == before


@pytest.mark.parametrize("model", READ_ONLY)
def test_history_stays_read_only_for_an_owner_granted_every_model_permission(
    client: Client, a: Side, model: str
) -> None:
    target = a.objects[model][0]
    before = snapshot(target)
    a.owner.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="voice", codename__endswith=model)
    )
    client.force_login(a.owner)
    add = client.get(add_url(model))
    change = client.post(admin_url(target, "change"), change_payload(model, a))
    delete = client.post(admin_url(target, "delete"), {"post": "yes"})
    assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)
    assert snapshot(target) == before


@pytest.mark.parametrize("model", READ_ONLY)
def test_superuser_may_delete_history_but_not_edit_it(
    client: Client, a: Side, superuser: User, model: str
) -> None:
    target = a.objects[model][0]
    client.force_login(superuser)
    add = client.get(add_url(model))
    change = client.post(admin_url(target, "change"), change_payload(model, a))
    delete = client.post(admin_url(target, "delete"), {"post": "yes"})
    assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 302)
    assert not MODEL_CLASSES[model].objects.filter(pk=target.pk).exists()


def test_session_page_shows_its_tool_calls_read_only(client: Client, a: Side) -> None:
    session, call = a.objects["voicesession"][0], a.objects["toolcall"][0]
    client.force_login(a.owner)
    response = client.get(admin_url(session, "change"))
    (inline,) = response.context["inline_admin_formsets"]
    assert [form.original.pk for form in inline] == [call.pk]
    assert inline.has_add_permission is False
    assert inline.has_change_permission is False
