"""Audio transports: how caller audio reaches the engine and the reply reaches the caller."""

from voice.transports.base import RealtimeTransport
from voice.transports.twilio import TwilioRealtimeTransport
from voice.transports.websocket import WebSocketRealtimeTransport

__all__ = ["RealtimeTransport", "TwilioRealtimeTransport", "WebSocketRealtimeTransport"]
