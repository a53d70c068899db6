"""What a session host does with the messages its channel receives (DESIGN §6), shared by
every host: the WebSocket consumers, ``manage.py voice_call`` and ``manage.py runsip``.

- ``tool.result`` (``voice.tools.worker``): a Celery tool call's result for a live session;
  one that nothing waits for any more is stored on its ToolCall as late.
- ``voice.reconfigure`` (``voice_session_request_reconfigure``): an operator changes the
  live session's prompt, voice, temperature, provider options or tools.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.db import database_sync_to_async

from voice.channels import RealtimeVoiceChannel
from voice.django_store import DjangoStore
from voice.services import VOICE_END, VOICE_RECONFIGURE, tool_call_store_late
from voice.session import LiveSession

logger = logging.getLogger(__name__)

TOOL_RESULT_FIELDS = ("session_id", "call_id", "tool_call_id", "status", "result")
RECONFIGURE_OPTIONS = ("system_prompt", "voice", "temperature", "provider_config")


async def handle_tool_result(channel: RealtimeVoiceChannel | None, message: dict[str, Any]) -> None:
    if not all(isinstance(message.get(name), str) for name in TOOL_RESULT_FIELDS):
        logger.warning("malformed tool.result message ignored")
        return
    delivered = channel is not None and channel.deliver_tool_result(
        message["session_id"], message["call_id"], message["status"], message["result"]
    )
    if not delivered and channel is not None and isinstance(channel.store, DjangoStore):
        await database_sync_to_async(tool_call_store_late)(
            tenant=channel.store.tenant,
            tool_call_id=message["tool_call_id"],
            result=message["result"],
        )


def reconfigure_changes(message: dict[str, Any], session: LiveSession) -> dict[str, Any] | None:
    """The changes of a ``voice.reconfigure`` message meant for ``session`` (else None)."""
    changes = message.get("changes")
    if str(message.get("session_id")) != session.id or not isinstance(changes, dict):
        return None
    return changes


async def apply_reconfigure(
    channel: RealtimeVoiceChannel, session: LiveSession, changes: dict[str, Any]
) -> None:
    options: dict[str, Any] = {
        name: changes[name] for name in RECONFIGURE_OPTIONS if name in changes
    }
    if "tools" in changes and isinstance(channel.store, DjangoStore):
        options["tools"] = await database_sync_to_async(_tools_named)(
            channel.store.tenant, list(changes["tools"])
        )
    await channel.reconfigure_session(session, **options)


def _tools_named(tenant: Any, names: list[str]) -> list[Any]:
    from voice.agents import tool_for
    from voice.models import Tool
    from voice.tools.runner import ToolSpec

    rows = Tool.objects.filter(tenant=tenant, name__in=names, enabled=True).order_by("name")
    return [tool_for(ToolSpec.from_row(row)) for row in rows]


async def serve_host_channel(
    layer: Any,
    name: str,
    channel: RealtimeVoiceChannel,
    session: LiveSession,
    *,
    on_end: Any,
) -> None:
    """A session host's receive loop on ``name``, for hosts that are not Channels consumers
    (``voice_call``, ``runsip``): ``voice.end`` calls ``await on_end(reason)``; tool results
    and reconfigure requests are applied here. Runs until cancelled."""
    while True:
        message = await layer.receive(name)
        kind = message.get("type")
        try:
            if kind == VOICE_END:
                await on_end(str(message.get("reason") or "ended_by_operator"))
            elif kind == "tool.result":
                await handle_tool_result(channel, message)
            elif kind == VOICE_RECONFIGURE:
                changes = reconfigure_changes(message, session)
                if changes is not None:
                    await apply_reconfigure(channel, session, changes)
        except Exception:
            logger.exception("host message %s could not be handled", kind)
