"""The rooms admin: tenant isolation both ways, roles, scoped choices, and the admin actions
that must go through the services (API keys, bindings, room status)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db.models import Model
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
    Room,
    RoomEvent,
    RoomStatus,
    Tenant,
    User,
)
from tests.fixtures.actors import PASSWORD, TenantWorld

MODELS = ["tenant", "membership", "apikey", "room", "channelbinding", "roomevent"]
ADDABLE = ["membership", "apikey", "room", "channelbinding"]
# Where an owner lacks the permission for every object of a model, Django refuses with 403
# before looking the object up; elsewhere another tenant's object "doesn't exist".
NO_CHANGE = {"roomevent"}
NO_DELETE = {"tenant", "roomevent"}
INVALID_CHOICE = "Select a valid choice. That choice is not one of the available choices."


@dataclass(frozen=True)
class Side:
    """One tenant's world, its owner, and the objects each admin should list for it."""

    world: TenantWorld
    owner: User
    objects: dict[str, list[Model]]


def _objects(world: TenantWorld, memberships: list[Membership]) -> dict[str, list[Model]]:
    api_key, _ = services.api_key_create(tenant=world.tenant, name=f"key of {world.tenant.slug}")
    attached = RoomEvent.objects.get(room=world.room, index=1)
    message = services.room_event_append(
        tenant=world.tenant,
        room=world.room,
        kind=EventKind.MESSAGE,
        role=EventRole.USER,
        text=f"hello from {world.tenant.slug}",
    )
    return {
        "tenant": [world.tenant],
        "membership": memberships,
        "apikey": [api_key],
        "room": [world.room],
        "channelbinding": [world.binding],
        "roomevent": [attached, message],
    }


@pytest.fixture
def a(world_a: TenantWorld, owner_a: User, member_a: User) -> Side:
    memberships = list(Membership.objects.filter(user__in=[owner_a, member_a]).order_by("pk"))
    return Side(world_a, owner_a, _objects(world_a, memberships))


@pytest.fixture
def b(world_b: TenantWorld, owner_b: User) -> Side:
    memberships = list(Membership.objects.filter(user=owner_b))
    return Side(world_b, owner_b, _objects(world_b, memberships))


@pytest.fixture
def outsider(db: None) -> User:
    """Staff in the operators group, but a member of no tenant."""
    user = User.objects.create_user(username="outsider", password=PASSWORD, is_staff=True)
    user.groups.add(services.operator_group_sync())
    return user


def changelist_url(model: str) -> str:
    return reverse(f"admin:rooms_{model}_changelist")


def admin_url(obj: Model, view: str) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_{view}", args=[obj.pk])


def listed(response: Any) -> set[Any]:
    return {obj.pk for obj in response.context["cl"].result_list}


def pks(objects: list[Model]) -> set[Any]:
    return {obj.pk for obj in objects}


def snapshot(obj: Model) -> dict[str, Any]:
    return type(obj)._default_manager.filter(pk=obj.pk).values().get()


def timeline(room: Room) -> tuple[int, int]:
    """The room's event count and counter: both move whenever anything is appended."""
    return room.events.count(), Room.objects.get(pk=room.pk).last_event_index


