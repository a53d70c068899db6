"""GeminiLiveProvider against the fake Gemini Live server (tests/fakes/gemini_live.py), driven
through the engine as a live session would be. Every client frame we send is checked against
google-genai's ``LiveClientMessage`` (with the patch the SDK needs, see wire_schema.py)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from providers.base import ProviderError
from providers.gemini import GeminiLiveProvider
from tests.fakes.gemini_live import FakeGeminiLive
from tests.fakes.wire_schema import validate_gemini_client_message
from voice.channels import RealtimeVoiceChannel
from voice.kit import Tool
from voice.mock import MockRealtimeTransport
from voice.session import LiveSession
from voice.store import MemoryStore

pytestmark = pytest.mark.asyncio

KEY = "AIza-test-key"
FRAME_16K = b"\x10\x00" * 320  # 20 ms at 16 kHz
WEATHER = '{"city": "Paris", "temperature": 21}'
WEATHER_TOOL = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


async def get_weather(city: str) -> str:
    return WEATHER


@dataclass
class Call:
    fake: FakeGeminiLive
    provider: GeminiLiveProvider
    channel: RealtimeVoiceChannel
    transport: MockRealtimeTransport
    store: MemoryStore
    reconnected: asyncio.Event
    handles: list[str]
    handle_seen: asyncio.Event

    async def wait_handle(self, handle: str, timeout: float = 5) -> None:  # noqa: ASYNC109
        """Until the provider has reported ``handle`` (after the engine kept it)."""
        async with asyncio.timeout(timeout):
            while handle not in self.handles:
                self.handle_seen.clear()
                await self.handle_seen.wait()

    async def wait_reconnected(self, timeout: float = 10) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            await self.reconnected.wait()
        self.reconnected.clear()

    def finals(self, session: LiveSession) -> list[tuple[str, str]]:
        return [
            (m["role"], m["text"])
            for m in self.transport.messages_of(session, "transcription")
            if m["is_final"]
        ]

    async def replies(self, session: LiveSession, count: int = 1) -> None:
        """Until ``count`` replies reached the caller whole (final text, then their end)."""

        def done() -> int:
            finals = [role for role, _ in self.finals(session) if role == "assistant"]
            ended = self.transport.messages_of(session, "speaking").count(
                {"type": "speaking", "speaking": False, "who": "assistant"}
            )
            return min(len(finals), ended)

        await self.transport.wait_until(lambda: done() >= count)
        await self.fake.wait_idle()
        await self.channel.settle(session)


class _call:
    def __init__(self, fake_options: dict[str, Any], channel_options: dict[str, Any]) -> None:
        self.fake = FakeGeminiLive(
            api_key=KEY, client_validator=validate_gemini_client_message, **fake_options
        )
        self.channel_options = channel_options

    async def __aenter__(self) -> Call:
        await self.fake.__aenter__()
        provider = GeminiLiveProvider(api_key=KEY, base_url=self.fake.base_url)
        transport = MockRealtimeTransport()
        store = MemoryStore()
        options: dict[str, Any] = {
            "system_prompt": "Be brief.",
            "voice": "Aoede",
            "tools": [
                Tool(
                    name="get_weather",
                    description="Weather for a city",
                    parameters=WEATHER_TOOL,
                    handler=get_weather,
                )
            ],
            **self.channel_options,
        }
        channel = RealtimeVoiceChannel(
            "voice", provider=provider, transport=transport, store=store, **options
        )
        reconnected = asyncio.Event()
        provider.on_reconnect(lambda session, info: reconnected.set())
        handles: list[str] = []
        handle_seen = asyncio.Event()

        def on_handle(session: LiveSession, handle: str) -> None:
            handles.append(handle)
            handle_seen.set()

        provider.on_resumption(on_handle)
        self.call = Call(
            self.fake, provider, channel, transport, store, reconnected, handles, handle_seen
        )
        return self.call

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.call.channel.close()
        finally:
            await self.fake.__aexit__(None, None, None)
        if exc[0] is None:
            assert self.fake.invalid_client_frames == []


def call(fake_options: dict[str, Any] | None = None, **channel_options: Any) -> _call:
    return _call(fake_options or {}, channel_options)


# --- configuration --------------------------------------------------------------------------


async def test_every_seed_provider_config_key_maps_to_its_setup_field() -> None:
    config = {
        "start_of_speech_sensitivity": "HIGH",
        "end_of_speech_sensitivity": "LOW",
        "silence_duration_ms": 500,
        "prefix_padding_ms": 40,
        "proactive_audio": True,
        "enable_affective_dialog": True,
        "thinking_budget": 1024,
        "top_p": 0.8,
        "top_k": 40,
        "max_output_tokens": 2048,
        "activity_handling": "NO_INTERRUPTION",
        "language_code": "en-US",
    }
    async with call(provider_config=config, temperature=0.7) as c:
        await c.channel.start_session("room-1", "caller")
        setup = c.fake.received[0]["setup"]

    assert setup["model"] == "models/gemini-2.5-flash-native-audio-preview-12-2025"
    generation = setup["generationConfig"]
    assert generation["responseModalities"] == ["AUDIO"]
    assert generation["speechConfig"] == {
        "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Aoede"}},
        "languageCode": "en-US",
    }
    assert (generation["temperature"], generation["topP"], generation["topK"]) == (0.7, 0.8, 40)
    assert generation["maxOutputTokens"] == 2048
    assert generation["thinkingConfig"] == {"thinkingBudget": 1024}
    assert generation["enableAffectiveDialog"] is True
    assert setup["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert setup["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parametersJsonSchema": WEATHER_TOOL,
                }
            ]
        }
    ]
    assert setup["realtimeInputConfig"] == {
        "automaticActivityDetection": {
            "startOfSpeechSensitivity": "START_SENSITIVITY_HIGH",
            "endOfSpeechSensitivity": "END_SENSITIVITY_LOW",
            "prefixPaddingMs": 40,
            "silenceDurationMs": 500,
        },
        "activityHandling": "NO_INTERRUPTION",
    }
    assert setup["proactivity"] == {"proactiveAudio": True}
    assert setup["inputAudioTranscription"] == {} == setup["outputAudioTranscription"]
    assert setup["sessionResumption"] == {}
    assert setup["contextWindowCompression"] == {"slidingWindow": {}}  # not capped at 15 min
    assert len(c.fake.received[0]) == 1  # one top-level field per frame


async def test_an_unknown_provider_config_key_is_refused_before_connecting() -> None:
    async with call(provider_config={"proactive_audo": True}) as c:
        with pytest.raises(ProviderError) as raised:
            await c.channel.start_session("room-1", "caller")

    assert raised.value.code == "invalid_config"
    assert "proactive_audo" in raised.value.message
    assert c.fake.connections == 0


async def test_a_wrong_key_fails_the_start_with_a_clear_reason() -> None:
    async with FakeGeminiLive(api_key="AIza-right") as fake:
        provider = GeminiLiveProvider(api_key="AIza-wrong", base_url=fake.base_url)
        session = LiveSession(room_id="room-1", participant_id="caller", channel_id="voice")
        with pytest.raises(ProviderError) as raised:
            await provider.connect(
                session,
                system_prompt=None,
                voice=None,
                tools=None,
                temperature=None,
                input_sample_rate=16000,
                output_sample_rate=24000,
            )

    assert raised.value.code == "invalid_api_key"
    assert "API key not valid" in raised.value.message
    assert "AIza-wrong" not in str(raised.value)


# --- a conversation -------------------------------------------------------------------------


async def test_a_spoken_turn_reaches_the_caller_as_transcripts_and_audio() -> None:
    tone = (np.sin(np.arange(3200) * 2 * np.pi * 300 / 16000) * 6000).astype("<i2").tobytes()
    async with call({"next_reply": "Hi there."}, output_sample_rate=24000) as c:
        session = await c.channel.start_session("room-1", "caller")
        for start in range(0, len(tone), 640):
            await c.transport.simulate_client_audio(session, tone[start : start + 640])
        await c.channel.settle(session)
        await c.fake.user_speaks("hello there")
        await c.replies(session)
        audio = b"".join(chunk for sid, chunk in c.transport.sent_audio if sid == session.id)
        received = c.fake.input_pcm16()

    assert c.finals(session) == [("user", "hello there"), ("assistant", "Hi there.")]
    assert any(
        not m["is_final"] for m in c.transport.messages_of(session, "transcription")
    )  # partials first
    assert received == tone  # 16 kHz in, as it is: no resampling on the way up
    assert len(audio) == pytest.approx(600 * 24 * 2, abs=2 * 24 * 2)
    assert session.usage.get("totalTokenCount", 0) > 0


async def test_a_tool_call_is_answered_with_its_id_and_name() -> None:
    async with call() as c:
        session = await c.channel.start_session("room-1", "caller")
        c.fake.next_tool_call = ("get_weather", {"city": "Paris"})
        await c.fake.user_speaks("weather in Paris?")
        await c.fake.wait_for("toolResponse")
        await c.replies(session)

    (response,) = c.fake.tool_responses
    assert response["name"] == "get_weather"
    assert response["response"] == {"output": json.loads(WEATHER)}
    assert c.fake.unmatched_tool_responses == []
    assert [r.status for r in c.store.tool_calls.values()] == ["succeeded"]


async def test_a_tool_call_the_model_cancels_is_stopped_and_not_answered() -> None:
    started, gate = asyncio.Event(), asyncio.Event()

    async def slow_weather(city: str) -> str:
        started.set()
        await gate.wait()
        return WEATHER

    tool = Tool(
        name="get_weather", description="Weather", parameters=WEATHER_TOOL, handler=slow_weather
    )
    async with call(tools=[tool]) as c:
        session = await c.channel.start_session("room-1", "caller")
        c.fake.next_tool_call = ("get_weather", {"city": "Paris"})
        await c.fake.user_speaks("weather in Paris?")
        async with asyncio.timeout(5):
            await started.wait()
        await c.fake.user_speaks("never mind")  # barge-in: toolCallCancellation
        await c.transport.wait_until(
            lambda: any(
                m["status"] == "cancelled" for m in c.transport.messages_of(session, "tool_call")
            )
        )
        await c.replies(session)
        gate.set()
        await c.channel.settle(session)

    assert c.fake.cancelled_tool_calls
    assert c.fake.tool_responses == []  # the cancelled call was never answered
    (record,) = c.store.tool_calls.values()
    assert record.status == "cancelled"
    assert "cancelled the call" in record.error


async def test_barge_in_clears_the_callers_audio() -> None:
    async with call({"reply_audio_ms": 3000, "chunk_interval_s": 0.02}) as c:
        session = await c.channel.start_session("room-1", "caller")
        await c.fake.user_speaks("tell me a story")
        await c.transport.wait_until(lambda: len(c.transport.sent_audio) >= 3)
        await c.fake.user_speaks("stop")  # serverContent.interrupted
        await c.transport.wait_until(lambda: c.transport.messages_of(session, "clear_audio"))
        await c.replies(session, count=2)

    assert c.transport.messages_of(session, "clear_audio") == [{"type": "clear_audio"}]
    assert c.finals(session)[-1] == ("assistant", c.fake.next_reply)


async def test_injected_text_is_a_client_content_turn() -> None:
    async with call() as c:
        session = await c.channel.start_session("room-1", "caller")
        await c.transport.simulate_client_message(session, "text", {"text": "What time is it?"})
        await c.fake.wait_for("clientContent")
        await c.replies(session)

    (content,) = c.fake.client_contents
    assert content == {
        "turns": [{"role": "user", "parts": [{"text": "What time is it?"}]}],
        "turnComplete": True,
    }


async def test_manual_turns_mark_activity_start_and_end() -> None:
    async with call(provider_config={"automatic_activity_detection": False}) as c:
        session = await c.channel.start_session("room-1", "caller")
        for _ in range(10):
            await c.transport.simulate_client_audio(session, FRAME_16K)
        await c.transport.simulate_client_message(session, "end_turn")
        await c.fake.wait_for("realtimeInput", count=12)
        await c.replies(session)
        (started,) = c.transport.messages_of(session, "session_started")

    assert started["turn_detection"] == "manual"
    inputs = [e["realtimeInput"] for e in c.fake.received if "realtimeInput" in e]
    assert "activityStart" in inputs[0]
    assert "activityEnd" in inputs[-1]
    assert c.fake.received[0]["setup"]["realtimeInputConfig"] == {
        "automaticActivityDetection": {"disabled": True}
    }


# --- resumption -----------------------------------------------------------------------------


async def test_the_newest_resumable_handle_is_kept_and_persisted() -> None:
    async with call() as c:
        session = await c.channel.start_session("room-1", "caller")
        await c.fake.user_speaks("hello")
        await c.replies(session)
        handle = await c.fake.send_resumption_update()
        assert handle is not None
        await c.wait_handle(handle)
        await c.fake.send_resumption_update(resumable=False)  # mid-generation: no handle
        await c.fake.user_speaks("and again")  # a later message: the {} was read before it
        await c.replies(session, count=2)
        newest = c.fake.issued_handles[-1]
        await c.wait_handle(newest)
        await c.channel.settle(session)

    assert session.resumption_handle == newest


async def test_go_away_resumes_on_a_new_connection_with_the_handle() -> None:
    async with call() as c:
        session = await c.channel.start_session("room-1", "caller")
        await c.fake.user_speaks("remember the number 42")
        await c.replies(session)
        handle = await c.fake.send_resumption_update()
        assert handle is not None
        await c.wait_handle(handle)
        await c.fake.go_away(2.0)
        await c.wait_reconnected()
        for _ in range(5):
            await c.transport.simulate_client_audio(session, FRAME_16K)
        await c.fake.user_speaks("what number?")
        await c.replies(session, count=2)

    assert c.fake.setups[1]["sessionResumption"] == {"handle": handle}
    assert c.fake.setups[1]["systemInstruction"] == c.fake.setups[0]["systemInstruction"]
    (info,) = session.reconnects
    assert info["reason"] == "go_away" and info["resumed"] is True
    assert c.transport.messages_of(session, "error") == []
    assert c.fake.connection_closed_with(0) is None  # we left before the service cut us off


async def test_a_dropped_connection_resumes_and_replays_the_gap_audio() -> None:
    async with call() as c:
        session = await c.channel.start_session("room-1", "caller")
        await c.fake.user_speaks("hello")
        await c.replies(session)
        await c.fake.send_resumption_update()
        await c.fake.drop_connection()
        for _ in range(25):  # 500 ms while the connection is down
            await c.transport.simulate_client_audio(session, FRAME_16K)
        await c.wait_reconnected()
        await c.channel.settle(session)
        await c.fake.wait_for("realtimeInput", count=1)
        second = c.fake.input_pcm16(1)
        live = session.is_active

    assert session.reconnects[0]["reason"] == "connection_lost"
    assert session.reconnects[0]["resumed"] is True
    assert len(second) > 0 and len(second) % len(FRAME_16K) == 0
    assert live


async def test_an_expired_handle_falls_back_to_restoring_the_conversation_as_text() -> None:
    async with call({"next_reply": "Forty-two."}) as c:
        session = await c.channel.start_session("room-1", "caller")
        await c.fake.user_speaks("remember the number 42")
        await c.replies(session)
        await c.fake.send_resumption_update()
        c.fake.expire_handles()
        await c.fake.drop_connection()
        await c.wait_reconnected()
        await c.fake.wait_for("clientContent")
        contents = list(c.fake.client_contents)

    assert session.reconnects[0]["resumed"] is False
    (restored,) = contents
    assert restored["turnComplete"] is False
    assert restored["turns"] == [
        {"role": "user", "parts": [{"text": "remember the number 42"}]},
        {"role": "model", "parts": [{"text": "Forty-two."}]},
    ]


async def test_reconfigure_hands_off_by_resuming_with_the_new_setup() -> None:
    billing = {
        "type": "function",
        "name": "refund",
        "description": "Refund an order",
        "parameters": {"type": "object", "properties": {}},
    }
    async with call(provider_config={"proactive_audio": True}) as c:
        session = await c.channel.start_session("room-1", "caller")
        await c.fake.user_speaks("I need billing help")
        await c.replies(session)
        handle = await c.fake.send_resumption_update()
        assert handle is not None
        await c.wait_handle(handle)
        await c.channel.reconfigure_session(
            session.id,
            system_prompt="You are a billing specialist.",
            voice="Kore",
            tools=[billing],
        )
        await c.fake.wait_for_connections(2)

    first, second = c.fake.setups[:2]
    assert second["sessionResumption"] == {"handle": handle}
    assert second["systemInstruction"] == {"parts": [{"text": "You are a billing specialist."}]}
    assert second["generationConfig"]["speechConfig"]["voiceConfig"] == {
        "prebuiltVoiceConfig": {"voiceName": "Kore"}
    }
    assert [d["name"] for d in second["tools"][0]["functionDeclarations"]] == ["refund"]
    assert second["proactivity"] == first["proactivity"]  # the earlier provider_config stays
    assert session.reconnects[0]["reason"] == "reconfigure"


async def test_a_policy_close_ends_the_session_with_its_reason() -> None:
    async with call() as c:
        session = await c.channel.start_session("room-1", "caller")
        await c.fake.drop_connection(code=1008, reason="Quota exceeded for this project.")
        await c.transport.wait_until(lambda: session.is_ended)

    assert session.end_reason == "provider_error"
    reason, detail = c.store.ended[session.id]
    assert detail == "policy_violation: Gemini closed the session: Quota exceeded for this project."
