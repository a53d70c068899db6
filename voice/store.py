"""Where the engine records what happens: session states, transcripts, tool calls, bindings.

The engine talks to a :class:`SessionStore` and never to the ORM, so it runs (and is tested)
without Django. :class:`MemoryStore` keeps everything in lists: the default for a channel built
in plain Python (the seed's examples) and handy in tests. The Django-backed store that writes
``VoiceSession``, ``RoomEvent`` and ``ToolCall`` rows from a batched writer task plugs in here.

Every method is called off the audio path (session start/end, transcripts, tool calls).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from voice.session import LiveSession

__all__ = ["BindingSnapshot", "MemoryStore", "SessionStore", "StoredToolCall", "StoredTranscript"]


@dataclass(frozen=True, slots=True)
class BindingSnapshot:
    """What the audio path checks on every frame (RFC §7.5)."""

    access: str = "read_write"
    muted: bool = False
    output_muted: bool = False

    @property
    def can_speak(self) -> bool:
        return self.access in ("read_write", "write_only") and not self.muted

    @property
    def can_hear(self) -> bool:
        return not self.output_muted and self.access != "none"

    def limited(self, permissions: Iterable[str] | None) -> BindingSnapshot:
        """This binding as seen by a participant whose credential (a room token) grants only
        ``permissions`` ("speak", "listen"); None: no limit. A credential never widens it."""
        if permissions is None:
            return self
        granted = frozenset(permissions)
        return replace(
            self,
            muted=self.muted or "speak" not in granted,
            output_muted=self.output_muted or "listen" not in granted,
        )


@dataclass(slots=True)
class StoredTranscript:
    session_id: str
    room_id: str
    participant_id: str
    role: str
    text: str
    status: str  # "delivered" | "blocked"
    blocked_by: str
    occurred_at: datetime
    kind: str = "transcript"  # or "message": text the caller typed


@dataclass(slots=True)
class StoredToolCall:
    session_id: str
    call_id: str
    name: str
    arguments: dict[str, Any]
    status: str = "running"
    result: str = ""
    error: str = ""
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    #: "inline" (run by the engine) or "remote" (``Tool.remote``: the store keeps the call
    #: pending for the executor to claim).
    execution: str = "inline"
    #: The result (or a cancellation notice) reached the provider.
    delivered: bool = False
    #: The store's id for the call (a ``ToolCall`` primary key), set by tool_call_started.
    row_id: str = ""


@dataclass(slots=True)
class StoredCorrection:
    """A final transcript the vendor corrected afterwards (applied in timeline order)."""

    session_id: str
    role: str
    original: str
    corrected: str


@dataclass(slots=True)
class StoredSystemEvent:
    """A system line on the room timeline (a provider reconnect, say)."""

    session_id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class SessionStore:
    """The interface, with no-op defaults; subclasses override what they keep."""

    async def load_binding(self, session: LiveSession) -> BindingSnapshot:
        return BindingSnapshot()

    async def session_created(self, session: LiveSession) -> None:
        return None

    async def session_activated(self, session: LiveSession) -> None:
        return None

    async def session_ended(self, session: LiveSession, reason: str, detail: str) -> None:
        return None

    async def transcript(self, record: StoredTranscript) -> None:
        return None

    async def tool_call_started(self, record: StoredToolCall) -> None:
        return None

    async def tool_call_finished(self, record: StoredToolCall) -> None:
        return None

    async def provider_reconnected(self, session: LiveSession, info: dict[str, Any]) -> None:
        """The provider replaced its vendor session (``session.reconnects`` has it too)."""
        return None

    async def transcript_corrected(self, record: StoredCorrection) -> None:
        """A final transcript was corrected by the vendor after it was stored."""
        return None

    async def dtmf(self, session: LiveSession, digit: str, duration_ms: int | None) -> None:
        """The caller pressed a key (a phone call): a line on the room's timeline."""
        return None

    async def resumption_handle(self, session: LiveSession, handle: str) -> None:
        """The newest handle resuming the vendor session (``session.resumption_handle``)."""
        return None

    async def flush(self) -> None:
        """Write anything batched; called when a session ends."""
        return None


class MemoryStore(SessionStore):
    """Keeps every record in memory (plain-Python use and tests)."""

    def __init__(self) -> None:
        self.bindings: dict[tuple[str, str], BindingSnapshot] = {}
        self.sessions: dict[str, LiveSession] = {}
        self.ended: dict[str, tuple[str, str]] = {}
        self.transcripts: list[StoredTranscript] = []
        self.tool_calls: dict[tuple[str, str], StoredToolCall] = {}
        self.reconnects: list[tuple[str, dict[str, Any]]] = []
        self.dtmf_digits: list[tuple[str, str, int | None]] = []

    async def load_binding(self, session: LiveSession) -> BindingSnapshot:
        return self.bindings.get((session.room_id, session.participant_id), BindingSnapshot())

    async def session_created(self, session: LiveSession) -> None:
        self.sessions[session.id] = session

    async def session_ended(self, session: LiveSession, reason: str, detail: str) -> None:
        self.ended[session.id] = (reason, detail)

    async def transcript(self, record: StoredTranscript) -> None:
        self.transcripts.append(record)

    async def tool_call_started(self, record: StoredToolCall) -> None:
        self.tool_calls[(record.session_id, record.call_id)] = record

    async def tool_call_finished(self, record: StoredToolCall) -> None:
        self.tool_calls[(record.session_id, record.call_id)] = record

    async def provider_reconnected(self, session: LiveSession, info: dict[str, Any]) -> None:
        self.reconnects.append((session.id, info))

    async def dtmf(self, session: LiveSession, digit: str, duration_ms: int | None) -> None:
        self.dtmf_digits.append((session.id, digit, duration_ms))

    async def transcript_corrected(self, record: StoredCorrection) -> None:
        for stored in reversed(self.transcripts):
            if (
                stored.session_id == record.session_id
                and stored.role == record.role
                and stored.text == record.original
            ):
                stored.text = record.corrected
                return
