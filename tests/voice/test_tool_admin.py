"""The tool admin: a webhook's signing secret is write-only (stored encrypted, shown masked),
"test this tool" runs a tool once as a session would and shows what the model receives, and
the read-only tool call history filters by tool and by session within the user's tenant.

Webhook tools are tested against a real HTTP server in a thread on 127.0.0.1 that checks each
request's signature with ``voice.tools.webhook.verify``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client, override_settings
from django.urls import reverse
from django.utils.html import escape

from rooms.models import User
from roomvoice.lib.secrets import mask_secret
from tests.fixtures.actors import TenantWorld
from tests.fixtures.admin import (
    add_url,
    admin_url,
    changelist_url,
    form_errors,
    listed,
    message_texts,
    snapshot,
    tool_form,
)
from voice import services
from voice.models import DEFAULT_TOOL_RESULT_MAX_LENGTH, Tool, ToolCall, VoiceSession
from voice.tools.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

SECRET = "whsec-admin-0123456789abcdef"
OTHER_SECRET = "whsec-rotated-9876543210fedcba"
WEBHOOK_URL = "https://hooks.example.com/orders"
ORDER_PARAMETERS = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}},
    "required": ["order_id"],
}
NEEDS_A_SECRET = (
    "A webhook tool needs a signing secret: the webhook uses it to check that requests come "
    "from this server."
)


def trial_url(tool: Tool) -> str:
    """The tool's "test this tool" page."""
    return reverse("admin:voice_tool_test", args=[tool.pk])


def order_tool(world: TenantWorld, handler: str, **fields: Any) -> Tool:
    return services.tool_create(
        tenant=world.tenant,
        name=fields.pop("name", "lookup_order"),
        handler=handler,
        parameters=ORDER_PARAMETERS,
        sample_arguments={"order_id": "A1"},
        **fields,
    )


def webhook_form(world: TenantWorld, **changes: Any) -> dict[str, Any]:
    return (
        tool_form(
            world,
            name="lookup_order",
            handler_kind="webhook",
            handler=WEBHOOK_URL,
            parameters=json.dumps(ORDER_PARAMETERS),
        )
        | changes
    )


def run(client: Client, tool: Tool, arguments: str) -> Any:
    return client.post(trial_url(tool), {"arguments": arguments})


# --- The write-only secret ------------------------------------------------------------------


