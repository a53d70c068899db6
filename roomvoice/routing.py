"""WebSocket routes of every app, with a refusal for anything unknown.

``websocket_urlpatterns`` are served behind the origin check and the session middleware
(roomvoice/asgi.py). ``unguarded_websocket_urlpatterns`` are not: callers that send no
``Origin`` and no cookie and authenticate by other means (Twilio's media stream: a signed
token in its ``start`` message).
"""

from __future__ import annotations

from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import re_path

from telephony.routing import websocket_urlpatterns as telephony_websocket_urlpatterns
from voice.routing import websocket_urlpatterns as voice_websocket_urlpatterns


class UnknownRouteConsumer(AsyncWebsocketConsumer):
    """Refuses the handshake (HTTP 403) for a path no app serves."""

    async def connect(self) -> None:
        await self.close()


unguarded_websocket_urlpatterns = [*telephony_websocket_urlpatterns]

websocket_urlpatterns = [
    *voice_websocket_urlpatterns,
    re_path(r"", UnknownRouteConsumer.as_asgi()),
]
