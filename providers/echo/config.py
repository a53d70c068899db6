"""``provider_config`` schema for the echo test provider (no AI, no key, no network).

Every option has a default, so ``{}`` is a complete config. The VAD options are those of
``voice.vad.EnergyVad`` (its docstring explains the algorithm).
"""

from __future__ import annotations

from pydantic import Field

from providers.config import ProviderConfig
from voice.vad import DEFAULT_SILENCE_MS, DEFAULT_START_MS, DEFAULT_THRESHOLD_DBFS

__all__ = ["EchoProviderConfig"]


class EchoProviderConfig(ProviderConfig):
    """Echo test ``provider_config``.

    - ``threshold_dbfs``: a sound quieter than this is never speech (raise it in a noisy
      room, lower it for a quiet microphone).
    - ``start_ms``: how long a sound must last to count as speech (clicks are shorter).
    - ``silence_ms``: the pause that ends an utterance; the echo follows it.
    - ``max_utterance_s``: at most this much of an utterance is kept and played back.
    - ``reply_delay_ms``: a pause between the end of speech and the reply.
    """

    threshold_dbfs: float = Field(default=DEFAULT_THRESHOLD_DBFS, ge=-90.0, le=-10.0)
    start_ms: int = Field(default=DEFAULT_START_MS, ge=10, le=1000)
    silence_ms: int = Field(default=DEFAULT_SILENCE_MS, ge=100, le=5000)
    max_utterance_s: float = Field(default=15.0, gt=0.0, le=60.0)
    reply_delay_ms: int = Field(default=100, ge=0, le=5000)
