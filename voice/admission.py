"""Who may join a room's voice session or watch it: the rules every entry point shares
(the WebSocket consumers, the pages). Synchronous ORM reads: call them off the event loop.

An identity is a room token, a logged-in member of the room's tenant, or what the
project's ``authenticate`` hook vouched for. A refusal carries the WebSocket close code
and the words the client shows (docs/protocol.md). Rooms of other tenants are "not found",
never "forbidden": a caller learns nothing about rooms that are not theirs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from providers.base import RealtimeVoiceProvider
from rooms.models import Access, Room, RoomStatus, Tenant
from rooms.selectors import binding_for_participant, tenant_ids_for_user
from rooms.tokens import InvalidRoomToken, room_token_verify
from voice.agents import AgentConfig, ProviderUnavailable, agent_config_load, provider_for
from voice.models import Agent
from voice.protocol import (
    CLOSE_FORBIDDEN,
    CLOSE_NOT_FOUND,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNAVAILABLE,
)

VOICE_CHANNEL_ID = "voice"


class Refusal(Exception):
    def __init__(self, close_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.code = code
        self.message = message

    def as_message(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "message": self.message}


def _not_found(what: str = "room") -> Refusal:
    return Refusal(CLOSE_NOT_FOUND, "not_found", f"no such {what}")


@dataclass(frozen=True, slots=True)
class Admission:
    tenant: Tenant
    room: Room
    participant_id: str
    via: str  # "token" | "user" | "hook"
    #: What the credential grants ("speak", "listen", "observe"); None: no limit beyond the
    #: binding (a member, or a hook that did not say).
    permissions: frozenset[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _room_in(tenant_ids: frozenset[uuid.UUID], room_ref: str) -> Room:
    rooms = Room.objects.select_related("tenant").filter(
        tenant_id__in=tenant_ids, tenant__is_active=True
    )
    room_id = _as_uuid(room_ref)
    if room_id is not None:
        found = rooms.filter(pk=room_id).first()
        if found is None:
            raise _not_found()
        return found
    matches = list(rooms.filter(key=room_ref)[:2])
    if not matches:
        raise _not_found()
    if len(matches) > 1:
        raise Refusal(
            CLOSE_NOT_FOUND, "not_found", "more than one room has that key: use the room's id"
        )
    return matches[0]


def admit_token(*, room_ref: str, token: str) -> Admission:
    try:
        claims = room_token_verify(token)
    except InvalidRoomToken as error:
        raise Refusal(CLOSE_UNAUTHENTICATED, "unauthenticated", str(error)) from None
    room = _room_in(frozenset({claims.tenant_id}), room_ref)
    if room.pk != claims.room_id:
        raise Refusal(CLOSE_FORBIDDEN, "forbidden", "the token is for another room")
    return Admission(
        tenant=room.tenant,
        room=room,
        participant_id=claims.participant_id,
        via="token",
        permissions=claims.permissions,
    )


def admit_user(*, room_ref: str, user: Any) -> Admission:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        raise Refusal(CLOSE_UNAUTHENTICATED, "unauthenticated", "log in or use a room token")
    room = _room_in(tenant_ids_for_user(user), room_ref)
    return Admission(tenant=room.tenant, room=room, participant_id=f"user:{user.pk}", via="user")


def room_for_hook(*, room_ref: str) -> Room:
    """The room a hook is asked about: by id only (a hook has no tenant to scope a key)."""
    room_id = _as_uuid(room_ref)
    room = (
        Room.objects.select_related("tenant").filter(pk=room_id, tenant__is_active=True).first()
        if room_id is not None
        else None
    )
    if room is None:
        raise _not_found()
    return room


def admit_hook(*, room: Room, granted: dict[str, Any]) -> Admission:
    participant = granted.get("participant_id")
    if not isinstance(participant, str) or not participant.strip():
        raise Refusal(
            CLOSE_UNAUTHENTICATED, "unauthenticated", "the authenticate hook named no participant"
        )
    permissions = granted.get("permissions")
    metadata = {k: v for k, v in granted.items() if k not in ("participant_id", "permissions")}
    return Admission(
        tenant=room.tenant,
        room=room,
        participant_id=participant.strip(),
        via="hook",
        permissions=frozenset(permissions) if isinstance(permissions, list | tuple) else None,
        metadata=metadata,
    )


def require_observer(admission: Admission) -> None:
    if admission.permissions is not None and "observe" not in admission.permissions:
        raise Refusal(CLOSE_FORBIDDEN, "forbidden", "this token does not allow watching the room")


@dataclass(frozen=True, slots=True)
class VoicePlan:
    """Everything a voice connection needs, loaded once before the socket is accepted."""

    admission: Admission
    agent: Agent
    config: AgentConfig
    provider: RealtimeVoiceProvider  # built, not connected


def plan_voice(admission: Admission, *, agent_slug: str | None) -> VoicePlan:
    room = admission.room
    if room.status != RoomStatus.ACTIVE:
        raise Refusal(CLOSE_FORBIDDEN, "forbidden", f"the room is {room.status}")
    if admission.permissions is not None and not admission.permissions & {"speak", "listen"}:
        raise Refusal(CLOSE_FORBIDDEN, "forbidden", "this token does not allow joining the call")
    agents = Agent.objects.filter(tenant=admission.tenant)
    if agent_slug:
        agent = agents.filter(slug=agent_slug).first()
    elif room.default_agent_id is not None:
        agent = agents.filter(pk=room.default_agent_id).first()
    else:
        raise Refusal(CLOSE_NOT_FOUND, "not_found", "the room has no agent: choose one")
    if agent is None:
        raise _not_found("agent")
    binding = binding_for_participant(
        room=room, channel_id=VOICE_CHANNEL_ID, participant_id=admission.participant_id
    )
    if binding is not None and binding.access == Access.NONE:
        raise Refusal(CLOSE_FORBIDDEN, "forbidden", "your access to this room was revoked")
    config = agent_config_load(tenant=admission.tenant, agent=agent)
    try:
        provider = provider_for(config)  # builds the client only: no connection is made here
    except ProviderUnavailable as error:
        raise Refusal(CLOSE_UNAVAILABLE, "unavailable", str(error)) from None
    return VoicePlan(admission=admission, agent=agent, config=config, provider=provider)
