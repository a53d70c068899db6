"""``provider_config`` schema for Google Gemini Live (BidiGenerateContent).

Sources: seed realtime-voice.txt "Google Gemini Live" (Advanced Configuration) and
provider-protocols.md section 2.2 (setup: ``realtimeInputConfig.automaticActivityDetection``,
``activityHandling``, ``proactivity``, ``generationConfig`` incl. ``thinkingConfig`` /
``enableAffectiveDialog`` / ``speechConfig.languageCode``, ``contextWindowCompression``,
``sessionResumption``) and 2.5/2.6 (interruption, resumption, compression).
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BeforeValidator, Discriminator, Field, Tag, model_validator

from providers.config import LanguageCode, ProviderConfig, cross_field_error

__all__ = [
    "GEMINI_VAD_FIELDS",
    "GeminiContextWindowCompression",
    "GeminiProviderConfig",
    "Sensitivity",
]

# Section 2.2 enums: StartSensitivity START_SENSITIVITY_{UNSPECIFIED,HIGH,LOW} and
# EndSensitivity END_SENSITIVITY_{UNSPECIFIED,HIGH,LOW}. The seed documents LOW/MEDIUM/HIGH
# (its example uses "MEDIUM"); the vendor has no MEDIUM level, so the provider has to map it
# (e.g. leave the sensitivity unspecified). UNSPECIFIED is not accepted: omit the key instead.
Sensitivity = Literal["LOW", "MEDIUM", "HIGH"]

_START_NAMES = {"START_SENSITIVITY_HIGH": "HIGH", "START_SENSITIVITY_LOW": "LOW"}
_END_NAMES = {"END_SENSITIVITY_HIGH": "HIGH", "END_SENSITIVITY_LOW": "LOW"}


def _normalise_start(value: object) -> object:
    # Vendor enums are case-insensitive (section 2.7, finding 4); store the short form.
    if isinstance(value, str):
        name = value.strip().upper()
        return _START_NAMES.get(name, name)
    return value


def _normalise_end(value: object) -> object:
    if isinstance(value, str):
        name = value.strip().upper()
        return _END_NAMES.get(name, name)
    return value


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


StartSensitivity = Annotated[Sensitivity, BeforeValidator(_normalise_start)]
EndSensitivity = Annotated[Sensitivity, BeforeValidator(_normalise_end)]
ActivityHandling = Annotated[
    Literal["START_OF_ACTIVITY_INTERRUPTS", "NO_INTERRUPTION"], BeforeValidator(_upper)
]

# Fields inside realtimeInputConfig.automaticActivityDetection: meaningless when it is disabled.
GEMINI_VAD_FIELDS = (
    "start_of_speech_sensitivity",
    "end_of_speech_sensitivity",
    "silence_duration_ms",
    "prefix_padding_ms",
)


class GeminiContextWindowCompression(ProviderConfig):
    """``contextWindowCompression`` {triggerTokens, slidingWindow.targetTokens} (section 2.2).

    Vendor defaults: trigger = 80% of the context window, target = trigger / 2.
    """

    trigger_tokens: int | None = Field(default=None, ge=1)
    target_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _target_below_trigger(self) -> Self:
        trigger, target = self.trigger_tokens, self.target_tokens
        if trigger is not None and target is not None and target >= trigger:
            raise cross_field_error(
                type(self).__name__,
                [("target_tokens", f"must be < trigger_tokens ({trigger})", target)],
            )
        return self


def _compression_tag(value: object) -> str | None:
    if isinstance(value, bool):
        return "<bool>"
    if isinstance(value, dict | GeminiContextWindowCompression):
        return "<object>"
    return None


ContextWindowCompression = Annotated[
    Annotated[bool, Tag("<bool>")] | Annotated[GeminiContextWindowCompression, Tag("<object>")],
    Discriminator(
        _compression_tag,
        custom_error_type="context_window_compression",
        custom_error_message=(
            "must be true, false or an object with trigger_tokens / target_tokens"
        ),
    ),
]


class GeminiProviderConfig(ProviderConfig):
    """Gemini Live ``provider_config``; fields left unset use the vendor defaults."""

    # realtimeInputConfig.automaticActivityDetection (section 2.2). False = disabled: the
    # client marks turns with activityStart / activityEnd (section 2.5).
    automatic_activity_detection: bool = True
    start_of_speech_sensitivity: StartSensitivity | None = None
    end_of_speech_sensitivity: EndSensitivity | None = None
    silence_duration_ms: int | None = Field(default=None, ge=0)
    prefix_padding_ms: int | None = Field(default=None, ge=0)
    # realtimeInputConfig.activityHandling; vendor default START_OF_ACTIVITY_INTERRUPTS.
    activity_handling: ActivityHandling | None = None
    # proactivity.proactiveAudio
    proactive_audio: bool | None = None
    # generationConfig.enableAffectiveDialog
    enable_affective_dialog: bool | None = None
    # generationConfig.thinkingConfig.{thinkingBudget, includeThoughts}. The reference gives
    # no range; Gemini uses -1 for a dynamic budget and 0 to disable thinking.
    thinking_budget: int | None = Field(default=None, ge=-1)
    include_thoughts: bool | None = None
    # generationConfig.{topP, topK, maxOutputTokens}
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    # generationConfig.speechConfig.languageCode, e.g. "en-US"
    language_code: LanguageCode | None = None
    # contextWindowCompression: true = vendor defaults, an object sets the token counts.
    context_window_compression: ContextWindowCompression | None = None
    # sessionResumption (section 2.6): keeps context across reconnects / reconfiguration.
    session_resumption: bool = True

    @model_validator(mode="after")
    def _vad_options_need_automatic_detection(self) -> Self:
        if not self.automatic_activity_detection:
            conflicts = [
                (name, "has no effect when automatic_activity_detection is false", value)
                for name in GEMINI_VAD_FIELDS
                if (value := getattr(self, name)) is not None
            ]
            if conflicts:
                raise cross_field_error(type(self).__name__, conflicts)
        return self
