"""xAI Grok Voice Agent realtime provider."""

from providers.xai.config import XAIRealtimeConfig
from providers.xai.realtime import XAIRealtimeProvider

__all__ = ["XAIRealtimeConfig", "XAIRealtimeProvider"]
