"""provider_config schemas: seed examples, defaults, bounds, error messages, round trips.

Pure pydantic: no database, no Django settings.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import ValidationError

from providers.config import (
    ProviderConfig,
    ProviderConfigError,
    config_to_dict,
    validate_config,
)
from providers.elevenlabs.config import (
    ELEVENLABS_AUDIO_FORMATS,
    ElevenLabsAudioFormat,
    ElevenLabsProviderConfig,
)
from providers.gemini.config import GeminiContextWindowCompression, GeminiProviderConfig
from providers.mock.config import MockProviderConfig
from providers.openai.config import OpenAIProviderConfig, SemanticVAD, ServerVAD
from providers.xai.config import XAIProviderConfig

ALL_SCHEMAS: list[type[ProviderConfig]] = [
    OpenAIProviderConfig,
    XAIProviderConfig,
    GeminiProviderConfig,
    ElevenLabsProviderConfig,
    MockProviderConfig,
]

# --- seed examples (realtime-voice.txt), copied as written --------------------------------

SEED_OPENAI_SERVER_VAD: dict[str, Any] = {
    "turn_detection": {
        "type": "server_vad",
        "threshold": 0.5,
        "silence_duration_ms": 800,
        "prefix_padding_ms": 300,
        "interrupt_response": True,
        "create_response": True,
    },
}
SEED_OPENAI_SEMANTIC_VAD: dict[str, Any] = {
    "turn_detection": {
        "type": "semantic_vad",
        "eagerness": "high",  # low, medium, high, auto
    },
}
SEED_OPENAI_MANUAL: dict[str, Any] = {"turn_detection": None}
SEED_OPENAI_STT: dict[str, Any] = {
    "stt_model": "gpt-4o-transcribe",
}
SEED_GEMINI: dict[str, Any] = {
    # VAD sensitivity
    "start_of_speech_sensitivity": "HIGH",  # LOW, MEDIUM, HIGH
    "end_of_speech_sensitivity": "MEDIUM",
    "silence_duration_ms": 500,
    # Proactive audio (AI speaks without prompt)
    "proactive_audio": True,
    # Affective dialog (emotional responses)
    "enable_affective_dialog": True,
    # Extended thinking
    "thinking_budget": 1024,
    # Generation parameters
    "top_p": 0.8,
    "top_k": 40,
    "max_output_tokens": 2048,
    # Non-interruptible mode
    "activity_handling": "NO_INTERRUPTION",
    # Language
    "language_code": "en-US",
}
SEED_XAI_VAD: dict[str, Any] = {
    "turn_detection_type": "server_vad",  # server_vad (default)
    "threshold": 0.5,
    "silence_duration_ms": 800,
    "prefix_padding_ms": 300,
}
SEED_XAI_STT: dict[str, Any] = {
    "transcription_model": "grok-2-audio",
}
SEED_ELEVENLABS: dict[str, Any] = {
    "language": "fr",  # Language code
    "first_message": "Bonjour!",  # Agent's opening message
    "dynamic_variables": {  # Template variables for the prompt
        "user_name": "Alice",
        "account_id": "12345",
    },
}

SEED_EXAMPLES: list[tuple[type[ProviderConfig], dict[str, Any]]] = [
    (OpenAIProviderConfig, SEED_OPENAI_SERVER_VAD),
    (OpenAIProviderConfig, SEED_OPENAI_SEMANTIC_VAD),
    (OpenAIProviderConfig, SEED_OPENAI_MANUAL),
    (OpenAIProviderConfig, SEED_OPENAI_STT),
    (GeminiProviderConfig, SEED_GEMINI),
    (XAIProviderConfig, SEED_XAI_VAD),
    (XAIProviderConfig, SEED_XAI_STT),
    (ElevenLabsProviderConfig, SEED_ELEVENLABS),
]


def errors_of(schema: type[ProviderConfig], data: object) -> list[dict[str, str]]:
    with pytest.raises(ProviderConfigError) as info:
        validate_config(schema, data)
    return info.value.errors


@pytest.mark.parametrize(("schema", "data"), SEED_EXAMPLES)
def test_every_seed_example_validates_and_round_trips_unchanged(
    schema: type[ProviderConfig], data: dict[str, Any]
) -> None:
    config = validate_config(schema, data)

    assert isinstance(config, schema)
    assert config_to_dict(config) == data


def test_openai_seed_server_vad_values_are_parsed() -> None:
    config = validate_config(OpenAIProviderConfig, SEED_OPENAI_SERVER_VAD)

    assert config.turn_detection == ServerVAD(
        threshold=0.5,
        silence_duration_ms=800,
        prefix_padding_ms=300,
        interrupt_response=True,
        create_response=True,
    )


def test_openai_seed_semantic_vad_is_a_semantic_vad_model() -> None:
    config = validate_config(OpenAIProviderConfig, SEED_OPENAI_SEMANTIC_VAD)

    assert config.turn_detection == SemanticVAD(eagerness="high")


def test_gemini_seed_values_are_parsed() -> None:
    config = validate_config(GeminiProviderConfig, SEED_GEMINI)

    assert config.start_of_speech_sensitivity == "HIGH"
    assert config.end_of_speech_sensitivity == "MEDIUM"
    assert config.thinking_budget == 1024
    assert config.top_p == 0.8
    assert config.activity_handling == "NO_INTERRUPTION"
    assert config.language_code == "en-US"


# --- defaults ------------------------------------------------------------------------------


@pytest.mark.parametrize("schema", ALL_SCHEMAS)
def test_empty_config_is_valid_and_dumps_to_empty_dict(schema: type[ProviderConfig]) -> None:
    config = validate_config(schema, {})

    assert config_to_dict(config) == {}


def test_openai_unset_turn_detection_means_server_vad_with_vendor_defaults() -> None:
    config = validate_config(OpenAIProviderConfig, {})

    assert config.turn_detection == ServerVAD()
    assert isinstance(config.turn_detection, ServerVAD)
    assert config.turn_detection.threshold == 0.5
    assert config.turn_detection.prefix_padding_ms == 300
    assert config.turn_detection.silence_duration_ms == 500
    assert config.turn_detection.create_response is True
    assert config.turn_detection.interrupt_response is True
    assert config.turn_detection.idle_timeout_ms is None
    assert config.stt_model is None
    assert config.stt_language is None
    assert config.noise_reduction is None
    assert config.max_output_tokens is None
    assert config.speed is None


def test_openai_semantic_vad_eagerness_defaults_to_auto() -> None:
    config = validate_config(OpenAIProviderConfig, {"turn_detection": {"type": "semantic_vad"}})

    assert config.turn_detection == SemanticVAD(eagerness="auto")


def test_xai_defaults_to_server_vad_with_vendor_values() -> None:
    config = validate_config(XAIProviderConfig, {})

    assert config.turn_detection_type == "server_vad"
    assert config.threshold is None
    assert config.silence_duration_ms is None
    assert config.prefix_padding_ms is None
    assert config.transcription_model is None


def test_gemini_defaults_keep_resumption_and_automatic_activity_detection_on() -> None:
    config = validate_config(GeminiProviderConfig, {})

    assert config.session_resumption is True
    assert config.automatic_activity_detection is True
    assert config.context_window_compression is None
    assert config.start_of_speech_sensitivity is None


def test_mock_accepts_scripted_reply() -> None:
    config = validate_config(MockProviderConfig, {"scripted_reply": "hello"})

    assert config.scripted_reply == "hello"


# --- non-dict input, unknown keys, wrong types ---------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "must be a JSON object, not null"),
        ([], "must be a JSON object, not an array"),
        ("turn_detection", "must be a JSON object, not a string"),
        (3, "must be a JSON object, not a number"),
        (True, "must be a JSON object, not a boolean"),
    ],
)
def test_non_dict_input_is_rejected_as_provider_config(data: object, message: str) -> None:
    assert errors_of(OpenAIProviderConfig, data) == [
        {"field": "provider_config", "message": message}
    ]


def test_non_string_option_name_is_rejected() -> None:
    assert errors_of(MockProviderConfig, {1: "x"}) == [
        {"field": "provider_config", "message": "option names must be strings, got 1"}
    ]


@pytest.mark.parametrize("schema", ALL_SCHEMAS)
def test_unknown_option_is_rejected_with_its_name(schema: type[ProviderConfig]) -> None:
    assert errors_of(schema, {"foo": 1}) == [{"field": "foo", "message": "unknown option 'foo'"}]


def test_unknown_nested_option_names_the_dotted_path() -> None:
    data = {"turn_detection": {"type": "server_vad", "thresold": 0.5}}

    assert errors_of(OpenAIProviderConfig, data) == [
        {"field": "turn_detection.thresold", "message": "unknown option 'thresold'"}
    ]


def test_semantic_vad_rejects_server_vad_only_options() -> None:
    data = {"turn_detection": {"type": "semantic_vad", "threshold": 0.5}}

    assert errors_of(OpenAIProviderConfig, data) == [
        {"field": "turn_detection.threshold", "message": "unknown option 'threshold'"}
    ]


def test_validate_config_never_raises_pydantic_validation_error() -> None:
    with pytest.raises(ProviderConfigError) as info:
        validate_config(OpenAIProviderConfig, {"turn_detection": {"type": "server_vad", "x": 1}})

    assert not isinstance(info.value, ValidationError)
    assert isinstance(info.value, ValueError)
    assert info.value.__cause__ is None


def test_error_string_lists_every_field_error_joined_by_semicolons() -> None:
    data = {"turn_detection": {"type": "server_vad", "threshold": 2}, "speed": 3, "foo": 1}

    with pytest.raises(ProviderConfigError) as info:
        validate_config(OpenAIProviderConfig, data)

    assert info.value.errors == [
        {"field": "turn_detection.threshold", "message": "must be <= 1"},
        {"field": "speed", "message": "must be <= 1.5"},
        {"field": "foo", "message": "unknown option 'foo'"},
    ]
    assert str(info.value) == (
        "turn_detection.threshold: must be <= 1; speed: must be <= 1.5; foo: unknown option 'foo'"
    )


def test_provider_config_error_survives_pickling() -> None:
    error = ProviderConfigError([{"field": "speed", "message": "must be <= 1.5"}])

    copy = pickle.loads(pickle.dumps(error))

    assert copy.errors == error.errors
    assert str(copy) == "speed: must be <= 1.5"


@pytest.mark.parametrize(
    ("schema", "data", "field", "message"),
    [
        (
            OpenAIProviderConfig,
            {"turn_detection": {"type": "server_vad", "silence_duration_ms": "800"}},
            "turn_detection.silence_duration_ms",
            "must be an integer",
        ),
        (
            OpenAIProviderConfig,
            {"turn_detection": {"type": "server_vad", "silence_duration_ms": 800.0}},
            "turn_detection.silence_duration_ms",
            "must be an integer",
        ),
        (
            OpenAIProviderConfig,
            {"turn_detection": {"type": "server_vad", "threshold": "0.5"}},
            "turn_detection.threshold",
            "must be a number",
        ),
        (
            OpenAIProviderConfig,
            {"turn_detection": {"type": "server_vad", "interrupt_response": "yes"}},
            "turn_detection.interrupt_response",
            "must be true or false",
        ),
        (OpenAIProviderConfig, {"stt_model": 4}, "stt_model", "must be a string"),
        (OpenAIProviderConfig, {"stt_model": "  "}, "stt_model", "must not be empty"),
        (OpenAIProviderConfig, {"speed": float("nan")}, "speed", "must be a finite number"),
        (XAIProviderConfig, {"threshold": True}, "threshold", "must be a number"),
        (GeminiProviderConfig, {"top_k": 40.5}, "top_k", "must be an integer"),
        (GeminiProviderConfig, {"proactive_audio": 1}, "proactive_audio", "must be true or false"),
        (
            GeminiProviderConfig,
            {"session_resumption": None},
            "session_resumption",
            "must be true or false",
        ),
        (
            ElevenLabsProviderConfig,
            {"dynamic_variables": []},
            "dynamic_variables",
            "must be an object",
        ),
        (ElevenLabsProviderConfig, {"asr_keywords": "a,b"}, "asr_keywords", "must be a list"),
        (MockProviderConfig, {"scripted_reply": 1}, "scripted_reply", "must be a string"),
    ],
)
def test_wrong_type_names_the_field(
    schema: type[ProviderConfig], data: dict[str, Any], field: str, message: str
) -> None:
    assert errors_of(schema, data) == [{"field": field, "message": message}]


def test_strings_are_stripped() -> None:
    config = validate_config(OpenAIProviderConfig, {"stt_model": " gpt-4o-transcribe "})

    assert config.stt_model == "gpt-4o-transcribe"


def test_configs_are_frozen() -> None:
    config = validate_config(OpenAIProviderConfig, {"speed": 1.0})

    with pytest.raises(ValidationError):
        config.speed = 1.2


# --- range bounds: just inside passes, just outside fails naming the field -----------------


def _td(**fields: Any) -> dict[str, Any]:
    return {"turn_detection": {"type": "server_vad", **fields}}


def _cwc(**fields: Any) -> dict[str, Any]:
    return {"context_window_compression": fields}


# (schema, inside, outside, field, message)
BOUNDS: list[tuple[type[ProviderConfig], dict[str, Any], dict[str, Any], str, str]] = [
    (
        OpenAIProviderConfig,
        _td(threshold=0.0),
        _td(threshold=-0.01),
        "turn_detection.threshold",
        "must be >= 0",
    ),
    (
        OpenAIProviderConfig,
        _td(threshold=1.0),
        _td(threshold=1.01),
        "turn_detection.threshold",
        "must be <= 1",
    ),
    (
        OpenAIProviderConfig,
        _td(silence_duration_ms=0),
        _td(silence_duration_ms=-1),
        "turn_detection.silence_duration_ms",
        "must be >= 0",
    ),
    (
        OpenAIProviderConfig,
        _td(prefix_padding_ms=0),
        _td(prefix_padding_ms=-1),
        "turn_detection.prefix_padding_ms",
        "must be >= 0",
    ),
    (
        OpenAIProviderConfig,
        _td(idle_timeout_ms=0),
        _td(idle_timeout_ms=-1),
        "turn_detection.idle_timeout_ms",
        "must be >= 0",
    ),
    (OpenAIProviderConfig, {"speed": 0.25}, {"speed": 0.24}, "speed", "must be >= 0.25"),
    (OpenAIProviderConfig, {"speed": 1.5}, {"speed": 1.51}, "speed", "must be <= 1.5"),
    (
        OpenAIProviderConfig,
        {"max_output_tokens": 1},
        {"max_output_tokens": 0},
        "max_output_tokens",
        "must be >= 1",
    ),
    (
        OpenAIProviderConfig,
        {"max_output_tokens": 4096},
        {"max_output_tokens": 4097},
        "max_output_tokens",
        "must be <= 4096",
    ),
    (XAIProviderConfig, {"threshold": 0.0}, {"threshold": -0.01}, "threshold", "must be >= 0"),
    (XAIProviderConfig, {"threshold": 1.0}, {"threshold": 1.01}, "threshold", "must be <= 1"),
    (
        XAIProviderConfig,
        {"silence_duration_ms": 0},
        {"silence_duration_ms": -1},
        "silence_duration_ms",
        "must be >= 0",
    ),
    (
        XAIProviderConfig,
        {"prefix_padding_ms": 0},
        {"prefix_padding_ms": -1},
        "prefix_padding_ms",
        "must be >= 0",
    ),
    (
        GeminiProviderConfig,
        {"silence_duration_ms": 0},
        {"silence_duration_ms": -1},
        "silence_duration_ms",
        "must be >= 0",
    ),
    (
        GeminiProviderConfig,
        {"prefix_padding_ms": 0},
        {"prefix_padding_ms": -1},
        "prefix_padding_ms",
        "must be >= 0",
    ),
    (
        GeminiProviderConfig,
        {"thinking_budget": -1},
        {"thinking_budget": -2},
        "thinking_budget",
        "must be >= -1",
    ),
    (GeminiProviderConfig, {"top_p": 0.0}, {"top_p": -0.01}, "top_p", "must be >= 0"),
    (GeminiProviderConfig, {"top_p": 1.0}, {"top_p": 1.01}, "top_p", "must be <= 1"),
    (GeminiProviderConfig, {"top_k": 1}, {"top_k": 0}, "top_k", "must be >= 1"),
    (
        GeminiProviderConfig,
        {"max_output_tokens": 1},
        {"max_output_tokens": 0},
        "max_output_tokens",
        "must be >= 1",
    ),
    (
        GeminiProviderConfig,
        _cwc(trigger_tokens=1),
        _cwc(trigger_tokens=0),
        "context_window_compression.trigger_tokens",
        "must be >= 1",
    ),
    (
        GeminiProviderConfig,
        _cwc(target_tokens=1),
        _cwc(target_tokens=0),
        "context_window_compression.target_tokens",
        "must be >= 1",
    ),
    (
        ElevenLabsProviderConfig,
        {"tts_stability": 0.0},
        {"tts_stability": -0.01},
        "tts_stability",
        "must be >= 0",
    ),
    (
        ElevenLabsProviderConfig,
        {"tts_stability": 1.0},
        {"tts_stability": 1.01},
        "tts_stability",
        "must be <= 1",
    ),
    (
        ElevenLabsProviderConfig,
        {"tts_similarity_boost": 0.0},
        {"tts_similarity_boost": -0.01},
        "tts_similarity_boost",
        "must be >= 0",
    ),
    (
        ElevenLabsProviderConfig,
        {"tts_similarity_boost": 1.0},
        {"tts_similarity_boost": 1.01},
        "tts_similarity_boost",
        "must be <= 1",
    ),
    (
        ElevenLabsProviderConfig,
        {"tts_speed": 0.7},
        {"tts_speed": 0.69},
        "tts_speed",
        "must be >= 0.7",
    ),
    (
        ElevenLabsProviderConfig,
        {"tts_speed": 5.0},
        {"tts_speed": 5.01},
        "tts_speed",
        "must be <= 5",
    ),
]


@pytest.mark.parametrize(
    ("schema", "inside", "outside", "field", "message"),
    BOUNDS,
    ids=[f"{case[0].__name__}-{case[3]}-{case[4]}" for case in BOUNDS],
)
def test_range_bound_inside_passes_and_outside_names_the_field(
    schema: type[ProviderConfig],
    inside: dict[str, Any],
    outside: dict[str, Any],
    field: str,
    message: str,
) -> None:
    assert config_to_dict(validate_config(schema, inside)) == inside
    assert errors_of(schema, outside) == [{"field": field, "message": message}]


def test_threshold_above_one_names_the_field() -> None:
    with pytest.raises(ProviderConfigError) as info:
        validate_config(OpenAIProviderConfig, _td(threshold=1.5))

    assert str(info.value) == "turn_detection.threshold: must be <= 1"


# --- OpenAI specifics ---------------------------------------------------------------------


def test_openai_turn_detection_none_is_kept_as_manual_turns() -> None:
    config = validate_config(OpenAIProviderConfig, {"turn_detection": None})

    assert config.turn_detection is None
    assert config_to_dict(config) == {"turn_detection": None}


@pytest.mark.parametrize(
    "value",
    [{"type": "push_to_talk"}, {"threshold": 0.5}, "server_vad", 1],
    ids=["unknown-type", "missing-type", "bare-string", "number"],
)
def test_openai_turn_detection_needs_a_known_type(value: object) -> None:
    assert errors_of(OpenAIProviderConfig, {"turn_detection": value}) == [
        {
            "field": "turn_detection",
            "message": 'must be null (manual turns) or an object whose "type" is '
            "'server_vad' or 'semantic_vad'",
        }
    ]


def test_openai_semantic_vad_rejects_unknown_eagerness() -> None:
    data = {"turn_detection": {"type": "semantic_vad", "eagerness": "fast"}}

    assert errors_of(OpenAIProviderConfig, data) == [
        {
            "field": "turn_detection.eagerness",
            "message": "must be one of 'low', 'medium', 'high' or 'auto'",
        }
    ]


def test_openai_max_output_tokens_accepts_inf() -> None:
    config = validate_config(OpenAIProviderConfig, {"max_output_tokens": "inf"})

    assert config.max_output_tokens == "inf"
    assert config_to_dict(config) == {"max_output_tokens": "inf"}


@pytest.mark.parametrize("value", ["infinite", True, 2.5, [1]])
def test_openai_max_output_tokens_rejects_other_values(value: object) -> None:
    assert errors_of(OpenAIProviderConfig, {"max_output_tokens": value}) == [
        {"field": "max_output_tokens", "message": "must be an integer from 1 to 4096 or 'inf'"}
    ]


@pytest.mark.parametrize("value", ["near_field", "far_field"])
def test_openai_noise_reduction_accepts_vendor_types(value: str) -> None:
    assert (
        validate_config(OpenAIProviderConfig, {"noise_reduction": value}).noise_reduction == value
    )


def test_openai_noise_reduction_rejects_other_types() -> None:
    assert errors_of(OpenAIProviderConfig, {"noise_reduction": "studio"}) == [
        {"field": "noise_reduction", "message": "must be one of 'near_field' or 'far_field'"}
    ]


def test_openai_transcription_options_are_accepted() -> None:
    data = {"stt_model": "gpt-4o-mini-transcribe", "stt_language": "en", "stt_prompt": "Names: Ada"}

    config = validate_config(OpenAIProviderConfig, data)

    assert (config.stt_model, config.stt_language, config.stt_prompt) == (
        "gpt-4o-mini-transcribe",
        "en",
        "Names: Ada",
    )


def test_openai_stt_language_must_look_like_a_language_code() -> None:
    assert errors_of(OpenAIProviderConfig, {"stt_language": "English"}) == [
        {"field": "stt_language", "message": "must be a language code such as 'en' or 'en-US'"}
    ]


def test_openai_temperature_is_not_a_ga_option() -> None:
    assert errors_of(OpenAIProviderConfig, {"temperature": 0.7}) == [
        {"field": "temperature", "message": "unknown option 'temperature'"}
    ]


# --- xAI specifics ------------------------------------------------------------------------


def test_xai_turn_detection_type_none_means_manual_turns() -> None:
    config = validate_config(XAIProviderConfig, {"turn_detection_type": None})

    assert config.turn_detection_type is None
    assert config_to_dict(config) == {"turn_detection_type": None}


def test_xai_rejects_semantic_vad() -> None:
    assert errors_of(XAIProviderConfig, {"turn_detection_type": "semantic_vad"}) == [
        {"field": "turn_detection_type", "message": "must be 'server_vad'"}
    ]


def test_xai_vad_options_with_manual_turns_name_each_field() -> None:
    data = {"turn_detection_type": None, "threshold": 0.5, "prefix_padding_ms": 300}

    assert errors_of(XAIProviderConfig, data) == [
        {"field": "threshold", "message": "only applies when turn_detection_type is 'server_vad'"},
        {
            "field": "prefix_padding_ms",
            "message": "only applies when turn_detection_type is 'server_vad'",
        },
    ]


# --- Gemini specifics ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("START_SENSITIVITY_HIGH", "END_SENSITIVITY_LOW", ("HIGH", "LOW")),
        ("START_SENSITIVITY_LOW", "END_SENSITIVITY_HIGH", ("LOW", "HIGH")),
        ("start_sensitivity_low", "end_sensitivity_high", ("LOW", "HIGH")),
        ("high", "medium", ("HIGH", "MEDIUM")),
    ],
)
def test_gemini_full_sensitivity_names_normalise_to_short(
    start: str, end: str, expected: tuple[str, str]
) -> None:
    data = {"start_of_speech_sensitivity": start, "end_of_speech_sensitivity": end}

    config = validate_config(GeminiProviderConfig, data)

    assert (config.start_of_speech_sensitivity, config.end_of_speech_sensitivity) == expected
    assert config_to_dict(config) == {
        "start_of_speech_sensitivity": expected[0],
        "end_of_speech_sensitivity": expected[1],
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("end_of_speech_sensitivity", "START_SENSITIVITY_HIGH"),
        ("start_of_speech_sensitivity", "END_SENSITIVITY_LOW"),
        ("start_of_speech_sensitivity", "START_SENSITIVITY_UNSPECIFIED"),
        ("end_of_speech_sensitivity", "VERY_HIGH"),
    ],
)
def test_gemini_sensitivity_rejects_other_names(field: str, value: str) -> None:
    assert errors_of(GeminiProviderConfig, {field: value}) == [
        {"field": field, "message": "must be one of 'LOW', 'MEDIUM' or 'HIGH'"}
    ]


def test_gemini_activity_handling_accepts_both_vendor_values() -> None:
    for value in ("START_OF_ACTIVITY_INTERRUPTS", "NO_INTERRUPTION"):
        assert (
            validate_config(GeminiProviderConfig, {"activity_handling": value}).activity_handling
            == value
        )


def test_gemini_activity_handling_rejects_a_typo() -> None:
    assert errors_of(GeminiProviderConfig, {"activity_handling": "NO_INTERUPTION"}) == [
        {
            "field": "activity_handling",
            "message": "must be one of 'START_OF_ACTIVITY_INTERRUPTS' or 'NO_INTERRUPTION'",
        }
    ]


@pytest.mark.parametrize("value", [True, False])
def test_gemini_context_window_compression_accepts_a_bool(value: bool) -> None:
    config = validate_config(GeminiProviderConfig, {"context_window_compression": value})

    assert config.context_window_compression is value


def test_gemini_context_window_compression_accepts_token_counts() -> None:
    data = {"context_window_compression": {"trigger_tokens": 25600, "target_tokens": 12800}}

    config = validate_config(GeminiProviderConfig, data)

    assert config.context_window_compression == GeminiContextWindowCompression(
        trigger_tokens=25600, target_tokens=12800
    )
    assert config_to_dict(config) == data


def test_gemini_compression_target_must_be_below_trigger() -> None:
    data = {"context_window_compression": {"trigger_tokens": 1000, "target_tokens": 1000}}

    assert errors_of(GeminiProviderConfig, data) == [
        {
            "field": "context_window_compression.target_tokens",
            "message": "must be < trigger_tokens (1000)",
        }
    ]


@pytest.mark.parametrize("value", ["yes", 1, [25600]])
def test_gemini_context_window_compression_rejects_other_types(value: object) -> None:
    assert errors_of(GeminiProviderConfig, {"context_window_compression": value}) == [
        {
            "field": "context_window_compression",
            "message": "must be true, false or an object with trigger_tokens / target_tokens",
        }
    ]


def test_gemini_unknown_compression_option_names_the_dotted_path() -> None:
    data = {"context_window_compression": {"triggerTokens": 25600}}

    assert errors_of(GeminiProviderConfig, data) == [
        {
            "field": "context_window_compression.triggerTokens",
            "message": "unknown option 'triggerTokens'",
        }
    ]


def test_gemini_manual_activity_rejects_vad_tuning() -> None:
    data = {
        "automatic_activity_detection": False,
        "start_of_speech_sensitivity": "HIGH",
        "silence_duration_ms": 500,
    }

    assert errors_of(GeminiProviderConfig, data) == [
        {
            "field": "start_of_speech_sensitivity",
            "message": "has no effect when automatic_activity_detection is false",
        },
        {
            "field": "silence_duration_ms",
            "message": "has no effect when automatic_activity_detection is false",
        },
    ]


def test_gemini_manual_activity_with_other_options_is_valid() -> None:
    data = {"automatic_activity_detection": False, "activity_handling": "NO_INTERRUPTION"}

    assert config_to_dict(validate_config(GeminiProviderConfig, data)) == data


def test_gemini_thinking_options_are_accepted() -> None:
    config = validate_config(GeminiProviderConfig, {"thinking_budget": 0, "include_thoughts": True})

    assert (config.thinking_budget, config.include_thoughts) == (0, True)


def test_gemini_language_code_must_look_like_a_language_code() -> None:
    assert errors_of(GeminiProviderConfig, {"language_code": "en_US"}) == [
        {"field": "language_code", "message": "must be a language code such as 'en' or 'en-US'"}
    ]


# --- ElevenLabs specifics -----------------------------------------------------------------


def test_elevenlabs_audio_formats_constant_matches_the_field_literal() -> None:
    assert ELEVENLABS_AUDIO_FORMATS == (
        "pcm_8000",
        "pcm_16000",
        "pcm_22050",
        "pcm_24000",
        "pcm_44100",
        "pcm_48000",
        "ulaw_8000",
    )
    assert get_args(ElevenLabsAudioFormat) == ELEVENLABS_AUDIO_FORMATS


@pytest.mark.parametrize("audio_format", ELEVENLABS_AUDIO_FORMATS)
def test_elevenlabs_accepts_each_supported_audio_format(audio_format: str) -> None:
    config = validate_config(ElevenLabsProviderConfig, {"audio_format": audio_format})

    assert config.audio_format == audio_format


def test_elevenlabs_rejects_unsupported_audio_format() -> None:
    assert errors_of(ElevenLabsProviderConfig, {"audio_format": "mp3_44100"}) == [
        {
            "field": "audio_format",
            "message": "must be one of 'pcm_8000', 'pcm_16000', 'pcm_22050', 'pcm_24000', "
            "'pcm_44100', 'pcm_48000' or 'ulaw_8000'",
        }
    ]


def test_elevenlabs_dynamic_variables_keep_scalar_types() -> None:
    variables = {"name": "Ada", "visits": 3, "score": 0.5, "vip": True}

    config = validate_config(ElevenLabsProviderConfig, {"dynamic_variables": variables})

    assert config.dynamic_variables == variables
    assert config.dynamic_variables is not None
    assert type(config.dynamic_variables["vip"]) is bool
    assert type(config.dynamic_variables["visits"]) is int
    assert config_to_dict(config) == {"dynamic_variables": variables}


@pytest.mark.parametrize("value", [None, ["a"], {"a": 1}])
def test_elevenlabs_dynamic_variable_values_must_be_scalars(value: object) -> None:
    assert errors_of(ElevenLabsProviderConfig, {"dynamic_variables": {"user": value}}) == [
        {"field": "dynamic_variables.user", "message": "must be a string, number or boolean"}
    ]


def test_elevenlabs_dynamic_variable_names_must_not_be_empty() -> None:
    assert errors_of(ElevenLabsProviderConfig, {"dynamic_variables": {"": "x"}}) == [
        {"field": "dynamic_variables", "message": "key '' must not be empty"}
    ]


def test_elevenlabs_empty_first_message_is_allowed() -> None:
    assert validate_config(ElevenLabsProviderConfig, {"first_message": ""}).first_message == ""


def test_elevenlabs_language_must_be_a_language_code() -> None:
    assert errors_of(ElevenLabsProviderConfig, {"language": "French"}) == [
        {"field": "language", "message": "must be a language code such as 'en' or 'en-US'"}
    ]


def test_elevenlabs_override_options_are_accepted() -> None:
    data = {
        "llm": "gpt-4o-mini",
        "tts_stability": 0.4,
        "tts_similarity_boost": 0.8,
        "tts_speed": 1.1,
        "asr_keywords": ["RoomVoice", "Ada"],
    }

    assert config_to_dict(validate_config(ElevenLabsProviderConfig, data)) == data


def test_elevenlabs_empty_asr_keyword_names_its_index() -> None:
    assert errors_of(ElevenLabsProviderConfig, {"asr_keywords": ["ok", ""]}) == [
        {"field": "asr_keywords[1]", "message": "must not be empty"}
    ]


# --- config_to_dict round trips -----------------------------------------------------------


def test_config_to_dict_keeps_only_set_keys_and_explicit_none() -> None:
    data = {"turn_detection": {"type": "semantic_vad"}, "stt_model": None, "speed": 1.0}

    config = validate_config(OpenAIProviderConfig, data)

    assert config_to_dict(config) == data


def test_config_to_dict_distinguishes_explicit_none_from_unset() -> None:
    manual = validate_config(OpenAIProviderConfig, {"turn_detection": None})
    default = validate_config(OpenAIProviderConfig, {})

    assert config_to_dict(manual) == {"turn_detection": None}
    assert config_to_dict(default) == {}
    assert manual.turn_detection is None
    assert default.turn_detection == ServerVAD()


def test_config_built_in_code_keeps_its_turn_detection_type_when_dumped() -> None:
    config = OpenAIProviderConfig(turn_detection=SemanticVAD(eagerness="high"))

    dumped = config_to_dict(config)

    assert dumped == {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}
    assert validate_config(OpenAIProviderConfig, dumped) == config


@pytest.mark.parametrize(
    ("schema", "data"),
    [
        *SEED_EXAMPLES,
        (OpenAIProviderConfig, {"max_output_tokens": "inf", "noise_reduction": None}),
        (GeminiProviderConfig, {"context_window_compression": {"trigger_tokens": 100}}),
        (GeminiProviderConfig, {"start_of_speech_sensitivity": "START_SENSITIVITY_LOW"}),
        (XAIProviderConfig, {"turn_detection_type": None, "transcription_model": None}),
        (ElevenLabsProviderConfig, {"dynamic_variables": {"n": 1, "f": 1.5, "b": False}}),
    ],
)
def test_round_trip_through_config_to_dict_is_stable(
    schema: type[ProviderConfig], data: dict[str, Any]
) -> None:
    config = validate_config(schema, data)
    dumped = config_to_dict(config)

    assert validate_config(schema, dumped) == config
    assert config_to_dict(validate_config(schema, dumped)) == dumped


# --- import hygiene -----------------------------------------------------------------------


def test_config_modules_import_without_django() -> None:
    code = (
        "import sys\n"
        "import providers.config, providers.openai.config, providers.xai.config\n"
        "import providers.gemini.config, providers.elevenlabs.config, providers.mock.config\n"
        "assert not any(m == 'django' or m.startswith('django.') for m in sys.modules), "
        "sorted(m for m in sys.modules if m.startswith('django'))\n"
    )
    root = Path(__file__).resolve().parents[2]

    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