def message_texts(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def assert_refused(response: Any, *, forbidden: bool) -> None:
    if forbidden:
        assert response.status_code == 403
    else:
        assert response.status_code == 302
        assert response["Location"] == reverse("admin:index")


def change_payload(model: str, side: Side) -> dict[str, Any]:
    """A valid change form for the side's first object of that model."""
    world = side.world
    return {
        "tenant": {"name": "Renamed"},
        "membership": {"user": side.owner.pk, "role": MembershipRole.MEMBER},
        "apikey": {"name": "renamed"},
        "room": {"key": "renamed", "name": "Renamed", "metadata": "{}", "default_agent": ""},
        "channelbinding": {
            "access": Access.NONE,
            "muted": "on",
            "visibility": "all",
            "metadata": "{}",
        },
        "roomevent": {"text": "rewritten history"},
    }[model] | ({"tenant": world.tenant.pk} if model != "tenant" else {})


# What a successful change_payload leaves in the row.
CHANGED = {
    "tenant": ("name", "Renamed"),
    "membership": ("role", MembershipRole.MEMBER),
    "apikey": ("name", "renamed"),
    "room": ("key", "renamed"),
    "channelbinding": ("access", Access.NONE),
}


def add_payload(model: str, world: TenantWorld, user: User) -> dict[str, Any]:
    return {
        "membership": {"user": user.pk, "tenant": world.tenant.pk, "role": MembershipRole.OWNER},
        "apikey": {
            "tenant": world.tenant.pk,
            "name": "new key",
            "scope": "write",
            "expires_at_0": "",
            "expires_at_1": "",
        },
        "room": {"tenant": world.tenant.pk, "key": "room-2", "metadata": "{}"},
        "channelbinding": {
            "tenant": world.tenant.pk,
            "room": world.room.pk,
            "channel_id": "text",
            "participant_id": "",
            "access": Access.READ_WRITE,
            "visibility": "all",
            "metadata": "{}",
        },
    }[model]


MODEL_CLASSES: dict[str, type[Model]] = {
    "tenant": Tenant,
    "membership": Membership,
    "apikey": ApiKey,
    "room": Room,
    "channelbinding": ChannelBinding,
    "roomevent": RoomEvent,
}


# --- Isolation ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_each_owner_lists_exactly_their_own_tenants_objects(
    client: Client, a: Side, b: Side, model: str
) -> None:
    for side in (a, b):
        client.force_login(side.owner)
        response = client.get(changelist_url(model))
        assert response.status_code == 200
        assert listed(response) == pks(side.objects[model])


@pytest.mark.parametrize("model", MODELS)
def test_owner_opening_other_tenants_change_page_is_sent_to_the_index(
    client: Client, a: Side, b: Side, model: str
) -> None:
    target = b.objects[model][0]
    client.force_login(a.owner)
    response = client.get(admin_url(target, "change"))
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:index")
    assert message_texts(response) == [
        f"{target._meta.verbose_name} with ID “{target.pk}” doesn’t exist. Perhaps it was deleted?"
    ]


@pytest.mark.parametrize("model", CHANGED)
def test_owner_saves_own_object_through_the_change_form(
    client: Client, b: Side, model: str
) -> None:
    target = b.objects[model][0]
    client.force_login(b.owner)
    response = client.post(admin_url(target, "change"), change_payload(model, b))
    assert response.status_code == 302
    field, value = CHANGED[model]
    assert snapshot(target)[field] == value


@pytest.mark.parametrize("model", MODELS)
def test_owner_posting_a_change_to_other_tenants_object_changes_nothing(
    client: Client, a: Side, b: Side, model: str
) -> None:
    target = b.objects[model][0]
    before, events_before = snapshot(target), timeline(b.world.room)
    client.force_login(a.owner)
    response = client.post(admin_url(target, "change"), change_payload(model, b))
    assert_refused(response, forbidden=model in NO_CHANGE)
    assert snapshot(target) == before
    assert timeline(b.world.room) == events_before


@pytest.mark.parametrize("model", MODELS)
def test_owner_cannot_delete_other_tenants_object_with_the_delete_view(
    client: Client, a: Side, b: Side, model: str
) -> None:
    target = b.objects[model][0]
    events_before = timeline(b.world.room)
    client.force_login(a.owner)
    response = client.post(admin_url(target, "delete"), {"post": "yes"})
    assert_refused(response, forbidden=model in NO_DELETE)
    assert MODEL_CLASSES[model].objects.filter(pk=target.pk).exists()
    assert timeline(b.world.room) == events_before


