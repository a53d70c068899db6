"""``provider_config`` schema for ElevenLabs Agents (Conversational AI).

Sources: seed realtime-voice.txt "ElevenLabs Conversational AI" (language, first_message,
dynamic_variables; supported audio formats) and provider-protocols.md section 4.2
(``conversation_initiation_client_data``: ``dynamic_variables`` and
``conversation_config_override`` = agent{first_message, language, prompt{prompt, llm}},
tts{voice_id, stability, speed, similarity_boost}, asr{keywords}) and 4.4 (audio formats).
System prompt, voice and temperature are channel parameters, not provider_config.
Every overridden field must be enabled in the agent's override settings on the dashboard,
otherwise the server closes with 1008 override_error (section 4.2).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from providers.config import LanguageCode, ProviderConfig

__all__ = [
    "ELEVENLABS_AUDIO_FORMATS",
    "DynamicVariableValue",
    "ElevenLabsAudioFormat",
    "ElevenLabsProviderConfig",
    "ElevenLabsRealtimeConfig",
]

ElevenLabsAudioFormat = Literal[
    "pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100", "pcm_48000", "ulaw_8000"
]
ELEVENLABS_AUDIO_FORMATS: tuple[str, ...] = (
    "pcm_8000",
    "pcm_16000",
    "pcm_22050",
    "pcm_24000",
    "pcm_44100",
    "pcm_48000",
    "ulaw_8000",
)


def _scalar_tag(value: object) -> str | None:
    # bool before int: True is an int in Python but a distinct JSON type.
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return f"<{kind.__name__}>"
    return None


DynamicVariableValue = Annotated[
    Annotated[str, Tag("<str>")]
    | Annotated[bool, Tag("<bool>")]
    | Annotated[int, Tag("<int>")]
    | Annotated[float, Tag("<float>")],
    Discriminator(
        _scalar_tag,
        custom_error_type="dynamic_variable_value",
        custom_error_message="must be a string, number or boolean",
    ),
]
VariableName = Annotated[str, Field(min_length=1)]


class ElevenLabsProviderConfig(ProviderConfig):
    """ElevenLabs ``provider_config``; unset fields keep the agent's dashboard settings."""

    # conversation_config_override.agent.language (an ISO code, e.g. "en", "fr", "pt-br").
    language: LanguageCode | None = None
    # conversation_config_override.agent.first_message; "" is allowed.
    first_message: str | None = None
    # conversation_initiation_client_data.dynamic_variables (prompt template variables).
    dynamic_variables: dict[VariableName, DynamicVariableValue] | None = None
    # conversation_config_override.agent.prompt.llm (model name; values not listed in the
    # reference, so any non-empty string).
    llm: str | None = Field(default=None, min_length=1)
    # conversation_config_override.tts.{stability, similarity_boost, speed}. Speed range is
    # 0.7-5 "as written in the spec" (section 4.2).
    tts_stability: float | None = Field(default=None, ge=0.0, le=1.0)
    tts_similarity_boost: float | None = Field(default=None, ge=0.0, le=1.0)
    tts_speed: float | None = Field(default=None, ge=0.7, le=5.0)
    # conversation_config_override.asr.keywords
    asr_keywords: list[Annotated[str, Field(min_length=1)]] | None = None
    # Expected audio format. The format is an agent setting reported in
    # conversation_initiation_metadata (section 4.4), so this is checked, not sent.
    audio_format: ElevenLabsAudioFormat | None = None


@dataclass(frozen=True, slots=True)
class ElevenLabsRealtimeConfig:
    """The seed's ``ElevenLabsRealtimeConfig(api_key, agent_id, requires_auth, base_url)``.

    ``requires_auth=False``: the key goes in the ``xi-api-key`` header of the WebSocket.
    ``True``: a signed URL is fetched first (``GET /v1/convai/conversation/get-signed-url``
    over HTTPS on the same host as ``base_url``, e.g. the EU residency endpoint).
    """

    api_key: str | None = field(default=None, repr=False)
    agent_id: str = ""
    requires_auth: bool = False
    base_url: str | None = None

    @classmethod
    def from_env(cls, **overrides: Any) -> ElevenLabsRealtimeConfig:
        values: dict[str, Any] = {
            "api_key": os.environ.get("ELEVENLABS_API_KEY") or None,
            "agent_id": os.environ.get("ELEVENLABS_AGENT_ID", ""),
        }
        values.update(overrides)
        return cls(**values)
