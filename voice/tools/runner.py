"""Running an operator-defined tool's handler, wherever it runs.

The same functions serve the three places a ``Tool`` row's handler runs: inline in the
session's process (``voice.agents.tool_for``), in a Celery worker (``voice.tools.worker``),
and the admin's "test this tool". Each turns the handler's answer, or its failure, into the
text the model receives:

- a returned ``str`` is the result as it is; anything else is sent as JSON;
- :class:`voice.kit.ToolError` (``WebhookError`` is one): ``{"error": <its message>}``;
- a timeout: ``{"error": "Tool 'x' timed out after N s"}``;
- any other exception: ``{"error": "Tool 'x' failed (TypeName)"}``, the traceback logged
  and never sent (exception texts may hold internals);
- longer than the agent's ``tool_result_max_length``: cut, with a notice saying so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any

from voice.kit import ToolError, _is_async_callable

if TYPE_CHECKING:
    from voice.models import Tool as ToolRow

logger = logging.getLogger(__name__)

PYTHON = "python"
WEBHOOK = "webhook"


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A ``Tool`` row as a session or a worker needs it (read once; no ORM afterwards)."""

    name: str
    description: str
    parameters: dict[str, Any]
    handler_kind: str
    handler: str
    timeout_seconds: float
    execution: str = "inline"
    progress_message: str = ""
    progress_delay_seconds: float = 2.0
    on_barge_in: str = "keep"
    tool_id: str = ""
    secret: str = field(default="", repr=False)

    @classmethod
    def from_row(cls, tool: ToolRow) -> ToolSpec:
        """Sync (decrypts the secret); call it off the event loop."""
        from voice.services import tool_reveal_secret

        return cls(
            name=tool.name,
            description=tool.description,
            parameters=tool.parameters or {"type": "object", "properties": {}},
            handler_kind=tool.handler_kind,
            handler=tool.handler,
            timeout_seconds=tool.timeout_seconds,
            execution=tool.execution,
            progress_message=tool.progress_message,
            progress_delay_seconds=tool.progress_delay_seconds,
            on_barge_in=tool.on_barge_in,
            tool_id=str(tool.pk),
            secret=tool_reveal_secret(tool) if tool.handler_kind == WEBHOOK else "",
        )


class HandlerUnavailable(ToolError):
    """The handler cannot be loaded here (not allowed, not importable)."""


def import_handler(path: str) -> Callable[..., Any]:
    """The allow-listed callable at ``path`` (``ROOMVOICE_TOOL_HANDLER_ALLOWLIST``)."""
    from voice.validation import python_handler_allowed

    if not python_handler_allowed(path):
        raise HandlerUnavailable("the tool's handler is not allowed on this server")
    module_name, _, attribute = path.rpartition(".")
    try:
        handler = getattr(import_module(module_name), attribute)
    except (ImportError, AttributeError):
        logger.error("tool handler %s cannot be imported", path)
        raise HandlerUnavailable("the tool's handler is not installed on this server") from None
    if not callable(handler):
        raise HandlerUnavailable("the tool's handler is not callable")
    return handler  # type: ignore[no-any-return]


async def run_handler(spec: ToolSpec, arguments: dict[str, Any], *, call_id: str) -> Any:
    """Run the handler once (no timeout here: the caller owns it). A plain ``def`` handler
    runs in a worker thread, never on the event loop."""
    if spec.handler_kind == WEBHOOK:
        from voice.tools.webhook import call_webhook

        return await call_webhook(
            spec.handler,
            secret=spec.secret,
            name=spec.name,
            arguments=arguments,
            call_id=call_id,
            timeout_s=spec.timeout_seconds,
        )
    handler = import_handler(spec.handler)
    if _is_async_callable(handler):
        return await handler(**arguments)
    value = await asyncio.to_thread(handler, **arguments)
    if asyncio.iscoroutine(value):
        value = await value
    return value


def run_handler_blocking(spec: ToolSpec, arguments: dict[str, Any], *, call_id: str) -> Any:
    """Run the handler in this thread (a Celery worker): a plain ``def`` handler is called
    here, so the worker's soft time limit can interrupt it; async ones (webhooks) run in a
    private event loop bounded by the tool's timeout."""
    if spec.handler_kind == PYTHON:
        handler = import_handler(spec.handler)
        if not _is_async_callable(handler):
            value = handler(**arguments)
            if not asyncio.iscoroutine(value):
                return value
            return asyncio.run(_bounded(value, spec.timeout_seconds))
    return asyncio.run(
        _bounded(run_handler(spec, arguments, call_id=call_id), spec.timeout_seconds)
    )


async def _bounded(awaitable: Any, seconds: float) -> Any:
    async with asyncio.timeout(seconds):
        return await awaitable


# --- results -------------------------------------------------------------------------------


def error_json(message: str) -> str:
    return json.dumps({"error": message})


def result_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def timeout_text(name: str, timeout: float) -> str:
    return error_json(f"Tool '{name}' timed out after {timeout:g} s")


def failure_text(name: str, error: BaseException) -> str:
    """What the model hears about ``error`` (log the traceback separately)."""
    if isinstance(error, ToolError):
        return error_json(error.message)
    return error_json(f"Tool '{name}' failed ({type(error).__name__})")


def truncate_result(result: str, limit: int) -> str:
    """``result`` cut to at most ``limit`` characters, ending with a notice that says so."""
    if len(result) <= limit:
        return result
    notice = (
        f"\n[truncated: the result was {len(result)} characters; only the first {{kept}} are shown]"
    )
    kept = max(0, limit - len(notice.format(kept=limit)))
    # The notice is shorter when ``kept`` has fewer digits than ``limit``: keep as much as
    # still fits, so the result fills the limit without going over it.
    while kept + 1 + len(notice.format(kept=kept + 1)) <= limit:
        kept += 1
    if kept == 0:
        # A limit too small for the notice: say as much as fits, never cut the notice.
        short = "[truncated]"
        return result[: max(0, limit - len(short))] + short if limit >= len(short) else ""
    return result[:kept] + notice.format(kept=kept)


@dataclass(frozen=True, slots=True)
class TrialOutcome:
    """One run of a tool outside any session (the admin's "test this tool")."""

    status: str  # "succeeded" | "failed" | "timed_out"
    text: str
    duration_ms: float


async def try_tool(spec: ToolSpec, arguments: dict[str, Any], *, limit: int) -> TrialOutcome:
    """Run ``spec``'s handler once with ``arguments``, exactly as a session would (same
    timeout, error texts and truncation), and say what the model would have received."""
    started = time.monotonic()
    status = "succeeded"
    try:
        async with asyncio.timeout(spec.timeout_seconds):
            text = result_text(await run_handler(spec, arguments, call_id="admin-test"))
    except TimeoutError:
        status, text = "timed_out", timeout_text(spec.name, spec.timeout_seconds)
    except Exception as error:
        if not isinstance(error, ToolError):
            logger.exception("tool %s raised while being tested", spec.name)
        status, text = "failed", failure_text(spec.name, error)
    return TrialOutcome(status, truncate_result(text, limit), (time.monotonic() - started) * 1000)
