"""A Celery worker's side of a tool call (``voice.tasks.run_tool_call``).

1. Claim the ``ToolCall`` (PENDING → RUNNING, a conditional update): a call the session
   already gave up on (timed out, cancelled) or another delivery of the same task is not run.
2. Run the handler in this thread, under the task's soft and hard time limits.
3. Store the outcome (conditional again: a call the session gave up on meanwhile keeps its
   status, and the result is stored as *late*), then send it to the session host's channel
   (``VoiceSession.host_channel_name``) as ``{"type": "tool.result", ...}``. A session that
   has ended, or a host that cannot be reached, gets nothing: the result is stored as late.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from celery.exceptions import SoftTimeLimitExceeded
from channels.layers import get_channel_layer

from voice import services
from voice.kit import ToolError
from voice.models import DEFAULT_TOOL_RESULT_MAX_LENGTH, SessionState, ToolCall, VoiceSession
from voice.tools.runner import (
    ToolSpec,
    failure_text,
    result_text,
    run_handler_blocking,
    timeout_text,
    truncate_result,
)

logger = logging.getLogger(__name__)

TOOL_RESULT = "tool.result"


def execute_tool_call(tool_call_id: str, *, task_id: str = "") -> None:
    row = (
        ToolCall.objects.select_related("tenant", "tool", "session__agent")
        .filter(pk=tool_call_id)
        .first()
    )
    if row is None:
        logger.warning("tool call %s does not exist (deleted?): not run", tool_call_id)
        return
    if not services.tool_call_start(tenant=row.tenant, tool_call_id=row.pk, task_id=task_id):
        logger.info("tool call %s is no longer pending: not run", tool_call_id)
        return
    agent = row.session.agent
    limit = agent.tool_result_max_length if agent is not None else DEFAULT_TOOL_RESULT_MAX_LENGTH
    status, text = _run(row)
    text = truncate_result(text, limit)
    finished = services.tool_call_finish(
        tenant=row.tenant,
        tool_call_id=row.pk,
        status=status,
        result=text if status == "succeeded" else "",
        error="" if status == "succeeded" else text,
    )
    if not finished:
        logger.info("tool call %s ended while it ran: its result is stored as late", row.pk)
        services.tool_call_store_late(tenant=row.tenant, tool_call_id=row.pk, result=text)
        return
    _send_to_host(row, status, text)


def _run(row: ToolCall) -> tuple[str, str]:
    if row.tool is None:
        return "failed", failure_text(row.name, _Gone())
    spec = ToolSpec.from_row(row.tool)
    try:
        value = run_handler_blocking(spec, dict(row.arguments), call_id=row.call_id)
    except (SoftTimeLimitExceeded, TimeoutError):
        logger.warning("tool %s timed out after %ss in the worker", spec.name, spec.timeout_seconds)
        return "timed_out", timeout_text(spec.name, spec.timeout_seconds)
    except Exception as error:
        if not isinstance(error, ToolError):  # a ToolError is an answer, not a fault
            logger.exception("tool %s raised in the worker", spec.name)
        return "failed", failure_text(spec.name, error)
    return "succeeded", result_text(value)


class _Gone(Exception):
    pass


def _send_to_host(row: ToolCall, status: str, text: str) -> None:
    session = (
        VoiceSession.objects.filter(pk=row.session_id).values("state", "host_channel_name").first()
    )
    host = session["host_channel_name"] if session else ""
    if session is None or session["state"] == SessionState.ENDED or not host:
        services.tool_call_store_late(tenant=row.tenant, tool_call_id=row.pk, result=text)
        return
    message: dict[str, Any] = {
        "type": TOOL_RESULT,
        "session_id": str(row.session_id),
        "call_id": row.call_id,
        "tool_call_id": str(row.pk),
        "status": status,
        "result": text,
    }
    layer = get_channel_layer()
    try:
        if layer is None:
            raise RuntimeError("no channel layer configured")
        async_to_sync(layer.send)(host, message)
    except Exception:
        logger.warning(
            "the result of tool call %s could not reach its session", row.pk, exc_info=True
        )
        services.tool_call_store_late(tenant=row.tenant, tool_call_id=row.pk, result=text)
