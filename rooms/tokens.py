"""Room tokens: signed, expiring credentials for one participant in one room.

A token lets a caller without a Django login (a phone app, a customer's web page) join a
room's voice session or watch it, with the permissions it names. It is signed with the
server's secret key (``django.core.signing``, HMAC-SHA256), carries its own expiry, and
holds ids only. Tokens are stateless: to shut a participant out before the token expires,
revoke their channel binding (access "none"), which every connection checks.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from django.core import signing

__all__ = [
    "PERMISSIONS",
    "InvalidRoomToken",
    "RoomToken",
    "room_token_sign",
    "room_token_verify",
]

SALT = "roomvoice.rooms.token"
#: speak: send audio and text; listen: hear the agent; observe: the live room view.
PERMISSIONS = frozenset({"speak", "listen", "observe"})
MAX_TTL_SECONDS = 7 * 24 * 3600


class InvalidRoomToken(ValueError):
    """Not a token we signed, tampered with, or expired."""


@dataclass(frozen=True, slots=True)
class RoomToken:
    tenant_id: uuid.UUID
    room_id: uuid.UUID
    participant_id: str
    permissions: frozenset[str]
    expires_at: int  # Unix time, seconds


def room_token_sign(
    *,
    tenant_id: uuid.UUID,
    room_id: uuid.UUID,
    participant_id: str,
    permissions: frozenset[str],
    expires_at: int,
) -> str:
    payload = {
        "t": str(tenant_id),
        "r": str(room_id),
        "p": participant_id,
        "perm": sorted(permissions),
        "exp": int(expires_at),
    }
    return signing.dumps(payload, salt=SALT, compress=True)


def room_token_verify(token: str, *, now: float | None = None) -> RoomToken:
    if not isinstance(token, str) or not token or len(token) > 2048:
        raise InvalidRoomToken("malformed room token")
    try:
        payload = signing.loads(token, salt=SALT)
    except signing.BadSignature:
        raise InvalidRoomToken("the room token's signature is not valid") from None
    try:
        parsed = RoomToken(
            tenant_id=uuid.UUID(payload["t"]),
            room_id=uuid.UUID(payload["r"]),
            participant_id=str(payload["p"]),
            permissions=frozenset(payload["perm"]) & PERMISSIONS,
            expires_at=int(payload["exp"]),
        )
    except (KeyError, TypeError, ValueError):
        raise InvalidRoomToken("malformed room token") from None
    if parsed.expires_at <= (time.time() if now is None else now):
        raise InvalidRoomToken("the room token has expired")
    return parsed
