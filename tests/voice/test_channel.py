"""RealtimeVoiceChannel construction: invalid settings are refused with errors naming the
parameter, and the defaults are the seed's table."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from voice.channels import RealtimeVoiceChannel
from voice.mock import MockRealtimeProvider, MockRealtimeTransport


def build(**options: Any) -> RealtimeVoiceChannel:
    return RealtimeVoiceChannel(
        "voice", provider=MockRealtimeProvider(), transport=MockRealtimeTransport(), **options
    )


@pytest.mark.parametrize(
    "parameter", ["input_sample_rate", "output_sample_rate", "transport_sample_rate"]
)
@pytest.mark.parametrize("value", [0, -16000, True, 16000.0, 192_001, "16000"])
def test_an_invalid_sample_rate_is_refused_naming_the_parameter(parameter: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"^{parameter} must be a positive integer up to 192000"):
        build(**{parameter: value})


def test_the_highest_sample_rate_is_accepted() -> None:
    channel = build(transport_sample_rate=192_000)

    assert channel.transport_sample_rate == 192_000


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "16384"])
def test_an_invalid_tool_result_max_length_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="^tool_result_max_length must be a positive integer"):
        build(tool_result_max_length=value)


@pytest.mark.parametrize("value", [-0.1, 2.01, float("nan"), "0.7", True])
def test_a_temperature_outside_0_to_2_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="^temperature must be between 0 and 2"):
        build(temperature=value)


@pytest.mark.parametrize("value", [0, 0.7, 2])
def test_a_temperature_inside_0_to_2_is_kept(value: float) -> None:
    channel = build(temperature=value)

    assert channel.temperature == value


@pytest.mark.parametrize("tool", ["get_weather", 42, None])
def test_a_tool_that_is_neither_a_tool_nor_a_dict_is_refused(tool: Any) -> None:
    with pytest.raises(TypeError, match="^tools must be Tool objects or dicts, got "):
        build(tools=[tool])


@pytest.mark.parametrize(
    "definition",
    [
        {"type": "function", "description": "no name"},
        {"type": "function", "name": ""},
        {"name": 7},
    ],
)
def test_a_function_tool_without_a_name_is_refused(definition: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="^a function tool needs a name"):
        build(tools=[definition])


def test_a_function_tool_with_an_invalid_schema_is_refused() -> None:
    with pytest.raises(ValueError, match="^tool 'lookup' has invalid parameters"):
        build(tools=[{"type": "function", "name": "lookup", "parameters": {"type": 12}}])


def test_native_tools_pass_through_to_the_provider_unchanged() -> None:
    channel = build(tools=[{"type": "web_search"}, {"type": "x_search"}])

    assert channel.tools.definitions == [{"type": "web_search"}, {"type": "x_search"}]


@pytest.mark.parametrize("value", [0, -1.0])
def test_a_non_positive_tool_timeout_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="^tool_timeout must be positive"):
        build(tool_timeout=value)


def test_a_provider_config_that_is_not_a_dict_is_refused() -> None:
    with pytest.raises(TypeError, match="^provider_config must be a dict"):
        build(provider_config=[("turn_detection", None)])


def test_the_defaults_are_the_seeds_table() -> None:
    parameters = inspect.signature(RealtimeVoiceChannel).parameters
    defaults = {
        name: parameters[name].default
        for name in (
            "system_prompt",
            "voice",
            "tools",
            "temperature",
            "input_sample_rate",
            "output_sample_rate",
            "transport_sample_rate",
            "emit_transcription_events",
            "tool_handler",
            "mute_on_tool_call",
            "tool_result_max_length",
        )
    }
    channel = build()

    assert defaults == {
        "system_prompt": None,
        "voice": None,
        "tools": None,
        "temperature": None,
        "input_sample_rate": 16000,
        "output_sample_rate": 24000,
        "transport_sample_rate": None,
        "emit_transcription_events": True,
        "tool_handler": None,
        "mute_on_tool_call": False,
        "tool_result_max_length": 16384,
    }
    assert parameters["provider"].default is inspect.Parameter.empty
    assert parameters["transport"].default is inspect.Parameter.empty
    assert (channel.input_sample_rate, channel.output_sample_rate) == (16000, 24000)
    assert channel.transport_sample_rate is None
    assert channel.tool_result_max_length == 16384
    assert channel.emit_transcription_events is True
    assert channel.mute_on_tool_call is False
    assert channel.tools.definitions == []
