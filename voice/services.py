"""Writes for agents, tools, voice sessions and tool calls.

Session and tool-call state changes are conditional UPDATEs (``… WHERE state IN (allowed)``):
the first caller wins, a late or repeated one gets ``False`` and changes nothing, so two
processes (a consumer and ``end_stale_sessions``, a worker and a cancelling session) can race
safely.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from providers.services import secret_box
from rooms.broadcast import broadcast_on_commit, session_changed_message, tool_call_changed_message
from rooms.models import Room, Tenant
from rooms.services import _require_tenant
from roomvoice.lib.secrets import mask_secret
from voice.models import (
    SESSION_TRANSITIONS,
    TOOL_CALL_FINAL_STATUSES,
    Agent,
    EndReason,
    SessionState,
    Tool,
    ToolCall,
    ToolCallStatus,
    VoiceSession,
)

logger = logging.getLogger(__name__)

MIN_TOOL_SECRET_LENGTH = 16


class InvalidTransition(ValidationError):
    """A state change the state machine does not allow."""


# --- Agents and tools -----------------------------------------------------------------------


def tool_create(
    *, tenant: Tenant, name: str, handler: str, secret: str = "", **fields: Any
) -> Tool:
    """``secret`` (a webhook's signing key) is stored encrypted; a webhook needs one."""
    tool = Tool(tenant=tenant, name=name.strip(), handler=handler.strip(), **fields)
    if secret:
        tool_put_secret(tool, secret)
    tool.full_clean()
    tool.save()
    return tool


def tool_update(*, tenant: Tenant, tool: Tool, secret: str = "", **changes: Any) -> Tool:
    """``secret``, when given, replaces the stored one (blank keeps it)."""
    _require_tenant(tenant, tool)
    for name, value in changes.items():
        setattr(tool, name, value)
    if secret:
        tool_put_secret(tool, secret)
    tool.full_clean()
    tool.save()
    return tool


def tool_clean_secret(secret: str) -> str:
    """A webhook secret as it will be stored, or a ValidationError on ``secret``."""
    secret = secret.strip()
    if len(secret) < MIN_TOOL_SECRET_LENGTH:
        raise ValidationError(
            {"secret": f"Use a signing secret of at least {MIN_TOOL_SECRET_LENGTH} characters."}
        )
    if len(secret) > 4096 or any(character.isspace() for character in secret):
        raise ValidationError({"secret": "The secret is too long or contains whitespace."})
    return secret


def tool_put_secret(tool: Tool, secret: str) -> None:
    """Set ``tool``'s secret, encrypted (not saved)."""
    secret = tool_clean_secret(secret)
    tool.encrypted_secret = secret_box().encrypt(secret)
    tool.secret_hint = mask_secret(secret)


def tool_reveal_secret(tool: Tool) -> str:
    """The plaintext signing secret, for the one call that signs a request. Never log it."""
    return secret_box().decrypt(tool.encrypted_secret) if tool.encrypted_secret else ""


def agent_create(
    *,
    tenant: Tenant,
    slug: str,
    name: str,
    provider_kind: str,
    tools: Iterable[Tool] = (),
    **fields: Any,
) -> Agent:
    agent = Agent(
        tenant=tenant,
        slug=slug.strip().lower(),
        name=name.strip(),
        provider_kind=provider_kind,
        **fields,
    )
    tool_list = list(tools)
    _require_tenant(tenant, agent.credential, *tool_list)
    agent.full_clean()
    with transaction.atomic():
        agent.save()
        agent.tools.set(tool_list)
    return agent


def agent_update(
    *, tenant: Tenant, agent: Agent, tools: Iterable[Tool] | None = None, **changes: Any
) -> Agent:
    _require_tenant(tenant, agent)
    for name, value in changes.items():
        setattr(agent, name, value)
    tool_list = None if tools is None else list(tools)
    _require_tenant(tenant, agent.credential, *(tool_list or []))
    agent.full_clean()
    with transaction.atomic():
        agent.save()
        if tool_list is not None:
            agent.tools.set(tool_list)
    return agent


# --- Voice sessions -------------------------------------------------------------------------


def voice_session_create(
    *,
    tenant: Tenant,
    room: Room,
    participant_id: str,
    transport: str,
    agent: Agent | None = None,
    provider_kind: str | None = None,
    channel_id: str = "voice",
    host_channel_name: str = "",
    metadata: dict[str, Any] | None = None,
    session_id: uuid.UUID | str | None = None,
) -> VoiceSession:
    """A new session in CONNECTING. The provider comes from the agent unless given;
    ``session_id`` lets the row share the live session's id."""
    _require_tenant(tenant, room, agent)
    kind = provider_kind or (agent.provider_kind if agent else "")
    session = VoiceSession(
        id=uuid.UUID(str(session_id)) if session_id else uuid.uuid4(),
        tenant=tenant,
        room=room,
        agent=agent,
        participant_id=participant_id,
        channel_id=channel_id,
        transport=transport,
        provider_kind=kind,
        model=agent.model if agent else "",
        host_channel_name=host_channel_name,
        metadata={} if metadata is None else metadata,
    )
    session.full_clean(exclude=["room", "tenant", "agent"])
    session.save(force_insert=True)
    _session_broadcast(session.pk)
    return session


def _session_broadcast(session_id: uuid.UUID | str) -> None:
    """Tell the room's observers (after commit) what state the session is in now."""
    row = (
        VoiceSession.objects.filter(pk=session_id)
        .values("room_id", "state", "participant_id", "agent__name", "transport", "end_reason")
        .first()
    )
    if row is None:
        return
    broadcast_on_commit(
        row["room_id"],
        session_changed_message(
            room_id=row["room_id"],
            session_id=session_id,
            state=row["state"],
            participant_id=row["participant_id"],
            agent=row["agent__name"] or "",
            transport=row["transport"],
            end_reason=row["end_reason"],
        ),
    )


def _transition(*, tenant: Tenant, session_id: uuid.UUID | str, target: str, **values: Any) -> bool:
    allowed_from = [state for state, targets in SESSION_TRANSITIONS.items() if target in targets]
    updated = VoiceSession.objects.filter(
        pk=session_id, tenant=tenant, state__in=allowed_from
    ).update(state=target, **values)
    if updated:
        return True
    current = (
        VoiceSession.objects.filter(pk=session_id, tenant=tenant)
        .values_list("state", flat=True)
        .first()
    )
    if current is None:
        raise VoiceSession.DoesNotExist(f"no voice session {session_id} in tenant {tenant.slug}")
    if current == target:
        return False  # already there: a repeated call is a no-op
    raise InvalidTransition(f"voice session {session_id} cannot move from {current} to {target}")


def voice_session_activate(
    *, tenant: Tenant, session_id: uuid.UUID | str, provider_session_id: str = ""
) -> bool:
    """CONNECTING → ACTIVE. False if it already was; InvalidTransition if it had ended."""
    activated = _transition(
        tenant=tenant,
        session_id=session_id,
        target=SessionState.ACTIVE,
        activated_at=timezone.now(),
        provider_session_id=provider_session_id,
    )
    if activated:
        _session_broadcast(session_id)
    return activated


def voice_session_end(
    *,
    tenant: Tenant,
    session_id: uuid.UUID | str,
    reason: str,
    detail: str = "",
    metrics: dict[str, Any] | None = None,
    usage: dict[str, Any] | None = None,
) -> bool:
    """CONNECTING/ACTIVE → ENDED with a reason. Ending twice is a no-op returning False."""
    if reason not in EndReason.values:
        raise ValidationError({"reason": f"Unknown end reason {reason!r}."})
    ended = _transition(
        tenant=tenant,
        session_id=session_id,
        target=SessionState.ENDED,
        ended_at=timezone.now(),
        end_reason=reason,
        end_detail=detail[:2000],
        **({"metrics": metrics} if metrics is not None else {}),
        **({"usage": usage} if usage is not None else {}),
    )
    if ended:
        logger.info("voice session ended: reason=%s session=%s", reason, session_id)
        _session_broadcast(session_id)
    return ended


def voice_session_record_reconnect(
    *, tenant: Tenant, session_id: uuid.UUID | str, provider_session_id: str = ""
) -> bool:
    """Count a transparent provider reconnect on a live session (and keep the new vendor
    session id). False when the session is unknown in the tenant or has ended."""
    changes: dict[str, Any] = {"reconnects": F("reconnects") + 1}
    if provider_session_id:
        changes["provider_session_id"] = provider_session_id[:200]
    updated = (
        VoiceSession.objects.filter(pk=session_id, tenant=tenant)
        .exclude(state=SessionState.ENDED)
        .update(**changes)
    )
    return updated == 1


VOICE_END = "voice.end"  # the message a session host ends a session on


def voice_session_request_end(
    *, tenant: Tenant, session_id: uuid.UUID | str, reason: str = EndReason.ENDED_BY_OPERATOR
) -> bool:
    """Ask the process holding a live session to end it (after commit, over its host channel).
    False when the session is unknown in the tenant or already ended. The host records the
    end; a session whose host has no channel (or is gone) is ended here as ``host_lost``."""
    if reason not in EndReason.values:
        raise ValidationError({"reason": f"Unknown end reason {reason!r}."})
    row = (
        VoiceSession.objects.filter(pk=session_id, tenant=tenant)
        .exclude(state=SessionState.ENDED)
        .values("host_channel_name")
        .first()
    )
    if row is None:
        return False
    host = row["host_channel_name"]
    if not host:
        return voice_session_end(
            tenant=tenant,
            session_id=session_id,
            reason=EndReason.HOST_LOST,
            detail="no host channel to reach the session",
        )

    def send() -> None:
        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.send)(host, {"type": VOICE_END, "reason": str(reason)})

    transaction.on_commit(send)
    return True


