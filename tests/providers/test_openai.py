"""OpenAIRealtimeProvider against the fake GA server (tests/fakes/openai_realtime.py), driven
through the engine as a live session would be."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from providers.base import ProviderError
from providers.openai import OpenAIRealtimeProvider
from tests.fakes.openai_realtime import FakeOpenAIRealtime
from voice.channels import RealtimeVoiceChannel
from voice.kit import Tool
from voice.mock import MockRealtimeTransport
from voice.session import LiveSession

pytestmark = pytest.mark.asyncio

FRAME_16K = b"\x10\x00" * 320  # 20 ms at 16 kHz


async def get_weather(city: str) -> str:
    return f'{{"city": "{city}", "temperature": 21}}'


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
    async with FakeOpenAIRealtime() as fake:
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
    async with FakeOpenAIRealtime() as fake:
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


async def test_a_spoken_turn_reaches_the_caller_as_transcripts_and_audio() -> None:
    async with FakeOpenAIRealtime(next_reply="Hi there.") as fake:
        channel, transport = _channel(fake, output_sample_rate=24000)
        session = await channel.start_session("room-1", "caller")

        await fake.user_speaks("hello")
        await fake.wait_idle()
        await channel.settle(session)
        await transport.wait_until(
            lambda: (
                transport.messages_of(session, "speaking")[-1:]
                == [{"type": "speaking", "speaking": False, "who": "assistant"}]
            )
        )
        transcripts = transport.messages_of(session, "transcription")
        audio = b"".join(chunk for sid, chunk in transport.sent_audio if sid == session.id)
        await channel.close()

    assert session.usage["responses"] == 1
    assert session.usage["total_tokens"] > 0
    finals = [(m["role"], m["text"]) for m in transcripts if m["is_final"]]
    assert finals == [("user", "hello"), ("assistant", "Hi there.")]
    assert any(not m["is_final"] and m["role"] == "user" for m in transcripts)
    assert len(audio) == 600 * 24 * 2  # the fake's 600 ms reply, at the provider's own rate


async def test_a_tool_call_is_answered_and_the_model_goes_on() -> None:
    async with FakeOpenAIRealtime() as fake:
        channel, transport = _channel(fake)
        session = await channel.start_session("room-1", "caller")
        fake.next_tool_call = ("get_weather", {"city": "Paris"})

        await fake.user_speaks("weather in Paris?")
        await fake.wait_for("response.create", count=1)
        await fake.wait_idle()
        await channel.settle(session)
        await channel.close()

    assert [output["output"] for output in fake.tool_outputs] == [
        '{"city": "Paris", "temperature": 21}'
    ]
    # The result is followed by a response.create, after the function_call_output.
    types = [e["type"] for e in fake.received if e["type"] != "input_audio_buffer.append"]
    assert types[-2:] == ["conversation.item.create", "response.create"]


async def test_barge_in_truncates_the_reply_at_what_was_heard() -> None:
    async with FakeOpenAIRealtime(reply_audio_ms=2000, chunk_interval_s=0.02) as fake:
        channel, transport = _channel(fake)
        session = await channel.start_session("room-1", "caller")
        await fake.user_speaks("tell me a story")
        await transport.wait_until(lambda: len(transport.sent_audio) >= 3)
        await transport.simulate_playback(session, 100)

        await fake.user_speaks("stop")
        truncate = (await fake.wait_for("conversation.item.truncate"))[0]
        await fake.wait_idle()
        await channel.settle(session)
        await channel.close()

    assert truncate["content_index"] == 0
    assert truncate["audio_end_ms"] == 100
    assert fake.truncations[0]["audio_end_ms"] == 100
    assert transport.messages_of(session, "clear_audio") == [{"type": "clear_audio"}]


async def test_a_non_fatal_error_is_reported_and_the_session_goes_on() -> None:
    async with FakeOpenAIRealtime() as fake:
        channel, transport = _channel(fake)
        session = await channel.start_session("room-1", "caller")

        await fake.send_error("response_cancel_not_active", "no active response")
        await transport.wait_until(lambda: transport.messages_of(session, "error"))
        errors = transport.messages_of(session, "error")
        live = session.is_active
        await channel.close()

    assert errors == [
        {"type": "error", "code": "response_cancel_not_active", "message": "no active response"}
    ]
    assert live


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


async def test_a_dropped_connection_ends_the_session_with_a_provider_error() -> None:
    async with FakeOpenAIRealtime() as fake:
        channel, transport = _channel(fake)
        session = await channel.start_session("room-1", "caller")

        await fake.drop_connection()
        await transport.wait_until(lambda: session.is_ended)
        await channel.close()

    assert session.end_reason == "provider_error"
    assert transport.messages_of(session, "error")[0]["code"] == "connection_lost"


async def test_reconfigure_patches_the_live_session() -> None:
    async with FakeOpenAIRealtime() as fake:
        channel, _ = _channel(fake)
        session = await channel.start_session("room-1", "caller")

        await channel.reconfigure_session(session, system_prompt="Speak French.")
        updates = await fake.wait_for("session.update", count=2)
        await channel.close()

    assert updates[1]["session"] == {"type": "realtime", "instructions": "Speak French."}
    assert fake.connections == 1  # no reconnect