@pytest.mark.parametrize("model", MODELS)
def test_owner_cannot_delete_other_tenants_object_with_the_delete_action(
    client: Client, a: Side, b: Side, model: str
) -> None:
    target = b.objects[model][0]
    events_before = timeline(b.world.room)
    client.force_login(a.owner)
    response = client.post(
        changelist_url(model),
        {"action": "delete_selected", "_selected_action": [target.pk], "post": "yes"},
    )
    # Without the delete permission the model has no actions and the list is just shown
    # again; with it, B's object is not in the queryset the action runs on.
    assert response.status_code == (200 if model in NO_DELETE else 302)
    assert message_texts(response) == []
    assert MODEL_CLASSES[model].objects.filter(pk=target.pk).exists()
    assert timeline(b.world.room) == events_before


@pytest.mark.parametrize("model", ["membership", "apikey", "channelbinding"])
def test_owner_deletes_own_object_with_the_delete_action(
    client: Client, b: Side, model: str
) -> None:
    target = b.objects[model][0]
    client.force_login(b.owner)
    client.post(
        changelist_url(model),
        {"action": "delete_selected", "_selected_action": [target.pk], "post": "yes"},
    )
    assert not MODEL_CLASSES[model].objects.filter(pk=target.pk).exists()


# --- Add forms and choices ------------------------------------------------------------------


@pytest.mark.parametrize("model", ADDABLE)
def test_owner_adds_an_object_in_own_tenant(client: Client, a: Side, b: Side, model: str) -> None:
    # A person the owner may add: already a member of another tenant the owner manages.
    other = services.tenant_create(slug="tenant-c", name="C")
    services.membership_set(tenant=other, user=a.owner, role=MembershipRole.OWNER)
    colleague = User.objects.create_user(username="colleague", password=PASSWORD)
    services.membership_set(tenant=other, user=colleague)
    objects = MODEL_CLASSES[model].objects
    before = objects.filter(tenant=a.world.tenant).count()
    client.force_login(a.owner)
    response = client.post(
        reverse(f"admin:rooms_{model}_add"), add_payload(model, a.world, colleague)
    )
    assert response.status_code == 302
    assert objects.filter(tenant=a.world.tenant).count() == before + 1


@pytest.mark.parametrize("model", ADDABLE)
def test_owner_cannot_add_an_object_in_other_tenant(
    client: Client, a: Side, b: Side, model: str
) -> None:
    objects = MODEL_CLASSES[model].objects
    before, events_before = objects.count(), timeline(b.world.room)
    client.force_login(a.owner)
    response = client.post(
        reverse(f"admin:rooms_{model}_add"), add_payload(model, b.world, a.owner)
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["tenant"] == [INVALID_CHOICE]
    assert objects.count() == before
    assert timeline(b.world.room) == events_before


def test_owner_cannot_make_themselves_a_member_of_other_tenant(
    client: Client, a: Side, b: Side
) -> None:
    client.force_login(a.owner)
    client.post(reverse("admin:rooms_membership_add"), add_payload("membership", b.world, a.owner))
    assert not Membership.objects.filter(user=a.owner, tenant=b.world.tenant).exists()


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ("membership", "tenant"),
        ("apikey", "tenant"),
        ("room", "tenant"),
        ("room", "default_agent"),
        ("channelbinding", "tenant"),
        ("channelbinding", "room"),
    ],
)
def test_add_form_offers_only_own_tenants_choices(
    client: Client, a: Side, b: Side, model: str, field: str
) -> None:
    expected = {
        "tenant": a.world.tenant.pk,
        "default_agent": a.world.agent.pk,
        "room": a.world.room.pk,
    }[field]
    client.force_login(a.owner)
    response = client.get(reverse(f"admin:rooms_{model}_add"))
    assert response.status_code == 200
    queryset = response.context["adminform"].form.fields[field].queryset
    assert [obj.pk for obj in queryset] == [expected]


