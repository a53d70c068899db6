"""Writes for tenants, members, API keys, rooms, bindings and the timeline.

Every function takes keyword-only arguments and a ``tenant=`` it checks objects against;
each is one transaction; notifications go out only after commit.
"""

from __future__ import annotations

import logging
import secrets
import string
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from rooms.broadcast import binding_changed_message, broadcast_on_commit, event_appended_message
from rooms.models import (
    Access,
    ApiKey,
    ApiKeyScope,
    ChannelBinding,
    EventKind,
    EventRole,
    EventStatus,
    Membership,
    MembershipRole,
    Room,
    RoomEvent,
    RoomStatus,
    Tenant,
    User,
)
from rooms.tokens import MAX_TTL_SECONDS, PERMISSIONS, room_token_sign
from roomvoice.lib.secrets import hash_token, new_token, tokens_equal

if TYPE_CHECKING:
    from voice.models import Agent, VoiceSession

logger = logging.getLogger(__name__)

API_KEY_PREFIX = "rv_"
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
# A key's last_used_at is written at most this often (saves a write per request).
API_KEY_LAST_USED_RESOLUTION = timedelta(minutes=1)


class TenantMismatch(ValidationError):
    """An object was passed with a tenant it does not belong to."""


def _require_tenant(tenant: Tenant, *objects: Any) -> None:
    for obj in objects:
        if obj is not None and obj.tenant_id != tenant.pk:
            raise TenantMismatch(f"{type(obj).__name__} {obj.pk} does not belong to {tenant.slug}")


# --- Tenants and members --------------------------------------------------------------------


def tenant_create(*, slug: str, name: str) -> Tenant:
    tenant = Tenant(slug=slug.strip().lower(), name=name.strip())
    tenant.full_clean()
    tenant.save()
    return tenant


def membership_set(*, tenant: Tenant, user: User, role: str = MembershipRole.MEMBER) -> Membership:
    """Adds the user to the tenant, or changes their role."""
    if role not in MembershipRole.values:
        raise ValidationError({"role": f"Unknown role {role!r}."})
    membership, _ = Membership.objects.update_or_create(
        user=user, tenant=tenant, defaults={"role": role}
    )
    return membership


def membership_remove(*, tenant: Tenant, user: User) -> bool:
    deleted, _ = Membership.objects.filter(user=user, tenant=tenant).delete()
    return deleted > 0


# --- API keys -------------------------------------------------------------------------------


def api_key_create(
    *,
    tenant: Tenant,
    name: str,
    scope: str = ApiKeyScope.READ,
    created_by: User | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its plaintext, which is shown once and never stored."""
    if scope not in ApiKeyScope.values:
        raise ValidationError({"scope": f"Unknown scope {scope!r}."})
    api_key_check_expiry(expires_at)
    secret = new_token(32)
    for _attempt in range(5):
        prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(ApiKey.PREFIX_LENGTH))
        api_key = ApiKey(
            tenant=tenant,
            name=name.strip(),
            prefix=prefix,
            secret_hash=hash_token(secret),
            scope=scope,
            created_by=created_by,
            expires_at=expires_at,
        )
        api_key.full_clean(exclude=["prefix", "secret_hash"])
        try:
            with transaction.atomic():
                api_key.save(force_insert=True)
        except IntegrityError:
            if ApiKey.objects.filter(prefix=prefix).exists():
                continue  # prefix collision (1 in 36^8): draw another
            raise
        logger.info("api key %s created for tenant %s", api_key.masked, tenant.slug)
        return api_key, f"{API_KEY_PREFIX}{prefix}_{secret}"
    raise RuntimeError("could not allocate a unique API key prefix")


def api_key_check_expiry(expires_at: datetime | None) -> None:
    """A new key's expiry, if any, is in the future."""
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "The expiry must be in the future."})


def api_key_revoke(*, tenant: Tenant, api_key: ApiKey) -> bool:
    """Revokes the key; False when it already was."""
    _require_tenant(tenant, api_key)
    updated = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    api_key.refresh_from_db(fields=["revoked_at"])
    return updated == 1


def api_key_authenticate(*, token: str) -> ApiKey | None:
    """The live key for a presented token, or None. Resolves the tenant; constant-time."""
    if not token.startswith(API_KEY_PREFIX):
        return None
    prefix, separator, secret = token[len(API_KEY_PREFIX) :].partition("_")
    if not separator or len(prefix) != ApiKey.PREFIX_LENGTH or not secret:
        return None
    api_key = ApiKey.objects.select_related("tenant").filter(prefix=prefix).first()
    if api_key is None or not tokens_equal(api_key.secret_hash, hash_token(secret)):
        return None
    now = timezone.now()
    if api_key.revoked_at is not None or (api_key.expires_at and api_key.expires_at <= now):
        return None
    if not api_key.tenant.is_active:
        return None
    if api_key.last_used_at is None or now - api_key.last_used_at >= API_KEY_LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