VOICE_RECONFIGURE = "voice.reconfigure"  # the message a session host reconfigures one on
RECONFIGURABLE = frozenset({"system_prompt", "voice", "temperature", "provider_config", "tools"})


def voice_session_request_reconfigure(
    *, tenant: Tenant, session_id: uuid.UUID | str, changes: dict[str, Any]
) -> bool:
    """Ask the process holding a live session to change its prompt, voice, temperature,
    provider options or tools (tool names of the tenant, or [] for none), after commit, over
    its host channel. False when the session is unknown in the tenant, ended, or has no host."""
    unknown = sorted(set(changes) - RECONFIGURABLE)
    if unknown or not changes:
        raise ValidationError(
            {name: "Not something a live session can change." for name in unknown}
            or {"non_field_errors": "Name at least one change."}
        )
    if "tools" in changes:
        names = list(changes["tools"])
        found = set(
            Tool.objects.filter(tenant=tenant, name__in=names).values_list("name", flat=True)
        )
        missing = sorted(set(names) - found)
        if missing:
            raise ValidationError({"tools": f"No such tools: {', '.join(missing)}."})
    row = (
        VoiceSession.objects.filter(pk=session_id, tenant=tenant)
        .exclude(state=SessionState.ENDED)
        .values("host_channel_name")
        .first()
    )
    if row is None or not row["host_channel_name"]:
        return False
    host = row["host_channel_name"]
    message = {"type": VOICE_RECONFIGURE, "session_id": str(session_id), "changes": changes}

    def send() -> None:
        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.send)(host, message)

    transaction.on_commit(send)
    return True


