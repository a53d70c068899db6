"""ElevenLabs Agents (Conversational AI) provider."""

from providers.elevenlabs.realtime import ElevenLabsRealtimeConfig, ElevenLabsRealtimeProvider

__all__ = ["ElevenLabsRealtimeConfig", "ElevenLabsRealtimeProvider"]