def test_webhook_tool_added_with_a_secret_stores_it_encrypted_and_shows_only_its_hint(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    client.force_login(owner_a)
    response = client.post(add_url("tool"), webhook_form(world_a, secret=SECRET))
    assert response.status_code == 302
    tool = Tool.objects.get(tenant=world_a.tenant, name="lookup_order")
    assert tool.handler_kind == "webhook"
    assert SECRET not in tool.encrypted_secret
    assert services.tool_reveal_secret(tool) == SECRET
    assert tool.secret_hint == mask_secret(SECRET) == "whs…cdef"
    page = client.get(admin_url(tool, "change"))
    assert page.status_code == 200
    assert SECRET not in page.content.decode()
    assert "whs…cdef" in page.content.decode()
    assert [SECRET in entry.change_message for entry in LogEntry.objects.all()] == [False]


def test_editing_a_webhook_tool_with_a_blank_secret_keeps_the_stored_one(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    tool = order_tool(world_a, WEBHOOK_URL, handler_kind="webhook", secret=SECRET)
    stored = tool.encrypted_secret
    client.force_login(owner_a)
    response = client.post(
        admin_url(tool, "change"), webhook_form(world_a, description="Renamed", secret="")
    )
    assert response.status_code == 302
    tool.refresh_from_db()
    assert tool.description == "Renamed"
    assert tool.encrypted_secret == stored
    assert services.tool_reveal_secret(tool) == SECRET


def test_editing_a_webhook_tool_with_a_new_secret_replaces_it(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    tool = order_tool(world_a, WEBHOOK_URL, handler_kind="webhook", secret=SECRET)
    client.force_login(owner_a)
    response = client.post(admin_url(tool, "change"), webhook_form(world_a, secret=OTHER_SECRET))
    assert response.status_code == 302
    tool.refresh_from_db()
    assert services.tool_reveal_secret(tool) == OTHER_SECRET
    assert tool.secret_hint == mask_secret(OTHER_SECRET)
    assert OTHER_SECRET not in client.get(admin_url(tool, "change")).content.decode()


def test_webhook_tool_added_without_a_secret_is_a_form_error(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    count = Tool.objects.count()
    client.force_login(owner_a)
    response = client.post(add_url("tool"), webhook_form(world_a, secret=""))
    assert response.status_code == 200
    assert form_errors(response) == {"secret": [NEEDS_A_SECRET]}
    assert Tool.objects.count() == count


def test_python_tool_switched_to_a_webhook_without_a_secret_is_a_form_error(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    tool = world_a.tool
    before = snapshot(tool)
    client.force_login(owner_a)
    response = client.post(
        admin_url(tool, "change"),
        tool_form(world_a, handler_kind="webhook", handler=WEBHOOK_URL),
    )
    assert response.status_code == 200
    assert form_errors(response) == {"secret": [NEEDS_A_SECRET]}
    assert snapshot(tool) == before


@pytest.mark.parametrize(
    ("secret", "error"),
    [
        ("too-short", "Use a signing secret of at least 16 characters."),
        ("has a space in the middle", "The secret is too long or contains whitespace."),
    ],
)
def test_unusable_secret_is_a_form_error_and_nothing_is_stored(
    client: Client, world_a: TenantWorld, owner_a: User, secret: str, error: str
) -> None:
    tool = order_tool(world_a, WEBHOOK_URL, handler_kind="webhook", secret=SECRET)
    before, count = snapshot(tool), Tool.objects.count()
    client.force_login(owner_a)
    added = client.post(add_url("tool"), webhook_form(world_a, name="other", secret=secret))
    changed = client.post(admin_url(tool, "change"), webhook_form(world_a, secret=secret))
    assert form_errors(added) == {"secret": [error]}
    assert form_errors(changed) == {"secret": [error]}
    assert (snapshot(tool), Tool.objects.count()) == (before, count)
    assert secret not in changed.content.decode()


def test_tool_list_links_to_its_calls(client: Client, world_a: TenantWorld, owner_a: User) -> None:
    tool = world_a.tool
    client.force_login(owner_a)
    response = client.get(changelist_url("tool"))
    link = f"{changelist_url('toolcall')}?tool__id__exact={tool.pk}"
    assert f'<a href="{link}">calls</a>' in response.content.decode()


# --- Test this tool -------------------------------------------------------------------------


def test_test_page_prefills_the_sample_arguments(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    tool = order_tool(world_a, "tests.fixtures.tools.lookup_order")
    client.force_login(owner_a)
    response = client.get(trial_url(tool))
    assert response.status_code == 200
    assert response.context["form"]["arguments"].value() == '{\n  "order_id": "A1"\n}'
    assert response.context["outcome"] is None
    assert "This tool is disabled" not in response.content.decode()


def test_change_page_links_to_the_test_page_for_owners_only(
    client: Client, world_a: TenantWorld, owner_a: User, member_a: User
) -> None:
    tool = world_a.tool
    pages = {}
    for user in (owner_a, member_a):
        client.force_login(user)
        pages[user.username] = client.get(admin_url(tool, "change")).content.decode()
    assert f'href="{trial_url(tool)}"' in pages["owner-a"]
    assert f'href="{trial_url(tool)}"' not in pages["member-a"]


def test_running_a_tool_shows_status_duration_and_the_json_the_model_receives(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    tool = order_tool(world_a, "tests.fixtures.tools.lookup_order")
    client.force_login(owner_a)
    response = run(client, tool, '{"order_id": "A1"}')
    assert response.status_code == 200
    outcome = response.context["outcome"]
    expected = json.dumps({"order_id": "A1", "status": "shipped"})
    assert (outcome.status, outcome.text) == ("succeeded", expected)
    assert outcome.duration_ms >= 0
    html = response.content.decode()
    assert '<div class="readonly" id="trial-status">succeeded</div>' in html
    assert f'<pre id="trial-text">{escape(expected)}</pre>' in html


def test_a_failing_handler_shows_failed_without_the_exception_text(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    tool = order_tool(world_a, "tests.fixtures.tools.explode", name="boom")
    client.force_login(owner_a)
    response = run(client, tool, '{"order_id": "A1"}')
    outcome = response.context["outcome"]
    assert (outcome.status, outcome.text) == (
        "failed",
        json.dumps({"error": "Tool 'boom' failed (RuntimeError)"}),
    )
    assert "hunter2" not in response.content.decode()


def test_a_refusing_handler_shows_its_tool_error_message(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    tool = order_tool(world_a, "tests.fixtures.tools.refuse")
    client.force_login(owner_a)
    response = run(client, tool, '{"order_id": "A1"}')
    outcome = response.context["outcome"]
    expected = json.dumps({"error": "order A1 does not exist"})
    assert (outcome.status, outcome.text) == ("failed", expected)
    assert escape(expected) in response.content.decode()


def test_a_huge_result_is_cut_as_a_session_would_cut_it(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    tool = services.tool_create(
        tenant=world_a.tenant, name="huge", handler="tests.fixtures.tools.huge"
    )
    client.force_login(owner_a)
    response = run(client, tool, '{"size": 100000}')
    outcome = response.context["outcome"]
    assert outcome.status == "succeeded"
    assert len(outcome.text) == DEFAULT_TOOL_RESULT_MAX_LENGTH == 16_384
    assert outcome.text.startswith("x" * 16_306 + "\n")
    assert outcome.text.endswith(
        "[truncated: the result was 100000 characters; only the first 16306 are shown]"
    )


@pytest.mark.parametrize(
    ("arguments", "errors"),
    [
        (
            "{not json",
            [
                "Not valid JSON: Expecting property name enclosed in double quotes: "
                "line 1 column 2 (char 1)"
            ],
        ),
        ('["A1"]', ['The arguments must be a JSON object, e.g. {"city": "x"}.']),
        ("{}", ["(top level): 'order_id' is a required property"]),
        ('{"order_id": 5}', ["order_id: 5 is not of type 'string'"]),
    ],
)
def test_arguments_that_are_not_json_or_break_the_schema_are_form_errors_and_nothing_runs(
    client: Client, world_a: TenantWorld, owner_a: User, arguments: str, errors: list[str]
) -> None:
    tool = order_tool(world_a, "tests.fixtures.tools.lookup_order")
    client.force_login(owner_a)
    response = run(client, tool, arguments)
    assert response.status_code == 200
    assert response.context["form"].errors == {"arguments": errors}
    assert response.context["outcome"] is None
    assert 'id="trial-outcome"' not in response.content.decode()


def test_a_disabled_tool_can_still_be_tested_and_the_page_says_so(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    tool = order_tool(world_a, "tests.fixtures.tools.lookup_order", enabled=False)
    client.force_login(owner_a)
    response = run(client, tool, '{"order_id": "A1"}')
    assert response.context["outcome"].status == "succeeded"
    assert "This tool is disabled: sessions cannot call it" in response.content.decode()


@dataclass
class Receiver:
    """What the local webhook server saw."""

    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)


class _OrderHook(BaseHTTPRequestHandler):
    server: _ReceiverServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        timestamp = self.headers[TIMESTAMP_HEADER]
        signature = self.headers[SIGNATURE_HEADER]
        payload = json.loads(body)
        self.server.receiver.requests.append(
            {
                "path": self.path,
                "payload": payload,
                "verified": verify(SECRET, timestamp, body, signature),
            }
        )
        answer = json.dumps({"order_id": payload["arguments"]["order_id"], "eta": "2 days"})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, receiver: Receiver) -> None:
        super().__init__(("127.0.0.1", 0), _OrderHook)
        self.receiver = receiver
        receiver.port = self.server_address[1]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()
    server = _ReceiverServer(state)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


@override_settings(ROOMVOICE_TOOL_WEBHOOK_ALLOW_PRIVATE=True)
def test_a_webhook_tool_is_called_signed_and_its_answer_shown(
    client: Client, world_a: TenantWorld, owner_a: User, receiver: Receiver
) -> None:
    tool = order_tool(
        world_a,
        f"http://127.0.0.1:{receiver.port}/orders",
        handler_kind="webhook",
        secret=SECRET,
    )
    client.force_login(owner_a)
    response = run(client, tool, '{"order_id": "A7"}')
    outcome = response.context["outcome"]
    expected = json.dumps({"order_id": "A7", "eta": "2 days"})
    assert (outcome.status, outcome.text) == ("succeeded", expected)
    assert receiver.requests == [
        {
            "path": "/orders",
            "payload": {
                "tool": "lookup_order",
                "call_id": "admin-test",
                "arguments": {"order_id": "A7"},
            },
            "verified": True,
        }
    ]
    assert SECRET not in response.content.decode()


# --- Who may test ---------------------------------------------------------------------------


@override_settings(ROOMVOICE_TOOL_WEBHOOK_ALLOW_PRIVATE=True)
@pytest.mark.parametrize("direction", ["a_opens_b", "b_opens_a"])
def test_other_tenants_staff_get_404_on_the_test_page_and_nothing_runs(
    client: Client,
    world_a: TenantWorld,
    world_b: TenantWorld,
    owner_a: User,
    owner_b: User,
    receiver: Receiver,
    direction: str,
) -> None:
    world, intruder = (world_b, owner_a) if direction == "a_opens_b" else (world_a, owner_b)
    tool = order_tool(
        world, f"http://127.0.0.1:{receiver.port}/orders", handler_kind="webhook", secret=SECRET
    )
    client.force_login(intruder)
    page = client.get(trial_url(tool))
    ran = run(client, tool, '{"order_id": "A1"}')
    assert (page.status_code, ran.status_code) == (404, 404)
    assert receiver.requests == []


@override_settings(ROOMVOICE_TOOL_WEBHOOK_ALLOW_PRIVATE=True)
def test_member_without_change_permission_cannot_run_a_tool(
    client: Client, world_a: TenantWorld, member_a: User, receiver: Receiver
) -> None:
    tool = order_tool(
        world_a, f"http://127.0.0.1:{receiver.port}/orders", handler_kind="webhook", secret=SECRET
    )
    client.force_login(member_a)
    page = client.get(trial_url(tool))
    ran = run(client, tool, '{"order_id": "A1"}')
    action = client.post(
        changelist_url("tool"), {"action": "test_selected_tool", "_selected_action": [tool.pk]}
    )
    assert (page.status_code, ran.status_code, action.status_code) == (403, 403, 200)
    assert receiver.requests == []


def test_superuser_may_test_any_tenants_tool(
    client: Client, world_b: TenantWorld, superuser: User
) -> None:
    tool = order_tool(world_b, "tests.fixtures.tools.lookup_order")
    client.force_login(superuser)
    response = run(client, tool, '{"order_id": "B1"}')
    assert response.context["outcome"].status == "succeeded"


def test_the_changelist_action_opens_the_test_page_for_exactly_one_tool(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    tool = order_tool(world_a, "tests.fixtures.tools.lookup_order")
    client.force_login(owner_a)
    one = client.post(
        changelist_url("tool"), {"action": "test_selected_tool", "_selected_action": [tool.pk]}
    )
    assert one.status_code == 302
    assert one["Location"] == trial_url(tool)
    two = client.post(
        changelist_url("tool"),
        {"action": "test_selected_tool", "_selected_action": [tool.pk, world_a.tool.pk]},
    )
    assert two.status_code == 302
    assert two["Location"] == changelist_url("tool")
    assert message_texts(two) == ["Select exactly one tool to test."]


# --- Tool call history ----------------------------------------------------------------------


@dataclass
class History:
    sessions: list[VoiceSession]
    tools: list[Tool]
    calls: list[ToolCall]


def history(world: TenantWorld) -> History:
    """Two sessions, two tools, three calls: (s0, t0), (s0, t1), (s1, t0)."""
    sessions = [
        services.voice_session_create(
            tenant=world.tenant,
            room=world.room,
            participant_id=f"caller-{index}",
            transport="websocket",
            agent=world.agent,
        )
        for index in range(2)
    ]
    tools = [world.tool, order_tool(world, "tests.fixtures.tools.lookup_order")]
    calls = [
        services.tool_call_create(
            tenant=world.tenant,
            session=session,
            tool=tool,
            call_id=f"call-{index}",
            name=tool.name,
            arguments={"order_id": f"A{index}"},
        )
        for index, (session, tool) in enumerate(
            [(sessions[0], tools[0]), (sessions[0], tools[1]), (sessions[1], tools[0])]
        )
    ]
    return History(sessions, tools, calls)


@pytest.fixture
def history_a(world_a: TenantWorld) -> History:
    return history(world_a)


@pytest.fixture
def history_b(world_b: TenantWorld) -> History:
    return history(world_b)


def test_tool_calls_filter_by_tool_and_by_session(
    client: Client, history_a: History, history_b: History, owner_a: User
) -> None:
    calls = history_a.calls
    client.force_login(owner_a)
    by_tool = client.get(changelist_url("toolcall"), {"tool__id__exact": history_a.tools[0].pk})
    by_session = client.get(
        changelist_url("toolcall"), {"session__id__exact": history_a.sessions[0].pk}
    )
    assert listed(by_tool) == {calls[0].pk, calls[2].pk}
    assert listed(by_session) == {calls[0].pk, calls[1].pk}


def test_other_tenants_staff_see_none_of_the_calls_even_when_filtering_for_them(
    client: Client, history_a: History, history_b: History, owner_b: User
) -> None:
    client.force_login(owner_b)
    everything = client.get(changelist_url("toolcall"))
    by_tool = client.get(changelist_url("toolcall"), {"tool__id__exact": history_a.tools[0].pk})
    by_session = client.get(
        changelist_url("toolcall"), {"session__id__exact": history_a.sessions[0].pk}
    )
    assert listed(everything) == {call.pk for call in history_b.calls}
    assert listed(by_tool) == set()
    assert listed(by_session) == set()
    (tool_filter,) = [
        spec for spec in everything.context["cl"].filter_specs if spec.field_path == "tool"
    ]
    assert {pk for pk, _name in tool_filter.lookup_choices} == {t.pk for t in history_b.tools}
    html = everything.content.decode()
    assert str(history_a.tools[0].pk) not in html
    assert str(history_a.sessions[0].pk) not in html


def test_tool_call_list_shows_duration_delivery_and_lateness(
    client: Client, history_a: History, owner_a: User
) -> None:
    tenant = history_a.sessions[0].tenant
    delivered, late, pending = history_a.calls
    for call in (delivered, late):
        services.tool_call_start(tenant=tenant, tool_call_id=call.pk)
    services.tool_call_finish(
        tenant=tenant, tool_call_id=delivered.pk, status="succeeded", result="{}"
    )
    services.tool_call_mark_delivered(tenant=tenant, tool_call_id=delivered.pk)
    services.tool_call_finish(tenant=tenant, tool_call_id=late.pk, status="timed_out")
    services.tool_call_store_late(tenant=tenant, tool_call_id=late.pk, result='{"eta": "late"}')
    client.force_login(owner_a)
    response = client.get(changelist_url("toolcall"))
    admin = response.context["cl"].model_admin
    rows = {
        call.pk: (admin.delivered(call), admin.late(call), admin.duration(call))
        for call in response.context["cl"].result_list
    }
    assert {pk: row[:2] for pk, row in rows.items()} == {
        delivered.pk: (True, False),
        late.pk: (False, True),
        pending.pk: (False, False),
    }
    assert rows[pending.pk][2] == ""
    assert rows[delivered.pk][2].isdigit()
    detail = client.get(admin_url(late, "change")).content.decode()
    assert escape('{"eta": "late"}') in detail
    assert "Late result" in detail


def test_session_page_links_to_its_tool_calls(
    client: Client, history_a: History, owner_a: User
) -> None:
    session = history_a.sessions[0]
    client.force_login(owner_a)
    response = client.get(admin_url(session, "change"))
    link = f"{changelist_url('toolcall')}?session__id__exact={session.pk}"
    assert f'<a href="{link}">tool calls</a>' in response.content.decode()
    (inline,) = response.context["inline_admin_formsets"]
    assert [form.original.pk for form in inline] == [call.pk for call in history_a.calls[:2]]
