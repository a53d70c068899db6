"""Audio transports: how caller audio reaches the engine and the reply reaches the caller."""

from voice.transports.base import RealtimeTransport

__all__ = ["RealtimeTransport"]
