"""Shared reads: which tenants a user may see or manage, and which binding applies."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser

from rooms import services
from rooms.models import ChannelBinding, Tenant, User
from rooms.selectors import binding_for_participant, tenant_ids_for_user
from tests.fixtures.actors import TenantWorld

# --- tenant_ids_for_user --------------------------------------------------------------------


def test_member_tenants_include_every_role(tenant_a: Tenant, owner_a: User, member_a: User) -> None:
    assert tenant_ids_for_user(User.objects.get(pk=owner_a.pk)) == frozenset({tenant_a.pk})
    assert tenant_ids_for_user(User.objects.get(pk=member_a.pk)) == frozenset({tenant_a.pk})


def test_managed_tenants_need_the_owner_or_admin_role(
    tenant_a: Tenant, owner_a: User, member_a: User
) -> None:
    admin = User.objects.create_user(username="admin-a")
    services.membership_set(tenant=tenant_a, user=admin, role="admin")

    assert tenant_ids_for_user(owner_a, manage=True) == frozenset({tenant_a.pk})
    assert tenant_ids_for_user(admin, manage=True) == frozenset({tenant_a.pk})
    assert tenant_ids_for_user(member_a, manage=True) == frozenset()


def test_tenants_of_a_user_in_two_tenants_are_told_apart_by_role(
    tenant_a: Tenant, tenant_b: Tenant, owner_a: User
) -> None:
    services.membership_set(tenant=tenant_b, user=owner_a, role="member")
    user = User.objects.get(pk=owner_a.pk)

    assert tenant_ids_for_user(user) == frozenset({tenant_a.pk, tenant_b.pk})
    assert tenant_ids_for_user(user, manage=True) == frozenset({tenant_a.pk})


def test_tenants_of_a_user_exclude_other_tenants(
    tenant_a: Tenant, tenant_b: Tenant, owner_b: User
) -> None:
    assert tenant_ids_for_user(owner_b) == frozenset({tenant_b.pk})
    assert tenant_ids_for_user(owner_b, manage=True) == frozenset({tenant_b.pk})


def test_tenants_of_a_user_exclude_an_inactive_tenant(
    tenant_a: Tenant, tenant_b: Tenant, owner_a: User
) -> None:
    services.membership_set(tenant=tenant_b, user=owner_a, role="owner")
    Tenant.objects.filter(pk=tenant_a.pk).update(is_active=False)
    user = User.objects.get(pk=owner_a.pk)

    assert tenant_ids_for_user(user) == frozenset({tenant_b.pk})
    assert tenant_ids_for_user(user, manage=True) == frozenset({tenant_b.pk})


def test_tenants_of_a_user_without_memberships_are_none(superuser: User) -> None:
    assert tenant_ids_for_user(superuser) == frozenset()
    assert tenant_ids_for_user(superuser, manage=True) == frozenset()


@pytest.mark.parametrize("manage", [False, True])
def test_tenants_of_an_anonymous_user_are_none_without_a_query(
    db: None, django_assert_num_queries: Any, manage: bool
) -> None:
    with django_assert_num_queries(0):
        assert tenant_ids_for_user(AnonymousUser(), manage=manage) == frozenset()


@pytest.mark.parametrize("user", [None, object()])
def test_tenants_of_something_that_is_not_a_user_are_none(db: None, user: object) -> None:
    assert tenant_ids_for_user(user) == frozenset()


def test_tenants_of_a_user_are_cached_on_the_user_object(
    tenant_a: Tenant, owner_a: User, django_assert_num_queries: Any
) -> None:
    user = User.objects.get(pk=owner_a.pk)
    with django_assert_num_queries(2):
        member = tenant_ids_for_user(user)
        manage = tenant_ids_for_user(user, manage=True)

    with django_assert_num_queries(0):
        assert tenant_ids_for_user(user) == member == frozenset({tenant_a.pk})
        assert tenant_ids_for_user(user, manage=True) == manage == frozenset({tenant_a.pk})


# --- binding_for_participant ----------------------------------------------------------------


def test_binding_for_participant_prefers_their_own_binding(world_a: TenantWorld) -> None:
    services.binding_attach(
        tenant=world_a.tenant, room=world_a.room, channel_id="voice", access="read_only"
    )

    binding = binding_for_participant(
        room=world_a.room, channel_id="voice", participant_id="caller"
    )

    assert binding is not None
    assert (binding.pk, binding.participant_id, binding.access) == (
        world_a.binding.pk,
        "caller",
        "read_write",
    )


def test_binding_for_participant_falls_back_to_the_channel_wide_binding(
    world_a: TenantWorld,
) -> None:
    channel_wide, _created = services.binding_attach(
        tenant=world_a.tenant, room=world_a.room, channel_id="voice", access="read_only"
    )

    binding = binding_for_participant(room=world_a.room, channel_id="voice", participant_id="guest")

    assert binding is not None
    assert (binding.pk, binding.participant_id, binding.access) == (
        channel_wide.pk,
        "",
        "read_only",
    )


def test_binding_for_participant_is_none_without_own_or_channel_wide_binding(
    world_a: TenantWorld,
) -> None:
    assert (
        binding_for_participant(room=world_a.room, channel_id="voice", participant_id="guest")
        is None
    )


def test_binding_for_participant_does_not_cross_channels(world_a: TenantWorld) -> None:
    services.binding_attach(tenant=world_a.tenant, room=world_a.room, channel_id="text")

    assert (
        binding_for_participant(room=world_a.room, channel_id="video", participant_id="caller")
        is None
    )


def test_binding_for_participant_does_not_cross_rooms(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    ChannelBinding.objects.filter(pk=world_a.binding.pk).delete()

    assert (
        binding_for_participant(room=world_a.room, channel_id="voice", participant_id="caller")
        is None
    )
    assert (
        binding_for_participant(room=world_b.room, channel_id="voice", participant_id="caller")
        == world_b.binding
    )
