"""The transport interface: carries a caller's audio and control messages. Pure asyncio.

A transport hands caller audio to the engine through the callbacks registered with
:meth:`on_audio_received`; those callbacks are synchronous and never block (the engine puts
the frame on a bounded queue), so a transport's receive loop never waits on the engine.
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

AudioCallback = Callable[["LiveSession", bytes], None]
SessionCallback = Callable[["LiveSession"], Awaitable[None] | None]
PlaybackCallback = Callable[["LiveSession", int], None]
#: ``callback(session, kind, fields)`` for the caller's "text", "interrupt" and "end".
ClientMessageCallback = Callable[["LiveSession", str, dict[str, Any]], Awaitable[None]]
#: ``callback(session, digit, duration_ms)``: a key pressed on a phone (None: no duration).
DtmfCallback = Callable[["LiveSession", str, "int | None"], Awaitable[Any]]


class RealtimeTransport(ABC):
    name: str = "transport"

    def __init__(self) -> None:
        self._audio_callbacks: list[AudioCallback] = []
        self._disconnect_callbacks: list[SessionCallback] = []
        self._playback_callbacks: list[PlaybackCallback] = []
        self._message_callbacks: list[ClientMessageCallback] = []
        self._dtmf_callbacks: list[DtmfCallback] = []

    # --- registration (the engine calls these once) ----------------------------------------

    def on_audio_received(self, callback: AudioCallback) -> None:
        self._audio_callbacks.append(callback)

    def on_client_disconnected(self, callback: SessionCallback) -> None:
        self._disconnect_callbacks.append(callback)

    def on_playback(self, callback: PlaybackCallback) -> None:
        """``callback(session, played_ms)``: how much of the current reply the caller heard."""
        self._playback_callbacks.append(callback)

    def on_client_message(self, callback: ClientMessageCallback) -> None:
        """A control message from the caller: "text" (fields: text), "interrupt", "end"."""
        self._message_callbacks.append(callback)

    def on_dtmf(self, callback: DtmfCallback) -> None:
        """A key the caller pressed (phone transports): the engine records it and runs the
        ``ON_DTMF`` hooks (``RealtimeVoiceChannel.receive_dtmf``)."""
        self._dtmf_callbacks.append(callback)

    # --- for subclasses ----------------------------------------------------------------------

    def _deliver_audio(self, session: LiveSession, audio: bytes) -> None:
        for callback in self._audio_callbacks:
            callback(session, audio)

    def _deliver_playback(self, session: LiveSession, played_ms: int) -> None:
        for callback in self._playback_callbacks:
            callback(session, played_ms)

    async def _deliver_client_message(
        self, session: LiveSession, kind: str, fields: dict[str, Any]
    ) -> None:
        for callback in self._message_callbacks:
            try:
                await callback(session, kind, fields)
            except Exception:
                logger.exception("client %s message failed for session %s", kind, session.id)

    async def _deliver_dtmf(
        self, session: LiveSession, digit: str, duration_ms: int | None
    ) -> None:
        for callback in self._dtmf_callbacks:
            try:
                await callback(session, digit, duration_ms)
            except Exception:
                logger.exception("dtmf callback failed for session %s", session.id)

    async def _deliver_disconnect(self, session: LiveSession) -> None:
        for callback in self._disconnect_callbacks:
            try:
                result = callback(session)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("disconnect callback failed for session %s", session.id)

    # --- the interface -----------------------------------------------------------------------

    def transport_sample_rate(self, session: LiveSession) -> int | None:
        """The rate this connection negotiated (e.g. 8000 for G.711), or None."""
        return None

    @abstractmethod
    async def accept(self, session: LiveSession, connection: Any) -> None:
        """Bind ``connection`` (transport-specific handle) to the session."""

    @abstractmethod
    async def send_audio(self, session: LiveSession, audio: bytes) -> None:
        """PCM16 mono at the transport rate."""

    async def send_message(self, session: LiveSession, message: dict[str, Any]) -> None:
        """A JSON control message to the client (no-op where there is no channel for it)."""
        return None  # optional: a no-op unless the subclass needs it

    async def interrupt(self, session: LiveSession) -> None:
        """Drop audio buffered for playback (barge-in)."""
        return None  # optional: a no-op unless the subclass needs it

    async def end_of_response(self, session: LiveSession) -> None:
        """The reply is complete: flush any prebuffer."""
        return None  # optional: a no-op unless the subclass needs it

    @abstractmethod
    async def disconnect(self, session: LiveSession) -> None:
        """Close the caller's side; idempotent."""

    async def close(self) -> None:
        """Release shared resources."""
        return None  # optional: a no-op unless the subclass needs it
