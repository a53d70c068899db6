"""WebSocket routes of every app, with a refusal for anything unknown."""

from __future__ import annotations

from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import re_path

from voice.routing import websocket_urlpatterns as voice_websocket_urlpatterns


class UnknownRouteConsumer(AsyncWebsocketConsumer):
    """Refuses the handshake (HTTP 403) for a path no app serves."""

    async def connect(self) -> None:
        await self.close()


websocket_urlpatterns = [
    *voice_websocket_urlpatterns,
    re_path(r"", UnknownRouteConsumer.as_asgi()),
]
