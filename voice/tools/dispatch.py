"""The session's side of a Celery tool call: ``CeleryExecution`` is the ``Tool.remote`` of
every tool with ``execution = celery`` (``voice.agents.tool_for``).

The engine records the call first (``DjangoStore.tool_call_started``: a PENDING ``ToolCall``
row), then ``submit`` enqueues ``voice.run_tool_call`` on the ``tools`` queue once that row is
committed, carrying only its id (also the Celery task id, so a revoke needs no lookup). The
message expires with the tool's timeout: a worker that was down, or a queue too long, never
runs a call the session has already answered with a timeout (and the claim would refuse it
anyway). ``revoke`` withdraws a call the engine gave up on; a cancelled one is terminated
even while it runs.

In the embedded default (``CELERY_TASK_ALWAYS_EAGER``) the task runs inside ``submit``, in
a worker thread of its own: the event loop never waits for it, and the result comes back
through the in-memory channel layer exactly as it does from a worker.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connection, connections, transaction

from voice.kit import Tool, ToolError
from voice.tools.runner import ToolSpec

logger = logging.getLogger(__name__)

#: The worker's soft limit is the tool's timeout plus this (a result a little late is still
#: stored, as late, for the operator); the hard limit (the process is killed) twice this.
LATE_GRACE_S = 5.0
TOOLS_QUEUE = "tools"


class CeleryExecution:
    def __init__(self, spec: ToolSpec) -> None:
        self.spec = spec

    async def submit(self, record: Any, tool: Tool) -> None:
        if not record.row_id:
            raise ToolError("the call could not be recorded, so no worker can run it")
        await sync_to_async(enqueue_tool_call, thread_sensitive=False)(
            record.row_id, self.spec.timeout_seconds
        )

    async def revoke(self, record: Any, tool: Tool, *, terminate: bool) -> None:
        if record.row_id:
            await sync_to_async(revoke_tool_call, thread_sensitive=False)(
                record.row_id, terminate=terminate
            )


def enqueue_tool_call(tool_call_id: str, timeout: float) -> None:
    """Enqueue once the ToolCall row is committed: at once when no transaction is open here
    (the engine's case: the store committed the row before ``submit``), else on commit."""
    from roomvoice.celery import app
    from voice.tasks import run_tool_call

    def send() -> None:
        run_tool_call.apply_async(
            (tool_call_id,),
            task_id=tool_call_id,
            queue=TOOLS_QUEUE,
            soft_time_limit=timeout + LATE_GRACE_S,
            time_limit=timeout + 2 * LATE_GRACE_S,
            expires=timeout,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
        )

    if connection.in_atomic_block:
        transaction.on_commit(send)
        return
    if not app.conf.task_always_eager:
        send()
        return
    try:
        send()  # the whole call runs here, in this worker thread
    finally:
        connections.close_all()  # this pool thread's own connections


def revoke_tool_call(tool_call_id: str, *, terminate: bool) -> None:
    """Withdraw the task: workers drop it if it has not started; ``terminate`` also stops
    it if it runs (its process is replaced; revoke targets this task id only)."""
    from roomvoice.celery import app

    if app.conf.task_always_eager:
        return  # ran inline: nothing is queued, and a thread cannot be stopped
    app.control.revoke(tool_call_id, terminate=terminate, signal="SIGTERM")
