"""WebSocket routes of the voice app (docs/protocol.md)."""

from __future__ import annotations

from django.urls import URLPattern, re_path

from voice.consumers import LiveRoomConsumer, VoiceConsumer

# <room>: the room's UUID, or its key (letters, digits, "-", "_").
websocket_urlpatterns: list[URLPattern] = [
    re_path(r"^ws/rooms/(?P<room>[\w-]{1,64})/voice/$", VoiceConsumer.as_asgi()),
    re_path(r"^ws/rooms/(?P<room>[\w-]{1,64})/live/$", LiveRoomConsumer.as_asgi()),
]
