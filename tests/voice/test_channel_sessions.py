"""RealtimeVoiceChannel: the session life cycle (start is all or nothing, end,
reconfigure, disconnects, provider errors, shutdown) and the lifecycle hooks."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tests.fixtures.engine import GatedConnectProvider, make_engine
from voice.channels import RealtimeVoiceChannel
from voice.events import SessionEndedEvent, SessionStartedEvent
from voice.kit import HookContext, HookTrigger, RoomKit, Tool
from voice.mock import MockRealtimeProvider, MockRealtimeTransport
from voice.session import LiveSession, SessionState, SessionStateError
from voice.store import MemoryStore

pytestmark = pytest.mark.timeout(10)

WAIT_S = 2.0
FRAME = b"\x01\x00" * 320  # 20 ms of 16 kHz PCM16


class FailingActivationStore(MemoryStore):
    async def session_activated(self, session: LiveSession) -> None:
        raise RuntimeError("database is down")


def build(
    **options: Any,
) -> tuple[RealtimeVoiceChannel, MockRealtimeProvider, MockRealtimeTransport, MemoryStore]:
    channel, provider, transport, store, _ = make_engine(**options)
    return channel, provider, transport, store


def methods(double: MockRealtimeProvider | MockRealtimeTransport) -> list[str]:
    return [call.method for call in double.calls]


def only_session(store: MemoryStore) -> LiveSession:
    [session] = store.sessions.values()
    return session


async def noop_handler(**arguments: Any) -> str:
    return "ok"


# -- starting -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_start_session_goes_active_and_tells_the_client() -> None:
    channel, provider, transport, store = build()

    session = await channel.start_session("room-1", "user-1", connection="conn-1")

    assert session.state is SessionState.ACTIVE
    assert session.activated_at is not None
    assert channel.sessions == [session]
    assert channel.get_session(session.id) is session
    assert transport.accepted == {session.id: "conn-1"}
    assert provider.connected == {session.id}
    assert transport.sent_messages == [
        (
            session.id,
            {"type": "session_started", "session_id": session.id, "turn_detection": "provider"},
        )
    ]
    assert store.sessions == {session.id: session}
    await channel.close()


@pytest.mark.asyncio
async def test_connect_gets_rates_prompt_voice_tools_and_merged_provider_config() -> None:
    tool = Tool(name="get_weather", description="Weather", handler=noop_handler)
    channel, provider, _, _ = build(
        system_prompt="You are helpful.",
        voice="alloy",
        tools=[tool, {"type": "web_search"}],
        temperature=0.7,
        input_sample_rate=24000,
        output_sample_rate=16000,
        provider_config={"turn_detection": {"type": "server_vad"}, "language": "en"},
    )

    session = await channel.start_session(
        "room-1",
        "user-1",
        metadata={
            "system_prompt": "Override prompt",
            "voice": "echo",
            "provider_config": {"language": "fr", "first_message": "Bonjour!"},
        },
    )

    [connect] = [call for call in provider.calls if call.method == "connect"]
    assert connect.session_id == session.id
    assert connect.kwargs == {
        "system_prompt": "Override prompt",
        "voice": "echo",
        "tools": [tool.definition, {"type": "web_search"}],
        "temperature": 0.7,
        "input_sample_rate": 24000,
        "output_sample_rate": 16000,
        "server_vad": True,
        "provider_config": {
            "turn_detection": {"type": "server_vad"},
            "language": "fr",
            "first_message": "Bonjour!",
        },
    }
    assert channel.provider_config == {"turn_detection": {"type": "server_vad"}, "language": "en"}
    await channel.close()


@pytest.mark.asyncio
async def test_connect_gets_the_channel_settings_when_the_session_has_no_overrides() -> None:
    channel, provider, _, _ = build(system_prompt="Be brief.", voice="alloy")

    await channel.start_session("room-1", "user-1")

    [connect] = [call for call in provider.calls if call.method == "connect"]
    assert connect.kwargs["system_prompt"] == "Be brief."
    assert connect.kwargs["voice"] == "alloy"
    assert connect.kwargs["tools"] is None
    assert connect.kwargs["temperature"] is None
    assert connect.kwargs["provider_config"] == {}
    await channel.close()


@pytest.mark.asyncio
async def test_a_provider_config_override_that_is_not_a_dict_is_refused_up_front() -> None:
    channel, provider, transport, store = build()

    with pytest.raises(TypeError, match=r"metadata\['provider_config'\] must be a dict"):
        await channel.start_session("room-1", "user-1", metadata={"provider_config": "fr"})

    assert provider.calls == []
    assert transport.calls == []
    assert store.sessions == {}


@pytest.mark.asyncio
async def test_a_failed_provider_connect_ends_the_session_and_tells_the_transport() -> None:
    channel, provider, transport, store = build()
    provider.fail_connect = RuntimeError("boom")

    with pytest.raises(RuntimeError, match="^boom$"):
        await channel.start_session("room-1", "user-1")

    session = only_session(store)
    assert session.state is SessionState.ENDED
    assert session.end_reason == "connect_failed"
    assert transport.sent_messages == [
        (
            session.id,
            {
                "type": "error",
                "code": "connect_failed",
                "message": "the voice provider could not be reached",
            },
        ),
        (session.id, {"type": "session_ended", "reason": "connect_failed"}),
    ]
    assert methods(transport) == ["accept", "disconnect"]
    assert methods(provider) == ["connect", "disconnect"]
    assert provider.connected == set()
    assert transport.accepted == {}
    assert channel.sessions == []
    assert channel.get_session(session.id) is None
    assert store.ended == {session.id: ("connect_failed", "RuntimeError: boom")}


@pytest.mark.asyncio
async def test_a_failed_transport_accept_ends_the_session_without_connecting_the_provider() -> None:
    channel, provider, transport, store = build()
    transport.fail_accept = ConnectionError("socket closed")

    with pytest.raises(ConnectionError, match="^socket closed$"):
        await channel.start_session("room-1", "user-1")

    session = only_session(store)
    assert session.state is SessionState.ENDED
    assert session.end_reason == "connect_failed"
    assert [message["type"] for _, message in transport.sent_messages] == [
        "error",
        "session_ended",
    ]
    assert methods(transport) == ["accept", "disconnect"]
    assert methods(provider) == ["disconnect"]
    assert channel.sessions == []
    assert store.ended == {session.id: ("connect_failed", "ConnectionError: socket closed")}


@pytest.mark.asyncio
async def test_cancelling_a_start_during_connect_cleans_up_and_propagates_the_cancellation() -> (
    None
):
    provider = GatedConnectProvider()
    channel, _, transport, store = build(provider=provider)
    start = asyncio.create_task(channel.start_session("room-1", "user-1"))
    await asyncio.wait_for(provider.connect_entered.wait(), WAIT_S)

    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start

    session = only_session(store)
    assert session.state is SessionState.ENDED
    assert session.end_reason == "connect_failed"
    assert [message["type"] for _, message in transport.sent_messages] == [
        "error",
        "session_ended",
    ]
    assert methods(transport) == ["accept", "disconnect"]
    assert methods(provider) == ["disconnect"]
    assert provider.connected == set()
    assert channel.sessions == []
    assert store.ended == {session.id: ("connect_failed", "cancelled while connecting")}


@pytest.mark.asyncio
async def test_a_store_failure_after_connect_still_leaves_no_half_started_session() -> None:
    channel, provider, transport, store = build(store=FailingActivationStore())

    with pytest.raises(RuntimeError, match="^database is down$"):
        await channel.start_session("room-1", "user-1")

    session = only_session(store)
    assert session.state is SessionState.ENDED
    assert session.end_reason == "connect_failed"
    assert channel.sessions == []
    assert provider.connected == set()
    assert methods(transport) == ["accept", "disconnect"]
    assert store.ended == {session.id: ("connect_failed", "RuntimeError: database is down")}
    assert transport.messages_of(session, "session_started") == []


@pytest.mark.asyncio
async def test_ending_a_session_while_it_connects_makes_the_start_fail_and_disconnects() -> None:
    provider = GatedConnectProvider()
    channel, _, transport, store = build(provider=provider)
    start = asyncio.create_task(channel.start_session("room-1", "user-1"))
    await asyncio.wait_for(provider.connect_entered.wait(), WAIT_S)
    session = only_session(store)

    assert await channel.end_session(session.id) is True
    provider.release_connect.set()
    with pytest.raises(SessionStateError, match="ended while connecting"):
        await asyncio.wait_for(start, WAIT_S)

    assert session.state is SessionState.ENDED
    assert session.end_reason == "ended_by_operator"
    assert channel.sessions == []
    assert provider.connected == set()
    assert store.ended == {session.id: ("ended_by_operator", "")}
    assert transport.messages_of(session, "session_started") == []
    assert transport.messages_of(session, "session_ended") == [
        {"type": "session_ended", "reason": "ended_by_operator"}
    ]


# -- ending -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_end_session_ends_once_and_the_second_call_is_a_no_op() -> None:
    channel, provider, transport, store = build()
    session = await channel.start_session("room-1", "user-1")

    first = await channel.end_session(session.id)
    messages, provider_calls, transport_calls = (
        list(transport.sent_messages),
        list(provider.calls),
        list(transport.calls),
    )
    second = await channel.end_session(session.id)

    assert (first, second) == (True, False)
    assert session.state is SessionState.ENDED
    assert session.end_reason == "ended_by_operator"
    assert transport.messages_of(session, "session_ended") == [
        {"type": "session_ended", "reason": "ended_by_operator"}
    ]
    assert transport.sent_messages == messages
    assert provider.calls == provider_calls
    assert transport.calls == transport_calls
    assert store.ended == {session.id: ("ended_by_operator", "")}


@pytest.mark.asyncio
async def test_end_session_of_an_unknown_id_returns_false() -> None:
    channel, provider, transport, _ = build()

    assert await channel.end_session("no-such-session") is False
    assert provider.calls == []
    assert transport.sent_messages == []


@pytest.mark.asyncio
async def test_end_session_disconnects_both_sides() -> None:
    channel, provider, transport, _ = build()
    session = await channel.start_session("room-1", "user-1")

    await channel.end_session(session, reason="agent_handoff")

    assert session.end_reason == "agent_handoff"
    assert methods(provider) == ["connect", "disconnect"]
    assert methods(transport) == ["accept", "disconnect"]
    assert provider.connected == set()
    assert channel.sessions == []


@pytest.mark.asyncio
async def test_reconfiguring_an_ended_session_raises_and_reaches_no_provider() -> None:
    channel, provider, _, _ = build()
    session = await channel.start_session("room-1", "user-1")
    await channel.end_session(session.id)

    with pytest.raises(SessionStateError, match=f"cannot reconfigure session {session.id}"):
        await channel.reconfigure_session(session.id, voice="shimmer")

    assert "reconfigure" not in methods(provider)


@pytest.mark.asyncio
async def test_reconfigure_of_a_live_session_reaches_the_provider() -> None:
    channel, provider, _, _ = build()
    session = await channel.start_session("room-1", "user-1")

    await channel.reconfigure_session(session.id, system_prompt="Billing.", temperature=0.2)

    [call] = [call for call in provider.calls if call.method == "reconfigure"]
    assert call.kwargs == {
        "system_prompt": "Billing.",
        "voice": None,
        "tools": None,
        "temperature": 0.2,
        "provider_config": None,
    }
    await channel.close()


@pytest.mark.asyncio
async def test_a_client_disconnect_ends_the_session_with_client_hangup() -> None:
    channel, provider, transport, store = build()
    session = await channel.start_session("room-1", "user-1")

    await transport.simulate_client_disconnect(session)

    assert session.state is SessionState.ENDED
    assert session.end_reason == "client_hangup"
    assert store.ended == {session.id: ("client_hangup", "")}
    assert provider.connected == set()
    assert channel.sessions == []


@pytest.mark.asyncio
async def test_a_fatal_provider_error_tells_the_client_then_ends_the_session() -> None:
    channel, provider, transport, store = build()
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_error(session, "rate_limited", "too many requests", fatal=True)

    assert session.state is SessionState.ENDED
    assert session.end_reason == "provider_error"
    assert [message for _, message in transport.sent_messages][1:] == [
        {"type": "error", "code": "rate_limited", "message": "too many requests"},
        {"type": "session_ended", "reason": "provider_error"},
    ]
    assert store.ended == {session.id: ("provider_error", "rate_limited: too many requests")}
    assert provider.connected == set()
    assert channel.sessions == []


@pytest.mark.asyncio
async def test_a_non_fatal_provider_error_is_reported_and_the_session_stays_active() -> None:
    channel, provider, transport, store = build()
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_error(session, "transient", "a hiccup", fatal=False)
    await transport.simulate_client_audio(session, FRAME)

    assert session.state is SessionState.ACTIVE
    assert transport.messages_of(session, "error") == [
        {"type": "error", "code": "transient", "message": "a hiccup"}
    ]
    assert transport.messages_of(session, "session_ended") == []
    assert provider.sent_audio == [(session.id, FRAME)]
    assert store.ended == {}
    await channel.close()


@pytest.mark.asyncio
async def test_close_ends_every_session_with_server_shutdown() -> None:
    channel, provider, _, store = build()
    first = await channel.start_session("room-1", "user-1")
    second = await channel.start_session("room-2", "user-2")

    await channel.close()

    assert (first.state, second.state) == (SessionState.ENDED, SessionState.ENDED)
    assert (first.end_reason, second.end_reason) == ("server_shutdown", "server_shutdown")
    assert store.ended == {first.id: ("server_shutdown", ""), second.id: ("server_shutdown", "")}
    assert channel.sessions == []
    assert provider.connected == set()


@pytest.mark.asyncio
async def test_events_for_an_ended_session_are_ignored() -> None:
    channel, provider, transport, store = build()
    session = await channel.start_session("room-1", "user-1")
    await channel.end_session(session.id)
    messages = list(transport.sent_messages)

    await provider.simulate_audio(session, FRAME)
    await provider.simulate_transcription(session, "late", role="assistant")
    await provider.simulate_tool_call(session, "call-1", "lookup", {})
    await transport.simulate_client_audio(session, FRAME)

    assert transport.sent_audio == []
    assert transport.sent_messages == messages
    assert provider.sent_audio == []
    assert provider.tool_results == []
    assert store.transcripts == []
    assert store.tool_calls == {}


# -- lifecycle hooks ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_session_started_and_session_ended_hooks_fire_with_the_reason() -> None:
    kit = RoomKit()
    channel, _, _, _ = build()
    kit.register_channel(channel)
    seen: list[tuple[str, Any]] = []

    @kit.hook(HookTrigger.ON_SESSION_STARTED)
    async def started(event: SessionStartedEvent, ctx: HookContext) -> None:
        seen.append(("started", (event.session, event.channel_id, ctx.room_id)))

    @kit.hook(HookTrigger.ON_SESSION_ENDED)
    async def ended(event: SessionEndedEvent, ctx: HookContext) -> None:
        seen.append(("ended", (event.session, event.reason)))

    session = await channel.start_session("room-1", "user-1")
    await kit.hooks.drain(WAIT_S)
    assert seen == [("started", (session, "voice", "room-1"))]

    await channel.end_session(session.id, reason="agent_handoff")
    await kit.hooks.drain(WAIT_S)
    assert seen == [
        ("started", (session, "voice", "room-1")),
        ("ended", (session, "agent_handoff")),
    ]
    await kit.close()


@pytest.mark.asyncio
async def test_a_failed_start_fires_no_session_started_hook() -> None:
    kit = RoomKit()
    channel, provider, _, _ = build()
    kit.register_channel(channel)
    seen: list[Any] = []

    @kit.hook(HookTrigger.ON_SESSION_STARTED)
    async def started(event: SessionStartedEvent, ctx: HookContext) -> None:
        seen.append(event)

    provider.fail_connect = RuntimeError("boom")
    with pytest.raises(RuntimeError):
        await channel.start_session("room-1", "user-1")
    await kit.hooks.drain(WAIT_S)

    assert seen == []
    await kit.close()


@pytest.mark.asyncio
async def test_speech_start_and_end_hooks_fire_and_the_client_is_told() -> None:
    kit = RoomKit()
    channel, provider, transport, _ = build()
    kit.register_channel(channel)
    seen: list[tuple[str, LiveSession]] = []

    @kit.hook(HookTrigger.ON_SPEECH_START)
    async def speech_start(event: LiveSession, ctx: HookContext) -> None:
        seen.append(("start", event))

    @kit.hook(HookTrigger.ON_SPEECH_END)
    async def speech_end(event: LiveSession, ctx: HookContext) -> None:
        seen.append(("end", event))

    session = await channel.start_session("room-1", "user-1")
    await provider.simulate_speech_start(session)
    await provider.simulate_speech_end(session)

    assert seen == [("start", session), ("end", session)]
    assert transport.messages_of(session, "speaking") == [
        {"type": "speaking", "speaking": True, "who": "user"},
        {"type": "speaking", "speaking": False, "who": "user"},
    ]
    await kit.close()


@pytest.mark.asyncio
async def test_an_async_hook_that_raises_is_logged_and_the_session_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kit = RoomKit()
    channel, provider, transport, _ = build()
    kit.register_channel(channel)

    @kit.hook(HookTrigger.ON_SPEECH_START, name="broken")
    async def broken(event: LiveSession, ctx: HookContext) -> None:
        raise RuntimeError("hook bug")

    session = await channel.start_session("room-1", "user-1")
    with caplog.at_level(logging.ERROR, logger="voice.hooks"):
        await provider.simulate_speech_start(session)
    await transport.simulate_client_audio(session, FRAME)
    await provider.simulate_transcription(session, "still here", role="assistant")

    assert [r.getMessage() for r in caplog.records if r.name == "voice.hooks"] == [
        "hook broken on ON_SPEECH_START failed"
    ]
    assert session.state is SessionState.ACTIVE
    assert provider.sent_audio == [(session.id, FRAME)]
    assert transport.messages_of(session, "speaking") == [
        {"type": "speaking", "speaking": True, "who": "user"}
    ]
    assert transport.messages_of(session, "transcription") == [
        {"type": "transcription", "text": "still here", "role": "assistant", "is_final": True}
    ]
    await kit.close()


@pytest.mark.asyncio
async def test_reconfigure_refuses_an_out_of_range_temperature_and_sends_nothing() -> None:
    from voice.channels import RealtimeVoiceChannel
    from voice.mock import MockRealtimeProvider, MockRealtimeTransport

    provider = MockRealtimeProvider()
    channel = RealtimeVoiceChannel("voice", provider=provider, transport=MockRealtimeTransport())
    session = await channel.start_session("room-1", "user-1")

    with pytest.raises(ValueError, match="temperature"):
        await channel.reconfigure_session(session.id, temperature=3.5)

    assert [call for call in provider.calls if call.method == "reconfigure"] == []
    await channel.end_session(session.id)


@pytest.mark.asyncio
async def test_usage_of_each_response_is_added_up_for_the_session() -> None:
    engine = make_engine()
    session = await engine.channel.start_session("room-1", "user-1")

    await engine.provider.simulate_usage(
        session,
        {"total_tokens": 30, "input_token_details": {"audio_tokens": 20, "cached_tokens": 0}},
    )
    await engine.provider.simulate_usage(
        session,
        {"total_tokens": 12, "input_token_details": {"audio_tokens": 5, "cached_tokens": 4}},
    )
    await engine.provider.simulate_usage(session, "not a dict")  # ignored
    await engine.channel.end_session(session)

    assert session.usage == {
        "total_tokens": 42,
        "input_token_details": {"audio_tokens": 25, "cached_tokens": 4},
        "responses": 2,
    }
