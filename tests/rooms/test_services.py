"""Writes of the rooms app: tenants, members, API keys, rooms, bindings and the timeline."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from rooms import services
from rooms.models import (
    ApiKey,
    ChannelBinding,
    Membership,
    Room,
    RoomEvent,
    Tenant,
    User,
)
from rooms.services import NewRoomEvent, TenantMismatch
from tests.fixtures.actors import TenantWorld
from voice import services as voice_services

TOKEN_PATTERN = re.compile(r"^rv_([a-z0-9]{8})_(.+)$")


def _timeline(room: Room) -> list[tuple[int, str, str, str]]:
    return list(
        RoomEvent.objects.filter(room=room)
        .order_by("index")
        .values_list("index", "kind", "role", "text")
    )


def _binding_row(binding: ChannelBinding) -> dict[str, Any]:
    return ChannelBinding.objects.filter(pk=binding.pk).values().get()


def _room_row(room: Room) -> dict[str, Any]:
    return Room.objects.filter(pk=room.pk).values().get()


# --- Tenants --------------------------------------------------------------------------------


def test_tenant_create_normalises_slug_and_name(db: None) -> None:
    tenant = services.tenant_create(slug="  Acme-Co ", name="  Acme Company ")

    assert Tenant.objects.filter(pk=tenant.pk).values_list("slug", "name", "is_active").get() == (
        "acme-co",
        "Acme Company",
        True,
    )


@pytest.mark.parametrize("slug", ["", "acme co", "-acme", "acme!", "a" * 65])
def test_tenant_create_refuses_a_bad_slug_and_saves_nothing(db: None, slug: str) -> None:
    with pytest.raises(ValidationError) as error:
        services.tenant_create(slug=slug, name="Acme")

    assert list(error.value.message_dict) == ["slug"]
    assert Tenant.objects.count() == 0


def test_tenant_create_refuses_a_taken_slug(tenant_a: Tenant) -> None:
    with pytest.raises(ValidationError) as error:
        services.tenant_create(slug="TENANT-A", name="Impostor")

    assert list(error.value.message_dict) == ["slug"]
    assert list(Tenant.objects.values_list("slug", "name")) == [("tenant-a", "Tenant tenant-a")]


# --- Memberships ----------------------------------------------------------------------------


def test_membership_set_adds_the_user_with_the_role(tenant_a: Tenant) -> None:
    user = User.objects.create_user(username="newcomer")

    membership = services.membership_set(tenant=tenant_a, user=user, role="admin")

    assert list(Membership.objects.filter(user=user).values_list("pk", "tenant_id", "role")) == [
        (membership.pk, tenant_a.pk, "admin")
    ]


def test_membership_set_defaults_to_member(tenant_a: Tenant) -> None:
    user = User.objects.create_user(username="newcomer")

    services.membership_set(tenant=tenant_a, user=user)

    assert Membership.objects.get(user=user, tenant=tenant_a).role == "member"


def test_membership_set_changes_the_role_of_an_existing_member(
    tenant_a: Tenant, member_a: User
) -> None:
    original = Membership.objects.get(user=member_a, tenant=tenant_a)

    membership = services.membership_set(tenant=tenant_a, user=member_a, role="owner")

    assert membership.pk == original.pk
    assert list(Membership.objects.filter(user=member_a).values_list("pk", "role")) == [
        (original.pk, "owner")
    ]


def test_membership_set_refuses_an_unknown_role_and_changes_nothing(
    tenant_a: Tenant, member_a: User
) -> None:
    with pytest.raises(ValidationError) as error:
        services.membership_set(tenant=tenant_a, user=member_a, role="superadmin")

    assert error.value.message_dict == {"role": ["Unknown role 'superadmin'."]}
    assert list(Membership.objects.filter(user=member_a).values_list("role", flat=True)) == [
        "member"
    ]


# --- API keys -------------------------------------------------------------------------------


def test_api_key_create_returns_a_prefixed_token_once(tenant_a: Tenant, owner_a: User) -> None:
    api_key, token = services.api_key_create(
        tenant=tenant_a, name=" ci ", scope="write", created_by=owner_a
    )

    match = TOKEN_PATTERN.match(token)
    assert match is not None
    assert match.group(1) == api_key.prefix
    assert len(match.group(2)) >= 40
    stored = ApiKey.objects.get(pk=api_key.pk)
    assert (stored.tenant_id, stored.name, stored.scope, stored.created_by_id) == (
        tenant_a.pk,
        "ci",
        "write",
        owner_a.pk,
    )
    assert (stored.last_used_at, stored.revoked_at) == (None, None)


def test_api_key_create_stores_only_the_sha256_of_the_secret(tenant_a: Tenant) -> None:
    api_key, token = services.api_key_create(tenant=tenant_a, name="ci")

    secret = TOKEN_PATTERN.match(token).group(2)  # type: ignore[union-attr]
    row = ApiKey.objects.filter(pk=api_key.pk).values().get()
    assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    for column, value in row.items():
        assert secret not in str(value), column
        assert token not in str(value), column


def test_api_key_create_draws_a_new_prefix_and_secret_each_time(tenant_a: Tenant) -> None:
    tokens = {services.api_key_create(tenant=tenant_a, name=f"k{n}")[1] for n in range(5)}

    assert len(tokens) == 5
    assert len({TOKEN_PATTERN.match(t).group(1) for t in tokens}) == 5  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scope": "admin"}, {"scope": ["Unknown scope 'admin'."]}),
        ({"name": "   "}, {"name": ["This field cannot be blank."]}),
    ],
)
def test_api_key_create_refuses_bad_input_and_saves_nothing(
    tenant_a: Tenant, fields: dict[str, str], message: dict[str, list[str]]
) -> None:
    with pytest.raises(ValidationError) as error:
        services.api_key_create(tenant=tenant_a, **{"name": "ci", **fields})

    assert error.value.message_dict == message
    assert ApiKey.objects.count() == 0


def test_api_key_create_refuses_an_expiry_in_the_past(tenant_a: Tenant) -> None:
    with pytest.raises(ValidationError) as error:
        services.api_key_create(
            tenant=tenant_a, name="ci", expires_at=timezone.now() - timedelta(seconds=1)
        )

    assert error.value.message_dict == {"expires_at": ["The expiry must be in the future."]}
    assert ApiKey.objects.count() == 0


def test_api_key_authenticate_returns_the_key_and_its_tenant(tenant_a: Tenant) -> None:
    api_key, token = services.api_key_create(tenant=tenant_a, name="ci")

    authenticated = services.api_key_authenticate(token=token)

    assert authenticated is not None
    assert authenticated.pk == api_key.pk
    assert authenticated.tenant.slug == "tenant-a"


def test_api_key_authenticate_records_the_last_use(tenant_a: Tenant) -> None:
    api_key, token = services.api_key_create(tenant=tenant_a, name="ci")
    before = timezone.now()

    services.api_key_authenticate(token=token)

    last_used_at = ApiKey.objects.get(pk=api_key.pk).last_used_at
    assert last_used_at is not None
    assert before <= last_used_at <= timezone.now()


def test_api_key_authenticate_does_not_rewrite_last_use_within_a_minute(
    tenant_a: Tenant,
) -> None:
    api_key, token = services.api_key_create(tenant=tenant_a, name="ci")
    recent = timezone.now() - timedelta(seconds=50)
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=recent)

    authenticated = services.api_key_authenticate(token=token)

    assert authenticated is not None
    assert authenticated.last_used_at == recent
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at == recent


def test_api_key_authenticate_rewrites_last_use_after_a_minute(tenant_a: Tenant) -> None:
    api_key, token = services.api_key_create(tenant=tenant_a, name="ci")
    stale = timezone.now() - timedelta(minutes=2)
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=stale)
    before = timezone.now()

    services.api_key_authenticate(token=token)

    last_used_at = ApiKey.objects.get(pk=api_key.pk).last_used_at
    assert last_used_at is not None
    assert last_used_at >= before


def test_api_key_authenticate_refuses_a_wrong_secret(tenant_a: Tenant) -> None:
    api_key, token = services.api_key_create(tenant=tenant_a, name="ci")
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")

    assert services.api_key_authenticate(token=wrong) is None
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at is None


def test_api_key_authenticate_refuses_an_unknown_prefix(tenant_a: Tenant) -> None:
    api_key, token = services.api_key_create(tenant=tenant_a, name="ci")
    secret = TOKEN_PATTERN.match(token).group(2)  # type: ignore[union-attr]
    other_prefix = "zzzzzzzz" if api_key.prefix != "zzzzzzzz" else "yyyyyyyy"

    assert services.api_key_authenticate(token=f"rv_{other_prefix}_{secret}") is None
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at is None


def test_api_key_authenticate_refuses_another_keys_secret(tenant_a: Tenant) -> None:
    first, first_token = services.api_key_create(tenant=tenant_a, name="first")
    second, second_token = services.api_key_create(tenant=tenant_a, name="second")
    second_secret = TOKEN_PATTERN.match(second_token).group(2)  # type: ignore[union-attr]

    assert services.api_key_authenticate(token=f"rv_{first.prefix}_{second_secret}") is None
    assert ApiKey.objects.filter(last_used_at__isnull=False).count() == 0


@pytest.mark.parametrize(
    "shape",
    [
        "",
        "rv_",
        "rv_{prefix}",
        "rv_{prefix}_",
        "{prefix}_{secret}",
        "xx_{prefix}_{secret}",
        "RV_{prefix}_{secret}",
        "rv_{prefix}{secret}",
        "rv_{prefix}x_{secret}",
        "rv_{short}_{secret}",
        "rv_{upper}_{secret}",
        " rv_{prefix}_{secret}",
        "rv_{prefix}_{secret} ",
    ],
)
def test_api_key_authenticate_refuses_a_malformed_token(tenant_a: Tenant, shape: str) -> None:
    api_key, token = services.api_key_create(tenant=tenant_a, name="ci")
    secret = TOKEN_PATTERN.match(token).group(2)  # type: ignore[union-attr]
    malformed = shape.format(
        prefix=api_key.prefix,
        secret=secret,
        short=api_key.prefix[:7],
        upper=api_key.prefix.upper(),
    )
    assert malformed != token

    assert services.api_key_authenticate(token=malformed) is None
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at is None


def test_api_key_authenticate_refuses_a_revoked_key(tenant_a: Tenant) -> None:
    api_key, token = services.api_key_create(tenant=tenant_a, name="ci")
    services.api_key_revoke(tenant=tenant_a, api_key=api_key)

    assert services.api_key_authenticate(token=token) is None
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at is None


def test_api_key_authenticate_refuses_an_expired_key(tenant_a: Tenant) -> None:
    api_key, token = services.api_key_create(
        tenant=tenant_a, name="ci", expires_at=timezone.now() + timedelta(days=1)
    )
    ApiKey.objects.filter(pk=api_key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert services.api_key_authenticate(token=token) is None
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at is None


def test_api_key_authenticate_accepts_a_key_before_its_expiry(tenant_a: Tenant) -> None:
    api_key, token = services.api_key_create(
        tenant=tenant_a, name="ci", expires_at=timezone.now() + timedelta(minutes=5)
    )

    authenticated = services.api_key_authenticate(token=token)

    assert authenticated is not None
    assert authenticated.pk == api_key.pk


def test_api_key_authenticate_refuses_a_key_of_an_inactive_tenant(tenant_a: Tenant) -> None:
    api_key, token = services.api_key_create(tenant=tenant_a, name="ci")
    Tenant.objects.filter(pk=tenant_a.pk).update(is_active=False)

    assert services.api_key_authenticate(token=token) is None
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at is None


def test_api_key_revoke_revokes_once_and_then_reports_false(tenant_a: Tenant) -> None:
    api_key, _token = services.api_key_create(tenant=tenant_a, name="ci")

    assert services.api_key_revoke(tenant=tenant_a, api_key=api_key) is True
    revoked_at = ApiKey.objects.get(pk=api_key.pk).revoked_at
    assert revoked_at is not None
    assert api_key.revoked_at == revoked_at

    assert services.api_key_revoke(tenant=tenant_a, api_key=api_key) is False
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at == revoked_at


def test_api_key_revoke_refuses_a_key_of_another_tenant(tenant_a: Tenant, tenant_b: Tenant) -> None:
    api_key, token = services.api_key_create(tenant=tenant_b, name="ci")

    with pytest.raises(TenantMismatch):
        services.api_key_revoke(tenant=tenant_a, api_key=api_key)

    assert ApiKey.objects.get(pk=api_key.pk).revoked_at is None
    assert services.api_key_authenticate(token=token) is not None


# --- Rooms ----------------------------------------------------------------------------------


def test_room_create_normalises_the_key_and_name(world_a: TenantWorld) -> None:
    room = services.room_create(
        tenant=world_a.tenant, key="  Lobby_2 ", name=" Lobby ", default_agent=world_a.agent
    )

    assert Room.objects.filter(pk=room.pk).values_list(
        "tenant_id", "key", "name", "status", "metadata", "default_agent_id", "last_event_index"
    ).get() == (world_a.tenant.pk, "lobby_2", "Lobby", "active", {}, world_a.agent.pk, 0)


def test_room_create_refuses_the_default_agent_of_another_tenant(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    with pytest.raises(TenantMismatch):
        services.room_create(tenant=world_a.tenant, key="lobby", default_agent=world_b.agent)

    assert list(Room.objects.filter(tenant=world_a.tenant).values_list("key", flat=True)) == [
        "room-1"
    ]


@pytest.mark.parametrize("key", ["", "   ", "-lobby", "_lobby", "lob by", "lobby!", "l" * 65, "é"])
def test_room_create_refuses_a_bad_key_and_saves_nothing(world_a: TenantWorld, key: str) -> None:
    with pytest.raises(ValidationError) as error:
        services.room_create(tenant=world_a.tenant, key=key)

    assert list(error.value.message_dict) == ["key"]
    assert Room.objects.filter(tenant=world_a.tenant).count() == 1


def test_room_create_refuses_a_key_taken_in_the_tenant(world_a: TenantWorld) -> None:
    with pytest.raises(ValidationError):
        services.room_create(tenant=world_a.tenant, key=" ROOM-1 ")

    assert Room.objects.filter(tenant=world_a.tenant).count() == 1


def test_room_create_refuses_metadata_that_is_not_an_object(world_a: TenantWorld) -> None:
    with pytest.raises(ValidationError) as error:
        services.room_create(tenant=world_a.tenant, key="lobby", metadata=["a"])  # type: ignore[arg-type]

    assert error.value.message_dict == {"metadata": ["Metadata must be a JSON object."]}
    assert not Room.objects.filter(key="lobby").exists()


def test_room_set_status_closing_sets_closed_at_and_appends_a_system_event(
    world_a: TenantWorld,
) -> None:
    room = world_a.room
    before = timezone.now()

    services.room_set_status(tenant=world_a.tenant, room=room, status="closed")

    row = _room_row(room)
    assert row["status"] == "closed"
    assert before <= row["closed_at"] <= timezone.now()
    assert (room.status, room.closed_at) == ("closed", row["closed_at"])
    event = RoomEvent.objects.get(room=room, index=2)
    assert (event.kind, event.role, event.text, event.metadata) == (
        "system",
        "system",
        "room status changed from active to closed",
        {"event": "room_status", "from": "active", "to": "closed"},
    )
    assert row["last_event_index"] == room.last_event_index == 2


def test_room_set_status_reopening_clears_closed_at(world_a: TenantWorld) -> None:
    room = world_a.room
    services.room_set_status(tenant=world_a.tenant, room=room, status="closed")

    services.room_set_status(tenant=world_a.tenant, room=room, status="active")

    row = _room_row(room)
    assert (row["status"], row["closed_at"]) == ("active", None)
    assert [text for _i, _k, _r, text in _timeline(room)][1:] == [
        "room status changed from active to closed",
        "room status changed from closed to active",
    ]


def test_room_set_status_to_the_same_status_changes_nothing(world_a: TenantWorld) -> None:
    room = world_a.room
    services.room_set_status(tenant=world_a.tenant, room=room, status="closed")
    closed_at = timezone.now() - timedelta(days=3)
    Room.objects.filter(pk=room.pk).update(closed_at=closed_at)
    before = _room_row(room)
    timeline = _timeline(room)

    services.room_set_status(tenant=world_a.tenant, room=room, status="closed")

    assert _room_row(room) == before
    assert _timeline(room) == timeline


def test_room_set_status_archiving_a_closed_room_keeps_closed_at(world_a: TenantWorld) -> None:
    room = world_a.room
    services.room_set_status(tenant=world_a.tenant, room=room, status="closed")
    closed_at = timezone.now() - timedelta(days=3)
    Room.objects.filter(pk=room.pk).update(closed_at=closed_at)

    services.room_set_status(tenant=world_a.tenant, room=room, status="archived")

    assert Room.objects.filter(pk=room.pk).values_list("status", "closed_at").get() == (
        "archived",
        closed_at,
    )
    assert _timeline(room)[-1][3] == "room status changed from closed to archived"


def test_room_set_status_refuses_an_unknown_status(world_a: TenantWorld) -> None:
    before = _room_row(world_a.room)
    timeline = _timeline(world_a.room)

    with pytest.raises(ValidationError) as error:
        services.room_set_status(tenant=world_a.tenant, room=world_a.room, status="deleted")

    assert error.value.message_dict == {"status": ["Unknown room status 'deleted'."]}
    assert _room_row(world_a.room) == before
    assert _timeline(world_a.room) == timeline


def test_room_set_status_refuses_a_room_of_another_tenant(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    before = _room_row(world_b.room)
    timeline = _timeline(world_b.room)

    with pytest.raises(TenantMismatch):
        services.room_set_status(tenant=world_a.tenant, room=world_b.room, status="closed")

    assert _room_row(world_b.room) == before
    assert _timeline(world_b.room) == timeline
    assert world_b.room.status == "active"


# --- Channel bindings -----------------------------------------------------------------------


def test_binding_attach_creates_the_binding_and_appends_a_system_event(
    world_a: TenantWorld,
) -> None:
    binding, created = services.binding_attach(
        tenant=world_a.tenant,
        room=world_a.room,
        channel_id="text",
        participant_id="guest",
        access="read_only",
        visibility=" voice , voice ",
    )

    assert created is True
    row = _binding_row(binding)
    assert (
        row["tenant_id"],
        row["room_id"],
        row["channel_id"],
        row["participant_id"],
        row["access"],
        row["muted"],
        row["output_muted"],
        row["visibility"],
        row["metadata"],
    ) == (
        world_a.tenant.pk,
        world_a.room.pk,
        "text",
        "guest",
        "read_only",
        False,
        False,
        "voice",
        {},
    )
    event = RoomEvent.objects.get(room=world_a.room, index=2)
    assert (event.text, event.channel_id, event.participant_id, event.metadata) == (
        "binding text/guest attached",
        "text",
        "guest",
        {"event": "binding_attached"},
    )


def test_binding_attach_for_every_participant_names_the_binding_with_a_star(
    world_a: TenantWorld,
) -> None:
    binding, created = services.binding_attach(
        tenant=world_a.tenant, room=world_a.room, channel_id="voice"
    )

    assert created is True
    assert binding.participant_id == ""
    assert _timeline(world_a.room)[-1][3] == "binding voice/* attached"


def test_binding_attach_again_returns_the_existing_binding_unchanged(
    world_a: TenantWorld,
) -> None:
    before = _binding_row(world_a.binding)
    timeline = _timeline(world_a.room)

    binding, created = services.binding_attach(
        tenant=world_a.tenant,
        room=world_a.room,
        channel_id="voice",
        participant_id="caller",
        access="read_only",
        visibility="none",
    )

    assert created is False
    assert binding.pk == world_a.binding.pk
    assert (binding.access, binding.visibility) == ("read_write", "all")
    assert _binding_row(world_a.binding) == before
    assert _timeline(world_a.room) == timeline


def test_binding_attach_never_widens_a_narrowed_binding(world_a: TenantWorld) -> None:
    services.binding_update(tenant=world_a.tenant, binding=world_a.binding, access="read_only")
    before = _binding_row(world_a.binding)

    binding, created = services.binding_attach(
        tenant=world_a.tenant,
        room=world_a.room,
        channel_id="voice",
        participant_id="caller",
        access="read_write",
    )

    assert created is False
    assert binding.access == "read_only"
    assert _binding_row(world_a.binding) == before


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"access": "admin"}, "access"),
        ({"visibility": "all,voice"}, "visibility"),
        ({"visibility": ""}, "visibility"),
        ({"channel_id": "Bad Channel"}, "channel_id"),
    ],
)
def test_binding_attach_refuses_bad_input_and_saves_nothing(
    world_a: TenantWorld, fields: dict[str, str], field: str
) -> None:
    timeline = _timeline(world_a.room)

    with pytest.raises(ValidationError) as error:
        services.binding_attach(
            tenant=world_a.tenant,
            room=world_a.room,
            **{"channel_id": "text", "participant_id": "guest", **fields},
        )

    assert list(error.value.message_dict) == [field]
    assert ChannelBinding.objects.filter(room=world_a.room).count() == 1
    assert _timeline(world_a.room) == timeline


def test_binding_attach_refuses_a_room_of_another_tenant(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    timeline = _timeline(world_b.room)

    with pytest.raises(TenantMismatch):
        services.binding_attach(
            tenant=world_a.tenant, room=world_b.room, channel_id="text", participant_id="guest"
        )

    assert ChannelBinding.objects.filter(room=world_b.room).count() == 1
    assert not ChannelBinding.objects.filter(channel_id="text").exists()
    assert _timeline(world_b.room) == timeline


def test_binding_update_changes_only_the_given_field_and_appends_one_event(
    world_a: TenantWorld,
) -> None:
    before = _binding_row(world_a.binding)

    binding = services.binding_update(
        tenant=world_a.tenant, binding=world_a.binding, access="read_only"
    )

    after = _binding_row(world_a.binding)
    assert after["access"] == "read_only"
    assert {k: v for k, v in after.items() if k not in ("access", "updated_at")} == {
        k: v for k, v in before.items() if k not in ("access", "updated_at")
    }
    assert binding.access == "read_only"
    assert _timeline(world_a.room)[1:] == [
        (2, "system", "system", "binding voice/caller changed: access=read_only")
    ]
    assert RoomEvent.objects.get(room=world_a.room, index=2).metadata == {
        "event": "binding_changed",
        "changes": {"access": "read_only"},
    }


def test_binding_update_with_several_changes_lists_only_those_that_changed(
    world_a: TenantWorld,
) -> None:
    services.binding_update(
        tenant=world_a.tenant,
        binding=world_a.binding,
        access="read_write",
        muted=True,
        output_muted=False,
        visibility="text,voice",
    )

    row = _binding_row(world_a.binding)
    assert (row["access"], row["muted"], row["output_muted"], row["visibility"]) == (
        "read_write",
        True,
        False,
        "text,voice",
    )
    assert _timeline(world_a.room)[1:] == [
        (2, "system", "system", "binding voice/caller changed: muted=True, visibility=text,voice")
    ]
    assert RoomEvent.objects.get(room=world_a.room, index=2).metadata == {
        "event": "binding_changed",
        "changes": {"muted": True, "visibility": "text,voice"},
    }


def test_binding_update_appends_one_event_per_call_that_changes_something(
    world_a: TenantWorld,
) -> None:
    services.binding_set_muted(tenant=world_a.tenant, binding=world_a.binding, muted=True)
    services.binding_set_output_muted(
        tenant=world_a.tenant, binding=world_a.binding, output_muted=True
    )
    services.binding_set_muted(tenant=world_a.tenant, binding=world_a.binding, muted=True)
    services.binding_set_access(tenant=world_a.tenant, binding=world_a.binding, access="none")

    assert [text for _i, _k, _r, text in _timeline(world_a.room)][1:] == [
        "binding voice/caller changed: muted=True",
        "binding voice/caller changed: output_muted=True",
        "binding voice/caller changed: access=none",
    ]


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"access": "read_write"},
        {"muted": False, "output_muted": False},
        {"visibility": "all"},
        {"visibility": "  all "},
        {"access": "read_write", "muted": False, "output_muted": False, "visibility": "all"},
    ],
)
def test_binding_update_without_a_real_change_writes_nothing(
    world_a: TenantWorld, fields: dict[str, Any]
) -> None:
    before = _binding_row(world_a.binding)
    room_before = _room_row(world_a.room)
    timeline = _timeline(world_a.room)

    services.binding_update(tenant=world_a.tenant, binding=world_a.binding, **fields)

    assert _binding_row(world_a.binding) == before
    assert _room_row(world_a.room) == room_before
    assert _timeline(world_a.room) == timeline


def test_binding_update_treats_a_duplicated_channel_list_as_no_change(
    world_a: TenantWorld,
) -> None:
    services.binding_update(tenant=world_a.tenant, binding=world_a.binding, visibility="text")
    before = _binding_row(world_a.binding)
    timeline = _timeline(world_a.room)

    services.binding_update(
        tenant=world_a.tenant, binding=world_a.binding, visibility=" text,text "
    )

    assert _binding_row(world_a.binding) == before
    assert _timeline(world_a.room) == timeline


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"access": "admin"}, "access"),
        ({"access": "READ_ONLY"}, "access"),
        ({"muted": True, "access": "admin"}, "access"),
        ({"visibility": "all,voice"}, "visibility"),
    ],
)
def test_binding_update_refuses_a_bad_value_and_leaves_the_row_unchanged(
    world_a: TenantWorld, fields: dict[str, Any], field: str
) -> None:
    before = _binding_row(world_a.binding)
    room_before = _room_row(world_a.room)
    timeline = _timeline(world_a.room)

    with pytest.raises(ValidationError) as error:
        services.binding_update(tenant=world_a.tenant, binding=world_a.binding, **fields)

    assert list(error.value.message_dict) == [field]
    assert _binding_row(world_a.binding) == before
    assert _room_row(world_a.room) == room_before
    assert _timeline(world_a.room) == timeline
    assert (world_a.binding.access, world_a.binding.muted, world_a.binding.visibility) == (
        "read_write",
        False,
        "all",
    )


def test_binding_update_refuses_a_binding_of_another_tenant(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    before = _binding_row(world_b.binding)
    timeline = _timeline(world_b.room)

    with pytest.raises(TenantMismatch):
        services.binding_update(tenant=world_a.tenant, binding=world_b.binding, access="none")

    assert _binding_row(world_b.binding) == before
    assert _timeline(world_b.room) == timeline


def test_binding_detach_deletes_the_binding_and_appends_a_system_event(
    world_a: TenantWorld,
) -> None:
    services.binding_detach(tenant=world_a.tenant, binding=world_a.binding)

    assert not ChannelBinding.objects.filter(room=world_a.room).exists()
    event = RoomEvent.objects.get(room=world_a.room, index=2)
    assert (event.kind, event.role, event.text, event.channel_id, event.participant_id) == (
        "system",
        "system",
        "binding voice/caller detached",
        "voice",
        "caller",
    )
    assert event.metadata == {"event": "binding_detached"}
    assert _room_row(world_a.room)["last_event_index"] == 2


def test_binding_detach_refuses_a_binding_of_another_tenant(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    timeline = _timeline(world_b.room)

    with pytest.raises(TenantMismatch):
        services.binding_detach(tenant=world_a.tenant, binding=world_b.binding)

    assert ChannelBinding.objects.filter(pk=world_b.binding.pk).exists()
    assert _timeline(world_b.room) == timeline


# --- The timeline ---------------------------------------------------------------------------


def test_room_events_append_numbers_events_in_order_across_calls_and_batches(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    room = world_a.room
    assert room.last_event_index == 1  # the binding's "attached" event

    first = services.room_events_append(
        tenant=world_a.tenant,
        room=room,
        events=[
            NewRoomEvent(kind="transcript", role="user", text="one"),
            NewRoomEvent(kind="transcript", role="assistant", text="two"),
            NewRoomEvent(kind="message", role="user", text="three"),
        ],
    )
    single = services.room_event_append(
        tenant=world_a.tenant, room=room, kind="message", role="assistant", text="four"
    )
    last = services.room_events_append(
        tenant=world_a.tenant,
        room=room,
        events=[
            NewRoomEvent(kind="tool_call", role="tool", text="five"),
            NewRoomEvent(kind="system", text="six"),
        ],
    )

    assert [event.index for event in (*first, single, *last)] == [2, 3, 4, 5, 6, 7]
    assert _timeline(room)[1:] == [
        (2, "transcript", "user", "one"),
        (3, "transcript", "assistant", "two"),
        (4, "message", "user", "three"),
        (5, "message", "assistant", "four"),
        (6, "tool_call", "tool", "five"),
        (7, "system", "", "six"),
    ]
    assert room.last_event_index == 7
    assert _room_row(room)["last_event_index"] == 7
    assert _room_row(world_b.room)["last_event_index"] == 1
    assert _timeline(world_b.room) == [(1, "system", "system", "binding voice/caller attached")]


def test_room_events_append_keeps_counting_with_a_stale_room_object(
    world_a: TenantWorld,
) -> None:
    stale = Room.objects.get(pk=world_a.room.pk)
    services.room_event_append(tenant=world_a.tenant, room=world_a.room, kind="message", text="a")

    event = services.room_event_append(tenant=world_a.tenant, room=stale, kind="message", text="b")

    assert event.index == 3
    assert stale.last_event_index == 3


def test_room_events_append_stores_what_it_was_given(world_a: TenantWorld) -> None:
    occurred_at = timezone.now() - timedelta(seconds=5)

    [event] = services.room_events_append(
        tenant=world_a.tenant,
        room=world_a.room,
        events=[
            NewRoomEvent(
                kind="message",
                role="user",
                text="shh",
                status="blocked",
                blocked_by="moderation",
                channel_id="text",
                participant_id="guest",
                metadata={"reason": "profanity"},
                occurred_at=occurred_at,
            )
        ],
    )

    row = RoomEvent.objects.filter(pk=event.pk).values().get()
    assert {k: v for k, v in row.items() if k not in ("id", "created_at")} == {
        "tenant_id": world_a.tenant.pk,
        "room_id": world_a.room.pk,
        "index": 2,
        "kind": "message",
        "role": "user",
        "text": "shh",
        "status": "blocked",
        "blocked_by": "moderation",
        "session_id": None,
        "channel_id": "text",
        "participant_id": "guest",
        "metadata": {"reason": "profanity"},
        "occurred_at": occurred_at,
    }


def test_room_events_append_with_no_events_writes_nothing(world_a: TenantWorld) -> None:
    before = _room_row(world_a.room)

    assert services.room_events_append(tenant=world_a.tenant, room=world_a.room, events=[]) == []

    assert _room_row(world_a.room) == before


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (NewRoomEvent(kind="message", text="x", blocked_by="moderation"), "blocked_by"),
        (NewRoomEvent(kind="email", text="x"), "kind"),
        (NewRoomEvent(kind="message", role="operator", text="x"), "role"),
        (NewRoomEvent(kind="message", status="pending", text="x"), "status"),
        (NewRoomEvent(kind="message", metadata=["x"]), "metadata"),  # type: ignore[arg-type]
    ],
    ids=["blocked_by-on-delivered", "kind", "role", "status", "metadata"],
)
def test_room_events_append_refuses_a_bad_event_and_appends_none_of_the_batch(
    world_a: TenantWorld, bad: NewRoomEvent, field: str
) -> None:
    before = _room_row(world_a.room)
    timeline = _timeline(world_a.room)

    with pytest.raises(ValidationError) as error:
        services.room_events_append(
            tenant=world_a.tenant,
            room=world_a.room,
            events=[NewRoomEvent(kind="message", text="fine"), bad],
        )

    assert list(error.value.message_dict) == [field]
    assert _room_row(world_a.room) == before
    assert _timeline(world_a.room) == timeline
    assert world_a.room.last_event_index == 1


def test_room_events_append_refuses_a_room_of_another_tenant(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    before = _room_row(world_b.room)
    timeline = _timeline(world_b.room)

    with pytest.raises(TenantMismatch):
        services.room_event_append(
            tenant=world_a.tenant, room=world_b.room, kind="message", text="intrusion"
        )

    assert _room_row(world_b.room) == before
    assert _timeline(world_b.room) == timeline


def test_room_events_append_refuses_a_session_of_another_tenant(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    session_b = voice_services.voice_session_create(
        tenant=world_b.tenant,
        room=world_b.room,
        participant_id="caller",
        transport="websocket",
        agent=world_b.agent,
    )
    before = _room_row(world_a.room)
    timeline = _timeline(world_a.room)

    with pytest.raises(TenantMismatch):
        services.room_event_append(
            tenant=world_a.tenant,
            room=world_a.room,
            kind="transcript",
            role="user",
            text="hello",
            session=session_b,
        )

    assert _room_row(world_a.room) == before
    assert _timeline(world_a.room) == timeline
