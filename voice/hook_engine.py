"""The hook engine: triggers, results and the registry that runs them (pure asyncio).

The public names are re-exported from :mod:`voice.kit`; register hooks with
``@kit.hook(HookTrigger.X)`` on the process-wide kit rather than on an engine directly.

Two execution modes:

- **SYNC** hooks (only on :data:`SYNC_TRIGGERS`) are awaited in priority order by
  :meth:`HookEngine.run_sync`. Each may allow, block (stops the chain) or modify (replaces
  the payload later hooks see); their ``metadata`` dicts merge. On a **fail-closed**
  trigger (:data:`FAIL_CLOSED_TRIGGERS`) a hook that raises, times out, returns something
  other than a :class:`HookResult` or modifies with a payload of the wrong type blocks;
  elsewhere such a hook is logged, recorded in ``SyncOutcome.errors`` and skipped.
- **ASYNC** hooks are fire-and-forget observers: :meth:`HookEngine.fire` starts each as a
  task the engine owns; their errors and timeouts are logged, never raised.
  :meth:`HookEngine.drain` awaits them, :meth:`HookEngine.aclose` cancels them.

Importing this module needs neither Django settings nor the app registry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from voice.events import ToolCallEvent, TranscriptionEvent
from voice.session import LiveSession

if TYPE_CHECKING:
    from voice.kit import RoomKit

__all__ = [
    "DEFAULT_EXECUTION",
    "DEFAULT_HOOK_TIMEOUT",
    "FAIL_CLOSED_TRIGGERS",
    "SYNC_TRIGGERS",
    "HookContext",
    "HookEngine",
    "HookExecution",
    "HookFunction",
    "HookRegistration",
    "HookResult",
    "HookTrigger",
    "SyncOutcome",
]

logger = logging.getLogger("voice.hooks")

DEFAULT_HOOK_TIMEOUT = 5.0


class HookTrigger(StrEnum):
    ON_TRANSCRIPTION = "on_transcription"
    ON_PARTIAL_TRANSCRIPTION = "on_partial_transcription"
    ON_TOOL_CALL = "on_tool_call"
    ON_SPEECH_START = "on_speech_start"
    ON_SPEECH_END = "on_speech_end"
    ON_BARGE_IN = "on_barge_in"
    ON_SESSION_STARTED = "on_session_started"
    ON_SESSION_ENDED = "on_session_ended"
    ON_INPUT_AUDIO_LEVEL = "on_input_audio_level"
    ON_OUTPUT_AUDIO_LEVEL = "on_output_audio_level"
    ON_ERROR = "on_error"
    ON_DTMF = "on_dtmf"


class HookExecution(StrEnum):
    SYNC = "sync"  # awaited in priority order; may block or modify
    ASYNC = "async"  # fire-and-forget observer


#: Triggers whose hooks may run SYNC (awaited, able to block or modify).
SYNC_TRIGGERS: frozenset[HookTrigger] = frozenset(
    {HookTrigger.ON_TRANSCRIPTION, HookTrigger.ON_TOOL_CALL}
)
#: Triggers on which a broken hook blocks instead of being skipped.
FAIL_CLOSED_TRIGGERS: frozenset[HookTrigger] = frozenset({HookTrigger.ON_TRANSCRIPTION})
#: The mode a hook gets when it does not name one.
DEFAULT_EXECUTION: dict[HookTrigger, HookExecution] = {
    trigger: HookExecution.SYNC if trigger in SYNC_TRIGGERS else HookExecution.ASYNC
    for trigger in HookTrigger
}
#: The payload type a SYNC ``modify`` must carry, per trigger (a ``str`` is also accepted
#: on ON_TRANSCRIPTION: it replaces the transcript's text).
_MODIFY_TYPES: dict[HookTrigger, type] = {
    HookTrigger.ON_TRANSCRIPTION: TranscriptionEvent,
    HookTrigger.ON_TOOL_CALL: ToolCallEvent,
}

_ACTIONS = frozenset({"allow", "block", "modify"})


@dataclass(frozen=True, slots=True)
class HookResult:
    """What a SYNC hook decides. ``None`` returned from a hook means allow.

    ``HookResult(action="allow", metadata={"result": ...})`` is how an ON_TOOL_CALL hook
    answers a tool call.
    """

    action: str = "allow"
    event: Any = None
    reason: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action not in _ACTIONS:
            raise ValueError(
                f"unknown hook action {self.action!r}; use one of 'allow', 'block', 'modify'"
            )
        if self.action == "block" and not (isinstance(self.reason, str) and self.reason):
            raise ValueError("a 'block' HookResult needs a reason")
        if self.action == "modify" and self.event is None:
            raise ValueError("a 'modify' HookResult needs the replacement event")
        if not isinstance(self.metadata, dict):
            raise TypeError(f"HookResult.metadata must be a dict, not {type(self.metadata)}")

    @classmethod
    def allow(cls, *, metadata: dict[str, Any] | None = None) -> HookResult:
        return cls(action="allow", metadata=dict(metadata or {}))

    @classmethod
    def block(cls, reason: str, *, metadata: dict[str, Any] | None = None) -> HookResult:
        return cls(action="block", reason=reason, metadata=dict(metadata or {}))

    @classmethod
    def modify(cls, event: Any, *, metadata: dict[str, Any] | None = None) -> HookResult:
        return cls(action="modify", event=event, metadata=dict(metadata or {}))


@dataclass(frozen=True, slots=True)
class HookContext:
    """The second argument every hook receives."""

    kit: RoomKit
    room_id: str
    channel_id: str
    session: LiveSession | None = None


HookFunction = Callable[[Any, HookContext], Awaitable[HookResult | None] | HookResult | None]
_F = TypeVar("_F", bound=HookFunction)


@dataclass(frozen=True, slots=True)
class HookRegistration:
    trigger: HookTrigger
    fn: HookFunction
    execution: HookExecution
    priority: int
    name: str
    timeout: float | None
    sequence: int  # registration order, the tie-breaker among equal priorities


@dataclass(slots=True)
class SyncOutcome:
    """The result of a SYNC chain. ``event`` is the payload after every ``modify``."""

    event: Any
    allowed: bool = True
    reason: str | None = None
    blocked_by: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return not self.allowed


class _HookFailure(Exception):
    """A hook that broke its contract (bad return value or modify payload)."""


def _check_timeout(value: float | None, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{what} must be a positive number of seconds, not {value!r}")


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _HookFailure):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class HookEngine:
    """Registry and runner of hooks. One per :class:`voice.kit.RoomKit`."""

    def __init__(self, *, default_timeout: float = DEFAULT_HOOK_TIMEOUT) -> None:
        _check_timeout(default_timeout, "default_timeout")
        self._default_timeout = float(default_timeout)
        self._sequence = itertools.count()
        # Copy-on-write tuples: a hook that (un)registers while a chain runs is safe.
        self._sync: dict[HookTrigger, tuple[HookRegistration, ...]] = {}
        self._async: dict[HookTrigger, tuple[HookRegistration, ...]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- configuration -------------------------------------------------------------

    @property
    def default_timeout(self) -> float:
        return self._default_timeout

    @default_timeout.setter
    def default_timeout(self, value: float) -> None:
        _check_timeout(value, "default_timeout")
        self._default_timeout = float(value)

    def register(
        self,
        trigger: HookTrigger | str,
        fn: _F,
        *,
        execution: HookExecution | str | None = None,
        priority: int = 0,
        name: str | None = None,
        timeout: float | None = None,
    ) -> _F:
        """Register ``fn`` (``async def`` or plain ``def``, called as ``fn(event, ctx)``).

        Returns ``fn`` unchanged. ``name`` defaults to the function's dotted path; a name may
        appear once per trigger. SYNC is refused on triggers that only run ASYNC hooks.
        """
        trigger = HookTrigger(trigger)
        if not callable(fn):
            raise TypeError(f"a hook must be callable, not {fn!r}")
        mode = DEFAULT_EXECUTION[trigger] if execution is None else HookExecution(execution)
        if mode is HookExecution.SYNC and trigger not in SYNC_TRIGGERS:
            allowed = ", ".join(sorted(t.name for t in SYNC_TRIGGERS))
            raise ValueError(
                f"{trigger.name} hooks run asynchronously; execution=SYNC is only allowed "
                f"on {allowed}"
            )
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an int, not {priority!r}")
        _check_timeout(timeout, "timeout")
        hook_name = name if name is not None else _default_name(fn)
        if not isinstance(hook_name, str) or not hook_name:
            raise ValueError("a hook name must be a non-empty string")
        if any(h.name == hook_name for h in self._hooks(trigger)):
            raise ValueError(f"a hook named {hook_name!r} is already registered on {trigger.name}")
        registration = HookRegistration(
            trigger=trigger,
            fn=fn,
            execution=mode,
            priority=priority,
            name=hook_name,
            timeout=None if timeout is None else float(timeout),
            sequence=next(self._sequence),
        )
        index = self._sync if mode is HookExecution.SYNC else self._async
        index[trigger] = tuple(
            sorted((*index.get(trigger, ()), registration), key=_order_key),
        )
        return fn

    def unregister(self, name: str) -> int:
        """Remove every hook called ``name`` (on any trigger); returns how many."""
        removed = 0
        for index in (self._sync, self._async):
            for trigger, hooks in list(index.items()):
                kept = tuple(h for h in hooks if h.name != name)
                removed += len(hooks) - len(kept)
                if kept:
                    index[trigger] = kept
                else:
                    del index[trigger]
        return removed

    def has_hooks(self, trigger: HookTrigger) -> bool:
        """Whether any hook (either mode) listens on ``trigger``; callers skip building
        payloads and contexts when it is False."""
        return trigger in self._sync or trigger in self._async

    def registrations(self, trigger: HookTrigger | None = None) -> list[HookRegistration]:
        """The registered hooks (of one trigger, or all), SYNC ones first, each in run order."""
        triggers = list(HookTrigger) if trigger is None else [HookTrigger(trigger)]
        return [h for t in triggers for h in self._hooks(t)]

    def _hooks(self, trigger: HookTrigger) -> tuple[HookRegistration, ...]:
        return self._sync.get(trigger, ()) + self._async.get(trigger, ())

    def _timeout_of(self, hook: HookRegistration) -> float:
        return hook.timeout if hook.timeout is not None else self._default_timeout

    # -- SYNC chain ------------------------------------------------------------------

    async def run_sync(self, trigger: HookTrigger, event: Any, ctx: HookContext) -> SyncOutcome:
        """Run the SYNC hooks of ``trigger`` in order, then (if allowed) fire its ASYNC
        hooks with the final payload."""
        trigger = HookTrigger(trigger)
        outcome = SyncOutcome(event=event)
        fail_closed = trigger in FAIL_CLOSED_TRIGGERS
        for hook in self._sync.get(trigger, ()):
            seconds = self._timeout_of(hook)
            try:
                async with asyncio.timeout(seconds) as deadline:
                    value = hook.fn(outcome.event, ctx)
                    if inspect.isawaitable(value):
                        value = await value
                result = _as_result(value)
                next_event = (
                    _modified(trigger, outcome.event, result.event)
                    if result.action == "modify"
                    else outcome.event
                )
            except TimeoutError as exc:
                if not deadline.expired():  # the hook raised TimeoutError itself
                    if self._failed(outcome, hook, exc, fail_closed):
                        return outcome
                    continue
                message = f"timed out after {_seconds(seconds)}"
                outcome.errors.append((hook.name, message))
                if fail_closed:
                    logger.warning(
                        "hook %s on %s timed out after %s; blocking (fail-closed trigger)",
                        hook.name,
                        trigger.name,
                        _seconds(seconds),
                    )
                    _block(outcome, hook, f"hook {hook.name} {message}")
                    return outcome
                logger.warning(
                    "hook %s on %s timed out after %s; continuing",
                    hook.name,
                    trigger.name,
                    _seconds(seconds),
                )
                continue
            except Exception as exc:
                if self._failed(outcome, hook, exc, fail_closed):
                    return outcome
                continue
            outcome.metadata.update(result.metadata)
            if result.action == "block":
                _block(outcome, hook, result.reason)
                return outcome
            outcome.event = next_event
        self.fire(trigger, outcome.event, ctx)
        return outcome

    @staticmethod
    def _failed(
        outcome: SyncOutcome, hook: HookRegistration, exc: Exception, fail_closed: bool
    ) -> bool:
        """Log and record a broken hook; returns True when the chain is now blocked."""
        message = _describe(exc)
        outcome.errors.append((hook.name, message))
        if fail_closed:
            logger.exception(
                "hook %s on %s failed; blocking (fail-closed trigger)",
                hook.name,
                hook.trigger.name,
            )
            _block(outcome, hook, f"hook {hook.name} failed: {message}")
            return True
        logger.exception("hook %s on %s failed; continuing", hook.name, hook.trigger.name)
        return False

    # -- ASYNC observers -------------------------------------------------------------

    def fire(self, trigger: HookTrigger, event: Any, ctx: HookContext) -> None:
        """Start every ASYNC hook of ``trigger`` as an engine-owned task; never raises for a
        hook's failure. Must be called from a running event loop when hooks exist."""
        hooks = self._async.get(HookTrigger(trigger), ())
        if not hooks:
            return
        loop = asyncio.get_running_loop()
        for hook in hooks:
            task = loop.create_task(
                self._observe(hook, event, ctx), name=f"hook:{hook.trigger}:{hook.name}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _observe(self, hook: HookRegistration, event: Any, ctx: HookContext) -> None:
        seconds = self._timeout_of(hook)
        try:
            async with asyncio.timeout(seconds) as deadline:
                value = hook.fn(event, ctx)
                if inspect.isawaitable(value):
                    await value
        except TimeoutError:
            if not deadline.expired():
                logger.exception("hook %s on %s failed", hook.name, hook.trigger.name)
            else:
                logger.warning(
                    "hook %s on %s timed out after %s",
                    hook.name,
                    hook.trigger.name,
                    _seconds(seconds),
                )
        except Exception:
            logger.exception("hook %s on %s failed", hook.name, hook.trigger.name)

    @property
    def pending(self) -> int:
        """How many ASYNC hook tasks are still running (on any loop)."""
        return sum(1 for task in self._tasks if not task.done())

    def _tasks_of_this_loop(self) -> list[asyncio.Task[None]]:
        loop = asyncio.get_running_loop()
        return [t for t in self._tasks if not t.done() and t.get_loop() is loop]

    # A timeout argument (not only asyncio.timeout around the call): drain is the shutdown
    # and test barrier, and callers nearly always want a bound on it.
    async def drain(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until no ASYNC hook task of this loop is running (including tasks that hooks
        fire meanwhile). Raises TimeoutError if that takes longer than ``timeout``."""
        async with asyncio.timeout(timeout):
            while pending := self._tasks_of_this_loop():
                await asyncio.wait(pending)

    async def aclose(self) -> None:
        """Cancel every ASYNC hook task of this loop and wait for them to finish."""
        while pending := self._tasks_of_this_loop():
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def _default_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or ""
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}" if module else qualname


def _order_key(hook: HookRegistration) -> tuple[int, int]:
    return (hook.priority, hook.sequence)


def _block(outcome: SyncOutcome, hook: HookRegistration, reason: str | None) -> None:
    outcome.allowed = False
    outcome.reason = reason
    outcome.blocked_by = hook.name


def _as_result(value: object) -> HookResult:
    if value is None:
        return HookResult()
    if isinstance(value, HookResult):
        return value
    raise _HookFailure(f"returned {type(value).__name__}, not HookResult or None")


def _modified(trigger: HookTrigger, current: Any, replacement: Any) -> Any:
    expected = _MODIFY_TYPES.get(trigger)
    if expected is None or isinstance(replacement, expected):
        return replacement
    if (
        trigger is HookTrigger.ON_TRANSCRIPTION
        and isinstance(replacement, str)
        and isinstance(current, TranscriptionEvent)
    ):
        return dataclasses.replace(current, text=replacement)
    raise _HookFailure(
        f"modified {trigger.name} with {type(replacement).__name__}, not {expected.__name__}"
    )
