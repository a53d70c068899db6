"""Echo test provider: no AI, no key, no network; plays the caller's words back."""

from providers.echo.provider import EchoRealtimeProvider, EchoStats

__all__ = ["EchoRealtimeProvider", "EchoStats"]
