"""The engine's store backed by the database, for one tenant (and usually one agent).

Session state goes to ``VoiceSession`` through the services' conditional transitions;
transcripts go to the room timeline (``RoomEvent``) from a per-session writer task that
batches them; tool calls go to ``ToolCall``. Every ORM call runs in a worker thread
(``database_sync_to_async``) from the engine's control loop or tool tasks, never from the
audio loops. Room ids given to ``start_session`` are the room's key (``room-1``) or its UUID.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from channels.db import database_sync_to_async
from django.db import transaction

from rooms import services as room_services
from rooms.models import ChannelBinding, EventKind, EventRole, EventStatus, Room, Tenant
from rooms.selectors import binding_for_participant
from voice import services as voice_services
from voice.models import Agent, EndReason, ToolCall, ToolCallStatus, ToolExecution, VoiceSession
from voice.session import LiveSession
from voice.store import (
    BindingSnapshot,
    SessionStore,
    StoredCorrection,
    StoredSystemEvent,
    StoredToolCall,
    StoredTranscript,
)

logger = logging.getLogger(__name__)

TRANSCRIPT_BATCH = 20

#: What the per-session writer puts on the timeline, in order.
Queued = StoredTranscript | StoredToolCall | StoredSystemEvent | StoredCorrection
WRITER_STOP_TIMEOUT_S = 30.0


def _find_room(tenant: Tenant, room_id: str) -> Room:
    rooms = Room.objects.filter(tenant=tenant)
    try:
        return rooms.get(pk=uuid.UUID(room_id))
    except (ValueError, Room.DoesNotExist):
        return rooms.get(key=room_id)


def snapshot_of(binding: ChannelBinding | None) -> BindingSnapshot:
    if binding is None:
        return BindingSnapshot(access="none")
    return BindingSnapshot(
        access=str(binding.access), muted=binding.muted, output_muted=binding.output_muted
    )


class DjangoStore(SessionStore):
    def __init__(
        self,
        *,
        tenant: Tenant,
        agent: Agent | None = None,
        transport: str = "websocket",
        host_channel_name: str = "",
        auto_attach: bool = True,
    ) -> None:
        self.tenant = tenant
        self.agent = agent
        self.transport = transport
        self.host_channel_name = host_channel_name
        #: Give a participant without a binding their own read-write one (the transport
        #: authorised them); False: they may neither speak nor hear until bound.
        self.auto_attach = auto_attach
        self._rooms: dict[str, Room] = {}
        # Transcripts and tool-call starts, in the order the engine produced them: one writer
        # per session keeps the timeline's indexes in that order.
        self._pending: dict[str, list[Queued]] = {}
        self._writers: dict[str, asyncio.Task[None]] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self._stopping: set[str] = set()

    # --- sessions ----------------------------------------------------------------------------

    async def session_created(self, session: LiveSession) -> None:
        room = await database_sync_to_async(_find_room)(self.tenant, session.room_id)
        self._rooms[session.id] = room
        await database_sync_to_async(voice_services.voice_session_create)(
            tenant=self.tenant,
            room=room,
            agent=self.agent,
            participant_id=session.participant_id,
            channel_id=session.channel_id,
            transport=self.transport,
            provider_kind=self.agent.provider_kind if self.agent else "mock",
            host_channel_name=self.host_channel_name,
            metadata={key: value for key, value in session.metadata.items() if _is_json(value)},
            session_id=session.id,
        )
        self._pending[session.id] = []
        self._wakeups[session.id] = asyncio.Event()
        self._writers[session.id] = asyncio.create_task(self._writer(session))

    async def load_binding(self, session: LiveSession) -> BindingSnapshot:
        room = self._rooms[session.id]

        def load() -> ChannelBinding | None:
            binding = binding_for_participant(
                room=room, channel_id=session.channel_id, participant_id=session.participant_id
            )
            if binding is None and self.auto_attach:
                binding, _ = room_services.binding_attach(
                    tenant=self.tenant,
                    room=room,
                    channel_id=session.channel_id,
                    participant_id=session.participant_id,
                )
            return binding

        return snapshot_of(await database_sync_to_async(load)())

    async def session_activated(self, session: LiveSession) -> None:
        await database_sync_to_async(voice_services.voice_session_activate)(
            tenant=self.tenant,
            session_id=session.id,
            provider_session_id=session.provider_session_id,
        )

    async def session_ended(self, session: LiveSession, reason: str, detail: str) -> None:
        await self._stop_writer(session.id)
        if reason not in EndReason.values:
            detail, reason = f"{reason}: {detail}", EndReason.INTERNAL_ERROR
        await database_sync_to_async(voice_services.voice_session_end)(
            tenant=self.tenant,
            session_id=session.id,
            reason=reason,
            detail=detail,
            metrics={"engine": dict(session.stats), "reconnects": list(session.reconnects)},
            usage=dict(session.usage),
        )
        self._rooms.pop(session.id, None)

    # --- transcripts (batched per session) ---------------------------------------------------

    async def transcript(self, record: StoredTranscript) -> None:
        pending = self._pending.get(record.session_id)
        if pending is None:  # the writer is gone (session ending): write directly
            await self._write(record.session_id, [record])
            return
        pending.append(record)
        self._wakeups[record.session_id].set()

    async def _writer(self, session: LiveSession) -> None:
        """Writes batches as they come; stops (after a last drain) when asked. It is never
        cancelled mid-write, so a batch is never half-known."""
        wakeup = self._wakeups[session.id]
        while True:
            await wakeup.wait()
            wakeup.clear()
            await self._drain(session.id)
            if session.id in self._stopping:
                return

    async def _drain(self, session_id: str) -> None:
        pending = self._pending.get(session_id)
        while pending:
            batch, pending[:] = pending[:TRANSCRIPT_BATCH], pending[TRANSCRIPT_BATCH:]
            try:
                await self._write(session_id, batch)
            except Exception:
                logger.exception("could not write %d transcript(s); keeping them", len(batch))
                pending[:0] = batch
                return

    async def _write(self, session_id: str, batch: list[Queued]) -> None:
        room = self._rooms.get(session_id)
        if room is None:
            logger.error("transcript for session %s has no room; dropped", session_id)
            return

        def write() -> None:
            session = VoiceSession.objects.filter(pk=session_id).first()
            channel_id = session.channel_id if session else ""
            appends: list[room_services.NewRoomEvent] = []
            # All or nothing: a failed batch is retried whole, so none of it may stay written.
            with transaction.atomic():
                for record in batch:  # in order: a correction applies to what came before it
                    if not isinstance(record, StoredCorrection):
                        appends.append(_timeline_event(record, session, channel_id))
                        continue
                    room_services.room_events_append(tenant=self.tenant, room=room, events=appends)
                    appends = []
                    if session is not None:
                        room_services.room_event_correct(
                            tenant=self.tenant,
                            room=room,
                            session=session,
                            role=record.role,
                            original=record.original,
                            corrected=record.corrected,
                        )
                room_services.room_events_append(tenant=self.tenant, room=room, events=appends)

        await database_sync_to_async(write)()

    async def _stop_writer(self, session_id: str) -> None:
        writer = self._writers.pop(session_id, None)
        if writer is not None and not writer.done():
            self._stopping.add(session_id)
            self._wakeups[session_id].set()
            try:
                await asyncio.wait_for(asyncio.shield(writer), timeout=WRITER_STOP_TIMEOUT_S)
            except TimeoutError:
                logger.error("transcript writer did not finish in %ss", WRITER_STOP_TIMEOUT_S)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not writer.cancelled() or (current is not None and current.cancelling()):
                    raise
                # The writer was cancelled (the process is shutting down), not us: what it
                # had not written yet is drained below.
            self._stopping.discard(session_id)
        await self._drain(session_id)  # whatever arrived meanwhile
        if self._pending.get(session_id):
            logger.error("%d transcript(s) could not be written", len(self._pending[session_id]))
        self._pending.pop(session_id, None)
        self._wakeups.pop(session_id, None)

    async def provider_reconnected(self, session: LiveSession, info: dict[str, Any]) -> None:
        await database_sync_to_async(voice_services.voice_session_record_reconnect)(
            tenant=self.tenant,
            session_id=session.id,
            provider_session_id=str(info.get("provider_session_id") or ""),
        )
        text = (
            f"The provider connection was restored ({info.get('reason', 'unknown')}, "
            f"{info.get('gap_ms', '?')} ms)."
        )
        await self._queue(StoredSystemEvent(session.id, text, metadata={"reconnect": info}))

    async def dtmf(self, session: LiveSession, digit: str, duration_ms: int | None) -> None:
        await self._queue(
            StoredSystemEvent(
                session.id,
                f"The caller pressed {digit}.",
                metadata={"dtmf": {"digit": digit, "duration_ms": duration_ms}},
            )
        )

    async def _queue(self, record: StoredSystemEvent | StoredCorrection) -> None:
        """Behind the session's transcripts when its writer runs; at once when it does not."""
        pending = self._pending.get(record.session_id)
        if pending is None:
            await self._write(record.session_id, [record])
            return
        pending.append(record)
        self._wakeups[record.session_id].set()

    async def transcript_corrected(self, record: StoredCorrection) -> None:
        await self._queue(record)

    async def resumption_handle(self, session: LiveSession, handle: str) -> None:
        await database_sync_to_async(voice_services.voice_session_set_resumption)(
            tenant=self.tenant, session_id=session.id, handle=handle
        )

    async def flush(self) -> None:
        for session_id in list(self._pending):
            await self._drain(session_id)

    # --- tool calls --------------------------------------------------------------------------

    async def tool_call_started(self, record: StoredToolCall) -> None:
        """The ``ToolCall`` row, committed before anything runs. An inline call is claimed
        (RUNNING) here; a remote one stays PENDING for the Celery task to claim."""

        def start() -> str:
            session = VoiceSession.objects.get(pk=record.session_id, tenant=self.tenant)
            tool = None
            if self.agent is not None:
                tool = self.agent.tools.filter(name=record.name).first()
            call = voice_services.tool_call_create(
                tenant=self.tenant,
                session=session,
                call_id=record.call_id,
                name=record.name,
                arguments=record.arguments,
                tool=tool,
                execution=ToolExecution.CELERY
                if record.execution == "remote"
                else ToolExecution.INLINE,
            )
            if record.execution != "remote":
                voice_services.tool_call_start(tenant=self.tenant, tool_call_id=call.pk)
            return str(call.pk)

        record.row_id = await database_sync_to_async(start)()
        pending = self._pending.get(record.session_id)
        if pending is not None:  # on the timeline, after the transcripts queued before it
            pending.append(record)
            self._wakeups[record.session_id].set()

    async def tool_call_finished(self, record: StoredToolCall) -> None:
        """The engine's outcome. A remote call the worker already finished keeps the
        worker's (the conditional update changes nothing); either way the row records
        whether the model received an answer."""

        def finish() -> None:
            call_pk = record.row_id or (
                ToolCall.objects.filter(
                    session_id=uuid.UUID(record.session_id),
                    call_id=record.call_id,
                    tenant=self.tenant,
                )
                .values_list("pk", flat=True)
                .first()
            )
            if not call_pk:
                logger.error("tool call %s finished but was never recorded", record.call_id)
                return
            status = record.status if record.status in ToolCallStatus.values else "failed"
            voice_services.tool_call_finish(
                tenant=self.tenant,
                tool_call_id=call_pk,
                status=status,
                result=record.result,
                error=record.error,
            )
            if record.delivered:
                voice_services.tool_call_mark_delivered(tenant=self.tenant, tool_call_id=call_pk)

        await database_sync_to_async(finish)()


