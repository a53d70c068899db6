"""Offline provider: no key, no network; VAD, Whisper tiny.en, a rules brain, espeak-ng.

The provider class is imported on first use, so the config schema and the speech modules
import without it (``providers.registry`` loads each by its dotted path).
"""

from __future__ import annotations

from typing import Any

__all__ = ["LocalRealtimeProvider", "LocalStats"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from providers.local import provider

        return getattr(provider, name)
    raise AttributeError(f"module 'providers.local' has no attribute {name!r}")
