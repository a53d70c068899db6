"""OpenAI Realtime (GA interface) over ``websockets``: ``OpenAIRealtimeProvider``.

Wire format: ../shared/reference/provider-protocols.md §1 (checked against the official SDK;
tests validate every client frame we send against the ``openai`` package's typed models).
What OpenAI shares with xAI (events, tool calls, barge-in, reconnection) is in
:mod:`providers.openai.base`; this module holds what is OpenAI's own: the endpoint, the GA
``session`` shape, the audio formats (PCM16 at 24 kHz, or G.711 µ-law when the channel runs
at 8 kHz telephony rates) and the error codes that end a session.

GA has no ``temperature`` (§1.5): a channel's temperature is not sent to OpenAI.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar
from urllib.parse import urlencode

from providers.openai.base import AudioFormat, RealtimeWireProvider, SessionSettings, WireConn
from providers.openai.config import OpenAIProviderConfig

__all__ = ["OpenAIRealtimeProvider"]

DEFAULT_BASE_URL = "wss://api.openai.com/v1"
DEFAULT_MODEL = "gpt-realtime"
WIRE_RATE = 24000  # GA: audio/pcm is 24 kHz only (§1.6)
TELEPHONY_RATE = 8000  # G.711 µ-law/A-law (§1.6)
DEFAULT_TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"


class OpenAIRealtimeProvider(RealtimeWireProvider):
    """The seed's ``OpenAIRealtimeProvider(api_key, model, base_url=None)``."""

    name = "openai"
    vendor_label = "OpenAI"
    config_schema = OpenAIProviderConfig
    fatal_error_codes: ClassVar[frozenset[str]] = frozenset(
        {
            "invalid_api_key",
            "insufficient_quota",
            "model_not_found",
            "invalid_model",
            "billing_hard_limit_reached",
            "account_deactivated",
        }
    )

    def __init__(
        self,
        api_key: str | None = None,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        if not key:
            raise ValueError("an OpenAI API key is required (api_key= or OPENAI_API_KEY)")
        super().__init__(
            api_key=key, model=model or DEFAULT_MODEL, base_url=base_url or DEFAULT_BASE_URL
        )

    def _url(self) -> str:
        return f"{self.base_url}/realtime?{urlencode({'model': self.model})}"

    def manual_turns(self, provider_config: dict[str, Any] | None) -> bool:
        config = provider_config or {}
        return "turn_detection" in config and config["turn_detection"] is None

    def _audio_formats(self, input_rate: int, output_rate: int) -> tuple[AudioFormat, AudioFormat]:
        """PCM16 24 kHz, except that 8 kHz telephony audio travels as G.711 µ-law: no
        resampling, a third of the bytes, and what the phone network carried anyway."""

        def pick(rate: int) -> AudioFormat:
            if rate == TELEPHONY_RATE:
                return AudioFormat(TELEPHONY_RATE, "pcmu")
            return AudioFormat(WIRE_RATE)

        return pick(input_rate), pick(output_rate)

    def _session_fields(
        self, conn: WireConn, settings: SessionSettings, *, full: bool
    ) -> dict[str, Any]:
        """The GA ``session`` object (§1.2)."""
        config = settings.config
        fields: dict[str, Any] = {"type": "realtime"}
        audio_in: dict[str, Any] = {}
        audio_out: dict[str, Any] = {}
        if full:
            fields["output_modalities"] = ["audio"]
            audio_in["format"] = conn.audio_in.wire()
            audio_out["format"] = conn.audio_out.wire()
            transcription: dict[str, Any] = {
                "model": config.get("stt_model") or DEFAULT_TRANSCRIPTION_MODEL
            }
            if config.get("stt_language"):
                transcription["language"] = config["stt_language"]
            if config.get("stt_prompt"):
                transcription["prompt"] = config["stt_prompt"]
            audio_in["transcription"] = transcription
            if "turn_detection" in config:
                audio_in["turn_detection"] = config["turn_detection"]
            else:  # the vendor's server_vad with its defaults, or manual turns
                audio_in["turn_detection"] = {"type": "server_vad"} if settings.server_vad else None
        elif "turn_detection" in config:
            audio_in["turn_detection"] = config["turn_detection"]
        if config.get("noise_reduction"):
            audio_in["noise_reduction"] = {"type": config["noise_reduction"]}
        if config.get("speed") is not None:
            audio_out["speed"] = config["speed"]
        if settings.system_prompt is not None:
            fields["instructions"] = settings.system_prompt
        if settings.voice:
            audio_out["voice"] = settings.voice
        if settings.tools is not None:
            fields["tools"] = [_tool_definition(tool) for tool in settings.tools]
            fields["tool_choice"] = "auto"
        if config.get("max_output_tokens") is not None:
            fields["max_output_tokens"] = config["max_output_tokens"]
        audio: dict[str, Any] = {}
        if audio_in:
            audio["input"] = audio_in
        if audio_out:
            audio["output"] = audio_out
        if audio:
            fields["audio"] = audio
        return fields


def _tool_definition(tool: dict[str, Any]) -> dict[str, Any]:
    """A function tool in the GA shape ({type, name, description, parameters})."""
    if tool.get("type", "function") != "function":
        return dict(tool)
    return {
        "type": "function",
        "name": tool["name"],
        "description": tool.get("description", ""),
        "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
    }
