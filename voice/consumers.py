"""The WebSocket consumers: transport only (CONVENTIONS: authenticate, parse, enqueue, render).

``VoiceConsumer`` (``/ws/rooms/<room>/voice/``) admits the caller before anything else
runs (no provider connection for a refused caller), then gives the socket to the engine
through a ``ClientLink``: frames are checked and queued synchronously in ``receive``
(never an await there), the session runs as plain asyncio in ``voice.channels``, and on
disconnect — a close, a lost TCP connection, the application being cancelled — the
session is ended, its transcript flushed and every task awaited.

``SessionHostConsumer`` is what every consumer holding a voice session shares (this one
and Twilio's media stream, ``telephony.consumers``): the session's host channel
(``voice.end``, ``voice.reconfigure``, ``tool.result``), starting the session with the
room's control events followed, and the teardown.

``LiveRoomConsumer`` (``/ws/rooms/<room>/live/``) forwards a room's control-plane events
(timeline, bindings, sessions, tool calls) to a tenant member's live room view.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils.module_loading import import_string

from rooms.broadcast import binding_changed_message, room_group_name
from rooms.models import ChannelBinding, Room
from roomvoice.lib.logging import log_context
from voice.admission import (
    Admission,
    Refusal,
    VoicePlan,
    admit_hook,
    admit_token,
    admit_user,
    plan_voice,
    require_observer,
    room_for_hook,
)
from voice.agents import channel_for_agent
from voice.channels import RealtimeVoiceChannel
from voice.control import RoomControlListener
from voice.django_store import DjangoStore
from voice.host import apply_reconfigure, handle_tool_result, reconfigure_changes
from voice.models import SessionState, TransportKind, VoiceSession
from voice.protocol import (
    CLOSE_FLOODED,
    CLOSE_UNAUTHENTICATED,
    FloodGuard,
    ProtocolError,
    Verdict,
    parse_audio_format,
    parse_sample_rate,
)
from voice.session import LiveSession
from voice.transports.base import RealtimeTransport
from voice.transports.websocket import (
    ClientLink,
    WebSocketRealtimeTransport,
    run_authenticate,
)

logger = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 1.0  # how long a client without ?sample_rate= has to send its hello
SUBSCRIBE_TIMEOUT_S = 10.0
CLOSE_BAD_REQUEST = 4400
CLOSE_INTERNAL = 1011


@dataclass(frozen=True, slots=True)
class ConnectionRequest:
    """What the ``authenticate`` hook gets: the handshake, and the room asked for."""

    scope: dict[str, Any]
    room: Room
    headers: dict[str, str]
    query: dict[str, str]


@cache
def _authenticate_hook() -> Any:
    path = getattr(settings, "ROOMVOICE_VOICE_AUTHENTICATE", "")
    return import_string(path) if path else None


def _query(scope: dict[str, Any]) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return {name: values[-1] for name, values in parse_qs(raw).items()}


class _RefusingConsumer(AsyncWebsocketConsumer):
    async def refuse(self, refusal: Refusal) -> None:
        """Accept only to say why, then close with the refusal's 44xx code."""
        await self.accept()
        await self.send(text_data=json.dumps(refusal.as_message()))
        await self.close(code=refusal.close_code)

    async def admit(self, *, allow_hook: bool) -> Admission:
        room_ref = str(self.scope["url_route"]["kwargs"]["room"])
        query = _query(self.scope)
        token = query.get("token")
        user = self.scope.get("user")
        if token:
            admission: Admission = await database_sync_to_async(admit_token)(
                room_ref=room_ref, token=token
            )
            return admission
        if getattr(user, "is_authenticated", False):
            admission = await database_sync_to_async(admit_user)(room_ref=room_ref, user=user)
            return admission
        hook = _authenticate_hook() if allow_hook else None
        if hook is None:
            raise Refusal(CLOSE_UNAUTHENTICATED, "unauthenticated", "log in or use a room token")
        room = await database_sync_to_async(room_for_hook)(room_ref=room_ref)
        request = ConnectionRequest(
            scope=self.scope,
            room=room,
            headers={
                name.decode("latin-1"): value.decode("latin-1")
                for name, value in self.scope.get("headers", [])
            },
            query=query,
        )
        try:
            granted = await run_authenticate(hook, request)
        except PermissionError as error:
            raise Refusal(CLOSE_UNAUTHENTICATED, "unauthenticated", str(error)) from None
        return admit_hook(room=room, granted=granted)


