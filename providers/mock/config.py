"""``provider_config`` schema for the in-process mock provider (tests and demos)."""

from __future__ import annotations

from providers.config import ProviderConfig

__all__ = ["MockProviderConfig"]


class MockProviderConfig(ProviderConfig):
    """Accepts an empty config; ``scripted_reply`` is what the mock says back."""

    scripted_reply: str | None = None
