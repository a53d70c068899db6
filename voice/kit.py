"""The public kit: ``RoomKit``, ``Tool``, ``HookTrigger``, ``HookResult`` (DESIGN §3).

Hooks register on the process-wide kit::

    from voice.kit import HookResult, HookTrigger, kit

    @kit.hook(HookTrigger.ON_TOOL_CALL)
    async def on_tool_call(event, ctx):
        ...

Put them in an installed app's ``hooks.py``: :func:`autodiscover_hooks` (called from
``VoiceConfig.ready()``) imports every such module at startup, like admin autodiscovery.

Importing this module needs neither Django settings nor the app registry.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from voice.hook_engine import (
    DEFAULT_HOOK_TIMEOUT,
    FAIL_CLOSED_TRIGGERS,
    SYNC_TRIGGERS,
    HookContext,
    HookEngine,
    HookExecution,
    HookFunction,
    HookResult,
    HookTrigger,
    SyncOutcome,
)

__all__ = [
    "FAIL_CLOSED_TRIGGERS",
    "SYNC_TRIGGERS",
    "HookContext",
    "HookEngine",
    "HookExecution",
    "HookResult",
    "HookTrigger",
    "KitChannel",
    "KitRoom",
    "RoomKit",
    "SyncOutcome",
    "RemoteExecution",
    "Tool",
    "ToolError",
    "autodiscover_hooks",
    "current_tool_call_id",
    "kit",
]

logger = logging.getLogger(__name__)

_F = TypeVar("_F", bound=HookFunction)

# The function-name rule the providers share; the same as voice.models.TOOL_NAME_VALIDATOR
# (copied: importing voice.models needs the app registry).
TOOL_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


def _empty_parameters() -> dict[str, Any]:
    return {"type": "object", "properties": {}}


# Set by the engine in each tool call's task; handlers read it with current_tool_call_id().
_CURRENT_CALL_ID: ContextVar[str] = ContextVar("roomvoice_tool_call_id", default="")


def current_tool_call_id() -> str:
    """The provider's id of the tool call being handled ("" outside a tool call)."""
    return _CURRENT_CALL_ID.get()


class ToolError(Exception):
    """Raise it from a tool handler to tell the model what went wrong: its message reaches
    the model as the call's error. Any other exception is logged with its traceback and the
    model hears only that the tool failed (exception texts may hold internals)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RemoteExecution(Protocol):
    """Runs a tool's calls somewhere else (a Celery worker). ``submit`` hands the call over
    (the engine then waits for the result to arrive through
    ``RealtimeVoiceChannel.deliver_tool_result``); ``revoke`` withdraws a call the engine
    gave up on: ``terminate`` when it was cancelled (stop it even if it runs), not after a
    timeout (stop it only if it has not started). ``record`` is the engine's
    ``voice.store.StoredToolCall`` with the store's ``row_id``."""

    async def submit(self, record: Any, tool: Tool) -> None: ...

    async def revoke(self, record: Any, tool: Tool, *, terminate: bool) -> None: ...


BARGE_IN_POLICIES = ("keep", "cancel")


@dataclass(frozen=True, slots=True, kw_only=True)
class Tool:
    """A function the model may call: its definition for the provider and its handler.

    Built with keywords, as the seed does. The handler takes the call's arguments as keyword
    arguments (``async def get_weather(city: str) -> str``); a plain ``def`` handler runs in
    a worker thread. Run it with :meth:`call`, which handles both. (A tool answered only by
    an ON_TOOL_CALL hook is declared with a plain definition dict instead.)

    Options beyond the seed's four fields:

    - ``timeout``: seconds before the model gets a timeout result (default: the channel's
      ``tool_timeout``).
    - ``progress_message``: said to the caller (injected as an instruction to the model)
      when the call is still running after ``progress_delay`` seconds.
    - ``on_barge_in``: ``"keep"`` (default) lets the call finish when the caller starts
      speaking; ``"cancel"`` cancels it and tells the model so.
    - ``remote``: a :class:`RemoteExecution` that runs the calls elsewhere (then ``handler``
      may be omitted).
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=_empty_parameters)
    handler: Callable[..., Any] | None = None
    timeout: float | None = None
    progress_message: str = ""
    progress_delay: float = 2.0
    on_barge_in: str = "keep"
    remote: RemoteExecution | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not TOOL_NAME_PATTERN.fullmatch(self.name):
            raise ValueError(
                f"invalid tool name {self.name!r}: use 1-64 letters, digits, '_' or '-', "
                "starting with a letter or '_'"
            )
        if not isinstance(self.description, str):
            raise TypeError(f"tool {self.name}: description must be a str")
        if not isinstance(self.parameters, dict) or self.parameters.get("type") != "object":
            raise ValueError(
                f"tool {self.name}: parameters must be a JSON Schema dict with type 'object'"
            )
        properties = self.parameters.get("properties", {})
        if not isinstance(properties, dict):
            raise ValueError(f"tool {self.name}: parameters.properties must be a dict")
        if self.remote is None and not callable(self.handler):
            raise TypeError(f"tool {self.name}: handler must be callable")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"tool {self.name}: timeout must be positive")
        if not isinstance(self.progress_message, str):
            raise TypeError(f"tool {self.name}: progress_message must be a str")
        if not self.progress_delay >= 0:
            raise ValueError(f"tool {self.name}: progress_delay must be 0 or more")
        if self.on_barge_in not in BARGE_IN_POLICIES:
            raise ValueError(f"tool {self.name}: on_barge_in must be 'keep' or 'cancel'")

    @property
    def definition(self) -> dict[str, Any]:
        """The provider-facing definition (a fresh copy each time)."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": copy.deepcopy(self.parameters),
        }

    async def call(self, arguments: dict[str, Any]) -> Any:
        """Run the handler with ``arguments`` as keyword arguments and return its result."""
        handler = self.handler
        if handler is None:
            raise TypeError(f"tool {self.name} runs remotely: it has no local handler")
        if _is_async_callable(handler):
            return await handler(**arguments)
        result = await asyncio.to_thread(handler, **arguments)
        if inspect.isawaitable(result):  # a plain callable that returned a coroutine
            result = await result
        return result


