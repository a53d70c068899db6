"""OpenAI Realtime provider (GA interface)."""

from providers.openai.provider import OpenAIRealtimeProvider

__all__ = ["OpenAIRealtimeProvider"]
