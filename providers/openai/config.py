"""``provider_config`` schema for the OpenAI Realtime API (GA interface).

Sources: seed realtime-voice.txt "OpenAI Realtime API" (VAD configuration, stt_model) and
provider-protocols.md section 1.2 (GA ``session.update`` shape) / 1.7 (interruption).
Only options documented there for the GA API are accepted; ``temperature`` is gone in GA
(section 1.5) and is a channel parameter anyway.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from providers.config import LanguageCode, ProviderConfig

__all__ = [
    "MAX_OUTPUT_TOKENS_LIMIT",
    "OpenAIProviderConfig",
    "SemanticVAD",
    "ServerVAD",
    "TurnDetection",
]

# Section 1.2: max_output_tokens is an int 1-4096 or "inf".
MAX_OUTPUT_TOKENS_LIMIT = 4096


class _TurnDetectionBase(ProviderConfig):
    def model_post_init(self, context: Any, /) -> None:
        # The "type" discriminator must survive config_to_dict() even when the model was
        # built in code (SemanticVAD(eagerness="high")), or the dict would not validate again.
        self.__pydantic_fields_set__.add("type")


class ServerVAD(_TurnDetectionBase):
    """``audio.input.turn_detection`` server_vad (section 1.2; defaults are the vendor's)."""

    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(default=300, ge=0)
    silence_duration_ms: int = Field(default=500, ge=0)
    # Section 1.7: interrupt_response defaults to true; create_response false + interrupt
    # false means "VAD events only".
    create_response: bool = True
    interrupt_response: bool = True
    # New in GA (section 1.5); no range documented in the reference.
    idle_timeout_ms: int | None = Field(default=None, ge=0)


class SemanticVAD(_TurnDetectionBase):
    """``audio.input.turn_detection`` semantic_vad (section 1.2; "auto" = medium)."""

    type: Literal["semantic_vad"] = "semantic_vad"
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    create_response: bool = True
    interrupt_response: bool = True


def _turn_detection_tag(value: object) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if kind in ("server_vad", "semantic_vad"):
        return f"<{kind}>"
    return None


TurnDetection = Annotated[
    Annotated[ServerVAD, Tag("<server_vad>")] | Annotated[SemanticVAD, Tag("<semantic_vad>")],
    Discriminator(
        _turn_detection_tag,
        custom_error_type="turn_detection_type",
        custom_error_message=(
            'must be null (manual turns) or an object whose "type" is '
            "'server_vad' or 'semantic_vad'"
        ),
    ),
]


def _max_tokens_tag(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return "<int>"
    if value == "inf":
        return "<inf>"
    return None


MaxOutputTokens = Annotated[
    Annotated[int, Field(ge=1, le=MAX_OUTPUT_TOKENS_LIMIT), Tag("<int>")]
    | Annotated[Literal["inf"], Tag("<inf>")],
    Discriminator(
        _max_tokens_tag,
        custom_error_type="max_output_tokens",
        custom_error_message=f"must be an integer from 1 to {MAX_OUTPUT_TOKENS_LIMIT} or 'inf'",
    ),
]


class OpenAIProviderConfig(ProviderConfig):
    """OpenAI Realtime ``provider_config``.

    ``turn_detection``: unset = server_vad with vendor defaults; explicit ``None`` = manual
    turns (client commits the buffer and sends response.create; section 1.2/1.7).
    """

    turn_detection: TurnDetection | None = Field(default_factory=ServerVAD)
    # audio.input.transcription (section 1.2). Any model string is accepted by the vendor
    # ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", ...); None = vendor default.
    stt_model: str | None = Field(default=None, min_length=1)
    stt_language: LanguageCode | None = None
    stt_prompt: str | None = None
    # audio.input.noise_reduction.type (section 1.2); None = off / vendor default.
    noise_reduction: Literal["near_field", "far_field"] | None = None
    # max_output_tokens (section 1.2): 1-4096 or "inf".
    max_output_tokens: MaxOutputTokens | None = None
    # audio.output.speed (section 1.2): 0.25-1.5, vendor default 1.0.
    speed: float | None = Field(default=None, ge=0.25, le=1.5)
    # Not included: reasoning.effort -- section 1.2 lists a GA `reasoning` field but does not
    # document its values for OpenAI.
