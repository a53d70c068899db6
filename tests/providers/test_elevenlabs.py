"""ElevenLabsRealtimeProvider against the fake ElevenLabs Agents server
(tests/fakes/elevenlabs_convai.py), driven through the engine as a live session would be.
Every client frame is checked against the contract's message models (wire_schema.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from providers.base import ProviderError
from providers.elevenlabs import ElevenLabsRealtimeConfig, ElevenLabsRealtimeProvider
from tests.fakes.elevenlabs_convai import FakeElevenLabs
from tests.fakes.wire_schema import validate_elevenlabs_client_message
from voice.channels import RealtimeVoiceChannel
from voice.mock import MockRealtimeTransport
from voice.session import LiveSession, SessionStateError
from voice.store import MemoryStore

pytestmark = pytest.mark.asyncio

KEY = "xi-test-key"
AGENT = "agent_test"
FRAME_16K = b"\x10\x00" * 320  # 20 ms at 16 kHz


@dataclass
class Call:
    fake: FakeElevenLabs
    provider: ElevenLabsRealtimeProvider
    channel: RealtimeVoiceChannel
    transport: MockRealtimeTransport
    store: MemoryStore

    def finals(self, session: LiveSession) -> list[tuple[str, str]]:
        return [
            (m["role"], m["text"])
            for m in self.transport.messages_of(session, "transcription")
            if m["is_final"]
        ]

    async def replies(self, session: LiveSession, count: int = 1) -> None:
        """Until ``count`` replies ended for the caller (their audio stopped)."""
        await self.transport.wait_until(
            lambda: (
                self.transport.messages_of(session, "speaking").count(
                    {"type": "speaking", "speaking": False, "who": "assistant"}
                )
                >= count
            )
        )
        await self.channel.settle(session)


class _call:
    def __init__(
        self,
        fake_options: dict[str, Any],
        provider_options: dict[str, Any],
        channel_options: dict[str, Any],
    ) -> None:
        self.fake = FakeElevenLabs(
            api_key=KEY,
            agent_id=AGENT,
            client_validator=validate_elevenlabs_client_message,
            **fake_options,
        )
        self.provider_options = provider_options
        self.channel_options = channel_options

    async def __aenter__(self) -> Call:
        await self.fake.__aenter__()
        config = ElevenLabsRealtimeConfig(
            api_key=KEY, agent_id=AGENT, base_url=self.fake.ws_base_url, **self.provider_options
        )
        provider = ElevenLabsRealtimeProvider(config)
        provider.reply_idle_s = 0.2
        transport = MockRealtimeTransport()
        store = MemoryStore()
        channel = RealtimeVoiceChannel(
            "voice", provider=provider, transport=transport, store=store, **self.channel_options
        )
        self.call = Call(self.fake, provider, channel, transport, store)
        return self.call

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.call.channel.close()
        finally:
            await self.fake.__aexit__(None, None, None)
        if exc[0] is None:
            assert self.fake.invalid_client_frames == []


def call(
    fake_options: dict[str, Any] | None = None,
    provider_options: dict[str, Any] | None = None,
    **channel_options: Any,
) -> _call:
    return _call(fake_options or {}, provider_options or {}, channel_options)


async def test_the_seeds_overrides_go_into_the_initiation() -> None:
    async with call(
        system_prompt="You are a helpful assistant.",
        voice="voice-id-from-elevenlabs",
        temperature=0.7,
    ) as c:
        await c.channel.start_session(
            "room-1",
            "user-1",
            metadata={
                "provider_config": {
                    "language": "fr",
                    "first_message": "Bonjour!",
                    "dynamic_variables": {"user_name": "Alice", "account_id": "12345"},
                }
            },
        )
        initiation = c.fake.initiation

    assert initiation == {
        "type": "conversation_initiation_client_data",
        "conversation_config_override": {
            "agent": {
                "prompt": {"prompt": "You are a helpful assistant."},
                "first_message": "Bonjour!",
                "language": "fr",
            },
            "tts": {"voice_id": "voice-id-from-elevenlabs"},
        },
        "custom_llm_extra_body": {"temperature": 0.7},
        "dynamic_variables": {"user_name": "Alice", "account_id": "12345"},
    }
    assert c.fake.request_headers[0]["xi-api-key"] == KEY


async def test_a_conversation_flows_both_ways_at_the_negotiated_formats() -> None:
    tone = (np.sin(np.arange(4000) * 2 * np.pi * 300 / 8000) * 6000).astype("<i2").tobytes()
    async with call(
        {
            "user_input_audio_format": "ulaw_8000",
            "agent_output_audio_format": "pcm_22050",
            "next_reply": "It is sunny.",
        },
        input_sample_rate=8000,
        output_sample_rate=24000,
    ) as c:
        session = await c.channel.start_session("room-1", "caller")
        for start in range(0, len(tone), 320):
            await c.transport.simulate_client_audio(session, tone[start : start + 320])
        await c.fake.user_speaks("what is the weather")
        await c.replies(session)
        received = c.fake.input_pcm16()
        audio = b"".join(chunk for sid, chunk in c.transport.sent_audio if sid == session.id)

    assert session.provider_session_id == c.fake.conversation_id
    assert c.finals(session) == [("user", "what is the weather"), ("assistant", "It is sunny.")]
    # 8 kHz µ-law up: what the agent decoded is the caller's tone.
    got = np.frombuffer(received[: len(tone)], dtype="<i2").astype(float)
    assert len(got) == len(tone) // 2
    assert np.max(np.abs(got - np.frombuffer(tone, dtype="<i2"))) < 300
    # 22.05 kHz down, resampled to the channel's 24 kHz: about 600 ms of reply.
    assert len(audio) / 2 / 24000 == pytest.approx(0.6, abs=0.03)


async def test_pings_are_answered_with_their_event_id() -> None:
    async with call({"ping_interval_s": 0.05}) as c:
        await c.channel.start_session("room-1", "caller")
        await c.fake.wait_for("pong", count=3)
        pongs = list(c.fake.pongs)
        pings = [e["ping_event"]["event_id"] for e in c.fake.sent if e.get("type") == "ping"]

    assert [pong["event_id"] for pong in pongs[:3]] == pings[:3]
    assert c.fake.unanswered_pings <= 1


async def test_a_client_tool_call_is_answered_with_its_result() -> None:
    async def handle_tool(name: str, arguments: dict[str, Any]) -> str:
        if name == "check_order":
            return json.dumps({"status": "shipped", "eta": "Tomorrow"})
        return json.dumps({"error": f"Unknown tool: {name}"})

    async with call(tool_handler=handle_tool) as c:
        session = await c.channel.start_session("room-1", "caller")
        c.fake.next_tool_call = ("check_order", {"order_id": "A1"})
        await c.fake.user_speaks("where is my order")
        await c.fake.wait_for("client_tool_result")
        await c.replies(session)
        c.fake.next_tool_call = ("launch_rocket", {})
        await c.fake.user_speaks("launch it")
        await c.fake.wait_for("client_tool_result", count=2)
        await c.channel.settle(session)

    first, second = c.fake.tool_results[:2]
    assert json.loads(first["result"]) == {"status": "shipped", "eta": "Tomorrow"}
    assert first["is_error"] is False
    assert second["is_error"] is True


async def test_the_channels_tools_are_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tools = [{"type": "function", "name": "x", "description": "", "parameters": {}}]
    async with call(tools=tools) as c:
        await c.channel.start_session("room-1", "caller")
        initiation = c.fake.initiation

    assert "tools" not in json.dumps(initiation)
    assert "ignored" in caplog.text


async def test_an_interruption_clears_audio_and_the_correction_fixes_the_transcript() -> None:
    long_reply = "Once upon a time there was a very long story that went on and on."
    async with call(
        {"next_reply": long_reply, "reply_audio_ms": 4000, "chunk_interval_s": 0.02}
    ) as c:
        session = await c.channel.start_session("room-1", "caller")
        await c.fake.user_speaks("tell me a story")
        await c.transport.wait_until(lambda: len(c.transport.sent_audio) >= 3)
        await c.fake.interrupt()
        await c.transport.wait_until(
            lambda: c.transport.messages_of(session, "transcript_corrected")
        )
        await c.channel.settle(session)
        (corrected,) = c.transport.messages_of(session, "transcript_corrected")
        stored = [t.text for t in c.store.transcripts if t.role == "assistant"]

    assert c.transport.messages_of(session, "clear_audio") == [{"type": "clear_audio"}]
    assert corrected["original"] == long_reply
    assert long_reply.startswith(corrected["text"].rstrip(".… "))
    assert len(corrected["text"]) < len(long_reply)
    assert stored == [corrected["text"]]  # the stored transcript is corrected too


async def test_injected_text_is_a_user_message_or_a_contextual_update() -> None:
    async with call() as c:
        session = await c.channel.start_session("room-1", "caller")
        await c.transport.simulate_client_message(session, "text", {"text": "Hello there"})
        await c.fake.wait_for("user_message")
        await c.channel.inject_text(session.id, "The caller is a VIP.", role="system")
        await c.fake.wait_for("contextual_update")
        await c.channel.settle(session)

    assert [e["text"] for e in c.fake.received if e.get("type") == "user_message"] == [
        "Hello there"
    ]
    assert c.fake.contextual_updates == ["The caller is a VIP."]


async def test_reconfigure_is_refused_with_a_clear_error() -> None:
    async with call() as c:
        session = await c.channel.start_session("room-1", "caller")
        with pytest.raises((ProviderError, SessionStateError, NotImplementedError)) as raised:
            await c.channel.reconfigure_session(session.id, system_prompt="Something else")

    assert "cannot reconfigure a live session" in str(raised.value)


async def test_a_dropped_connection_ends_the_session_with_a_clear_reason() -> None:
    async with call() as c:
        session = await c.channel.start_session("room-1", "caller")
        await c.fake.drop_connection()
        await c.transport.wait_until(lambda: session.is_ended)

    assert session.end_reason == "provider_error"
    reason, detail = c.store.ended[session.id]
    assert "cannot be resumed" in detail
    assert c.fake.connections == 1  # no reconnect attempt


async def test_an_override_the_agent_does_not_allow_fails_the_start_with_its_reason() -> None:
    async with call({"allowed_overrides": ["agent.prompt.prompt"]}, voice="some-voice") as c:
        with pytest.raises(ProviderError) as raised:
            await c.channel.start_session("room-1", "caller")

    assert raised.value.code == "override_error"
    assert "voice_id" in raised.value.message


async def test_a_private_agent_is_reached_through_a_signed_url() -> None:
    async with call({"requires_auth": True}, {"requires_auth": True}) as c:
        session = await c.channel.start_session("room-1", "caller")
        await c.fake.user_speaks("hello")
        await c.replies(session)

    (request,) = c.fake.http_requests
    assert "get-signed-url" in str(request)
    assert "conversation_signature=" in c.fake.request_paths[0]
    assert "xi-api-key" not in c.fake.request_headers[0]  # the signature is the credential


async def test_a_wrong_key_for_a_signed_url_fails_the_start_clearly() -> None:
    async with FakeElevenLabs(api_key=KEY, agent_id=AGENT, requires_auth=True) as fake:
        provider = ElevenLabsRealtimeProvider(
            ElevenLabsRealtimeConfig(
                api_key="xi-wrong", agent_id=AGENT, requires_auth=True, base_url=fake.ws_base_url
            )
        )
        session = LiveSession(room_id="room-1", participant_id="caller", channel_id="voice")
        with pytest.raises(ProviderError) as raised:
            await provider.connect(
                session,
                system_prompt=None,
                voice=None,
                tools=None,
                temperature=None,
                input_sample_rate=16000,
                output_sample_rate=16000,
            )

    assert raised.value.code == "invalid_api_key"
    assert "xi-wrong" not in str(raised.value)
