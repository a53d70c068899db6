"""The realtime provider interface (DESIGN §8). Pure asyncio: no Django, no ORM.

One provider instance serves many sessions; every call and callback names the session.
The engine (``voice.channels.RealtimeVoiceChannel``) registers its callbacks once, at
construction, with the ``on_*`` methods; a provider fires them with :meth:`_fire`, which
awaits async callbacks and logs (never propagates) a callback's exception, so a bug in one
listener can never kill the provider's receive loop.
"""

from __future__ import annotations

import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voice.session import LiveSession

logger = logging.getLogger(__name__)

__all__ = ["CALLBACKS", "ProviderError", "RealtimeVoiceProvider"]

Callback = Callable[..., Awaitable[None] | None]

CALLBACKS = (
    "audio",  # (session, pcm16: bytes) at output_sample_rate
    "transcription",  # (session, text: str, role: "user"|"assistant", is_final: bool)
    "speech_start",  # (session)  the caller started speaking (provider VAD)
    "speech_end",  # (session)
    "tool_call",  # (session, call_id: str, name: str, arguments: dict)
    "response_start",  # (session)
    "response_end",  # (session)
    "error",  # (session, code: str, message: str, fatal: bool)
    "usage",  # (session, usage: dict) after a response: the vendor's token counts
    "reconnect",  # (session, info: dict) the vendor session was replaced transparently
    "tool_cancel",  # (session, call_ids: list[str]) the model no longer wants these calls
    "resumption",  # (session, handle: str) the newest handle that resumes the vendor session
    "transcript_correction",  # (session, original: str, corrected: str) assistant's, after
)


class ProviderError(Exception):
    """A provider failure with a code; ``fatal`` errors end the session."""

    def __init__(self, code: str, message: str, *, fatal: bool) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.fatal = fatal


class RealtimeVoiceProvider(ABC):
    """A speech-to-speech AI vendor connection, one websocket (or SDK session) per session."""

    #: Shown in logs and stored on sessions.
    name: str = "provider"
    #: False when ``reconfigure`` cannot change a live session (e.g. ElevenLabs).
    supports_mid_session_reconfigure: bool = True

    def __init__(self) -> None:
        self._callbacks: dict[str, list[Callback]] = {event: [] for event in CALLBACKS}

    # --- callback registration (the engine calls these once) -----------------------------

    def on_audio(self, callback: Callback) -> None:
        self._callbacks["audio"].append(callback)

    def on_transcription(self, callback: Callback) -> None:
        self._callbacks["transcription"].append(callback)

    def on_speech_start(self, callback: Callback) -> None:
        self._callbacks["speech_start"].append(callback)

    def on_speech_end(self, callback: Callback) -> None:
        self._callbacks["speech_end"].append(callback)

    def on_tool_call(self, callback: Callback) -> None:
        self._callbacks["tool_call"].append(callback)

    def on_response_start(self, callback: Callback) -> None:
        self._callbacks["response_start"].append(callback)

    def on_response_end(self, callback: Callback) -> None:
        self._callbacks["response_end"].append(callback)

    def on_error(self, callback: Callback) -> None:
        self._callbacks["error"].append(callback)

    def on_usage(self, callback: Callback) -> None:
        """``callback(session, usage)``: a response's usage as the vendor reports it (nested
        dicts of counts); the engine adds them up per session."""
        self._callbacks["usage"].append(callback)

    def on_reconnect(self, callback: Callback) -> None:
        """``callback(session, info)``: the provider replaced a lost or expiring vendor
        session without ending ours; ``info`` has ``reason``, ``attempts``, ``gap_ms``,
        ``audio_dropped_ms`` and the new ``provider_session_id``."""
        self._callbacks["reconnect"].append(callback)

    def on_tool_cancel(self, callback: Callback) -> None:
        """``callback(session, call_ids)``: the model cancelled these tool calls (Gemini's
        toolCallCancellation, when the caller interrupts); their results are not wanted."""
        self._callbacks["tool_cancel"].append(callback)

    def on_resumption(self, callback: Callback) -> None:
        """``callback(session, handle)``: a handle that resumes the vendor session (Gemini's
        sessionResumptionUpdate); the engine keeps the newest on the session."""
        self._callbacks["resumption"].append(callback)

    def on_transcript_correction(self, callback: Callback) -> None:
        """``callback(session, original, corrected)``: the assistant's final transcript
        ``original`` was not all spoken (ElevenLabs, after an interruption): ``corrected``
        is what the caller heard."""
        self._callbacks["transcript_correction"].append(callback)

    async def _fire(self, event: str, session: LiveSession, *args: Any) -> None:
        for callback in self._callbacks[event]:
            try:
                result = callback(session, *args)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("%s callback for %s failed", event, self.name)

    # --- the session's life -----------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self.name

    @abstractmethod
    async def connect(
        self,
        session: LiveSession,
        *,
        system_prompt: str | None,
        voice: str | None,
        tools: list[dict[str, Any]] | None,
        temperature: float | None,
        input_sample_rate: int,
        output_sample_rate: int,
        server_vad: bool = True,
        provider_config: dict[str, Any] | None = None,
    ) -> None:
        """Open the vendor session; raise (ProviderError or any exception) on failure."""

    @abstractmethod
    async def send_audio(self, session: LiveSession, audio: bytes) -> None:
        """PCM16 mono at ``input_sample_rate``."""

    @abstractmethod
    async def submit_tool_result(self, session: LiveSession, call_id: str, result: str) -> None:
        """Answer a tool call; the model continues."""

    @abstractmethod
    async def inject_text(
        self, session: LiveSession, text: str, *, role: str = "user", silent: bool = False
    ) -> None:
        """Add text to the conversation; ``silent`` adds context without a spoken reply."""

    @abstractmethod
    async def interrupt(self, session: LiveSession) -> None:
        """Cancel the response in progress, if any."""
        return None  # optional: a no-op unless the subclass needs it

    def manual_turns(self, provider_config: dict[str, Any] | None) -> bool:
        """True when sessions with this provider_config detect no turns (the caller ends
        each with ``end_turn``)."""
        return False

    async def end_turn(self, session: LiveSession) -> None:
        """The caller finished speaking, with manual turns (no provider VAD): the provider
        takes the audio so far as the turn and answers (default: nothing to do)."""
        return None  # optional: a no-op unless the subclass needs it

    async def truncate_audio(self, session: LiveSession, played_ms: int) -> None:
        """Tell the model how much of its last reply the caller heard (default: nothing)."""
        return None  # optional: a no-op unless the subclass needs it

    async def reconfigure(
        self,
        session: LiveSession,
        *,
        system_prompt: str | None = None,
        voice: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        temperature: float | None = None,
        provider_config: dict[str, Any] | None = None,
    ) -> None:
        """Change a live session; None leaves a setting as it is."""
        raise NotImplementedError(f"{self.name} cannot reconfigure a live session")

    @abstractmethod
    async def disconnect(self, session: LiveSession) -> None:
        """Close the vendor session; idempotent."""

    async def close(self) -> None:
        """Release shared resources when the channel closes."""
        return None  # optional: a no-op unless the subclass needs it
