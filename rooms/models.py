"""Tenants, people, API keys, rooms, channel bindings and the room timeline.

Writes go through ``rooms.services``; models hold structure, database constraints and
``clean()`` checks that need more than one column (the same checks the services run).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Length
from django.db.models.lookups import Exact

from roomvoice.db import choices_check

if TYPE_CHECKING:
    from voice.models import Agent, VoiceSession  # noqa: F401

KEY_VALIDATOR = RegexValidator(
    r"^[a-z0-9][a-z0-9_-]{0,63}$",
    "Use 1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit.",
)


class User(AbstractUser):
    """The project's user model (declared at the start so it can grow without pain)."""


class Tenant(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.CharField(max_length=64, unique=True, validators=[KEY_VALIDATOR])
    name = models.CharField(max_length=200)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name or self.slug


class MembershipRole(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"


MANAGER_ROLES = frozenset({MembershipRole.OWNER, MembershipRole.ADMIN})


class Membership(models.Model):
    """A user's place in a tenant. Owners and admins manage; members read."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(
        max_length=16, choices=MembershipRole.choices, default=MembershipRole.MEMBER
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="membership_unique_user"),
            choices_check("role", MembershipRole, "membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} ({self.role})"


class ApiKeyScope(models.TextChoices):
    READ = "read", "Read"
    WRITE = "write", "Read and write"


class ApiKey(models.Model):
    """A tenant's API key: ``rv_<prefix>_<secret>``; only a SHA-256 of the secret is kept."""

    PREFIX_LENGTH = 8

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    scope = models.CharField(max_length=8, choices=ApiKeyScope.choices, default=ApiKeyScope.READ)
    created_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            choices_check("scope", ApiKeyScope, "api_key_scope_valid"),
            models.CheckConstraint(
                condition=Exact(Length("secret_hash"), 64), name="api_key_hash_is_sha256"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.masked})"

    @property
    def masked(self) -> str:
        return f"rv_{self.prefix}_…"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class RoomStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused"
    CLOSED = "closed", "Closed"
    ARCHIVED = "archived", "Archived"


class Room(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="rooms")
    key = models.CharField(
        max_length=64,
        validators=[KEY_VALIDATOR],
        help_text="The room's name in URLs and the API, unique within its tenant (room-1).",
    )
    name = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=RoomStatus.choices, default=RoomStatus.ACTIVE)
    metadata = models.JSONField(default=dict, blank=True)
    default_agent = models.ForeignKey(
        "voice.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The index of the newest RoomEvent; services allocate the next ones under a row lock.
    last_event_index = models.PositiveBigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    closed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["tenant", "key"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "key"], name="room_unique_key_per_tenant"),
            choices_check("status", RoomStatus, "room_status_valid"),
            models.CheckConstraint(
                condition=Q(metadata__isnull=False), name="room_metadata_not_null"
            ),
        ]

    def __str__(self) -> str:
        return self.key

    def clean(self) -> None:
        super().clean()
        if not isinstance(self.metadata, dict):
            raise ValidationError({"metadata": "Metadata must be a JSON object."})
        if self.default_agent_id is not None and self.tenant_id is not None:
            if self.default_agent is not None and self.default_agent.tenant_id != self.tenant_id:
                raise ValidationError({"default_agent": "The agent belongs to another tenant."})


class Access(models.TextChoices):
    READ_WRITE = "read_write", "Read and write"
    READ_ONLY = "read_only", "Read only"
    WRITE_ONLY = "write_only", "Write only"
    NONE = "none", "None (revoked)"


VISIBILITY_KEYWORDS = frozenset({"all", "none", "transport", "intelligence"})