# --- Rooms ----------------------------------------------------------------------------------


def room_create(
    *,
    tenant: Tenant,
    key: str,
    name: str = "",
    metadata: dict[str, Any] | None = None,
    default_agent: Agent | None = None,
) -> Room:
    _require_tenant(tenant, default_agent)
    room = Room(
        tenant=tenant,
        key=key.strip().lower(),
        name=name.strip(),
        metadata={} if metadata is None else metadata,
        default_agent=default_agent,
    )
    room.full_clean()
    room.save()
    return room


def room_update(*, tenant: Tenant, room: Room, **changes: Any) -> Room:
    """Changes a room's name, metadata or default agent (its key and status have their own
    rules: the key names it in URLs; see room_set_status)."""
    _require_tenant(tenant, room, changes.get("default_agent"))
    allowed = {"name", "metadata", "default_agent"}
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise ValidationError({name: "This field cannot be changed here." for name in unknown})
    for name, value in changes.items():
        setattr(room, name, value.strip() if name == "name" else value)
    room.full_clean()
    room.save(update_fields=[*changes, "updated_at"])
    return room


def room_token_create(
    *,
    tenant: Tenant,
    room: Room,
    participant_id: str,
    permissions: Iterable[str] = ("speak", "listen"),
    ttl_seconds: int = 3600,
) -> str:
    """A signed token letting ``participant_id`` into ``room`` with ``permissions``
    (speak, listen, observe) for ``ttl_seconds``. Ids starting "user:" are reserved for
    logged-in users."""
    _require_tenant(tenant, room)
    participant_id = participant_id.strip()
    errors: dict[str, str] = {}
    if not participant_id or len(participant_id) > 200:
        errors["participant_id"] = "A participant id of 1 to 200 characters is required."
    elif participant_id.startswith("user:"):
        errors["participant_id"] = "Participant ids starting with 'user:' are reserved."
    wanted = frozenset(permissions)
    if not wanted or not wanted <= PERMISSIONS:
        errors["permissions"] = f"Choose from {sorted(PERMISSIONS)}."
    if isinstance(ttl_seconds, bool) or not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
        errors["ttl_seconds"] = f"Between 1 and {MAX_TTL_SECONDS} seconds."
    if errors:
        raise ValidationError(errors)
    return room_token_sign(
        tenant_id=tenant.pk,
        room_id=room.pk,
        participant_id=participant_id,
        permissions=wanted,
        expires_at=int(time.time()) + ttl_seconds,
    )


def room_set_status(*, tenant: Tenant, room: Room, status: str) -> Room:
    _require_tenant(tenant, room)
    if status not in RoomStatus.values:
        raise ValidationError({"status": f"Unknown room status {status!r}."})
    closed_states = (RoomStatus.CLOSED, RoomStatus.ARCHIVED)
    with transaction.atomic():
        locked = Room.objects.select_for_update().get(pk=room.pk)
        previous = locked.status
        if previous != status:
            locked.status = status
            if status not in closed_states:
                locked.closed_at = None
            elif previous not in closed_states:
                locked.closed_at = timezone.now()
            # else: closed <-> archived keeps the time the room was closed
            locked.save(update_fields=["status", "closed_at", "updated_at"])
            room_event_append(
                tenant=tenant,
                room=locked,
                kind=EventKind.SYSTEM,
                role=EventRole.SYSTEM,
                text=f"room status changed from {previous} to {status}",
                metadata={"event": "room_status", "from": previous, "to": status},
            )
    for name in ("status", "closed_at", "updated_at", "last_event_index"):
        setattr(room, name, getattr(locked, name))
    return room


# --- Channel bindings -----------------------------------------------------------------------


