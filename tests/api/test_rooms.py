"""The REST API's core: authentication, tenancy, errors, idempotency, throttling; rooms,
bindings, room tokens, room timelines and voice sessions."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from rooms import services as room_services
from rooms.models import ApiKey, ApiKeyScope, ChannelBinding, EventKind, Room, User
from rooms.tokens import room_token_verify
from tests.fixtures.actors import TenantWorld
from tests.fixtures.api import error_of, key_client
from voice import services as voice_services
from voice.models import VoiceSession

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(60)]

V1 = "/api/v1"


def _room_url(world: TenantWorld, tail: str = "") -> str:
    return f"{V1}/rooms/{world.room.pk}/{tail}"


# --- authentication and tenancy ------------------------------------------------------------


def test_no_credentials_is_401_with_the_error_body() -> None:
    response = APIClient().get(f"{V1}/rooms/")
    assert response.status_code == 401
    assert error_of(response)["code"] == "not_authenticated"


@pytest.mark.parametrize(
    "header",
    ["Bearer rv_nothing_here", "Bearer", "Bearer a b", "Bearer rv_ABCDEFGH_wrong"],
)
def test_a_bad_key_is_refused_with_one_message(header: str, world_a: TenantWorld) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get(f"{V1}/rooms/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_revoked_and_expired_keys_are_refused(world_a: TenantWorld) -> None:
    revoked = key_client(world_a.tenant)
    room_services.api_key_revoke(
        tenant=world_a.tenant, api_key=ApiKey.objects.get(name="test-write")
    )
    expiring = key_client(world_a.tenant, ApiKeyScope.READ)
    ApiKey.objects.filter(name="test-read").update(expires_at=timezone.now() - timedelta(seconds=1))

    assert revoked.get(f"{V1}/rooms/").status_code == 401
    assert expiring.get(f"{V1}/rooms/").status_code == 401


def test_a_key_records_when_it_was_last_used(world_a: TenantWorld, api_a: APIClient) -> None:
    assert api_a.get(f"{V1}/rooms/").status_code == 200
    assert ApiKey.objects.get(name="test-write").last_used_at is not None


def test_a_read_key_reads_but_cannot_write(world_a: TenantWorld, api_a_read: APIClient) -> None:
    assert api_a_read.get(f"{V1}/rooms/").status_code == 200
    response = api_a_read.post(f"{V1}/rooms/", {"key": "new"}, format="json")
    assert response.status_code == 403
    assert "write" in error_of(response)["message"]
    assert not Room.objects.filter(key="new").exists()


def test_a_member_session_reads_and_an_owner_session_writes(
    world_a: TenantWorld, member_a: User, owner_a: User
) -> None:
    member, owner = APIClient(), APIClient()
    member.force_login(member_a)
    owner.force_login(owner_a)

    assert member.get(f"{V1}/rooms/").json()["count"] == 1
    assert member.post(f"{V1}/rooms/", {"key": "m"}, format="json").status_code == 403
    assert owner.post(f"{V1}/rooms/", {"key": "o"}, format="json").status_code == 201


def test_a_session_post_needs_the_csrf_token(world_a: TenantWorld, owner_a: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner_a)
    response = client.post(f"{V1}/rooms/", {"key": "x"}, content_type="application/json")
    assert response.status_code == 403
    assert not Room.objects.filter(key="x").exists()


def test_a_member_of_two_tenants_names_one(
    world_a: TenantWorld, world_b: TenantWorld, member_a: User
) -> None:
    room_services.membership_set(tenant=world_b.tenant, user=member_a)
    client = APIClient()
    client.force_login(member_a)

    ambiguous = client.get(f"{V1}/rooms/")
    chosen = client.get(f"{V1}/rooms/", HTTP_X_ROOMVOICE_TENANT=world_b.tenant.slug)
    foreign = client.get(f"{V1}/rooms/", HTTP_X_ROOMVOICE_TENANT="not-mine")

    assert ambiguous.status_code == 400 and error_of(ambiguous)["code"] == "tenant_required"
    assert [room["id"] for room in chosen.json()["results"]] == [str(world_b.room.pk)]
    assert foreign.status_code == 404


def test_the_tenant_never_comes_from_the_body(
    world_a: TenantWorld, world_b: TenantWorld, api_a: APIClient
) -> None:
    response = api_a.post(
        f"{V1}/rooms/", {"key": "sneaky", "tenant": str(world_b.tenant.pk)}, format="json"
    )
    assert response.status_code == 400
    assert error_of(response)["fields"] == {"tenant": ["Unknown field."]}
    assert not Room.objects.filter(key="sneaky").exists()


# --- rooms ------------------------------------------------------------------------------------


def test_room_crud_and_close(world_a: TenantWorld, api_a: APIClient) -> None:
    created = api_a.post(
        f"{V1}/rooms/",
        {
            "key": "support-1",
            "name": " Support ",
            "metadata": {"team": "a"},
            "default_agent": world_a.agent.slug,
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    room = created.json()
    assert (room["key"], room["name"], room["default_agent"], room["status"]) == (
        "support-1",
        "Support",
        world_a.agent.slug,
        "active",
    )

    listed = api_a.get(f"{V1}/rooms/", {"status": "active"}).json()
    assert {r["key"] for r in listed["results"]} == {world_a.room.key, "support-1"}

    patched = api_a.patch(f"{V1}/rooms/{room['id']}/", {"name": "Desk"}, format="json")
    assert patched.status_code == 200 and patched.json()["name"] == "Desk"
    renamed = api_a.patch(f"{V1}/rooms/{room['id']}/", {"key": "other"}, format="json")
    assert renamed.status_code == 400 and "key" in error_of(renamed)["fields"]

    closed = api_a.post(f"{V1}/rooms/{room['id']}/close/")
    assert closed.status_code == 200
    assert closed.json()["status"] == "closed" and closed.json()["closed_at"]
    assert api_a.post(f"{V1}/rooms/{room['id']}/reopen/").json()["status"] == "active"

    assert api_a.delete(f"{V1}/rooms/{room['id']}/").status_code == 204
    assert not Room.objects.filter(pk=room["id"]).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"key": "has space"}, "key"),
        ({}, "key"),
        ({"key": "ok", "metadata": [1]}, "metadata"),
        ({"key": "ok", "default_agent": "no-such-agent"}, "default_agent"),
        ({"key": "ok", "colour": "red"}, "colour"),
    ],
)
def test_room_validation_names_the_field(
    body: dict[str, Any], field: str, world_a: TenantWorld, api_a: APIClient
) -> None:
    response = api_a.post(f"{V1}/rooms/", body, format="json")
    error = error_of(response)
    assert response.status_code == 400
    assert error["code"] == "validation_error" and field in error["fields"]


def test_a_duplicate_room_key_is_a_clear_400(world_a: TenantWorld, api_a: APIClient) -> None:
    response = api_a.post(f"{V1}/rooms/", {"key": world_a.room.key}, format="json")
    assert response.status_code == 400


def test_another_tenants_agent_cannot_be_a_default_agent(
    world_a: TenantWorld, world_b: TenantWorld, api_a: APIClient
) -> None:
    world_b.agent.slug = "b-only"
    world_b.agent.save()
    response = api_a.post(f"{V1}/rooms/", {"key": "x", "default_agent": "b-only"}, format="json")
    assert response.status_code == 400 and "default_agent" in error_of(response)["fields"]


def test_malformed_json_and_oversized_bodies_are_refused(
    world_a: TenantWorld, api_a: APIClient, settings: Any
) -> None:
    bad = api_a.post(f"{V1}/rooms/", "{not json", content_type="application/json")
    assert bad.status_code == 400 and error_of(bad)["code"] == "parse_error"
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    big = api_a.post(
        f"{V1}/rooms/",
        json.dumps({"key": "big", "name": "x" * 5000}),
        content_type="application/json",
    )
    assert big.status_code == 413 and error_of(big)["code"] == "payload_too_large"
    assert not Room.objects.filter(key="big").exists()


# --- idempotency -------------------------------------------------------------------------------


def test_an_idempotent_create_is_replayed_not_repeated(
    world_a: TenantWorld, api_a: APIClient
) -> None:
    first = api_a.post(f"{V1}/rooms/", {"key": "once"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = api_a.post(f"{V1}/rooms/", {"key": "once"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    other = api_a.post(f"{V1}/rooms/", {"key": "twice"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert Room.objects.filter(key="once").count() == 1
    assert other.status_code == 422 and error_of(other)["code"] == "idempotency_key_reused"


def test_idempotency_keys_belong_to_their_caller(world_a: TenantWorld, api_a: APIClient) -> None:
    other_key = key_client(world_a.tenant)
    first = api_a.post(f"{V1}/rooms/", {"key": "mine"}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    second = other_key.post(
        f"{V1}/rooms/", {"key": "mine"}, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )
    assert first.status_code == 201
    assert second.status_code == 400  # not a replay of someone else's: a real (duplicate) try


def test_a_failed_create_is_not_remembered(world_a: TenantWorld, api_a: APIClient) -> None:
    bad = api_a.post(f"{V1}/rooms/", {"key": "bad key"}, format="json", HTTP_IDEMPOTENCY_KEY="z")
    fixed = api_a.post(f"{V1}/rooms/", {"key": "bad key"}, format="json", HTTP_IDEMPOTENCY_KEY="z")
    assert bad.status_code == fixed.status_code == 400
    assert "Idempotent-Replayed" not in fixed


# --- throttling --------------------------------------------------------------------------------


def test_each_key_has_its_own_rate_limit(world_a: TenantWorld, settings: Any) -> None:
    from django.core.cache import cache

    cache.clear()
    settings.ROOMVOICE_API_RATE = "3/min"
    busy, quiet = key_client(world_a.tenant), key_client(world_a.tenant)
    codes = [busy.get(f"{V1}/rooms/").status_code for _ in range(4)]
    limited = busy.get(f"{V1}/rooms/")

    assert codes == [200, 200, 200, 429]
    assert error_of(limited)["code"] == "throttled" and error_of(limited)["retry_after_s"] >= 1
    assert quiet.get(f"{V1}/rooms/").status_code == 200
    cache.clear()


# --- bindings ----------------------------------------------------------------------------------


def test_binding_attach_list_change_and_detach(world_a: TenantWorld, api_a: APIClient) -> None:
    url = _room_url(world_a, "bindings/")
    created = api_a.post(
        url,
        {"channel_id": "voice", "participant_id": "guest-7", "access": "read_only"},
        format="json",
    )
    assert created.status_code == 201, created.json()
    binding = created.json()
    again = api_a.post(url, {"channel_id": "voice", "participant_id": "guest-7"}, format="json")
    assert again.status_code == 200 and again.json()["access"] == "read_only"  # never widened

    base = f"{url}{binding['id']}/"
    assert api_a.post(f"{base}mute/").json()["muted"] is True
    assert api_a.post(f"{base}unmute/").json()["muted"] is False
    assert api_a.post(f"{base}mute_output/").json()["output_muted"] is True
    assert api_a.post(f"{base}unmute_output/").json()["output_muted"] is False
    assert (
        api_a.post(f"{base}set_access/", {"access": "none"}, format="json").json()["access"]
        == "none"
    )
    bad = api_a.post(f"{base}set_access/", {"access": "everything"}, format="json")
    assert bad.status_code == 400 and "access" in error_of(bad)["fields"]
    listed = api_a.get(url).json()["results"]
    assert {b["participant_id"] for b in listed} == {world_a.binding.participant_id, "guest-7"}

    assert api_a.delete(base).status_code == 204
    assert not ChannelBinding.objects.filter(pk=binding["id"]).exists()


def test_a_binding_change_reaches_the_timeline(world_a: TenantWorld, api_a: APIClient) -> None:
    before = world_a.room.last_event_index
    api_a.post(_room_url(world_a, f"bindings/{world_a.binding.pk}/mute/"))
    world_a.room.refresh_from_db()
    assert world_a.room.last_event_index == before + 1


def test_a_binding_under_another_room_is_not_found(world_a: TenantWorld, api_a: APIClient) -> None:
    other = room_services.room_create(tenant=world_a.tenant, key="second")
    response = api_a.post(f"{V1}/rooms/{other.pk}/bindings/{world_a.binding.pk}/mute/")
    assert response.status_code == 404


# --- tokens ------------------------------------------------------------------------------------


def test_a_minted_token_names_its_participant_and_works_on_the_voice_page(
    world_a: TenantWorld, api_a: APIClient
) -> None:
    response = api_a.post(
        _room_url(world_a, "tokens/"),
        {"participant_id": "customer-42", "permissions": ["speak", "listen"], "ttl_seconds": 600},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    token = room_token_verify(body["token"])
    assert (token.room_id, token.participant_id, token.permissions) == (
        world_a.room.pk,
        "customer-42",
        frozenset({"speak", "listen"}),
    )
    assert body["voice_url"].endswith(f"/rooms/{world_a.room.pk}/voice/?token={body['token']}")
    page = Client().get(body["voice_url"].split("testserver", 1)[1])
    assert page.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"participant_id": "user:5"}, "participant_id"),
        ({"participant_id": "x", "permissions": ["admin"]}, "permissions"),
        ({"participant_id": "x", "permissions": []}, "permissions"),
        ({"participant_id": "x", "ttl_seconds": 0}, "ttl_seconds"),
        ({"participant_id": "x", "ttl_seconds": 10**9}, "ttl_seconds"),
        ({}, "participant_id"),
    ],
)
def test_token_requests_are_validated(
    body: dict[str, Any], field: str, world_a: TenantWorld, api_a: APIClient
) -> None:
    response = api_a.post(_room_url(world_a, "tokens/"), body, format="json")
    assert response.status_code == 400 and field in error_of(response)["fields"]


def test_a_read_key_cannot_mint_tokens(world_a: TenantWorld, api_a_read: APIClient) -> None:
    response = api_a_read.post(
        _room_url(world_a, "tokens/"), {"participant_id": "x"}, format="json"
    )
    assert response.status_code == 403


# --- events ------------------------------------------------------------------------------------


def _timeline(world: TenantWorld, count: int) -> None:
    for number in range(count):
        room_services.room_event_append(
            tenant=world.tenant,
            room=world.room,
            kind=EventKind.TRANSCRIPT,
            role="user" if number % 2 == 0 else "assistant",
            text=f"line {number}",
            status="delivered" if number != 3 else "blocked",
            blocked_by="" if number != 3 else "hook:pii",
        )


def test_events_page_by_cursor_in_index_order(world_a: TenantWorld, api_a: APIClient) -> None:
    _timeline(world_a, 7)
    seen: list[int] = []
    url: str | None = _room_url(world_a, "events/?limit=3")
    while url:
        page = api_a.get(url).json()
        seen += [event["index"] for event in page["results"]]
        url = page["next"]
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == world_a.room.events.count()


def test_events_filter_by_kind_role_and_index(world_a: TenantWorld, api_a: APIClient) -> None:
    _timeline(world_a, 6)
    users = api_a.get(_room_url(world_a, "events/"), {"role": "user", "kind": "transcript"}).json()
    assert {e["role"] for e in users["results"]} == {"user"} and len(users["results"]) == 3
    bad = api_a.get(_room_url(world_a, "events/"), {"kind": "gossip"})
    assert bad.status_code == 400


def test_events_export_as_json_lines_and_text(world_a: TenantWorld, api_a: APIClient) -> None:
    _timeline(world_a, 4)
    jsonl = api_a.get(
        _room_url(world_a, "events/export/"), {"format": "jsonl", "kind": "transcript"}
    )
    text = api_a.get(_room_url(world_a, "events/export/"), {"format": "txt", "kind": "transcript"})
    nope = api_a.get(_room_url(world_a, "events/export/"), {"format": "pdf"})

    lines = [json.loads(line) for line in b"".join(jsonl.streaming_content).decode().splitlines()]
    assert jsonl["Content-Type"] == "application/x-ndjson"
    assert [line["text"] for line in lines] == ["line 0", "line 1", "line 2", "line 3"]
    rendered = b"".join(text.streaming_content).decode().splitlines()
    assert rendered[0].endswith("user: line 0")
    assert rendered[3].endswith("assistant: line 3 [blocked: hook:pii]")
    assert nope.status_code == 400 and "format" in error_of(nope)["fields"]


# --- sessions ----------------------------------------------------------------------------------


def _session(world: TenantWorld, host: str = "") -> VoiceSession:
    return voice_services.voice_session_create(
        tenant=world.tenant,
        room=world.room,
        participant_id="caller",
        transport="websocket",
        agent=world.agent,
        host_channel_name=host,
    )


def test_sessions_list_filter_and_detail(world_a: TenantWorld, api_a: APIClient) -> None:
    first, second = _session(world_a), _session(world_a)
    voice_services.voice_session_end(
        tenant=world_a.tenant, session_id=second.pk, reason="client_hangup"
    )
    ended = api_a.get(f"{V1}/sessions/", {"state": "ended"}).json()["results"]
    by_agent = api_a.get(f"{V1}/sessions/", {"agent": world_a.agent.slug}).json()["results"]
    detail = api_a.get(f"{V1}/sessions/{first.pk}/").json()

    assert [s["id"] for s in ended] == [str(second.pk)]
    assert {s["id"] for s in by_agent} == {str(first.pk), str(second.pk)}
    assert detail["room"] == str(world_a.room.pk) and "usage" in detail and "metrics" in detail
    assert api_a.get(f"{V1}/sessions/", {"created_after": "yesterday"}).status_code == 400


def test_ending_a_session_without_a_host_ends_it_here(
    world_a: TenantWorld, api_a: APIClient
) -> None:
    session = _session(world_a)
    response = api_a.post(f"{V1}/sessions/{session.pk}/end/")
    again = api_a.post(f"{V1}/sessions/{session.pk}/end/")
    session.refresh_from_db()

    assert response.status_code == 202
    assert (session.state, session.end_reason) == ("ended", "host_lost")
    assert again.status_code == 409


def test_reconfigure_validates_and_refuses_an_ended_or_hostless_session(
    world_a: TenantWorld, api_a: APIClient
) -> None:
    session = _session(world_a)
    url = f"{V1}/sessions/{session.pk}/reconfigure/"
    assert api_a.post(url, {}, format="json").status_code == 400
    unknown = api_a.post(url, {"model": "gpt-9"}, format="json")
    assert unknown.status_code == 400 and "model" in error_of(unknown)["fields"]
    tools = api_a.post(url, {"tools": ["no_such_tool"]}, format="json")
    assert tools.status_code == 400 and "tools" in error_of(tools)["fields"]
    hostless = api_a.post(url, {"voice": "alloy"}, format="json")
    assert hostless.status_code == 409


@pytest.mark.parametrize(
    "query",
    [
        {"after_index": "99999999999999999999999"},
        {"after_index": "-1"},
        {"offset": "99999999999999999999999"},
        {"limit": "0"},
    ],
)
def test_out_of_range_query_values_are_answered_not_crashed(
    query: dict[str, str], world_a: TenantWorld, api_a: APIClient
) -> None:
    events = api_a.get(_room_url(world_a, "events/"), query)
    rooms = api_a.get(f"{V1}/rooms/", query)
    assert events.status_code in (200, 400) and rooms.status_code in (200, 400)


def test_a_time_offset_postgresql_refuses_is_still_answered(
    world_a: TenantWorld, api_a: APIClient
) -> None:
    response = api_a.get(f"{V1}/sessions/", {"created_after": "2030-01-03T04:27:01.5-17:58"})
    assert response.status_code == 200
