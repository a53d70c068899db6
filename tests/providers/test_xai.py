"""XAIRealtimeProvider's own behaviour against the fake xAI server
(tests/fakes/xai_realtime.py): the session shape, native rates and tools, keys, xAI's
transcript events. What it shares with OpenAI is in test_realtime_wire.py."""

from __future__ import annotations

from typing import Any

import pytest

from providers.base import ProviderError
from providers.xai import XAIRealtimeConfig, XAIRealtimeProvider
from tests.fakes.wire_schema import validate_xai_client_event
from tests.fakes.xai_realtime import FakeXAIRealtime
from voice.channels import RealtimeVoiceChannel
from voice.mock import MockRealtimeTransport
from voice.session import LiveSession

pytestmark = pytest.mark.asyncio

FRAME_16K = b"\x10\x00" * 320  # 20 ms at 16 kHz


def _fake(**options: Any) -> FakeXAIRealtime:
    return FakeXAIRealtime(client_validator=validate_xai_client_event, **options)


def _channel(
    fake: FakeXAIRealtime, provider: XAIRealtimeProvider | None = None, **options: Any
) -> tuple[RealtimeVoiceChannel, MockRealtimeTransport]:
    provider = provider or XAIRealtimeProvider(api_key="xai-test", base_url=fake.base_url)
    transport = MockRealtimeTransport()
    channel = RealtimeVoiceChannel(
        "voice", provider=provider, transport=transport, system_prompt="Be brief.", **options
    )
    return channel, transport


async def test_the_session_has_xais_shape_and_the_channels_own_rates() -> None:
    async with _fake() as fake:
        channel, transport = _channel(
            fake,
            voice="ara",
            provider_config={"threshold": 0.6, "silence_duration_ms": 700},
            input_sample_rate=16000,
            output_sample_rate=24000,
        )
        session = await channel.start_session("room-1", "caller")
        for _ in range(10):
            await transport.simulate_client_audio(session, FRAME_16K)
        await fake.wait_for("input_audio_buffer.append", count=10)
        sent = fake.received[0]["session"]
        received = fake.input_pcm16()
        await channel.close()

    assert "type" not in sent  # xAI's session has none
    assert sent["voice"] == "ara"  # at the top level, not under audio.output
    assert sent["instructions"] == "Be brief."
    assert sent["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.6,
        "silence_duration_ms": 700,
    }
    # 16 kHz in and 24 kHz out go on the wire as they are: no resampling either way.
    assert sent["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 16000}
    assert sent["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert received == FRAME_16K * 10
    assert fake.request_paths[0] == "/v1/realtime?model=grok-3-fast"
    assert fake.invalid_client_frames == []


async def test_a_rate_xai_does_not_take_is_resampled_to_24_khz() -> None:
    async with _fake() as fake:
        channel, _ = _channel(fake, input_sample_rate=11025, output_sample_rate=12000)
        await channel.start_session("room-1", "caller")
        sent = fake.received[0]["session"]
        await channel.close()

    assert sent["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert sent["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}


async def test_native_tools_pass_through_beside_function_tools() -> None:
    tools = [
        {"type": "web_search"},
        {"type": "x_search", "allowed_x_handles": ["xai"]},
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    ]
    async with _fake() as fake:
        channel, _ = _channel(fake, tools=tools)
        await channel.start_session("room-1", "caller")
        sent = fake.received[0]["session"]
        await channel.close()

    assert sent["tools"] == tools
    assert fake.invalid_client_frames == []


async def test_a_function_named_like_a_built_in_tool_is_refused_with_a_clear_reason() -> None:
    shadowing = {"type": "function", "name": "web_search", "description": "", "parameters": {}}
    async with _fake() as fake:
        channel, _ = _channel(fake, tools=[shadowing])
        with pytest.raises(ProviderError) as raised:
            await channel.start_session("room-1", "caller")
        await channel.close()

    assert raised.value.code == "invalid_tool"
    assert "reserved for an xAI built-in tool" in raised.value.message


async def test_semantic_vad_is_not_an_xai_option() -> None:
    async with _fake() as fake:
        channel, _ = _channel(fake, provider_config={"turn_detection_type": "semantic_vad"})
        with pytest.raises(ProviderError) as raised:
            await channel.start_session("room-1", "caller")
        await channel.close()

    assert raised.value.code == "invalid_config"
    assert fake.connections == 0  # refused before connecting


async def test_a_wrong_key_fails_the_start_with_a_clear_reason() -> None:
    async with _fake(api_key="xai-right") as fake:
        provider = XAIRealtimeProvider(api_key="xai-wrong", base_url=fake.base_url)
        session = LiveSession(room_id="room-1", participant_id="caller", channel_id="voice")
        with pytest.raises(ProviderError) as raised:
            await provider.connect(
                session,
                system_prompt=None,
                voice=None,
                tools=None,
                temperature=None,
                input_sample_rate=24000,
                output_sample_rate=24000,
            )

    assert raised.value.code == "invalid_api_key"
    assert raised.value.fatal is True
    assert "xai-wrong" not in str(raised.value)


async def test_xais_partial_transcripts_and_pings_reach_the_caller_as_usual() -> None:
    async with _fake(next_reply="Hello.", ping_interval_s=0.05) as fake:
        channel, transport = _channel(fake)
        session = await channel.start_session("room-1", "caller")
        await fake.wait_for_sent("ping")
        await fake.user_speaks("what is the time")
        await fake.wait_idle()
        await channel.settle(session)
        await transport.wait_until(
            lambda: any(
                m["role"] == "assistant" and m["is_final"]
                for m in transport.messages_of(session, "transcription")
            )
        )
        messages = transport.messages_of(session, "transcription")
        await channel.close()

    user = [(m["text"], m["is_final"]) for m in messages if m["role"] == "user"]
    assert user[-1] == ("what is the time", True)
    assert any(not final for _, final in user)  # xAI's in_progress "completed" events
    assert transport.messages_of(session, "error") == []


async def test_the_config_object_and_the_environment_give_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("XAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="XAI_API_KEY"):
        XAIRealtimeProvider()
    monkeypatch.setenv("XAI_API_KEY", "xai-env")
    provider = XAIRealtimeProvider()
    assert (provider.model, provider.default_voice, provider._api_key) == (
        "grok-3-fast",
        "eve",
        "xai-env",
    )
    configured = XAIRealtimeProvider(
        XAIRealtimeConfig(api_key="xai-cfg", model="grok-voice-latest", voice="rex"),
        voice="leo",  # a keyword wins over the config
    )
    assert (configured.model, configured.default_voice, configured._api_key) == (
        "grok-voice-latest",
        "leo",
        "xai-cfg",
    )
    assert "xai-cfg" not in repr(configured)
    assert "xai-cfg" not in repr(XAIRealtimeConfig(api_key="xai-cfg"))
