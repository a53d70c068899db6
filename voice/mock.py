"""Test doubles for the engine: a provider and a transport that record what they are given
and let a test play the other side (``simulate_*``). Usable in users' own tests.

Both ask the engine to *settle* after each simulated event (every queue drained, every
triggered tool call and transcript handled), so a test can assert right after
``await provider.simulate_audio(...)`` without sleeping. Real providers and transports never
wait for the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from providers.base import RealtimeVoiceProvider
from voice.session import LiveSession
from voice.transports.base import RealtimeTransport

__all__ = ["MockCall", "MockRealtimeProvider", "MockRealtimeTransport"]

Settler = Callable[[LiveSession], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class MockCall:
    method: str
    session_id: str | None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


class _Settling:
    def __init__(self) -> None:
        self._settlers: list[Settler] = []

    def add_settler(self, settler: Settler) -> None:
        """The engine registers how to wait until it has handled everything so far."""
        self._settlers.append(settler)

    async def _settle(self, session: LiveSession) -> None:
        for settler in self._settlers:
            await settler(session)


class MockRealtimeProvider(_Settling, RealtimeVoiceProvider):
    name = "mock"

    def __init__(self, model: str | None = None) -> None:
        RealtimeVoiceProvider.__init__(self)
        _Settling.__init__(self)
        self.model = model or "mock-realtime"
        self.calls: list[MockCall] = []
        self.sent_audio: list[tuple[str, bytes]] = []
        self.injected_texts: list[tuple[str, str, str, bool]] = []
        self.tool_results: list[tuple[str, str, str]] = []
        self.truncations: list[tuple[str, int]] = []
        self.connected: set[str] = set()
        self._activity = asyncio.Event()
        #: Every session connect() was called with, by id (to play the vendor's side).
        self.sessions: dict[str, LiveSession] = {}
        #: Raised by the next connect() (then cleared): to test a failed start.
        self.fail_connect: BaseException | None = None

    @property
    def model_name(self) -> str:
        return self.model

    def _record(self, method: str, session: LiveSession | None, *args: Any, **kwargs: Any) -> None:
        self.calls.append(MockCall(method, session.id if session else None, args, kwargs))
        self._activity.set()

    async def wait_until(self, predicate: Callable[[], Any], *, within: float = 10.0) -> None:
        """Until ``predicate()`` holds, re-checked whenever the engine calls the provider
        (for tests driving the engine from outside, e.g. through a WebSocket)."""
        async with asyncio.timeout(within):
            while not predicate():
                self._activity.clear()
                await self._activity.wait()

    # --- the provider interface --------------------------------------------------------------

    async def connect(self, session: LiveSession, **options: Any) -> None:
        self._record("connect", session, **options)
        self.sessions[session.id] = session
        if self.fail_connect is not None:
            error, self.fail_connect = self.fail_connect, None
            raise error
        session.provider_session_id = f"mock-{session.id}"
        self.connected.add(session.id)

    async def send_audio(self, session: LiveSession, audio: bytes) -> None:
        self.sent_audio.append((session.id, bytes(audio)))
        self._activity.set()

    async def submit_tool_result(self, session: LiveSession, call_id: str, result: str) -> None:
        self._record("submit_tool_result", session, call_id, result)
        self.tool_results.append((session.id, call_id, result))

    async def inject_text(
        self, session: LiveSession, text: str, *, role: str = "user", silent: bool = False
    ) -> None:
        self._record("inject_text", session, text, role=role, silent=silent)
        self.injected_texts.append((session.id, text, role, silent))

    async def interrupt(self, session: LiveSession) -> None:
        self._record("interrupt", session)

    async def truncate_audio(self, session: LiveSession, played_ms: int) -> None:
        self._record("truncate_audio", session, played_ms)
        self.truncations.append((session.id, played_ms))

    async def reconfigure(self, session: LiveSession, **changes: Any) -> None:
        self._record("reconfigure", session, **changes)

    async def disconnect(self, session: LiveSession) -> None:
        self._record("disconnect", session)
        self.connected.discard(session.id)

    # --- playing the vendor ------------------------------------------------------------------

    async def simulate_audio(self, session: LiveSession, audio: bytes) -> None:
        await self._fire("audio", session, audio)
        await self._settle(session)

    async def simulate_transcription(
        self, session: LiveSession, text: str, role: str = "assistant", is_final: bool = True
    ) -> None:
        await self._fire("transcription", session, text, role, is_final)
        await self._settle(session)

    async def simulate_speech_start(self, session: LiveSession) -> None:
        await self._fire("speech_start", session)
        await self._settle(session)

    async def simulate_speech_end(self, session: LiveSession) -> None:
        await self._fire("speech_end", session)
        await self._settle(session)

    async def simulate_tool_call(
        self, session: LiveSession, call_id: str, name: str, arguments: dict[str, Any]
    ) -> None:
        await self._fire("tool_call", session, call_id, name, arguments)
        await self._settle(session)

    async def simulate_response_start(self, session: LiveSession) -> None:
        await self._fire("response_start", session)
        await self._settle(session)

    async def simulate_response_end(self, session: LiveSession) -> None:
        await self._fire("response_end", session)
        await self._settle(session)

    async def simulate_usage(self, session: LiveSession, usage: dict[str, Any]) -> None:
        await self._fire("usage", session, usage)
        await self._settle(session)

    async def simulate_error(
        self, session: LiveSession, code: str, message: str, fatal: bool = False
    ) -> None:
        await self._fire("error", session, code, message, fatal)
        await self._settle(session)


class MockRealtimeTransport(_Settling, RealtimeTransport):
    name = "mock"

    def __init__(self, *, sample_rate: int | None = None) -> None:
        RealtimeTransport.__init__(self)
        _Settling.__init__(self)
        self.sample_rate = sample_rate
        self.calls: list[MockCall] = []
        self.sent_audio: list[tuple[str, bytes]] = []
        self.sent_messages: list[tuple[str, dict[str, Any]]] = []
        self.accepted: dict[str, Any] = {}
        self._activity = asyncio.Event()
        #: Raised by the next accept() (then cleared).
        self.fail_accept: BaseException | None = None

    def transport_sample_rate(self, session: LiveSession) -> int | None:
        return self.sample_rate

    async def wait_until(self, predicate: Callable[[], Any], *, within: float = 10.0) -> None:
        """Until ``predicate()`` holds, re-checked whenever the engine sends the caller
        something (for tests where a real provider drives the engine)."""
        async with asyncio.timeout(within):
            while not predicate():
                self._activity.clear()
                await self._activity.wait()

    async def accept(self, session: LiveSession, connection: Any) -> None:
        self.calls.append(MockCall("accept", session.id, (connection,)))
        if self.fail_accept is not None:
            error, self.fail_accept = self.fail_accept, None
            raise error
        self.accepted[session.id] = connection

    async def send_audio(self, session: LiveSession, audio: bytes) -> None:
        self.sent_audio.append((session.id, bytes(audio)))
        self._activity.set()

    async def send_message(self, session: LiveSession, message: dict[str, Any]) -> None:
        self.sent_messages.append((session.id, dict(message)))
        self._activity.set()

    async def interrupt(self, session: LiveSession) -> None:
        self.calls.append(MockCall("interrupt", session.id))

    async def end_of_response(self, session: LiveSession) -> None:
        self.calls.append(MockCall("end_of_response", session.id))

    async def disconnect(self, session: LiveSession) -> None:
        self.calls.append(MockCall("disconnect", session.id))
        self.accepted.pop(session.id, None)

    def messages_of(self, session: LiveSession, kind: str) -> list[dict[str, Any]]:
        return [m for sid, m in self.sent_messages if sid == session.id and m.get("type") == kind]

    # --- playing the caller ------------------------------------------------------------------

    async def simulate_client_audio(self, session: LiveSession, audio: bytes) -> None:
        self._deliver_audio(session, audio)
        await self._settle(session)

    async def simulate_playback(self, session: LiveSession, played_ms: int) -> None:
        self._deliver_playback(session, played_ms)
        await self._settle(session)

    async def simulate_client_message(
        self, session: LiveSession, kind: str, fields: dict[str, Any] | None = None
    ) -> None:
        await self._deliver_client_message(session, kind, dict(fields or {}))
        await self._settle(session)

    async def simulate_client_disconnect(self, session: LiveSession) -> None:
        await self._deliver_disconnect(session)
        await self._settle(session)
