"""What the OpenAI and xAI providers share (providers/openai/base.py), run against each
vendor's fake server through the engine, as a live session would run.

Every test checks, at the end, that each client frame we sent passed the vendor's schema
(the official ``openai`` package's typed models for OpenAI; the xAI recipe of
provider-protocols.md §3.3 for xAI): the ``vendor`` fixture's validator runs on every frame
the fake receives.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from providers.openai import OpenAIRealtimeProvider
from providers.openai.base import RealtimeWireProvider
from providers.xai import XAIRealtimeProvider
from tests.fakes.openai_realtime import FakeOpenAIRealtime
from tests.fakes.wire_schema import validate_openai_client_event, validate_xai_client_event
from tests.fakes.xai_realtime import FakeXAIRealtime
from voice.channels import RealtimeVoiceChannel
from voice.kit import Tool
from voice.mock import MockRealtimeTransport
from voice.store import MemoryStore

pytestmark = pytest.mark.asyncio

FRAME_16K = b"\x10\x00" * 320  # 20 ms at 16 kHz
WEATHER = '{"city": "Paris", "temperature": 21}'


async def get_weather(city: str) -> str:
    return WEATHER


@dataclass
class Vendor:
    name: str
    fake_class: type[FakeOpenAIRealtime]
    provider_class: type[RealtimeWireProvider]
    api_key: str
    validator: Callable[[str | bytes], None]

    def fake(self, **options: Any) -> FakeOpenAIRealtime:
        return self.fake_class(api_key=self.api_key, client_validator=self.validator, **options)

    def provider(self, fake: FakeOpenAIRealtime, **options: Any) -> RealtimeWireProvider:
        provider: RealtimeWireProvider = self.provider_class(
            api_key=self.api_key, base_url=fake.base_url, **options
        )
        return provider


VENDORS = {
    "openai": Vendor(
        "openai",
        FakeOpenAIRealtime,
        OpenAIRealtimeProvider,
        "sk-test",
        validate_openai_client_event,
    ),
    "xai": Vendor(
        "xai", FakeXAIRealtime, XAIRealtimeProvider, "xai-test", validate_xai_client_event
    ),
}


@pytest.fixture(params=sorted(VENDORS))
def vendor(request: pytest.FixtureRequest) -> Vendor:
    return VENDORS[request.param]


@dataclass
class Call:
    fake: FakeOpenAIRealtime
    provider: RealtimeWireProvider
    channel: RealtimeVoiceChannel
    transport: MockRealtimeTransport
    store: MemoryStore
    reconnected: asyncio.Event

    async def wait_reconnected(self, timeout: float = 10) -> None:  # noqa: ASYNC109
        """Until the provider reports a reconnect (after the engine recorded it: the
        engine's callback was registered first, and callbacks run in order)."""
        async with asyncio.timeout(timeout):
            await self.reconnected.wait()


@pytest.fixture
def call_factory(vendor: Vendor) -> Callable[..., Any]:
    """``async with call_factory(fake_options..., channel options) as call``: a channel on
    the vendor's fake; on exit the channel is closed and every client frame must have
    passed the vendor's schema."""

    def make(
        fake_options: dict[str, Any] | None = None,
        provider_options: dict[str, Any] | None = None,
        **channel_options: Any,
    ) -> Any:
        return _call(vendor, fake_options or {}, provider_options or {}, channel_options)

    return make


class _call:
    def __init__(
        self,
        vendor: Vendor,
        fake_options: dict[str, Any],
        provider_options: dict[str, Any],
        channel_options: dict[str, Any],
    ) -> None:
        self.vendor = vendor
        self.fake = vendor.fake(**fake_options)
        self.provider_options = provider_options
        self.channel_options = channel_options

    async def __aenter__(self) -> Call:
        await self.fake.__aenter__()
        provider = self.vendor.provider(self.fake, **self.provider_options)
        transport = MockRealtimeTransport()
        store = MemoryStore()
        options: dict[str, Any] = {
            "system_prompt": "Be brief.",
            "tools": [
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
            **self.channel_options,
        }
        channel = RealtimeVoiceChannel(
            "voice", provider=provider, transport=transport, store=store, **options
        )
        reconnected = asyncio.Event()
        provider.on_reconnect(lambda session, info: reconnected.set())
        self.call = Call(self.fake, provider, channel, transport, store, reconnected)
        return self.call

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.call.channel.close()
        finally:
            await self.fake.__aexit__(None, None, None)
        if exc[0] is None:
            assert self.fake.invalid_client_frames == []


async def _reply_done(call: Call, session: Any, count: int = 1) -> None:
    """Wait until the caller has had ``count`` spoken replies, each to its end (its final
    transcript, then the end of its speaking)."""

    def replies() -> int:
        finals = [role for role, _ in _finals(call, session) if role == "assistant"]
        ended = call.transport.messages_of(session, "speaking").count(
            {"type": "speaking", "speaking": False, "who": "assistant"}
        )
        return min(len(finals), ended)

    await call.transport.wait_until(lambda: replies() >= count)
    await call.fake.wait_idle()
    await call.channel.settle(session)


def _finals(call: Call, session: Any) -> list[tuple[str, str]]:
    return [
        (m["role"], m["text"])
        for m in call.transport.messages_of(session, "transcription")
        if m["is_final"]
    ]


def _sent_types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events if e["type"] != "input_audio_buffer.append"]


# --- a conversation ----------------------------------------------------------------------------


async def test_a_spoken_turn_reaches_the_caller_as_transcripts_and_audio(
    call_factory: Callable[..., Any],
) -> None:
    async with call_factory({"next_reply": "Hi there."}) as call:
        session = await call.channel.start_session("room-1", "caller")
        for _ in range(10):
            await call.transport.simulate_client_audio(session, FRAME_16K)
        await call.fake.user_speaks("hello")
        await _reply_done(call, session)
        audio = b"".join(chunk for sid, chunk in call.transport.sent_audio if sid == session.id)

    assert _finals(call, session) == [("user", "hello"), ("assistant", "Hi there.")]
    partials = [
        m for m in call.transport.messages_of(session, "transcription") if not m["is_final"]
    ]
    assert {m["role"] for m in partials} == {"user", "assistant"}
    assert session.usage["responses"] == 1
    assert session.usage["total_tokens"] > 0
    # The fake's 600 ms reply reaches the caller whole, at the channel's output rate (24 kHz).
    assert len(audio) == pytest.approx(600 * 24 * 2, abs=2 * 24 * 2)
    assert call.fake.audio_bytes > 0


async def test_a_tool_call_is_answered_and_the_model_goes_on(
    call_factory: Callable[..., Any],
) -> None:
    async with call_factory() as call:
        session = await call.channel.start_session("room-1", "caller")
        call.fake.next_tool_call = ("get_weather", {"city": "Paris"})
        await call.fake.user_speaks("weather in Paris?")
        await call.fake.wait_for("response.create", count=1)
        await _reply_done(call, session)

    assert [output["output"] for output in call.fake.tool_outputs] == [WEATHER]
    types = _sent_types(call.fake.received)
    assert types[-2:] == ["conversation.item.create", "response.create"]
    assert [record.status for record in call.store.tool_calls.values()] == ["succeeded"]


async def test_barge_in_truncates_the_reply_at_what_was_heard(
    call_factory: Callable[..., Any],
) -> None:
    async with call_factory({"reply_audio_ms": 2000, "chunk_interval_s": 0.02}) as call:
        session = await call.channel.start_session("room-1", "caller")
        await call.fake.user_speaks("tell me a story")
        await call.transport.wait_until(lambda: len(call.transport.sent_audio) >= 3)
        await call.transport.simulate_playback(session, 100)

        await call.fake.user_speaks("stop")
        truncate = (await call.fake.wait_for("conversation.item.truncate"))[0]
        await call.fake.wait_idle()
        await call.channel.settle(session)

    assert truncate["content_index"] == 0
    assert truncate["audio_end_ms"] == 100
    assert call.transport.messages_of(session, "clear_audio") == [{"type": "clear_audio"}]
    assert call.transport.messages_of(session, "error") == []


async def test_barge_in_before_anything_was_heard_deletes_the_reply(
    call_factory: Callable[..., Any],
) -> None:
    async with call_factory({"reply_audio_ms": 2000, "chunk_interval_s": 0.02}) as call:
        session = await call.channel.start_session("room-1", "caller")
        await call.fake.user_speaks("tell me a story")
        await call.transport.wait_until(lambda: len(call.transport.sent_audio) >= 2)
        await call.transport.simulate_playback(session, 0)  # queued, not yet played

        await call.fake.user_speaks("stop")
        delete = (await call.fake.wait_for("conversation.item.delete"))[0]
        await call.fake.wait_idle()
        await call.channel.settle(session)

    assert "conversation.item.truncate" not in call.fake.received_types()
    assert delete["item_id"] not in call.fake.items
    assert call.transport.messages_of(session, "error") == []


async def test_a_truncate_past_the_generated_audio_is_clamped(
    call_factory: Callable[..., Any],
) -> None:
    async with call_factory({"reply_audio_ms": 2000, "chunk_interval_s": 0.02}) as call:
        session = await call.channel.start_session("room-1", "caller")
        await call.fake.user_speaks("tell me a story")
        await call.transport.wait_until(lambda: len(call.transport.sent_audio) >= 3)
        # The client claims more than the model has generated (clock skew, a buggy client).
        await call.transport.simulate_playback(session, 60_000)

        await call.fake.user_speaks("stop")
        truncate = (await call.fake.wait_for("conversation.item.truncate"))[0]
        await call.fake.wait_idle()
        await call.channel.settle(session)

    assert 0 < truncate["audio_end_ms"] < 2000
    assert call.fake.truncations == [truncate]  # accepted: no error from the server
    assert call.transport.messages_of(session, "error") == []


async def test_manual_turns_commit_and_ask_for_a_reply_when_the_caller_ends_the_turn(
    call_factory: Callable[..., Any], vendor: Vendor
) -> None:
    manual = {"turn_detection": None} if vendor.name == "openai" else {"turn_detection_type": None}
    async with call_factory(provider_config=manual) as call:
        session = await call.channel.start_session("room-1", "caller")
        for _ in range(10):  # 200 ms of speech
            await call.transport.simulate_client_audio(session, FRAME_16K)
        await call.transport.simulate_client_message(session, "end_turn")
        await call.fake.wait_for("response.create")
        await _reply_done(call, session)

    (started,) = call.transport.messages_of(session, "session_started")
    assert started["turn_detection"] == "manual"  # the page shows its "Done speaking" button
    types = _sent_types(call.fake.received)
    assert types[-2:] == ["input_audio_buffer.commit", "response.create"]
    assert "input_audio_buffer.speech_started" not in call.fake.sent_types()
    assert _finals(call, session)[-1][0] == "assistant"


# --- errors ------------------------------------------------------------------------------------


async def test_a_non_fatal_error_is_reported_and_the_session_goes_on(
    call_factory: Callable[..., Any],
) -> None:
    async with call_factory() as call:
        session = await call.channel.start_session("room-1", "caller")
        await call.fake.send_error(None, "The server had an error.", "server_error")
        await call.transport.wait_until(lambda: call.transport.messages_of(session, "error"))
        await call.fake.user_speaks("are you there?")
        await _reply_done(call, session)
        live = session.is_active

    assert call.transport.messages_of(session, "error") == [
        {"type": "error", "code": "server_error", "message": "The server had an error."}
    ]
    assert live
    assert _finals(call, session)[-1][0] == "assistant"


async def test_a_documented_harmless_error_is_only_logged(
    call_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with call_factory() as call:
        session = await call.channel.start_session("room-1", "caller")
        await call.fake.send_error(
            "response_cancel_not_active", "Cancellation failed: no active response found."
        )
        await call.fake.user_speaks("hello")
        await _reply_done(call, session)
        live = session.is_active

    assert call.transport.messages_of(session, "error") == []
    assert "response_cancel_not_active" in caplog.text
    assert live


async def test_a_quota_error_ends_the_session_with_a_clear_reason(
    call_factory: Callable[..., Any],
) -> None:
    async with call_factory() as call:
        session = await call.channel.start_session("room-1", "caller")
        await call.fake.send_error(
            "insufficient_quota", "You exceeded your current quota.", "insufficient_quota"
        )
        await call.transport.wait_until(lambda: session.is_ended)

    assert session.end_reason == "provider_error"
    assert call.store.ended[session.id] == (
        "provider_error",
        "insufficient_quota: You exceeded your current quota.",
    )


# --- reconnection ------------------------------------------------------------------------------


async def test_a_dropped_connection_is_restored_with_the_conversation_so_far(
    call_factory: Callable[..., Any],
) -> None:
    async with call_factory({"next_reply": "It is sunny."}) as call:
        session = await call.channel.start_session("room-1", "caller")
        call.fake.next_tool_call = ("get_weather", {"city": "Paris"})
        await call.fake.user_speaks("weather in Paris?")
        await _reply_done(call, session)

        await call.fake.drop_connection()
        # Audio the caller sends during the gap reaches the new session.
        for _ in range(25):
            await call.transport.simulate_client_audio(session, FRAME_16K)
        await call.fake.wait_for_connections(2)
        await call.wait_reconnected()
        await call.fake.user_speaks("and tomorrow?")
        await _reply_done(call, session, count=2)
        told = [
            m["type"]
            for _, m in call.transport.sent_messages
            if m["type"] in ("error", "session_ended")
        ]

    first, second = call.fake.received_per_connection[:2]
    assert first[0]["type"] == second[0]["type"] == "session.update"
    assert first[0]["session"] == second[0]["session"]  # same prompt, voice, tools, audio
    restored = [e["item"] for e in second if e["type"] == "conversation.item.create"]
    assert [item["type"] for item in restored] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert restored[0]["role"] == "user"
    assert restored[0]["content"][0]["text"] == "weather in Paris?"
    assert restored[1]["name"] == "get_weather"
    assert restored[2]["output"] == WEATHER
    assert restored[3]["role"] == "assistant"
    assert restored[3]["content"] == [{"type": "output_text", "text": "It is sunny."}]
    gap_audio = sum(
        len(base64.b64decode(e["audio"]))
        for e in second
        if e["type"] == "input_audio_buffer.append"
    )
    assert gap_audio > 0
    # The caller heard no end and no error; the reconnect is recorded.
    assert told == []
    (info,) = session.reconnects
    assert info["reason"] == "connection_lost"
    assert info["attempts"] >= 1
    assert call.store.reconnects == [(session.id, info)]
    assert _finals(call, session)[-1] == ("assistant", "It is sunny.")


async def test_a_reply_cut_by_the_drop_is_asked_for_again(
    call_factory: Callable[..., Any],
) -> None:
    async with call_factory({"reply_audio_ms": 3000, "chunk_interval_s": 0.02}) as call:
        session = await call.channel.start_session("room-1", "caller")
        await call.fake.user_speaks("tell me a story")
        await call.transport.wait_until(lambda: len(call.transport.sent_audio) >= 3)
        await call.fake.drop_connection()
        await call.fake.wait_for_connections(2)
        await call.wait_reconnected()
        await call.fake.wait_for("response.create")
        await _reply_done(call, session)  # the reply asked for again (the cut one has no end)
        live = session.is_active

    second = call.fake.received_per_connection[1]
    assert _sent_types(second)[-1] == "response.create"
    assert live


async def test_a_reconnect_that_keeps_failing_ends_the_session(
    call_factory: Callable[..., Any],
) -> None:
    async with call_factory() as call:
        session = await call.channel.start_session("room-1", "caller")
        call.fake.api_key = "revoked"  # every new connection is refused
        await call.fake.drop_connection()
        await call.transport.wait_until(lambda: session.is_ended)

    assert session.end_reason == "provider_error"
    reason, detail = call.store.ended[session.id]
    assert detail.startswith("connection_lost: ")
    assert "could not be restored" in detail
    assert call.transport.messages_of(session, "error")[-1]["code"] == "connection_lost"


async def test_the_session_moves_to_a_fresh_one_before_the_vendor_limit(
    call_factory: Callable[..., Any],
) -> None:
    async with call_factory() as call:
        call.provider.session_max_s = 6.0
        call.provider.rollover_margin_s = 5.5  # roll over 0.5 s after connecting
        session = await call.channel.start_session("room-1", "caller")
        await call.fake.user_speaks("hello")
        await _reply_done(call, session)
        await call.fake.wait_for_connections(2, timeout=10)
        await call.wait_reconnected()
        await call.fake.user_speaks("still there?")
        await _reply_done(call, session, count=2)

    assert session.reconnects[0]["reason"] == "session_limit"
    restored = [
        e["item"]
        for e in call.fake.received_per_connection[1]
        if e["type"] == "conversation.item.create"
    ]
    assert [item["role"] for item in restored] == ["user", "assistant"]
    assert call.transport.messages_of(session, "error") == []


async def test_the_vendor_expiring_the_session_opens_a_fresh_one(
    call_factory: Callable[..., Any],
) -> None:
    async with call_factory() as call:
        session = await call.channel.start_session("room-1", "caller")
        await call.fake.expire_session()
        await call.fake.wait_for_connections(2)
        await call.wait_reconnected()
        live = session.is_active

    assert session.reconnects[0]["reason"] == "session_expired"
    assert call.transport.messages_of(session, "error") == []
    assert live


async def test_a_tool_result_that_arrives_during_the_gap_reaches_the_new_session(
    call_factory: Callable[..., Any],
) -> None:
    gate = asyncio.Event()

    async def slow_weather(city: str) -> str:
        await gate.wait()
        return WEATHER

    tool = Tool(
        name="get_weather",
        description="Weather for a city",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
        handler=slow_weather,
    )
    async with call_factory(tools=[tool]) as call:
        session = await call.channel.start_session("room-1", "caller")
        call.fake.next_tool_call = ("get_weather", {"city": "Paris"})
        await call.fake.user_speaks("weather in Paris?")
        await call.transport.wait_until(lambda: call.store.tool_calls)
        await call.fake.wait_idle()

        await call.fake.drop_connection()
        await call.fake.wait_for_connections(2)
        await call.wait_reconnected()
        gate.set()
        await call.fake.wait_for("response.create")
        await _reply_done(call, session)

    second = [
        e for e in call.fake.received_per_connection[1] if e["type"] == "conversation.item.create"
    ]
    kinds = [e["item"]["type"] for e in second]
    # The running call was held back at the restore, then sent with its result.
    assert kinds[-2:] == ["function_call", "function_call_output"]
    assert second[-2]["item"]["call_id"] == second[-1]["item"]["call_id"]
    assert call.fake.tool_outputs[-1]["output"] == WEATHER


async def test_reconfigure_patches_the_live_session_and_survives_a_reconnect(
    call_factory: Callable[..., Any],
) -> None:
    async with call_factory() as call:
        session = await call.channel.start_session("room-1", "caller")
        await call.channel.reconfigure_session(session, system_prompt="Speak French.")
        updates = await call.fake.wait_for("session.update", count=2)
        connections_before = call.fake.connections

        await call.fake.drop_connection()
        await call.fake.wait_for_connections(2)
        await call.wait_reconnected()

    assert connections_before == 1  # the patch itself did not reconnect
    assert updates[1]["session"]["instructions"] == "Speak French."
    assert "tools" not in updates[1]["session"]
    restored_update = call.fake.received_per_connection[1][0]
    assert restored_update["session"]["instructions"] == "Speak French."
    assert [t["name"] for t in restored_update["session"]["tools"]] == ["get_weather"]
