"""Audio transports: how caller audio reaches the engine and the reply reaches the caller.

The WebRTC transport (aiortc, PyAV) and local audio (PortAudio) are imported on first use,
so processes that never use them (a Celery worker, most management commands) do not load
those libraries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voice.transports.base import RealtimeTransport
from voice.transports.twilio import TwilioRealtimeTransport
from voice.transports.websocket import WebSocketRealtimeTransport

if TYPE_CHECKING:
    from voice.transports.local import LocalAudioBackend
    from voice.transports.webrtc import WebRTCRealtimeTransport

__all__ = [
    "LocalAudioBackend",
    "RealtimeTransport",
    "TwilioRealtimeTransport",
    "WebRTCRealtimeTransport",
    "WebSocketRealtimeTransport",
]

_LAZY = {
    "WebRTCRealtimeTransport": "voice.transports.webrtc",
    "LocalAudioBackend": "voice.transports.local",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'voice.transports' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
