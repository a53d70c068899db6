"""Google Gemini Live provider."""

from providers.gemini.provider import GeminiLiveProvider

__all__ = ["GeminiLiveProvider"]