class ConsumerSender:
    """A transport's view of the consumer's socket (``voice.transports.websocket.FrameSender``)."""

    def __init__(self, consumer: AsyncWebsocketConsumer) -> None:
        self.consumer = consumer

    async def send_text(self, text: str) -> None:
        await self.consumer.send(text_data=text)

    async def send_bytes(self, data: bytes) -> None:
        await self.consumer.send(bytes_data=data)

    async def close(self, code: int) -> None:
        await self.consumer.close(code=code)


class SessionHostConsumer(AsyncWebsocketConsumer):
    """A consumer that holds one voice session (DESIGN §6): its channel name is the
    session's host channel, so ``voice.end`` (an operator or the API ends it),
    ``voice.reconfigure`` and ``tool.result`` reach it; on disconnect — a close, a lost
    connection, the application being cancelled — the session is ended, its transcript
    flushed and every task awaited.

    A subclass admits the caller, calls :meth:`host_session` from a task spawned as
    :data:`START_TASK`, says which session it holds (:meth:`hosted_session`) and tells its
    transport when the socket is gone (:meth:`connection_gone`).
    """

    START_TASK = "voice-start"
    CONTROL_TASK = "voice-control"

    voice: RealtimeVoiceChannel | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._torn_down = False
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Also when the server cancels the application (the client vanished and daphne
            # gave up on it): the session must still end and its transcript be written.
            await asyncio.shield(self._teardown())

    def hosted_session(self) -> LiveSession | None:
        """The session this consumer's transport has accepted, if any."""
        return None

    async def connection_gone(self) -> None:
        """The socket is gone: the transport ends the session (``client_hangup``)."""
        return None

    async def disconnect(self, code: int) -> None:
        await self._teardown()

    async def voice_end(self, event: dict[str, Any]) -> None:
        """``{"type": "voice.end"}`` on this host's channel (``voice_session_request_end``):
        an operator ends the session."""
        voice, session = self.voice, self.hosted_session()
        if voice is not None and session is not None:
            reason = str(event.get("reason") or "ended_by_operator")
            self._spawn(voice.end_session(session, reason=reason), name="voice-end")

    async def voice_reconfigure(self, event: dict[str, Any]) -> None:
        """``{"type": "voice.reconfigure", ...}``: see :mod:`voice.host`."""
        voice, session = self.voice, self.hosted_session()
        if voice is None or session is None:
            return
        changes = reconfigure_changes(event, session)
        if changes is not None:
            self._spawn(self._reconfigure(voice, session, changes), name="voice-reconfigure")

    async def _reconfigure(
        self, voice: RealtimeVoiceChannel, session: Any, changes: dict[str, Any]
    ) -> None:
        try:
            await apply_reconfigure(voice, session, changes)
        except Exception:
            # The operator's request, not the caller's doing: logged, the call goes on.
            logger.warning("reconfiguring session %s failed", session.id, exc_info=True)

    async def tool_result(self, event: dict[str, Any]) -> None:
        """``{"type": "tool.result", ...}``: see :mod:`voice.host`."""
        await handle_tool_result(self.voice, event)

    # --- the session ---------------------------------------------------------------------------

    async def host_session(
        self,
        plan: VoicePlan,
        *,
        transport: RealtimeTransport,
        connection: Any,
        transport_kind: str,
        unavailable: Callable[[], Awaitable[None]],
    ) -> None:
        """Build the agent's channel with this consumer as the session's host, follow the
        room's control events, and start the session on ``connection``. ``unavailable``
        tells the caller the server cannot take the call (no control subscription)."""
        admission = plan.admission
        room_id = str(admission.room.pk)
        store = DjangoStore(
            tenant=admission.tenant,
            agent=plan.agent,
            transport=transport_kind,
            host_channel_name=self.channel_name or "",
        )
        voice = channel_for_agent(
            plan.config, transport=transport, store=store, provider=plan.provider
        )
        self.voice = voice
        # Subscribe to the room's control events before the binding is loaded, so no
        # change can fall between the two.
        listener = RoomControlListener(voice, room_uuid=room_id, room_id=room_id)
        self._spawn(listener.run(), name=self.CONTROL_TASK)
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                await listener.wait_subscribed()
        except TimeoutError:
            logger.error("room control subscription timed out: refusing the session")
            await unavailable()
            return
        metadata: dict[str, Any] = {"via": admission.via, **admission.metadata}
        if admission.permissions is not None:
            metadata["permissions"] = sorted(admission.permissions)
        try:
            await voice.start_session(
                room_id, admission.participant_id, connection=connection, metadata=metadata
            )
        except Exception:
            # The engine has told the client, recorded the failure and closed the socket.
            logger.info("voice session did not start", exc_info=True)

    def _spawn(self, coroutine: Any, *, name: str) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s failed", task.get_name(), exc_info=task.exception())

    async def _teardown(self) -> None:
        """End the session (if any), flush it, and await every task; once."""
        if getattr(self, "_torn_down", True):
            return
        self._torn_down = True
        if self.hosted_session() is None:
            # Still admitting or waiting for the caller: nothing to end, stop starting.
            for task in list(self._tasks):
                if task.get_name() == self.START_TASK:
                    task.cancel()
        await self.connection_gone()
        starting = [task for task in self._tasks if task.get_name() != self.CONTROL_TASK]
        await asyncio.gather(*starting, return_exceptions=True)
        if self.voice is not None:
            await self.voice.close()  # ends anything still live, releases the provider
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class VoiceConsumer(_RefusingConsumer, SessionHostConsumer):
    link: ClientLink | None = None
    transport: WebSocketRealtimeTransport | None = None

    async def connect(self) -> None:
        query = _query(self.scope)
        try:
            rate = parse_sample_rate(query["sample_rate"]) if "sample_rate" in query else None
            audio_format = (
                parse_audio_format(query["audio_format"]) if "audio_format" in query else None
            )
        except ProtocolError as problem:
            await self.refuse(Refusal(CLOSE_BAD_REQUEST, problem.code, problem.message))
            return
        try:
            admission = await self.admit(allow_hook=True)
            plan: VoicePlan = await database_sync_to_async(plan_voice)(
                admission, agent_slug=query.get("agent") or None
            )
        except Refusal as refusal:
            logger.info("voice connection refused: %s (%s)", refusal.code, refusal.message)
            await self.refuse(refusal)
            return
        except Exception:
            # A server-side fault (database, a credential that no longer decrypts…): say so
            # in words rather than drop the socket.
            logger.exception("voice connection could not be admitted")
            await self.refuse(
                Refusal(CLOSE_INTERNAL, "internal_error", "the server could not start the call")
            )
            return
        await self.accept()
        self.transport = WebSocketRealtimeTransport()
        self.link = self.transport.link(
            ConsumerSender(self), sample_rate=rate, audio_format=audio_format
        )
        self._spawn(self._run_session(plan), name=self.START_TASK)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Frames from the caller go straight to the link. Channels' own dispatch first runs
        ``close_old_connections()`` through the sync thread before every handler: one
        thread round trip per audio frame, which made a server collapse at 25 callers
        (bench/README.md). Nothing on this path touches the database; every other message
        (connect, disconnect, channel-layer events) keeps Channels' dispatch."""
        if message["type"] == "websocket.receive" and self.link is not None:
            text = message.get("text")
            if text is not None:
                self.link.receive(text=text, data=None)
            else:
                self.link.receive(text=None, data=message.get("bytes"))
            return
        await super().dispatch(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Synchronous from here on: parse, check, enqueue. Never an await.
        if self.link is not None:
            self.link.receive(text=text_data, data=bytes_data)

    def hosted_session(self) -> LiveSession | None:
        return self.link.session if self.link is not None else None

    async def connection_gone(self) -> None:
        if self.link is not None and self.transport is not None:
            await self.transport.connection_lost(self.link)

    async def _run_session(self, plan: VoicePlan) -> None:
        link, transport = self.link, self.transport
        assert link is not None and transport is not None
        admission = plan.admission
        with log_context(room=str(admission.room.pk), participant=admission.participant_id):
            if link.sample_rate is None:
                try:
                    async with asyncio.timeout(HELLO_TIMEOUT_S):
                        await link.rate_known.wait()
                except TimeoutError:
                    pass
            link.settle_rate()

            async def unavailable() -> None:
                await link.send_json(
                    {
                        "type": "error",
                        "code": "unavailable",
                        "message": "the server cannot take calls right now",
                    }
                )
                await link.close(CLOSE_INTERNAL)

            await self.host_session(
                plan,
                transport=transport,
                connection=link,
                transport_kind=TransportKind.WEBSOCKET.value,
                unavailable=unavailable,
            )


def _room_state(room_pk: Any) -> dict[str, Any]:
    """The ``sync`` message: the timeline's last index, the bindings and the live sessions
    (a reconnecting observer replaces what it showed with these)."""
    bindings = [
        _without_envelope(binding_changed_message(binding))
        for binding in ChannelBinding.objects.filter(room_id=room_pk).select_related("room")
    ]
    sessions = [
        {
            "session_id": str(row["id"]),
            "state": row["state"],
            "participant_id": row["participant_id"],
            "agent": row["agent__name"] or "",
            "transport": row["transport"],
            "end_reason": row["end_reason"],
        }
        for row in VoiceSession.objects.filter(room_id=room_pk)
        .exclude(state=SessionState.ENDED)
        .order_by("created_at")
        .values("id", "state", "participant_id", "agent__name", "transport", "end_reason")
    ]
    last = Room.objects.filter(pk=room_pk).values_list("last_event_index", flat=True)[0]
    return {"type": "sync", "last_index": last, "bindings": bindings, "sessions": sessions}


def _without_envelope(message: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in message.items() if key not in ("type", "room_id")}


class LiveRoomConsumer(_RefusingConsumer):
    """A tenant member watching a room: its control-plane events as JSON."""

    group: str | None = None

    async def connect(self) -> None:
        try:
            admission = await self.admit(allow_hook=False)
            require_observer(admission)
        except Refusal as refusal:
            await self.refuse(refusal)
            return
        self.guard = FloodGuard(frames_per_s=5, bytes_per_s=64 * 1024, flood_drops=50)
        room_pk = admission.room.pk
        self.group = room_group_name(room_pk)
        # Join first, then read the index: an event committed in between is both counted
        # and delivered (the client de-duplicates by index), never lost.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json(await database_sync_to_async(_room_state)(room_pk))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.group is None:
            return
        verdict = self.guard.admit(len(text_data or "") + len(bytes_data or b""))
        if verdict == Verdict.CLOSE:
            await self.close(code=CLOSE_FLOODED)
        elif verdict == Verdict.ADMIT:
            await self.send_json(
                {
                    "type": "error",
                    "code": "unknown_type",
                    "message": "the live view only sends; client messages are ignored",
                }
            )

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(message, separators=(",", ":")))

    async def _forward(self, kind: str, event: dict[str, Any]) -> None:
        await self.send_json({"type": kind, **_without_envelope(event)})

    async def room_event_appended(self, event: dict[str, Any]) -> None:
        await self._forward("event", event)

    async def room_binding_changed(self, event: dict[str, Any]) -> None:
        await self._forward("binding", event)

    async def room_session_changed(self, event: dict[str, Any]) -> None:
        await self._forward("session", event)

    async def room_tool_call_changed(self, event: dict[str, Any]) -> None:
        await self._forward("tool_call", event)