def binding_attach(
    *,
    tenant: Tenant,
    room: Room,
    channel_id: str,
    participant_id: str = "",
    access: str = Access.READ_WRITE,
    visibility: str = "all",
    metadata: dict[str, Any] | None = None,
) -> tuple[ChannelBinding, bool]:
    """Binds a channel (and participant) to the room. An existing binding is returned as it
    is, never widened (RFC §7.5 rule 6); the flag says whether one was created."""
    _require_tenant(tenant, room)
    existing = ChannelBinding.objects.filter(
        room=room, channel_id=channel_id, participant_id=participant_id
    ).first()
    if existing is not None:
        return existing, False
    binding = ChannelBinding(
        tenant=tenant,
        room=room,
        channel_id=channel_id,
        participant_id=participant_id,
        access=access,
        visibility=visibility,
        metadata={} if metadata is None else metadata,
    )
    # Uniqueness is left to the database: a concurrent attach of the same binding loses the
    # insert and gets the winner's row, exactly as if it had come second.
    binding.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            binding.save(force_insert=True)
            _binding_system_event(tenant, binding, "attached")
            broadcast_on_commit(room.pk, binding_changed_message(binding))
    except IntegrityError:
        winner = ChannelBinding.objects.filter(
            room=room, channel_id=channel_id, participant_id=participant_id
        ).first()
        if winner is None:
            raise
        return winner, False
    return binding, True


_UNSET: Any = object()


def binding_update(
    *,
    tenant: Tenant,
    binding: ChannelBinding,
    access: str = _UNSET,
    muted: bool = _UNSET,
    output_muted: bool = _UNSET,
    visibility: str = _UNSET,
) -> ChannelBinding:
    """Changes access, mute, output mute or visibility; live sessions learn it at once."""
    _require_tenant(tenant, binding)
    changes = {
        name: value
        for name, value in (
            ("access", access),
            ("muted", muted),
            ("output_muted", output_muted),
            ("visibility", visibility),
        )
        if value is not _UNSET
    }
    with transaction.atomic():
        locked = ChannelBinding.objects.select_for_update().get(pk=binding.pk)
        before = {name: getattr(locked, name) for name in changes}
        for name, value in changes.items():
            setattr(locked, name, value)
        locked.full_clean()
        # Compare after full_clean(), which normalises (visibility " all " is "all"): a value
        # that only differs before normalisation is no change.
        changed = {
            name: getattr(locked, name) for name in changes if getattr(locked, name) != before[name]
        }
        if changed:
            locked.save(update_fields=[*changed, "updated_at"])
            _binding_system_event(tenant, locked, "changed", changes=changed)
            broadcast_on_commit(locked.room_id, binding_changed_message(locked))
    for name in (*changes, "updated_at"):
        setattr(binding, name, getattr(locked, name))
    return binding


def binding_set_access(*, tenant: Tenant, binding: ChannelBinding, access: str) -> ChannelBinding:
    return binding_update(tenant=tenant, binding=binding, access=access)


def binding_set_muted(*, tenant: Tenant, binding: ChannelBinding, muted: bool) -> ChannelBinding:
    return binding_update(tenant=tenant, binding=binding, muted=muted)


def binding_set_output_muted(
    *, tenant: Tenant, binding: ChannelBinding, output_muted: bool
) -> ChannelBinding:
    return binding_update(tenant=tenant, binding=binding, output_muted=output_muted)


def binding_detach(*, tenant: Tenant, binding: ChannelBinding) -> None:
    """Removes the binding; live sessions of that participant lose access on the next frame."""
    _require_tenant(tenant, binding)
    with transaction.atomic():
        message = binding_changed_message(binding, detached=True)
        _binding_system_event(tenant, binding, "detached")
        binding.delete()
        broadcast_on_commit(message["room_id"], message)


def _binding_system_event(
    tenant: Tenant, binding: ChannelBinding, action: str, *, changes: dict[str, Any] | None = None
) -> None:
    who = binding.participant_id or "*"
    detail = ", ".join(f"{name}={value}" for name, value in (changes or {}).items())
    room_event_append(
        tenant=tenant,
        room=binding.room,
        kind=EventKind.SYSTEM,
        role=EventRole.SYSTEM,
        text=f"binding {binding.channel_id}/{who} {action}" + (f": {detail}" if detail else ""),
        channel_id=binding.channel_id,
        participant_id=binding.participant_id,
        metadata={"event": f"binding_{action}", **({"changes": changes} if changes else {})},
    )


# --- The timeline ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewRoomEvent:
    """An event to append; the index and ids are assigned on write."""

    kind: str
    role: str = ""
    text: str = ""
    status: str = EventStatus.DELIVERED
    blocked_by: str = ""
    session: VoiceSession | None = None
    channel_id: str = ""
    participant_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None