def _timeline_event(
    record: StoredTranscript | StoredToolCall | StoredSystemEvent,
    session: VoiceSession | None,
    channel_id: str,
) -> room_services.NewRoomEvent:
    if isinstance(record, StoredSystemEvent):
        return room_services.NewRoomEvent(
            kind=EventKind.SYSTEM,
            role=EventRole.SYSTEM,
            text=record.text,
            session=session,
            channel_id=channel_id,
            metadata=record.metadata,
            occurred_at=record.occurred_at,
        )
    if isinstance(record, StoredToolCall):
        return room_services.NewRoomEvent(
            kind=EventKind.TOOL_CALL,
            role=EventRole.TOOL,
            text=f"{record.name}({json.dumps(record.arguments, default=str)[:500]})",
            session=session,
            channel_id=channel_id,
            metadata={"call_id": record.call_id, "name": record.name},
            occurred_at=record.started_at,
        )
    return room_services.NewRoomEvent(
        kind=EventKind.MESSAGE if record.kind == "message" else EventKind.TRANSCRIPT,
        role=record.role,
        text=record.text,
        status=EventStatus.BLOCKED if record.status == "blocked" else EventStatus.DELIVERED,
        blocked_by=record.blocked_by[:100],
        session=session,
        channel_id=channel_id,
        participant_id=record.participant_id,
        occurred_at=record.occurred_at,
    )


def _is_json(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | type(None) | list | dict)
