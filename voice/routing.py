"""WebSocket routes of the voice app (the voice and live-room consumers join here)."""

from __future__ import annotations

from django.urls import URLPattern

websocket_urlpatterns: list[URLPattern] = []