def room_events_append(
    *, tenant: Tenant, room: Room, events: Sequence[NewRoomEvent]
) -> list[RoomEvent]:
    """Appends events in order with the next indexes, in one transaction and one lock.

    The index counter is bumped with an UPDATE first, which takes the row's write lock
    (PostgreSQL) or the database write lock (SQLite) before the value is read, so concurrent
    writers queue instead of colliding: indexes stay 1, 2, 3 … without gaps or repeats.
    """
    _require_tenant(tenant, room)
    if not events:
        return []
    rows: list[RoomEvent] = []
    now = timezone.now()
    for event in events:
        _require_tenant(tenant, event.session)
        row = RoomEvent(
            tenant=tenant,
            room=room,
            index=1,  # placeholder; validated below, assigned under the lock
            kind=event.kind,
            role=event.role,
            text=event.text,
            status=event.status,
            blocked_by=event.blocked_by,
            session=event.session,
            channel_id=event.channel_id,
            participant_id=event.participant_id,
            metadata=event.metadata,
            occurred_at=event.occurred_at or now,
        )
        row.full_clean(exclude=["room", "tenant", "session", "index"], validate_constraints=False)
        _check_event(row)
        rows.append(row)
    with transaction.atomic():
        Room.objects.filter(pk=room.pk).update(last_event_index=F("last_event_index") + len(rows))
        last = Room.objects.filter(pk=room.pk).values_list("last_event_index", flat=True).get()
        first = last - len(rows) + 1
        for offset, row in enumerate(rows):
            row.index = first + offset
        RoomEvent.objects.bulk_create(rows)
        for row in rows:
            broadcast_on_commit(room.pk, event_appended_message(row))
    room.last_event_index = last
    return rows


def room_event_append(*, tenant: Tenant, room: Room, kind: str, **fields: Any) -> RoomEvent:
    """Appends one event; see :func:`room_events_append`."""
    return room_events_append(tenant=tenant, room=room, events=[NewRoomEvent(kind=kind, **fields)])[
        0
    ]


def room_event_correct(
    *, tenant: Tenant, room: Room, session: VoiceSession, role: str, original: str, corrected: str
) -> RoomEvent | None:
    """The vendor corrected a transcript after the fact (ElevenLabs: the reply as actually
    spoken after an interruption): the session's newest transcript of ``role`` with the
    original text gets the corrected text; the original stays in ``metadata``. The timeline
    keeps its indexes. None when no such transcript exists."""
    _require_tenant(tenant, room)
    _require_tenant(tenant, session)
    with transaction.atomic():
        row = (
            RoomEvent.objects.select_for_update()
            .filter(room=room, session=session, kind=EventKind.TRANSCRIPT, role=role, text=original)
            .order_by("-index")
            .first()
        )
        if row is None:
            return None
        row.metadata = {**row.metadata, "original_text": original}
        row.text = corrected
        row.save(update_fields=["text", "metadata"])
    return row


def _check_event(row: RoomEvent) -> None:
    if row.status == EventStatus.DELIVERED and row.blocked_by:
        raise ValidationError({"blocked_by": "Only a blocked event names what blocked it."})
    if not isinstance(row.metadata, dict):
        raise ValidationError({"metadata": "Metadata must be a JSON object."})


# --- Staff permissions ----------------------------------------------------------------------

OPERATOR_GROUP = "Tenant operators"
# What tenant staff may do in the admin; the tenant scoping on top is in rooms.admin_base.
OPERATOR_PERMISSIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "rooms": {
        "tenant": ("view", "change"),
        "membership": ("view", "add", "change", "delete"),
        "apikey": ("view", "add", "change", "delete"),
        "room": ("view", "add", "change", "delete"),
        "channelbinding": ("view", "add", "change", "delete"),
        "roomevent": ("view",),
        "user": ("view",),
    },
    "voice": {
        "agent": ("view", "add", "change", "delete"),
        "tool": ("view", "add", "change", "delete"),
        "voicesession": ("view",),
        "toolcall": ("view",),
    },
    "providers": {"providercredential": ("view", "add", "change", "delete")},
    "telephony": {
        "siptrunk": ("view", "add", "change", "delete"),
        "phonenumber": ("view", "add", "change", "delete"),
        "twilioaccount": ("view", "add", "change", "delete"),
    },
}


def operator_group_sync() -> Any:
    """Creates or refreshes the "Tenant operators" group; idempotent."""
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.get_or_create(name=OPERATOR_GROUP)
    wanted = [
        (app_label, f"{action}_{model}")
        for app_label, models in OPERATOR_PERMISSIONS.items()
        for model, actions in models.items()
        for action in actions
    ]
    permissions = [
        Permission.objects.get(content_type__app_label=app_label, codename=codename)
        for app_label, codename in wanted
    ]
    group.permissions.set(permissions)
    return group
