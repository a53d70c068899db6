"""OpenAIRealtimeProvider's own behaviour against the fake GA server
(tests/fakes/openai_realtime.py): the session shape, audio formats, keys. What it shares
with xAI (conversation, tools, barge-in, errors, reconnection) is in test_realtime_wire.py."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest

from providers.base import ProviderError
from providers.openai import OpenAIRealtimeProvider
from tests.fakes.openai_realtime import FakeOpenAIRealtime
from tests.fakes.wire_schema import validate_openai_client_event
from voice.channels import RealtimeVoiceChannel
from voice.kit import Tool
from voice.mock import MockRealtimeTransport
from voice.session import LiveSession

pytestmark = pytest.mark.asyncio

FRAME_16K = b"\x10\x00" * 320  # 20 ms at 16 kHz


async def get_weather(city: str) -> str:
    return f'{{"city": "{city}", "temperature": 21}}'


def _fake(**options: Any) -> FakeOpenAIRealtime:
    return FakeOpenAIRealtime(client_validator=validate_openai_client_event, **options)


def _channel(fake: FakeOpenAIRealtime, **options: Any) -> tuple[RealtimeVoiceChannel, Any]:
    provider = OpenAIRealtimeProvider(api_key="sk-test", base_url=fake.base_url)
    transport = MockRealtimeTransport()
    channel = RealtimeVoiceChannel(
        "voice",
        provider=provider,
        transport=transport,
        system_prompt="Be brief.",
        voice="marin",
        tools=[
            Tool(
                name="get_weather",
                description="Weather for a city",
                parameters={
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
                handler=get_weather,
            )
        ],
        **options,
    )
    return channel, transport


async def test_a_session_is_configured_in_the_ga_shape() -> None:
    async with _fake() as fake:
        channel, _ = _channel(fake)
        await channel.start_session("room-1", "caller")
        update = fake.received[0]

        await channel.close()

    assert update["type"] == "session.update"
    session = update["session"]
    assert session["type"] == "realtime"
    assert session["instructions"] == "Be brief."
    assert session["audio"]["output"]["voice"] == "marin"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert session["audio"]["input"]["transcription"]["model"]
    assert [tool["name"] for tool in session["tools"]] == ["get_weather"]
    assert "OpenAI-Beta" not in fake.request_headers[0]
    assert fake.request_headers[0]["Authorization"] == "Bearer sk-test"


async def test_caller_audio_is_sent_at_24_khz() -> None:
    async with _fake() as fake:
        channel, transport = _channel(fake)
        session = await channel.start_session("room-1", "caller")
        for _ in range(10):
            await transport.simulate_client_audio(session, FRAME_16K)  # 200 ms at 16 kHz
        appended = await fake.wait_for("input_audio_buffer.append", count=1)
        await channel.settle(session)
        await channel.close()

    total = sum(
        len(base64.b64decode(event["audio"]))
        for event in fake.received
        if event["type"] == "input_audio_buffer.append"
    )
    assert appended
    # 200 ms at 24 kHz is 9600 bytes, less what the resampler still holds (< 20 ms).
    assert 8640 <= total <= 9600


async def test_a_wrong_key_fails_the_start_with_a_clear_reason() -> None:
    async with FakeOpenAIRealtime(api_key="sk-right") as fake:
        provider = OpenAIRealtimeProvider(api_key="sk-wrong", base_url=fake.base_url)
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


async def test_the_session_update_takes_the_seed_provider_config_keys() -> None:
    config = {
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.6,
            "silence_duration_ms": 800,
            "prefix_padding_ms": 300,
            "interrupt_response": True,
            "create_response": True,
        },
        "stt_model": "gpt-4o-transcribe",
        "noise_reduction": "near_field",
        "speed": 1.2,
        "max_output_tokens": 800,
    }
    async with _fake() as fake:
        channel, _ = _channel(fake, provider_config=config, temperature=0.7)
        await channel.start_session("room-1", "caller")
        session = fake.received[0]["session"]
        await channel.close()

    assert session["audio"]["input"]["turn_detection"] == config["turn_detection"]
    assert session["audio"]["input"]["transcription"] == {"model": "gpt-4o-transcribe"}
    assert session["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
    assert session["audio"]["output"]["speed"] == 1.2
    assert session["max_output_tokens"] == 800
    assert "temperature" not in session  # not in the GA interface
    assert fake.invalid_client_frames == []


@pytest.mark.parametrize(
    ("turn_detection", "expected"),
    [
        (
            {"type": "semantic_vad", "eagerness": "high"},
            {"type": "semantic_vad", "eagerness": "high"},
        ),
        (None, None),
    ],
)
async def test_semantic_vad_and_manual_turns_are_configured(
    turn_detection: Any, expected: Any
) -> None:
    async with _fake() as fake:
        channel, _ = _channel(fake, provider_config={"turn_detection": turn_detection})
        await channel.start_session("room-1", "caller")
        sent = fake.received[0]["session"]["audio"]["input"]["turn_detection"]
        await channel.close()

    if expected is None:
        assert sent is None
    else:
        assert {key: sent[key] for key in expected} == expected
    assert fake.invalid_client_frames == []


async def test_8_khz_telephony_audio_travels_as_g711_mu_law_both_ways() -> None:
    tone = (np.sin(np.arange(1600) * 2 * np.pi * 440 / 8000) * 8000).astype("<i2").tobytes()
    async with _fake(next_reply="Hello caller.") as fake:
        channel, transport = _channel(fake, input_sample_rate=8000, output_sample_rate=8000)
        session = await channel.start_session("room-1", "caller")
        for start in range(0, len(tone), 320):  # 20 ms frames at 8 kHz
            await transport.simulate_client_audio(session, tone[start : start + 320])
        await channel.settle(session)
        await fake.wait_for("input_audio_buffer.append", count=10)
        await fake.user_speaks("hello")
        await fake.wait_idle()
        await channel.settle(session)
        await transport.wait_until(
            lambda: (
                {"type": "speaking", "speaking": False, "who": "assistant"}
                in transport.messages_of(session, "speaking")
            )
        )
        update = fake.received[0]["session"]
        received = fake.input_pcm16()
        reply = b"".join(chunk for sid, chunk in transport.sent_audio if sid == session.id)
        await channel.close()

    assert update["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert update["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    # What the vendor decoded is the caller's tone, within G.711's quantisation error.
    sent = np.frombuffer(tone, dtype="<i2").astype(float)
    got = np.frombuffer(received[: len(tone)], dtype="<i2").astype(float)
    assert len(got) == len(sent)
    assert np.max(np.abs(got - sent)) < 300
    # The reply comes back as PCM16 at 8 kHz: the fake's 600 ms reply is 9600 bytes.
    assert len(reply) == 600 * 8 * 2
    assert fake.invalid_client_frames == []
