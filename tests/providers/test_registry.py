"""providers.registry: the kind → spec map, lazy schema loading and config validation."""

from __future__ import annotations

import pytest

from providers.config import ProviderConfig, ProviderConfigError
from providers.models import ProviderKind
from providers.registry import (
    PROVIDERS,
    UnknownProviderError,
    get_spec,
    validate_provider_config,
)


def test_provider_kind_choices_equal_the_registry_kinds_and_labels() -> None:
    assert dict(ProviderKind.choices) == {kind: spec.label for kind, spec in PROVIDERS.items()}


def test_every_registry_entry_is_keyed_by_its_own_kind() -> None:
    assert [spec.kind for spec in PROVIDERS.values()] == list(PROVIDERS)


@pytest.mark.parametrize("kind", sorted(PROVIDERS))
def test_every_spec_config_schema_loads_as_a_provider_config(kind: str) -> None:
    schema = get_spec(kind).config_schema()

    assert isinstance(schema, type)
    assert issubclass(schema, ProviderConfig)
    assert schema is not ProviderConfig


def test_get_spec_returns_the_spec_for_a_known_kind() -> None:
    assert get_spec("openai") is PROVIDERS["openai"]


@pytest.mark.parametrize("kind", ["skype", "", "OpenAI"])
def test_get_spec_of_an_unknown_kind_lists_the_known_kinds(kind: str) -> None:
    with pytest.raises(UnknownProviderError) as caught:
        get_spec(kind)

    assert str(caught.value) == (
        f"unknown provider kind {kind!r}; known kinds: "
        "echo, elevenlabs, gemini, local, mock, openai, xai"
    )


def test_validate_provider_config_keeps_only_the_keys_that_were_set_and_strips_strings() -> None:
    assert validate_provider_config(
        "openai", {"stt_model": "  whisper-1 ", "turn_detection": {"type": "semantic_vad"}}
    ) == {"stt_model": "whisper-1", "turn_detection": {"type": "semantic_vad"}}


def test_validate_provider_config_of_an_empty_object_is_empty() -> None:
    assert validate_provider_config("openai", {}) == {}


def test_validate_provider_config_keeps_an_explicit_null() -> None:
    assert validate_provider_config("openai", {"turn_detection": None}) == {"turn_detection": None}


@pytest.mark.parametrize(
    ("kind", "data", "errors"),
    [
        (
            "openai",
            {"speed": 3},
            [{"field": "speed", "message": "must be <= 1.5"}],
        ),
        (
            "openai",
            {"colour": "blue"},
            [{"field": "colour", "message": "unknown option 'colour'"}],
        ),
        (
            "mock",
            ["scripted_reply"],
            [{"field": "provider_config", "message": "must be a JSON object, not an array"}],
        ),
        (
            "mock",
            None,
            [{"field": "provider_config", "message": "must be a JSON object, not null"}],
        ),
        (
            "mock",
            {"scripted_reply": 5},
            [{"field": "scripted_reply", "message": "must be a string"}],
        ),
    ],
)
def test_validate_provider_config_raises_provider_config_error_naming_the_field(
    kind: str, data: object, errors: list[dict[str, str]]
) -> None:
    with pytest.raises(ProviderConfigError) as caught:
        validate_provider_config(kind, data)

    assert caught.value.errors == errors


def test_validate_provider_config_of_an_unknown_kind_raises_unknown_provider_error() -> None:
    with pytest.raises(UnknownProviderError):
        validate_provider_config("skype", {})
