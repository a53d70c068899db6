"""The voice page, the live room view, its event feed and the operator actions: who gets
what, both tenants."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from django.test import Client

from rooms import services as room_services
from rooms.models import ChannelBinding, RoomEvent, User
from tests.fixtures.actors import TenantWorld
from tests.fixtures.voice_ws import mock_agent_for, unbuilt_agent_for

pytestmark = pytest.mark.django_db


def _client(user: User | None = None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


# --- the voice page ----------------------------------------------------------------------------


def test_voice_page_without_login_names_nothing_and_leaves_it_to_a_fragment_token(
    world_a: TenantWorld,
) -> None:
    mock_agent_for(world_a.tenant, world_a.room)
    world_a.room.name = "Private board room"
    world_a.room.save(update_fields=["name"])

    response = _client().get(f"/rooms/{world_a.room.pk}/voice/")

    assert response.status_code == 200
    assert response.context["token_in_fragment"] is True
    assert response.context["login_url"].startswith("/accounts/login/?next=")
    assert response.context["ws_path"] == f"/ws/rooms/{world_a.room.pk}/voice/"
    assert b"Private board room" not in response.content
    assert b"Mock agent" not in response.content
    assert response["Referrer-Policy"] == "no-referrer"


def test_member_gets_the_voice_page_with_the_socket_path(
    world_a: TenantWorld, member_a: User
) -> None:
    mock_agent_for(world_a.tenant, world_a.room)

    response = _client(member_a).get(f"/rooms/{world_a.room.pk}/voice/")

    assert response.status_code == 200
    assert response.context["ws_path"] == f"/ws/rooms/{world_a.room.pk}/voice/?agent=mock"
    assert b'id="voice-app"' in response.content


def test_voice_page_of_another_tenant_is_not_found(
    world_a: TenantWorld, world_b: TenantWorld, member_a: User
) -> None:
    mock_agent_for(world_b.tenant, world_b.room)

    response = _client(member_a).get(f"/rooms/{world_b.room.pk}/voice/")

    assert response.status_code == 404
    assert b'data-code="not_found"' in response.content


def test_room_token_opens_the_voice_page_without_leaking_the_token(
    world_a: TenantWorld,
) -> None:
    mock_agent_for(world_a.tenant, world_a.room)
    token = room_services.room_token_create(
        tenant=world_a.tenant, room=world_a.room, participant_id="guest"
    )

    response = _client().get(f"/rooms/{world_a.room.pk}/voice/", {"token": token})

    assert response.status_code == 200
    assert response["Referrer-Policy"] == "no-referrer"
    assert response.context["ws_path"].endswith(f"&token={quote(token)}")


def test_voice_page_says_when_the_provider_cannot_be_used(
    world_a: TenantWorld, member_a: User
) -> None:
    unbuilt_agent_for(world_a.tenant, world_a.room)

    response = _client(member_a).get(f"/rooms/{world_a.room.pk}/voice/")

    assert response.status_code == 403
    assert b'data-code="unavailable"' in response.content


# --- the live view -----------------------------------------------------------------------------


def test_live_view_shows_the_timeline_and_operator_controls_to_owners(
    world_a: TenantWorld, owner_a: User, member_a: User
) -> None:
    as_owner = _client(owner_a).get(f"/rooms/{world_a.room.pk}/live/")
    as_member = _client(member_a).get(f"/rooms/{world_a.room.pk}/live/")

    assert as_owner.status_code == as_member.status_code == 200
    assert as_owner.context["can_operate"] is True
    assert as_member.context["can_operate"] is False
    assert [b.participant_id for b in as_owner.context["bindings"]] == ["caller"]
    assert [e.index for e in as_owner.context["events"]] == [1]


def test_live_view_of_another_tenant_is_not_found(world_b: TenantWorld, owner_a: User) -> None:
    response = _client(owner_a).get(f"/rooms/{world_b.room.pk}/live/")

    assert response.status_code == 404


def test_event_feed_pages_after_an_index_and_stays_in_the_tenant(
    world_a: TenantWorld, world_b: TenantWorld, member_a: User
) -> None:
    for text in ("one", "two"):
        room_services.room_event_append(
            tenant=world_a.tenant, room=world_a.room, kind="message", role="user", text=text
        )

    feed = _client(member_a).get(f"/rooms/{world_a.room.pk}/live/events/", {"after": 1})
    foreign = _client(member_a).get(f"/rooms/{world_b.room.pk}/live/events/")
    bad = _client(member_a).get(f"/rooms/{world_a.room.pk}/live/events/", {"after": "x"})

    assert [(e["index"], e["text"]) for e in feed.json()["events"]] == [(2, "one"), (3, "two")]
    assert foreign.status_code == 404
    assert bad.status_code == 400


# --- operator actions --------------------------------------------------------------------------


def _action(world: TenantWorld, binding: ChannelBinding, action: str) -> str:
    return f"/rooms/{world.room.pk}/live/bindings/{binding.pk}/{action}/"


def test_owner_mutes_and_revokes_a_participant(world_a: TenantWorld, owner_a: User) -> None:
    client = _client(owner_a)

    muted = client.post(_action(world_a, world_a.binding, "mute"))
    revoked = client.post(_action(world_a, world_a.binding, "revoke"))
    world_a.binding.refresh_from_db()

    assert muted.status_code == 200
    assert muted.json()["muted"] is True
    assert revoked.json()["access"] == "none"
    assert (world_a.binding.muted, world_a.binding.access) == (True, "none")
    assert RoomEvent.objects.filter(room=world_a.room, kind="system").count() == 3


def test_members_and_other_tenants_cannot_change_participants(
    world_a: TenantWorld, member_a: User, owner_b: User
) -> None:
    by_member = _client(member_a).post(_action(world_a, world_a.binding, "mute"))
    by_other_owner = _client(owner_b).post(_action(world_a, world_a.binding, "mute"))
    anonymous = _client().post(_action(world_a, world_a.binding, "mute"))
    world_a.binding.refresh_from_db()

    assert by_member.status_code == 403
    assert by_other_owner.status_code == 404
    assert anonymous.status_code == 401
    assert world_a.binding.muted is False


def test_operator_actions_check_method_action_and_room(
    world_a: TenantWorld, world_b: TenantWorld, owner_a: User
) -> None:
    client = _client(owner_a)
    other_room = room_services.room_create(tenant=world_a.tenant, key="room-2")

    by_get = client.get(_action(world_a, world_a.binding, "mute"))
    unknown = client.post(_action(world_a, world_a.binding, "explode"))
    wrong_room = client.post(f"/rooms/{other_room.pk}/live/bindings/{world_a.binding.pk}/mute/")
    world_a.binding.refresh_from_db()

    assert by_get.status_code == 405
    assert unknown.status_code == 400
    assert wrong_room.status_code == 404
    assert world_a.binding.muted is False


def test_operator_actions_need_the_csrf_token(world_a: TenantWorld, owner_a: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner_a)

    response = client.post(_action(world_a, world_a.binding, "mute"))
    world_a.binding.refresh_from_db()

    assert response.status_code == 403
    assert world_a.binding.muted is False


def test_home_lists_only_the_users_rooms(
    world_a: TenantWorld, world_b: TenantWorld, member_a: User
) -> None:
    anonymous = _client().get("/")
    mine = _client(member_a).get("/")

    assert list(anonymous.context["rooms"]) == []
    assert [room.pk for room in mine.context["rooms"]] == [world_a.room.pk]
    assert f"/rooms/{world_a.room.pk}/voice/".encode() in mine.content
    assert str(world_b.room.pk).encode() not in mine.content


def _live_session(world: TenantWorld, host: str = "specific.test!host") -> str:
    from voice import services as voice_services

    session = voice_services.voice_session_create(
        tenant=world.tenant,
        room=world.room,
        participant_id="caller",
        transport="websocket",
        provider_kind="mock",
        host_channel_name=host,
    )
    return str(session.pk)


def test_only_owners_end_sessions_and_only_live_ones(
    world_a: TenantWorld, owner_a: User, member_a: User, owner_b: User
) -> None:
    from voice import services as voice_services

    session_id = _live_session(world_a)
    url = f"/rooms/{world_a.room.pk}/live/sessions/{session_id}/end/"

    by_member = _client(member_a).post(url)
    by_other_owner = _client(owner_b).post(url)
    by_owner = _client(owner_a).post(url)
    voice_services.voice_session_end(
        tenant=world_a.tenant, session_id=session_id, reason="client_hangup"
    )
    again = _client(owner_a).post(url)

    assert by_member.status_code == 403
    assert by_other_owner.status_code == 404
    assert by_owner.json() == {"session_id": session_id, "end_requested": True}
    assert again.status_code == 409


def test_a_session_without_a_host_is_ended_as_host_lost(
    world_a: TenantWorld, owner_a: User
) -> None:
    from voice.models import VoiceSession

    session_id = _live_session(world_a, host="")

    response = _client(owner_a).post(f"/rooms/{world_a.room.pk}/live/sessions/{session_id}/end/")
    row = VoiceSession.objects.get(pk=session_id)

    assert response.status_code == 200
    assert (row.state, row.end_reason) == ("ended", "host_lost")
