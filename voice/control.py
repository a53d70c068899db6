"""The control plane seen from a session host: binding changes made anywhere (admin, API,
another process) arrive on the room's group and apply to the host's live sessions on their
next frame. Small JSON events only; never audio (DESIGN §6)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.layers import get_channel_layer

from rooms.broadcast import BINDING_CHANGED, room_group_name
from voice.channels import RealtimeVoiceChannel
from voice.store import BindingSnapshot

logger = logging.getLogger(__name__)


class RoomControlListener:
    """Listens on one room's group for one channel. Start it before the session's binding
    is loaded (so no change can fall between the load and the subscription)."""

    def __init__(self, channel: RealtimeVoiceChannel, *, room_uuid: str, room_id: str) -> None:
        self.channel = channel
        self.room_uuid = str(room_uuid)
        self.room_id = str(room_id)  # the id the host's sessions were started with
        self.applied = 0
        self._changed = asyncio.Condition()
        self._subscribed = asyncio.Event()

    async def wait_subscribed(self) -> None:
        await self._subscribed.wait()

    async def wait_applied(self, count: int) -> None:
        """Until ``count`` binding changes have been applied (for tests and diagnostics)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.applied >= count)

    async def run(self) -> None:
        layer = get_channel_layer()
        if layer is None:
            raise RuntimeError("no channel layer configured")
        # The default prefix on purpose: channels-redis serves all of a process's local
        # channels from one Redis list per prefix, under one lock; a second prefix would
        # take turns with the consumers' own channels (seconds of delay per control event).
        name = await layer.new_channel()
        group = room_group_name(self.room_uuid)
        await layer.group_add(group, name)
        self._subscribed.set()
        try:
            while True:
                message = await layer.receive(name)
                try:
                    await self.dispatch(message)
                except Exception:
                    logger.exception("control message %s could not be applied", message.get("type"))
        finally:
            await asyncio.shield(layer.group_discard(group, name))

    async def dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") != BINDING_CHANGED:
            return
        if message.get("channel_id") != self.channel.channel_id:
            return
        participant = message.get("participant_id", "")
        if participant:
            snapshot = BindingSnapshot(
                access=str(message.get("access", "none")),
                muted=bool(message.get("muted")),
                output_muted=bool(message.get("output_muted")),
            )
            self.channel.apply_binding(self.room_id, participant, snapshot)
        else:
            # A channel-wide binding: each live participant's effective binding may change
            # (their own row wins over it), so reload theirs.
            for session in self.channel.sessions:
                if session.room_id == self.room_id:
                    snapshot = await self.channel.store.load_binding(session)
                    self.channel.apply_binding(self.room_id, session.participant_id, snapshot)
        async with self._changed:
            self.applied += 1
            self._changed.notify_all()