def voice_session_set_resumption(
    *, tenant: Tenant, session_id: uuid.UUID | str, handle: str
) -> None:
    VoiceSession.objects.filter(pk=session_id, tenant=tenant).exclude(
        state=SessionState.ENDED
    ).update(resumption_handle=handle)


# --- Tool calls -----------------------------------------------------------------------------


def tool_call_create(
    *,
    tenant: Tenant,
    session: VoiceSession,
    call_id: str,
    name: str,
    arguments: dict[str, Any],
    tool: Tool | None = None,
    execution: str | None = None,
) -> ToolCall:
    _require_tenant(tenant, session, tool)
    call = ToolCall(
        tenant=tenant,
        session=session,
        tool=tool,
        call_id=call_id,
        name=name,
        arguments=arguments,
        execution=execution or (tool.execution if tool else "inline"),
    )
    call.full_clean(exclude=["session", "tenant", "tool"], validate_constraints=False)
    try:
        with transaction.atomic():
            call.save(force_insert=True)
    except IntegrityError:
        if ToolCall.objects.filter(session=session, call_id=call_id).exists():
            raise ValidationError(
                {"call_id": f"Session {session.pk} already has a tool call {call_id!r}."}
            ) from None
        raise
    return call


def tool_call_start(*, tenant: Tenant, tool_call_id: uuid.UUID | str, task_id: str = "") -> bool:
    """Claims a pending call (PENDING → RUNNING). Exactly one claimant gets True."""
    return (
        ToolCall.objects.filter(
            pk=tool_call_id, tenant=tenant, status=ToolCallStatus.PENDING
        ).update(status=ToolCallStatus.RUNNING, started_at=timezone.now(), task_id=task_id)
        == 1
    )


def tool_call_finish(
    *,
    tenant: Tenant,
    tool_call_id: uuid.UUID | str,
    status: str,
    result: str = "",
    error: str = "",
) -> bool:
    """Records the outcome of a pending or running call. A call that already has an outcome
    keeps it (False): a late worker never overwrites a cancellation or a timeout."""
    if status not in TOOL_CALL_FINAL_STATUSES:
        raise ValidationError({"status": f"{status!r} is not a final tool call status."})
    now = timezone.now()
    updated = ToolCall.objects.filter(
        pk=tool_call_id,
        tenant=tenant,
        status__in=[ToolCallStatus.PENDING, ToolCallStatus.RUNNING],
    ).update(status=status, result=result, error=error, finished_at=now)
    if updated:
        # A call that never started (cancelled while pending) gets a zero-length run.
        ToolCall.objects.filter(pk=tool_call_id, started_at__isnull=True).update(started_at=now)
        row = (
            ToolCall.objects.filter(pk=tool_call_id)
            .values("session_id", "session__room_id", "call_id", "name")
            .first()
        )
        if row is not None:
            broadcast_on_commit(
                row["session__room_id"],
                tool_call_changed_message(
                    room_id=row["session__room_id"],
                    session_id=row["session_id"],
                    call_id=row["call_id"],
                    name=row["name"],
                    status=status,
                ),
            )
    return updated == 1


def tool_call_mark_delivered(*, tenant: Tenant, tool_call_id: uuid.UUID | str) -> bool:
    return (
        ToolCall.objects.filter(pk=tool_call_id, tenant=tenant, delivered_at__isnull=True).update(
            delivered_at=timezone.now()
        )
        == 1
    )


def tool_call_store_late(*, tenant: Tenant, tool_call_id: uuid.UUID | str, result: str) -> bool:
    """A result that arrived after its call was over (timed out, cancelled, session gone):
    kept on the row, never given to the model. The first late result wins."""
    return (
        ToolCall.objects.filter(pk=tool_call_id, tenant=tenant, late_at__isnull=True).update(
            late_result=result, late_at=timezone.now()
        )
        == 1
    )
