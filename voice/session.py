"""The in-memory state of one live voice session (the ``session`` the seed passes around).

Its persistent twin is ``voice.models.VoiceSession``; this object lives on the audio path
and carries no ORM. States and moves are the seed's: CONNECTING → ACTIVE → ENDED.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["LiveSession", "SessionState", "SessionStateError"]


class SessionState(StrEnum):
    CONNECTING = "connecting"
    ACTIVE = "active"
    ENDED = "ended"


_MOVES: dict[SessionState, frozenset[SessionState]] = {
    SessionState.CONNECTING: frozenset({SessionState.ACTIVE, SessionState.ENDED}),
    SessionState.ACTIVE: frozenset({SessionState.ENDED}),
    SessionState.ENDED: frozenset(),
}


class SessionStateError(RuntimeError):
    """A move the state machine does not allow (e.g. anything out of ENDED)."""


@dataclass(eq=False, slots=True)
class LiveSession:
    room_id: str
    participant_id: str
    channel_id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: SessionState = SessionState.CONNECTING
    provider_session_id: str = ""
    end_reason: str = ""
    created_at: float = field(default_factory=time.time)
    activated_at: float | None = None
    ended_at: float | None = None
    #: The engine's counters (drops per policy, bad frames…), filled in when the session ends.
    stats: dict[str, int] = field(default_factory=dict)
    #: The provider's usage, summed over the session's responses (token counts, by kind).
    usage: dict[str, Any] = field(default_factory=dict)
    #: The provider's transparent reconnects (reason, attempts, gap_ms, ...), in order.
    reconnects: list[dict[str, Any]] = field(default_factory=list)
    #: The newest handle that resumes the vendor session (Gemini), "" when none.
    resumption_handle: str = ""

    def move_to(self, target: SessionState) -> None:
        if target not in _MOVES[self.state]:
            raise SessionStateError(f"session {self.id} cannot move from {self.state} to {target}")
        self.state = target
        if target is SessionState.ACTIVE:
            self.activated_at = time.time()
        elif target is SessionState.ENDED:
            self.ended_at = time.time()

    @property
    def is_active(self) -> bool:
        return self.state is SessionState.ACTIVE

    @property
    def is_ended(self) -> bool:
        return self.state is SessionState.ENDED
