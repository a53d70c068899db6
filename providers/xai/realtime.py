"""xAI Grok Voice Agent API over ``websockets``: ``XAIRealtimeProvider``.

Wire format: ../shared/reference/provider-protocols.md §3. xAI speaks the OpenAI GA event
vocabulary, so the events, tool calls, barge-in and reconnection come from
:mod:`providers.openai.base`; this module holds where xAI differs (§3.2):

* endpoint ``wss://api.x.ai/v1/realtime?model=…``;
* the ``session`` object: no ``type``, ``voice`` and ``turn_detection`` at the top level,
  server VAD only (``null`` = manual turns);
* PCM16 at any of the documented rates from 8 to 48 kHz, so the channel's own rates go on
  the wire unresampled (others are resampled to 24 kHz);
* native tools (``web_search``, ``x_search``, ``file_search``) pass through beside function
  tools; function names that collide with xAI's built-in tools are refused up front;
* input transcripts: partials may arrive as ``…transcription.completed`` with
  ``status: "in_progress"`` or as ``…transcription.updated``; ``ping`` keep-alives;
  ``response.done`` may carry ``usage`` at the top level.

There is no official typed SDK for this API (§3.3): confidence is lower than for OpenAI.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar
from urllib.parse import urlencode

from providers.base import ProviderError
from providers.openai.base import AudioFormat, RealtimeWireProvider, SessionSettings, WireConn
from providers.xai.config import (
    DEFAULT_MODEL,
    DEFAULT_VOICE,
    XAIProviderConfig,
    XAIRealtimeConfig,
)

__all__ = ["XAIRealtimeProvider"]

DEFAULT_BASE_URL = "wss://api.x.ai/v1"
#: PCM rates the API takes (§3.2: 8–48 kHz); 24 kHz is its default.
PCM_RATES = frozenset({8000, 16000, 22050, 24000, 32000, 44100, 48000})
DEFAULT_RATE = 24000
NATIVE_TOOLS = frozenset({"web_search", "x_search", "file_search"})
#: Names of xAI's built-in tools: a function tool may not use them (§3.2).
RESERVED_FUNCTION_NAMES = frozenset(
    {
        "web_search",
        "browse_page",
        "x_keyword_search",
        "x_semantic_search",
        "x_user_search",
        "x_thread_fetch",
        "collections_search",
        "file_search",
    }
)


class XAIRealtimeProvider(RealtimeWireProvider):
    """``XAIRealtimeProvider(XAIRealtimeConfig(...))`` or ``XAIRealtimeProvider(api_key=…,
    model=…)``, as in the seed."""

    name = "xai"
    vendor_label = "xAI"
    config_schema = XAIProviderConfig
    fatal_error_codes: ClassVar[frozenset[str]] = frozenset(
        {
            "invalid_api_key",
            "unauthorized",
            "permission_denied",
            "insufficient_quota",
            "model_not_found",
            "invalid_model",
        }
    )

    def __init__(
        self,
        config: XAIRealtimeConfig | None = None,
        *,
        api_key: str | None = None,
        model: str | None = None,
        voice: str | None = None,
        transcription_model: str | None = None,
        base_url: str | None = None,
    ) -> None:
        config = config or XAIRealtimeConfig()
        key = api_key or config.api_key or os.environ.get("XAI_API_KEY", "")
        if not key:
            raise ValueError("an xAI API key is required (api_key=, the config or XAI_API_KEY)")
        super().__init__(
            api_key=key,
            model=model or config.model or DEFAULT_MODEL,
            base_url=base_url or config.base_url or DEFAULT_BASE_URL,
        )
        self.default_voice = voice or config.voice or DEFAULT_VOICE
        self.transcription_model = transcription_model or config.transcription_model

    def _url(self) -> str:
        return f"{self.base_url}/realtime?{urlencode({'model': self.model})}"

    def manual_turns(self, provider_config: dict[str, Any] | None) -> bool:
        config = provider_config or {}
        return "turn_detection_type" in config and config["turn_detection_type"] is None

    def _audio_formats(self, input_rate: int, output_rate: int) -> tuple[AudioFormat, AudioFormat]:
        def pick(rate: int) -> AudioFormat:
            return AudioFormat(rate if rate in PCM_RATES else DEFAULT_RATE)

        return pick(input_rate), pick(output_rate)

    def _session_fields(
        self, conn: WireConn, settings: SessionSettings, *, full: bool
    ) -> dict[str, Any]:
        """xAI's ``session`` object (§3.2)."""
        config = settings.config
        fields: dict[str, Any] = {}
        if settings.system_prompt is not None:
            fields["instructions"] = settings.system_prompt
        voice = settings.voice or (self.default_voice if full else None)
        if voice:
            fields["voice"] = voice
        if (
            full
            or "turn_detection_type" in config
            or any(
                key in config for key in ("threshold", "silence_duration_ms", "prefix_padding_ms")
            )
        ):
            fields["turn_detection"] = _turn_detection(config, server_vad=settings.server_vad)
        audio_in: dict[str, Any] = {}
        if full:
            audio_in["format"] = conn.audio_in.wire()
        transcription_model = config.get("transcription_model") or (
            self.transcription_model if full else None
        )
        if transcription_model:
            audio_in["transcription"] = {"model": transcription_model}
        audio: dict[str, Any] = {}
        if audio_in:
            audio["input"] = audio_in
        if full:
            audio["output"] = {"format": conn.audio_out.wire()}
        if audio:
            fields["audio"] = audio
        if settings.tools is not None:
            fields["tools"] = [_tool_definition(tool) for tool in settings.tools]
            fields["tool_choice"] = "auto"
        return fields

    async def _dispatch_vendor(self, conn: WireConn, kind: str, event: dict[str, Any]) -> bool:
        if kind == "conversation.item.input_audio_transcription.updated":
            text = str(event.get("transcript") or event.get("delta") or "")
            await self._fire("transcription", conn.session, text, "user", False)
            return True
        if kind == "conversation.created":
            conversation = event.get("conversation") or {}
            if not conn.session.provider_session_id and conversation.get("id"):
                conn.session.provider_session_id = str(conversation["id"])
            return True
        return kind == "ping"  # keep-alive: nothing to answer

    async def _on_user_transcript(self, conn: WireConn, event: dict[str, Any]) -> None:
        if event.get("status") == "in_progress":  # a partial, in xAI's shape
            text = str(event.get("transcript", ""))
            await self._fire("transcription", conn.session, text, "user", False)
            return
        await super()._on_user_transcript(conn, event)

    def _usage_of(self, event: dict[str, Any]) -> dict[str, Any] | None:
        usage = super()._usage_of(event)
        if usage is None and isinstance(event.get("usage"), dict):
            usage = event["usage"]
        return usage


def _turn_detection(config: dict[str, Any], *, server_vad: bool) -> dict[str, Any] | None:
    kind = config.get("turn_detection_type", "server_vad" if server_vad else None)
    if kind is None:
        return None  # manual turns: the client commits and asks for a response
    vad: dict[str, Any] = {"type": "server_vad"}
    for key in ("threshold", "silence_duration_ms", "prefix_padding_ms"):
        if config.get(key) is not None:
            vad[key] = config[key]
    return vad


def _tool_definition(tool: dict[str, Any]) -> dict[str, Any]:
    kind = tool.get("type", "function")
    if kind in NATIVE_TOOLS:
        return dict(tool)
    if kind != "function":
        raise ProviderError("invalid_tool", f"xAI does not know tools of type {kind!r}", fatal=True)
    name = str(tool.get("name", ""))
    if name in RESERVED_FUNCTION_NAMES:
        raise ProviderError(
            "invalid_tool",
            f"the function name {name!r} is reserved for an xAI built-in tool; rename it",
            fatal=True,
        )
    return {
        "type": "function",
        "name": name,
        "description": tool.get("description", ""),
        "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
    }
