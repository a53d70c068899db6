"""Reads shared by the admin, the API and the consumers."""

from __future__ import annotations

import uuid
from typing import Any

from rooms.models import MANAGER_ROLES, ChannelBinding, Membership, Room, Tenant


def tenant_ids_for_user(user: Any, *, manage: bool = False) -> frozenset[uuid.UUID]:
    """Tenants the user belongs to (``manage``: as owner or admin). Cached on the user object
    for the length of a request."""
    if not getattr(user, "is_authenticated", False):
        return frozenset()
    cache_name = "_roomvoice_manage_tenants" if manage else "_roomvoice_member_tenants"
    cached: frozenset[uuid.UUID] | None = getattr(user, cache_name, None)
    if cached is None:
        memberships = Membership.objects.filter(user=user, tenant__is_active=True)
        if manage:
            memberships = memberships.filter(role__in=MANAGER_ROLES)
        cached = frozenset(memberships.values_list("tenant_id", flat=True))
        setattr(user, cache_name, cached)
    return cached


def room_get(*, tenant: Tenant, key: str) -> Room:
    return Room.objects.get(tenant=tenant, key=key)


def binding_for_participant(
    *, room: Room, channel_id: str, participant_id: str
) -> ChannelBinding | None:
    """The participant's own binding, else the channel-wide one (empty participant id)."""
    bindings = {
        binding.participant_id: binding
        for binding in ChannelBinding.objects.filter(
            room=room, channel_id=channel_id, participant_id__in=[participant_id, ""]
        )
    }
    return bindings.get(participant_id) or bindings.get("")
