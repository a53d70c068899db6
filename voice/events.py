"""Payloads the engine passes to hooks. Plain dataclasses; no ORM."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from voice.session import LiveSession

CHANNEL_TYPE = "realtime_voice"


@dataclass(frozen=True, slots=True)
class TextContent:
    body: str


@dataclass(slots=True)
class TranscriptionEvent:
    """A transcript from the provider. ``content.body`` and ``metadata['role']`` read as the
    seed's hook example expects; a sync ON_TRANSCRIPTION hook may modify ``text``."""

    session: LiveSession
    text: str
    role: str
    is_final: bool
    was_barge_in: bool = False
    channel_id: str = ""
    channel_type: str = CHANNEL_TYPE

    @property
    def room_id(self) -> str:
        return self.session.room_id

    @property
    def content(self) -> TextContent:
        return TextContent(self.text)

    @property
    def metadata(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "is_final": self.is_final,
            "session_id": self.session.id,
            "participant_id": self.session.participant_id,
            "source": self.channel_type,
        }


@dataclass(slots=True)
class ToolCallEvent:
    """A tool call; ``result`` is the handler's answer when ON_TOOL_CALL hooks run."""

    session: LiveSession
    tool_call_id: str
    name: str
    arguments: dict[str, Any]
    result: str | None = None
    channel_id: str = ""
    channel_type: str = CHANNEL_TYPE

    @property
    def room_id(self) -> str:
        return self.session.room_id


@dataclass(frozen=True, slots=True)
class SessionStartedEvent:
    session: LiveSession
    channel_id: str
    channel_type: str = CHANNEL_TYPE

    @property
    def room_id(self) -> str:
        return self.session.room_id

    @property
    def participant_id(self) -> str:
        return self.session.participant_id


@dataclass(frozen=True, slots=True)
class SessionEndedEvent:
    session: LiveSession
    channel_id: str
    reason: str
    channel_type: str = CHANNEL_TYPE

    @property
    def room_id(self) -> str:
        return self.session.room_id


@dataclass(frozen=True, slots=True)
class AudioLevelEvent:
    session: LiveSession
    level_db: float


@dataclass(frozen=True, slots=True)
class BargeInEvent:
    session: LiveSession
    interrupted_text: str
    played_ms: int


@dataclass(frozen=True, slots=True)
class ProviderErrorEvent:
    session: LiveSession
    code: str
    message: str
    fatal: bool
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    """A key the caller pressed on a phone (RFC 4733 telephone-event, or Twilio's ``dtmf``):
    ``digit`` is one of 0-9, *, #, A-D; ``duration_ms`` is None when the network does not say."""

    session: LiveSession
    digit: str
    duration_ms: int | None = None

    @property
    def room_id(self) -> str:
        return self.session.room_id
