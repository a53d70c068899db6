"""Control-plane events for a room's live observers and session hosts (DESIGN §6).

Events are small dicts of JSON primitives (ids and times as strings) because channels-redis
serializes with msgpack. They are sent after the writing transaction commits, never before:
an observer must never see something the database does not hold.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

if TYPE_CHECKING:
    from rooms.models import ChannelBinding, RoomEvent

logger = logging.getLogger(__name__)

BINDING_CHANGED = "room.binding_changed"
EVENT_APPENDED = "room.event_appended"
SESSION_CHANGED = "room.session_changed"
TOOL_CALL_CHANGED = "room.tool_call_changed"


def room_group_name(room_id: uuid.UUID | str) -> str:
    return f"room.{room_id}"


def binding_changed_message(binding: ChannelBinding, *, detached: bool = False) -> dict[str, Any]:
    return {
        "type": BINDING_CHANGED,
        "room_id": str(binding.room_id),
        "binding_id": str(binding.pk),
        "channel_id": binding.channel_id,
        "participant_id": binding.participant_id,
        "access": "none" if detached else str(binding.access),
        "muted": binding.muted,
        "output_muted": binding.output_muted,
        "visibility": binding.visibility,
        "detached": detached,
    }


def event_appended_message(event: RoomEvent) -> dict[str, Any]:
    return {
        "type": EVENT_APPENDED,
        "room_id": str(event.room_id),
        "event_id": str(event.pk),
        "index": event.index,
        "kind": str(event.kind),
        "role": str(event.role),
        "text": event.text,
        "status": str(event.status),
        "session_id": str(event.session_id) if event.session_id else None,
        "channel_id": event.channel_id,
        "participant_id": event.participant_id,
        "occurred_at": event.occurred_at.isoformat(),
    }


def session_changed_message(
    *,
    room_id: uuid.UUID | str,
    session_id: uuid.UUID | str,
    state: str,
    participant_id: str,
    agent: str,
    transport: str,
    end_reason: str,
) -> dict[str, Any]:
    return {
        "type": SESSION_CHANGED,
        "room_id": str(room_id),
        "session_id": str(session_id),
        "state": state,
        "participant_id": participant_id,
        "agent": agent,
        "transport": transport,
        "end_reason": end_reason,
    }


def tool_call_changed_message(
    *, room_id: uuid.UUID | str, session_id: uuid.UUID | str, call_id: str, name: str, status: str
) -> dict[str, Any]:
    return {
        "type": TOOL_CALL_CHANGED,
        "room_id": str(room_id),
        "session_id": str(session_id),
        "call_id": call_id,
        "name": name,
        "status": status,
    }


def broadcast_on_commit(room_id: uuid.UUID | str, message: dict[str, Any]) -> None:
    """Send ``message`` to the room's group once the current transaction commits."""
    group = room_group_name(room_id)

    def send() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            async_to_sync(layer.group_send)(group, message)
        except Exception:
            # The write already committed; a lost notification must not undo it. Observers
            # resynchronise from the database (timeline index, binding rows).
            logger.exception("broadcast of %s to %s failed", message.get("type"), group)

    transaction.on_commit(send)
