"""What the providers that run in this process share (echo, local): per-session state, the
session's tasks, and replies that end exactly once.

Such a provider keeps one :class:`InProcessSession` (subclassed) per connected session, keyed
by ``session.id``. Every task it starts for a session goes through :meth:`_spawn`, so
:meth:`disconnect` can cancel and await them all. A reply runs as a :class:`ReplyRun` task
that fires ``response_end`` in a ``finally``; :meth:`_cancel_reply` cancels it and waits for
that, and does not cut a reply already inside its ``response_end``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from providers.base import ProviderError, RealtimeVoiceProvider

if TYPE_CHECKING:
    from voice.session import LiveSession

logger = logging.getLogger(__name__)

__all__ = ["InProcessProvider", "InProcessSession", "ReplyRun"]


@dataclass(eq=False)
class ReplyRun:
    task: asyncio.Task[None] | None = None
    ending: bool = False  # in its response_end: let it finish rather than cut the callback


@dataclass(eq=False, kw_only=True)
class InProcessSession:
    session: LiveSession
    reply: ReplyRun | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    closed: bool = False


StateT = TypeVar("StateT", bound=InProcessSession)


class InProcessProvider(RealtimeVoiceProvider, Generic[StateT]):
    """Session bookkeeping for a provider whose sessions are state objects here."""

    def __init__(self) -> None:
        super().__init__()
        self._sessions: dict[str, StateT] = {}

    def _describe(self, state: StateT) -> object:
        """What the disconnect log line says about a session (its counters)."""
        return ""

    def _check_new(self, session: LiveSession) -> None:
        if session.id in self._sessions:
            raise ProviderError(
                "already_connected", f"session {session.id} is already connected", fatal=False
            )

    def _live(self, session: LiveSession) -> StateT | None:
        state = self._sessions.get(session.id)
        return None if state is None or state.closed else state

    def _require(self, session: LiveSession) -> StateT:
        state = self._live(session)
        if state is None:
            raise ProviderError(
                "not_connected", f"session {session.id} is not connected", fatal=False
            )
        return state

    def _connected(self, session: LiveSession) -> StateT:
        """A connected session's state, for stats; KeyError once it is disconnected."""
        state = self._sessions.get(session.id)
        if state is None:
            raise KeyError(f"{self.name} session {session.id} is not connected")
        return state

    def _spawn(
        self, state: StateT, coroutine: Coroutine[Any, Any, None], name: str
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine, name=name)
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)
        return task

    async def disconnect(self, session: LiveSession) -> None:
        """Cancel and await this session's tasks, then forget it; idempotent."""
        state = self._sessions.pop(session.id, None)
        if state is None:
            return
        state.closed = True
        tasks = list(state.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        logger.info(
            "%s session %s disconnected: %s",
            self.name,
            session.provider_session_id,
            self._describe(state),
        )

    async def close(self) -> None:
        for state in list(self._sessions.values()):
            await self.disconnect(state.session)

    async def _cancel_reply(self, state: StateT) -> None:
        """Cancel the reply in progress and wait until it has ended (``response_end``)."""
        run, state.reply = state.reply, None
        await self._stop(run)

    @staticmethod
    async def _stop(run: ReplyRun | None) -> None:
        if run is None or run.task is None or run.task.done():
            return
        if not run.ending:
            run.task.cancel()
        await asyncio.wait([run.task])
