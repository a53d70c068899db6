"""Celery tasks (thin wrappers: the work is in ``voice.tools.worker``)."""

from __future__ import annotations

from typing import Any

from celery import shared_task


@shared_task(name="voice.run_tool_call", bind=True, ignore_result=True)
def run_tool_call(self: Any, tool_call_id: str) -> None:
    """Run one ``ToolCall`` (by id only: the row holds everything) and send its result to
    the session host's channel."""
    from voice.tools.worker import execute_tool_call

    execute_tool_call(tool_call_id, task_id=str(self.request.id or ""))