def test_room_with_other_tenants_default_agent_is_refused_even_for_superuser(
    client: Client, a: Side, b: Side, superuser: User
) -> None:
    client.force_login(superuser)
    response = client.post(
        reverse("admin:rooms_room_add"),
        add_payload("room", a.world, a.owner) | {"default_agent": b.world.agent.pk},
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["default_agent"] == [
        "The agent belongs to another tenant."
    ]
    assert not Room.objects.filter(key="room-2").exists()


def test_binding_on_other_tenants_room_is_refused_even_for_superuser(
    client: Client, a: Side, b: Side, superuser: User
) -> None:
    client.force_login(superuser)
    response = client.post(
        reverse("admin:rooms_channelbinding_add"),
        add_payload("channelbinding", a.world, a.owner) | {"room": b.world.room.pk},
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["room"] == [
        "The room belongs to another tenant."
    ]
    assert not ChannelBinding.objects.filter(channel_id="text").exists()


@pytest.mark.parametrize("model", ["membership", "room"])
def test_superuser_cannot_move_an_object_to_another_tenant(
    client: Client, a: Side, b: Side, superuser: User, model: str
) -> None:
    target = a.objects[model][0]
    client.force_login(superuser)
    payload = change_payload(model, a) | {"tenant": b.world.tenant.pk}
    response = client.post(admin_url(target, "change"), payload)
    assert response.status_code == 302
    assert snapshot(target)["tenant_id"] == a.world.tenant.pk


# --- Roles and outsiders --------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_member_views_own_tenants_objects_without_a_save_button(
    client: Client, a: Side, b: Side, member_a: User, model: str
) -> None:
    client.force_login(member_a)
    changelist = client.get(changelist_url(model))
    change_page = client.get(admin_url(a.objects[model][0], "change"))
    assert changelist.status_code == 200
    assert listed(changelist) == pks(a.objects[model])
    assert change_page.status_code == 200
    assert b'name="_save"' not in change_page.content


@pytest.mark.parametrize("model", MODELS)
def test_member_cannot_change_own_tenants_objects(
    client: Client, a: Side, member_a: User, model: str
) -> None:
    target = a.objects[model][0]
    before, events_before = snapshot(target), timeline(a.world.room)
    client.force_login(member_a)
    response = client.post(admin_url(target, "change"), change_payload(model, a))
    assert response.status_code == 403
    assert snapshot(target) == before
    assert timeline(a.world.room) == events_before


@pytest.mark.parametrize("model", MODELS)
def test_member_cannot_delete_own_tenants_objects(
    client: Client, a: Side, member_a: User, model: str
) -> None:
    target = a.objects[model][0]
    client.force_login(member_a)
    delete_view = client.post(admin_url(target, "delete"), {"post": "yes"})
    client.post(
        changelist_url(model),
        {"action": "delete_selected", "_selected_action": [target.pk], "post": "yes"},
    )
    assert delete_view.status_code == 403
    assert MODEL_CLASSES[model].objects.filter(pk=target.pk).exists()


@pytest.mark.parametrize("model", ADDABLE)
def test_member_cannot_open_add_forms(client: Client, a: Side, member_a: User, model: str) -> None:
    client.force_login(member_a)
    response = client.get(reverse(f"admin:rooms_{model}_add"))
    assert response.status_code == 403


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
def test_superuser_lists_both_tenants(
    client: Client, a: Side, b: Side, superuser: User, model: str
) -> None:
    client.force_login(superuser)
    response = client.get(changelist_url(model))
    assert listed(response) == pks(a.objects[model]) | pks(b.objects[model])


@pytest.mark.parametrize("model", MODELS)
def test_staff_without_membership_sees_nothing_of_either_tenant(
    client: Client, a: Side, b: Side, outsider: User, model: str
) -> None:
    client.force_login(outsider)
    changelist = client.get(changelist_url(model))
    change_pages = [client.get(admin_url(side.objects[model][0], "change")) for side in (a, b)]
    assert changelist.status_code == 200
    assert listed(changelist) == set()
    assert [page["Location"] for page in change_pages] == [reverse("admin:index")] * 2


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
