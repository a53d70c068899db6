"""``provider_config`` schema for the xAI Grok Voice Agent (realtime) API.

Sources: seed realtime-voice.txt "xAI Grok Realtime" (VAD configuration, flat keys;
transcription_model) and provider-protocols.md section 3.2: top-level
``session.turn_detection`` is ``{"type": "server_vad", threshold, prefix_padding_ms,
silence_duration_ms, idle_timeout_ms}`` or ``null`` (manual: commit + response.create);
there is no semantic_vad. Confidence on xAI is medium (section 6: no official typed SDK).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from providers.config import ProviderConfig, cross_field_error

__all__ = ["VOICES", "XAI_VAD_FIELDS", "XAIProviderConfig", "XAIRealtimeConfig"]

# Flat keys that only mean something with server VAD.
XAI_VAD_FIELDS = ("threshold", "silence_duration_ms", "prefix_padding_ms")


class XAIProviderConfig(ProviderConfig):
    """xAI ``provider_config``; VAD values left unset use the vendor defaults."""

    # Section 3.2: "server_vad" or null (manual turns).
    turn_detection_type: Literal["server_vad"] | None = "server_vad"
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    silence_duration_ms: int | None = Field(default=None, ge=0)
    prefix_padding_ms: int | None = Field(default=None, ge=0)
    # audio.input.transcription.model (section 3.2 [3p pipecat]); seed example "grok-2-audio".
    transcription_model: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _vad_options_need_server_vad(self) -> Self:
        if self.turn_detection_type is None:
            conflicts = [
                (name, "only applies when turn_detection_type is 'server_vad'", value)
                for name in XAI_VAD_FIELDS
                if (value := getattr(self, name)) is not None
            ]
            if conflicts:
                raise cross_field_error(type(self).__name__, conflicts)
        return self


DEFAULT_MODEL = "grok-3-fast"  # the seed's default; override with model= or XAI_MODEL
DEFAULT_VOICE = "eve"
VOICES = ("eve", "ara", "rex", "sal", "leo")


@dataclass(frozen=True, slots=True)
class XAIRealtimeConfig:
    """The seed's ``XAIRealtimeConfig(api_key, model, voice, transcription_model)``.

    ``api_key`` None reads ``XAI_API_KEY``; :meth:`from_env` also reads ``XAI_MODEL`` and
    ``XAI_VOICE`` (the seed example's overrides). ``voice`` is the default for sessions that
    name none; custom voice ids are passed through. ``base_url`` points the provider at a
    proxy or a test server.
    """

    api_key: str | None = field(default=None, repr=False)
    model: str = DEFAULT_MODEL
    voice: str = DEFAULT_VOICE
    transcription_model: str | None = None
    base_url: str | None = None

    @classmethod
    def from_env(cls, **overrides: Any) -> XAIRealtimeConfig:
        values: dict[str, Any] = {
            "api_key": os.environ.get("XAI_API_KEY") or None,
            "model": os.environ.get("XAI_MODEL") or DEFAULT_MODEL,
            "voice": os.environ.get("XAI_VOICE") or DEFAULT_VOICE,
        }
        values.update(overrides)
        return cls(**values)