def _is_async_callable(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with ``async def __call__``
    )


@dataclass(slots=True)
class KitRoom:
    """An in-memory room record (the persistent room is ``rooms.models.Room``)."""

    id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class KitChannel(Protocol):
    """What :meth:`RoomKit.register_channel` needs of a channel."""

    @property
    def channel_id(self) -> str: ...

    kit: RoomKit | None


class RoomKit:
    """Channels, rooms and hooks of one process. Use the process-wide :data:`kit`."""

    def __init__(self, *, hook_timeout: float = DEFAULT_HOOK_TIMEOUT) -> None:
        self.hooks = HookEngine(default_timeout=hook_timeout)
        self._channels: dict[str, KitChannel] = {}
        self._rooms: dict[str, KitRoom] = {}

    def hook(
        self,
        trigger: HookTrigger | str,
        *,
        execution: HookExecution | str | None = None,
        priority: int = 0,
        name: str | None = None,
        timeout: float | None = None,
    ) -> Callable[[_F], _F]:
        """Decorator registering a hook on this kit; returns the function unchanged."""

        def decorator(fn: _F) -> _F:
            return self.hooks.register(
                trigger, fn, execution=execution, priority=priority, name=name, timeout=timeout
            )

        return decorator

    # -- channels ------------------------------------------------------------------

    def register_channel(self, channel: KitChannel) -> None:
        channel_id = channel.channel_id
        if not isinstance(channel_id, str) or not channel_id:
            raise ValueError("a channel needs a non-empty channel_id")
        if channel_id in self._channels:
            raise ValueError(f"a channel with id {channel_id!r} is already registered")
        self._channels[channel_id] = channel
        channel.kit = self

    def unregister_channel(self, channel_id: str) -> KitChannel:
        channel = self._channels.pop(channel_id)
        if channel.kit is self:
            channel.kit = None
        return channel

    def get_channel(self, channel_id: str) -> KitChannel | None:
        return self._channels.get(channel_id)

    @property
    def channels(self) -> dict[str, KitChannel]:
        """The registered channels by id (a copy)."""
        return dict(self._channels)

    # -- rooms ---------------------------------------------------------------------

    async def create_room(
        self, room_id: str | None = None, metadata: dict[str, Any] | None = None
    ) -> KitRoom:
        room_id = str(uuid.uuid4()) if room_id is None else room_id
        if not isinstance(room_id, str) or not room_id:
            raise ValueError("a room id must be a non-empty string")
        if room_id in self._rooms:
            raise ValueError(f"a room with id {room_id!r} already exists")
        room = KitRoom(id=room_id, metadata=dict(metadata or {}))
        self._rooms[room_id] = room
        return room

    def get_room(self, room_id: str) -> KitRoom | None:
        return self._rooms.get(room_id)

    # -- lifecycle -----------------------------------------------------------------

    async def close(self, *, hooks_grace: float | None = DEFAULT_HOOK_TIMEOUT) -> None:
        """Close every registered channel that has an async ``close()``, then let the
        pending ASYNC hooks finish (cancelling those still running after ``hooks_grace``
        seconds; None waits for them)."""
        for channel_id, channel in list(self._channels.items()):
            close = getattr(channel, "close", None)
            if close is None or not _is_async_callable(close):
                continue
            try:
                await close()
            except Exception:
                logger.exception("closing channel %s failed", channel_id)
        try:
            await self.hooks.drain(hooks_grace)
        except TimeoutError:
            logger.warning("hooks still running after %ss at close; cancelling them", hooks_grace)
            await self.hooks.aclose()


#: The process-wide kit; ``@kit.hook(...)`` in an app's ``hooks.py`` registers on it.
kit = RoomKit()


def autodiscover_hooks() -> None:
    """Import ``<app>.hooks`` for every installed app that has one (as admin does)."""
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("hooks")