class ChannelBinding(models.Model):
    """Who may speak (write) and hear (read) in a room, per channel and participant.

    RFC §7.5: writing needs access READ_WRITE or WRITE_ONLY and not ``muted``; reading needs
    READ_WRITE or READ_ONLY; ``output_muted`` silences what the participant hears.
    An empty ``participant_id`` binds the channel for every participant without their own row.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="bindings")
    channel_id = models.CharField(max_length=64, validators=[KEY_VALIDATOR])
    participant_id = models.CharField(max_length=128, blank=True)
    access = models.CharField(max_length=16, choices=Access.choices, default=Access.READ_WRITE)
    muted = models.BooleanField(default=False)
    output_muted = models.BooleanField(default=False)
    visibility = models.CharField(
        max_length=500,
        default="all",
        help_text="all, none, transport, intelligence, or a comma-separated list of channel ids.",
    )
    metadata = models.JSONField(default=dict, blank=True)
    attached_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["room", "channel_id", "participant_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["room", "channel_id", "participant_id"],
                name="binding_unique_participant_per_channel",
            ),
            choices_check("access", Access, "binding_access_valid"),
            models.CheckConstraint(condition=~Q(visibility=""), name="binding_visibility_set"),
        ]

    def __str__(self) -> str:
        who = self.participant_id or "*"
        return f"{self.channel_id}/{who} ({self.access})"

    @property
    def can_read(self) -> bool:
        return self.access in (Access.READ_WRITE, Access.READ_ONLY)

    @property
    def can_write(self) -> bool:
        return self.access in (Access.READ_WRITE, Access.WRITE_ONLY) and not self.muted

    def clean(self) -> None:
        super().clean()
        if self.room_id is not None and self.tenant_id is not None:
            if self.room.tenant_id != self.tenant_id:
                raise ValidationError({"room": "The room belongs to another tenant."})
        try:
            self.visibility = normalize_visibility(self.visibility)
        except ValueError as error:
            raise ValidationError({"visibility": str(error)}) from None


def normalize_visibility(value: str) -> str:
    """``all``/``none``/``transport``/``intelligence`` or a list of channel ids, tidied."""
    value = value.strip()
    if value in VISIBILITY_KEYWORDS:
        return value
    items = [item.strip() for item in value.split(",")]
    if not value or any(not item for item in items):
        raise ValueError(
            "Visibility is all, none, transport, intelligence, or a comma-separated list of "
            "channel ids without empty items."
        )
    for item in items:
        if item in VISIBILITY_KEYWORDS:
            raise ValueError(f"'{item}' cannot be combined with channel ids.")
        try:
            KEY_VALIDATOR(item)
        except ValidationError:
            # The documented failure is ValueError (clean() reports it on the field).
            raise ValueError(f"'{item}' is not a channel id.") from None
    return ",".join(dict.fromkeys(items))


class EventKind(models.TextChoices):
    TRANSCRIPT = "transcript", "Transcript"
    MESSAGE = "message", "Text message"
    TOOL_CALL = "tool_call", "Tool call"
    SYSTEM = "system", "System event"


class EventRole(models.TextChoices):
    USER = "user", "User"
    ASSISTANT = "assistant", "Assistant"
    SYSTEM = "system", "System"
    TOOL = "tool", "Tool"


class EventStatus(models.TextChoices):
    DELIVERED = "delivered", "Delivered"
    BLOCKED = "blocked", "Blocked"


class RoomEvent(models.Model):
    """One entry of a room's timeline. ``index`` runs 1, 2, 3 … per room, without gaps."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="events")
    index = models.PositiveBigIntegerField()
    kind = models.CharField(max_length=16, choices=EventKind.choices)
    role = models.CharField(max_length=16, choices=EventRole.choices, blank=True)
    text = models.TextField(blank=True)
    status = models.CharField(
        max_length=16, choices=EventStatus.choices, default=EventStatus.DELIVERED
    )
    blocked_by = models.CharField(max_length=100, blank=True)
    session = models.ForeignKey(
        "voice.VoiceSession",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="events",
    )
    channel_id = models.CharField(max_length=64, blank=True)
    participant_id = models.CharField(max_length=128, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["room", "index"]
        constraints = [
            models.UniqueConstraint(fields=["room", "index"], name="room_event_unique_index"),
            models.CheckConstraint(condition=Q(index__gte=1), name="room_event_index_positive"),
            choices_check("kind", EventKind, "room_event_kind_valid"),
            models.CheckConstraint(
                condition=Q(role__in=[*EventRole.values, ""]), name="room_event_role_valid"
            ),
            choices_check("status", EventStatus, "room_event_status_valid"),
            models.CheckConstraint(
                condition=Q(status=EventStatus.DELIVERED, blocked_by="")
                | Q(status=EventStatus.BLOCKED),
                name="room_event_blocked_by_only_when_blocked",
            ),
        ]
        indexes = [models.Index(fields=["session", "index"], name="room_event_session_idx")]

    def __str__(self) -> str:
        return f"{self.room_id}#{self.index} {self.kind}"
