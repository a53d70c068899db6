"""The rooms admin: what is particular to it — memberships, tenants, API keys, and the admin
actions that must go through the services (bindings, room status). Tenant isolation and roles
across every admin model are in tests/test_admin_isolation.py."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from rooms import services
from rooms.models import (
    Access,
    ApiKey,
    ChannelBinding,
    EventKind,
    EventRole,
    Membership,
    MembershipRole,
    RoomEvent,
    RoomStatus,
    Tenant,
    User,
)
from tests.fixtures.admin import (
    MODEL_CLASSES,
    Side,
    add_payload,
    admin_url,
    change_payload,
    changelist_url,
    message_texts,
    snapshot,
    timeline,
)

MODELS = ["tenant", "membership", "apikey", "room", "channelbinding", "roomevent"]


@pytest.fixture
def side_apps() -> tuple[str, ...]:
    return ("rooms",)


# --- Scoped choices -------------------------------------------------------------------------


def test_owner_cannot_make_themselves_a_member_of_other_tenant(
    client: Client, a: Side, b: Side
) -> None:
    client.force_login(a.owner)
    client.post(reverse("admin:rooms_membership_add"), add_payload("membership", b.world, a.owner))
    assert not Membership.objects.filter(user=a.owner, tenant=b.world.tenant).exists()


@pytest.mark.parametrize(
    ("model", "field", "foreign", "error", "would_be"),
    [
        (
            "room",
            "default_agent",
            "agent",
            "The agent belongs to another tenant.",
            {"key": "room-2"},
        ),
        (
            "channelbinding",
            "room",
            "room",
            "The room belongs to another tenant.",
            {"channel_id": "text"},
        ),
    ],
    ids=["room-default_agent", "channelbinding-room"],
)
def test_other_tenants_choice_is_refused_even_for_superuser(
    client: Client,
    a: Side,
    b: Side,
    superuser: User,
    model: str,
    field: str,
    foreign: str,
    error: str,
    would_be: dict[str, str],
) -> None:
    client.force_login(superuser)
    response = client.post(
        reverse(f"admin:rooms_{model}_add"),
        add_payload(model, a.world, a.owner) | {field: getattr(b.world, foreign).pk},
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors[field] == [error]
    assert not MODEL_CLASSES[model].objects.filter(**would_be).exists()


# --- Tenants and roles ----------------------------------------------------------------------


def test_tenant_owner_renames_tenant_but_cannot_change_slug_or_deactivate_it(
    client: Client, a: Side
) -> None:
    tenant = a.world.tenant
    client.force_login(a.owner)
    client.post(admin_url(tenant, "change"), {"name": "Renamed", "slug": "stolen", "is_active": ""})
    assert Tenant.objects.values_list("name", "slug", "is_active").get(pk=tenant.pk) == (
        "Renamed",
        "tenant-a",
        True,
    )


def test_only_superuser_may_add_or_delete_tenants(client: Client, a: Side, superuser: User) -> None:
    client.force_login(a.owner)
    owner_add = client.get(reverse("admin:rooms_tenant_add"))
    owner_delete = client.post(admin_url(a.world.tenant, "delete"), {"post": "yes"})
    client.force_login(superuser)
    superuser_add = client.get(reverse("admin:rooms_tenant_add"))
    assert (owner_add.status_code, owner_delete.status_code) == (403, 403)
    assert superuser_add.status_code == 200
    assert Tenant.objects.filter(pk=a.world.tenant.pk).exists()


@pytest.mark.parametrize("model", MODELS)
def test_non_staff_owner_is_sent_to_the_admin_login(client: Client, a: Side, model: str) -> None:
    User.objects.filter(pk=a.owner.pk).update(is_staff=False)
    client.force_login(a.owner)
    for url in (changelist_url(model), admin_url(a.objects[model][0], "change")):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


# --- API keys -------------------------------------------------------------------------------


def test_api_key_plaintext_is_shown_once_and_only_its_hash_is_stored(
    client: Client, a: Side
) -> None:
    client.force_login(a.owner)
    response = client.post(
        reverse("admin:rooms_apikey_add"), add_payload("apikey", a.world, a.owner), follow=True
    )
    tokens = [
        token
        for text in message_texts(response)
        for token in re.findall(r"rv_[a-z0-9]+_[\w-]+", text)
    ]
    assert len(tokens) == 1
    token = tokens[0]
    prefix, secret = re.fullmatch(r"rv_([a-z0-9]{8})_([\w-]{32,})", token).groups()  # type: ignore[union-attr]
    api_key = ApiKey.objects.get(prefix=prefix)
    assert (api_key.tenant_id, api_key.name, api_key.scope, api_key.created_by_id) == (
        a.world.tenant.pk,
        "new key",
        "write",
        a.owner.pk,
    )
    assert api_key.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert [
        column
        for column, value in ApiKey.objects.filter(pk=api_key.pk).values().get().items()
        if secret in str(value)
    ] == []
    assert services.api_key_authenticate(token=token) == api_key
    change_page = client.get(admin_url(api_key, "change"))
    changelist = client.get(changelist_url("apikey"))
    assert secret not in change_page.content.decode()
    assert secret not in changelist.content.decode()
    assert f"rv_{prefix}_…" in change_page.content.decode()


def test_api_key_with_past_expiry_is_a_form_error(client: Client, a: Side) -> None:
    before = ApiKey.objects.count()
    yesterday = timezone.localtime() - timedelta(days=1)
    client.force_login(a.owner)
    response = client.post(
        reverse("admin:rooms_apikey_add"),
        add_payload("apikey", a.world, a.owner)
        | {
            "expires_at_0": yesterday.strftime("%Y-%m-%d"),
            "expires_at_1": yesterday.strftime("%H:%M:%S"),
        },
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["expires_at"] == [
        "The expiry must be in the future."
    ]
    assert ApiKey.objects.count() == before


def test_api_key_change_form_renames_but_cannot_widen_scope(client: Client, a: Side) -> None:
    api_key = a.objects["apikey"][0]
    client.force_login(a.owner)
    client.post(admin_url(api_key, "change"), {"name": "renamed", "scope": "write"})
    assert ApiKey.objects.values_list("name", "scope").get(pk=api_key.pk) == ("renamed", "read")


def test_revoke_action_revokes_the_key_and_authentication_then_fails(
    client: Client, a: Side
) -> None:
    api_key, token = services.api_key_create(tenant=a.world.tenant, name="to revoke")
    client.force_login(a.owner)
    client.post(
        changelist_url("apikey"), {"action": "revoke_selected", "_selected_action": [api_key.pk]}
    )
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at is not None
    assert services.api_key_authenticate(token=token) is None


@pytest.mark.parametrize("role_in_b", [None, MembershipRole.MEMBER])
def test_revoke_action_leaves_keys_the_user_may_not_change(
    client: Client, a: Side, b: Side, role_in_b: str | None
) -> None:
    if role_in_b:
        services.membership_set(tenant=b.world.tenant, user=a.owner, role=role_in_b)
    api_key, token = services.api_key_create(tenant=b.world.tenant, name="b's key")
    client.force_login(a.owner)
    client.post(
        changelist_url("apikey"), {"action": "revoke_selected", "_selected_action": [api_key.pk]}
    )
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at is None
    assert services.api_key_authenticate(token=token) == api_key


# --- Channel bindings -----------------------------------------------------------------------


def test_binding_change_goes_through_the_service_and_appends_a_system_event(
    client: Client, a: Side
) -> None:
    binding = a.world.binding
    count_before, index_before = timeline(a.world.room)
    client.force_login(a.owner)
    response = client.post(admin_url(binding, "change"), change_payload("channelbinding", a))
    assert response.status_code == 302
    assert ChannelBinding.objects.values_list("access", "muted").get(pk=binding.pk) == (
        Access.NONE,
        True,
    )
    assert timeline(a.world.room) == (count_before + 1, index_before + 1)
    event = RoomEvent.objects.get(room=a.world.room, index=index_before + 1)
    assert (event.kind, event.role, event.text, event.metadata) == (
        EventKind.SYSTEM,
        EventRole.SYSTEM,
        "binding voice/caller changed: access=none, muted=True",
        {"event": "binding_changed", "changes": {"access": "none", "muted": True}},
    )


def test_binding_delete_goes_through_the_service_and_appends_a_system_event(
    client: Client, a: Side
) -> None:
    binding = a.world.binding
    client.force_login(a.owner)
    client.post(admin_url(binding, "delete"), {"post": "yes"})
    assert not ChannelBinding.objects.filter(pk=binding.pk).exists()
    last = RoomEvent.objects.filter(room=a.world.room).order_by("-index").first()
    assert (last.kind, last.text) == (EventKind.SYSTEM, "binding voice/caller detached")  # type: ignore[union-attr]


@pytest.mark.parametrize("role_in_b", [None, MembershipRole.MEMBER])
def test_mute_action_mutes_only_bindings_the_user_may_change(
    client: Client, a: Side, b: Side, role_in_b: str | None
) -> None:
    if role_in_b:
        services.membership_set(tenant=b.world.tenant, user=a.owner, role=role_in_b)
    b_before, b_events = snapshot(b.world.binding), timeline(b.world.room)
    client.force_login(a.owner)
    client.post(
        changelist_url("channelbinding"),
        {"action": "mute_selected", "_selected_action": [a.world.binding.pk, b.world.binding.pk]},
    )
    assert ChannelBinding.objects.get(pk=a.world.binding.pk).muted is True
    assert snapshot(b.world.binding) == b_before
    assert timeline(b.world.room) == b_events


# --- Room actions ---------------------------------------------------------------------------


def test_close_action_closes_the_room_and_appends_a_system_event(client: Client, a: Side) -> None:
    room = a.world.room
    _, index_before = timeline(room)
    client.force_login(a.owner)
    client.post(changelist_url("room"), {"action": "close_selected", "_selected_action": [room.pk]})
    room.refresh_from_db()
    assert room.status == RoomStatus.CLOSED
    assert room.closed_at is not None
    assert room.last_event_index == index_before + 1
    event = RoomEvent.objects.get(room=room, index=index_before + 1)
    assert (event.kind, event.text) == (
        EventKind.SYSTEM,
        "room status changed from active to closed",
    )


@pytest.mark.parametrize("role_in_b", [None, MembershipRole.MEMBER])
def test_close_action_leaves_rooms_the_user_may_not_change(
    client: Client, a: Side, b: Side, role_in_b: str | None
) -> None:
    if role_in_b:
        services.membership_set(tenant=b.world.tenant, user=a.owner, role=role_in_b)
    room = b.world.room
    before, events_before = snapshot(room), timeline(room)
    client.force_login(a.owner)
    client.post(changelist_url("room"), {"action": "close_selected", "_selected_action": [room.pk]})
    assert snapshot(room) == before
    assert timeline(room) == events_before


# --- The read-only timeline -----------------------------------------------------------------


def test_room_events_are_read_only_for_owners(client: Client, a: Side) -> None:
    event = a.objects["roomevent"][0]
    client.force_login(a.owner)
    add = client.get(reverse("admin:rooms_roomevent_add"))
    change = client.post(admin_url(event, "change"), {"text": "rewritten history"})
    delete = client.post(admin_url(event, "delete"), {"post": "yes"})
    assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)
    assert RoomEvent.objects.get(pk=event.pk).text == "binding voice/caller attached"


def test_superuser_may_delete_room_events_but_not_edit_them(
    client: Client, a: Side, superuser: User
) -> None:
    event = a.objects["roomevent"][1]
    client.force_login(superuser)
    change = client.post(admin_url(event, "change"), {"text": "rewritten history"})
    delete = client.post(admin_url(event, "delete"), {"post": "yes"})
    assert change.status_code == 403
    assert delete.status_code == 302
    assert not RoomEvent.objects.filter(pk=event.pk).exists()


def test_room_events_stay_read_only_even_for_an_owner_granted_every_model_permission(
    client: Client, a: Side
) -> None:
    event = a.objects["roomevent"][0]
    a.owner.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="rooms", codename__endswith="roomevent")
    )
    client.force_login(a.owner)
    change = client.post(admin_url(event, "change"), {"text": "rewritten history"})
    delete = client.post(admin_url(event, "delete"), {"post": "yes"})
    assert (change.status_code, delete.status_code) == (403, 403)
    assert RoomEvent.objects.get(pk=event.pk).text == "binding voice/caller attached"


def test_owner_cannot_add_a_user_from_another_tenant_as_a_member(
    client: Client, owner_a: User, owner_b: User, tenant_a: Tenant
) -> None:
    client.force_login(owner_a)
    before = Membership.objects.count()

    response = client.post(
        reverse("admin:rooms_membership_add"),
        {"user": owner_b.pk, "tenant": tenant_a.pk, "role": "member"},
    )

    assert response.status_code == 200
    assert "user" in response.context["adminform"].form.errors
    assert Membership.objects.count() == before
    assert not Membership.objects.filter(user=owner_b, tenant=tenant_a).exists()
