"""RealtimeVoiceChannel and the caller's control messages ("text", "interrupt", "end"), the
caller's credential capping the channel binding (metadata["permissions"]), the "access"
message an effective binding change sends, and ending a session whose provider never
connects."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.fixtures.engine import GatedConnectProvider, make_engine
from voice.channels import RealtimeVoiceChannel
from voice.events import TranscriptionEvent
from voice.kit import HookContext, HookResult, HookTrigger, RoomKit
from voice.mock import MockRealtimeProvider, MockRealtimeTransport
from voice.session import LiveSession, SessionState, SessionStateError
from voice.store import BindingSnapshot, MemoryStore

pytestmark = pytest.mark.timeout(10)

WAIT_S = 2.0
FRAME = b"\x01\x00" * 320  # 20 ms of 16 kHz PCM16
REPLY_CHUNK = b"\xe8\x03" * 2400  # 100 ms at the provider's 24 kHz


class CancelRecordingProvider(GatedConnectProvider):
    """connect() waits for a release that never comes, and says when it was cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.connect_cancelled = asyncio.Event()

    async def connect(self, session: LiveSession, **options: Any) -> None:
        try:
            await super().connect(session, **options)
        except asyncio.CancelledError:
            self.connect_cancelled.set()
            raise


def build(
    **options: Any,
) -> tuple[RealtimeVoiceChannel, MockRealtimeProvider, MockRealtimeTransport, MemoryStore]:
    channel, provider, transport, store, _ = make_engine(**options)
    return channel, provider, transport, store


def build_with_kit(
    **options: Any,
) -> tuple[RealtimeVoiceChannel, MockRealtimeProvider, MockRealtimeTransport, MemoryStore, RoomKit]:
    channel, provider, transport, store, kit = make_engine(with_kit=True, **options)
    assert kit is not None
    return channel, provider, transport, store, kit


def stored(store: MemoryStore) -> list[tuple[str, str, str, str, str, str, str]]:
    return [
        (t.kind, t.session_id, t.participant_id, t.role, t.text, t.status, t.blocked_by)
        for t in store.transcripts
    ]


def methods(provider: MockRealtimeProvider) -> list[str]:
    return [call.method for call in provider.calls]


def stats(channel: RealtimeVoiceChannel, session: LiveSession) -> dict[str, int]:
    return channel._runtimes[session.id].stats


def access_message(binding: BindingSnapshot) -> dict[str, Any]:
    return {
        "type": "access",
        "access": binding.access,
        "muted": binding.muted,
        "output_muted": binding.output_muted,
        "can_speak": binding.can_speak,
        "can_hear": binding.can_hear,
    }


BLOCKED = {"type": "error", "code": "message_blocked", "message": "your message was not passed on"}


async def start_connecting(
    channel: RealtimeVoiceChannel, provider: GatedConnectProvider, store: MemoryStore
) -> tuple[asyncio.Task[LiveSession], LiveSession]:
    """A start held in CONNECTING (provider.connect waits for its release)."""
    start = asyncio.create_task(channel.start_session("room-1", "user-1"))
    await asyncio.wait_for(provider.connect_entered.wait(), WAIT_S)
    [session] = store.sessions.values()
    assert session.state is SessionState.CONNECTING
    return start, session


# -- "text" ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_typed_text_while_active_reaches_the_model_the_client_and_the_store() -> None:
    channel, provider, transport, store = build()
    session = await channel.start_session("room-1", "user-1")

    await transport.simulate_client_message(session, "text", {"text": "What is the weather?"})

    assert provider.injected_texts == [(session.id, "What is the weather?", "user", False)]
    assert transport.messages_of(session, "transcription") == [
        {"type": "transcription", "text": "What is the weather?", "role": "user", "is_final": True}
    ]
    assert transport.messages_of(session, "error") == []
    assert stored(store) == [
        ("message", session.id, "user-1", "user", "What is the weather?", "delivered", "")
    ]
    assert store.transcripts[0].room_id == "room-1"
    await channel.close()


@pytest.mark.asyncio
async def test_typed_text_is_handled_in_order_with_the_transcripts_before_it() -> None:
    channel, provider, transport, store = build()
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_transcription(session, "spoken first", role="user")
    await transport.simulate_client_message(session, "text", {"text": "typed second"})

    assert [(t.kind, t.text) for t in store.transcripts] == [
        ("transcript", "spoken first"),
        ("message", "typed second"),
    ]
    await channel.close()


@pytest.mark.asyncio
async def test_typed_text_blocked_by_a_transcription_hook_is_refused_and_kept_as_blocked() -> None:
    channel, provider, transport, store, kit = build_with_kit()
    seen: list[tuple[str, str, bool]] = []

    @kit.hook(HookTrigger.ON_TRANSCRIPTION, name="moderation")
    async def moderation(event: TranscriptionEvent, ctx: HookContext) -> HookResult:
        seen.append((event.text, event.role, event.is_final))
        return HookResult.block("profanity")

    session = await channel.start_session("room-1", "user-1")
    await transport.simulate_client_message(session, "text", {"text": "something rude"})

    assert seen == [("something rude", "user", True)]
    assert provider.injected_texts == []
    assert "inject_text" not in methods(provider)
    assert transport.messages_of(session, "transcription") == []
    assert transport.messages_of(session, "error") == [BLOCKED]
    assert stored(store) == [
        ("message", session.id, "user-1", "user", "something rude", "blocked", "hook:moderation")
    ]
    await kit.close()


@pytest.mark.asyncio
async def test_typed_text_modified_by_a_transcription_hook_is_passed_on_modified() -> None:
    channel, provider, transport, store, kit = build_with_kit()

    @kit.hook(HookTrigger.ON_TRANSCRIPTION)
    async def redact(event: TranscriptionEvent, ctx: HookContext) -> HookResult:
        return HookResult.modify(event.text.replace("4111", "****"))

    session = await channel.start_session("room-1", "user-1")
    await transport.simulate_client_message(session, "text", {"text": "card 4111"})

    assert provider.injected_texts == [(session.id, "card ****", "user", False)]
    assert [m["text"] for m in transport.messages_of(session, "transcription")] == ["card ****"]
    assert stored(store) == [
        ("message", session.id, "user-1", "user", "card ****", "delivered", "")
    ]
    await kit.close()


@pytest.mark.asyncio
async def test_typed_text_from_a_muted_caller_is_blocked_as_source_muted() -> None:
    channel, provider, transport, store = build()
    session = await channel.start_session("room-1", "user-1")
    assert channel.apply_binding("room-1", "user-1", BindingSnapshot(muted=True)) == 1

    await transport.simulate_client_message(session, "text", {"text": "let me in"})

    assert provider.injected_texts == []
    assert transport.messages_of(session, "transcription") == []
    assert transport.messages_of(session, "error") == [
        {
            "type": "error",
            "code": "message_blocked",
            "message": "your message was not passed on (you are muted)",
        }
    ]
    assert stored(store) == [
        ("message", session.id, "user-1", "user", "let me in", "blocked", "source_muted")
    ]
    await channel.close()


@pytest.mark.asyncio
async def test_typed_text_from_a_read_only_caller_is_blocked_as_source_read_only() -> None:
    channel, provider, transport, store = build()
    session = await channel.start_session("room-1", "user-1")
    channel.apply_binding("room-1", "user-1", BindingSnapshot(access="read_only"))

    await transport.simulate_client_message(session, "text", {"text": "hello?"})

    assert provider.injected_texts == []
    assert transport.messages_of(session, "error") == [BLOCKED]
    assert stored(store) == [
        ("message", session.id, "user-1", "user", "hello?", "blocked", "source_read_only")
    ]
    await channel.close()


@pytest.mark.asyncio
async def test_typed_text_is_not_stored_when_transcription_events_are_off() -> None:
    channel, provider, transport, store = build(emit_transcription_events=False)
    session = await channel.start_session("room-1", "user-1")

    await transport.simulate_client_message(session, "text", {"text": "hi"})

    assert provider.injected_texts == [(session.id, "hi", "user", False)]
    assert store.transcripts == []
    await channel.close()


# -- "interrupt" ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_interrupt_stops_the_provider_and_barges_in_on_the_reply() -> None:
    channel, provider, transport, _ = build()
    session = await channel.start_session("room-1", "user-1")
    await provider.simulate_response_start(session)
    await provider.simulate_audio(session, REPLY_CHUNK)
    await transport.simulate_playback(session, 40)

    await transport.simulate_client_message(session, "interrupt")
    await provider.simulate_audio(session, REPLY_CHUNK)  # the rest of the interrupted reply

    assert methods(provider) == ["connect", "interrupt", "truncate_audio"]
    assert provider.truncations == [(session.id, 40)]
    assert transport.messages_of(session, "clear_audio") == [{"type": "clear_audio"}]
    assert [call.method for call in transport.calls].count("interrupt") == 1
    assert [audio for _, audio in transport.sent_audio] == [REPLY_CHUNK]
    assert session.is_active
    await channel.close()


@pytest.mark.asyncio
async def test_interrupt_with_no_reply_audio_stops_the_provider_but_clears_nothing() -> None:
    channel, provider, transport, _ = build()
    session = await channel.start_session("room-1", "user-1")

    await transport.simulate_client_message(session, "interrupt")

    assert methods(provider) == ["connect", "interrupt"]
    assert transport.messages_of(session, "clear_audio") == []
    assert "interrupt" not in [call.method for call in transport.calls]
    await channel.close()


# -- "end" ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_end_ends_the_session_as_ended_by_caller() -> None:
    channel, provider, transport, store = build()
    session = await channel.start_session("room-1", "user-1")

    await transport.simulate_client_message(session, "end")

    assert session.state is SessionState.ENDED
    assert session.end_reason == "ended_by_caller"
    assert transport.messages_of(session, "session_ended") == [
        {"type": "session_ended", "reason": "ended_by_caller"}
    ]
    assert store.ended == {session.id: ("ended_by_caller", "")}
    assert provider.connected == set()
    assert [call.method for call in transport.calls] == ["accept", "disconnect"]
    assert channel.sessions == []


@pytest.mark.asyncio
async def test_end_after_the_session_ended_does_nothing() -> None:
    channel, provider, transport, store = build()
    session = await channel.start_session("room-1", "user-1")
    await channel.end_session(session, reason="agent_handoff")
    messages, calls = list(transport.sent_messages), list(provider.calls)

    await transport.simulate_client_message(session, "end")

    assert transport.sent_messages == messages
    assert provider.calls == calls
    assert store.ended == {session.id: ("agent_handoff", "")}


@pytest.mark.asyncio
async def test_end_while_connecting_ends_the_session_and_the_start_fails() -> None:
    provider = GatedConnectProvider()
    channel, _, transport, store = build(provider=provider)
    start, session = await start_connecting(channel, provider, store)

    await transport.simulate_client_message(session, "end")
    provider.release_connect.set()
    with pytest.raises(SessionStateError, match="ended while connecting"):
        await asyncio.wait_for(start, WAIT_S)

    assert session.end_reason == "ended_by_caller"
    assert store.ended == {session.id: ("ended_by_caller", "")}
    assert transport.messages_of(session, "session_started") == []
    assert channel.sessions == []


# -- not live -------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(("kind", "fields"), [("text", {"text": "too early"}), ("interrupt", {})])
async def test_text_or_interrupt_before_the_session_is_active_is_answered_not_live(
    kind: str, fields: dict[str, Any]
) -> None:
    provider = GatedConnectProvider()
    channel, _, transport, store = build(provider=provider)
    start, session = await start_connecting(channel, provider, store)

    await transport.simulate_client_message(session, kind, fields)

    assert transport.messages_of(session, "error") == [
        {"type": "error", "code": "not_live", "message": f"the session is not live ({kind})"}
    ]
    assert provider.calls == []  # connect() has not even recorded itself yet
    assert provider.injected_texts == []
    assert store.transcripts == []
    assert session.state is SessionState.CONNECTING
    provider.release_connect.set()
    await asyncio.wait_for(start, WAIT_S)
    assert methods(provider) == ["connect"]
    await channel.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(("kind", "fields"), [("text", {"text": "too late"}), ("interrupt", {})])
async def test_text_or_interrupt_after_the_end_is_answered_not_live(
    kind: str, fields: dict[str, Any]
) -> None:
    channel, provider, transport, store = build()
    session = await channel.start_session("room-1", "user-1")
    await channel.end_session(session)
    calls = list(provider.calls)

    await transport.simulate_client_message(session, kind, fields)

    assert transport.messages_of(session, "error") == [
        {"type": "error", "code": "not_live", "message": f"the session is not live ({kind})"}
    ]
    assert provider.calls == calls
    assert store.transcripts == []


# -- the caller's credential caps the binding ------------------------------------------------


@pytest.mark.asyncio
async def test_a_listen_only_credential_drops_the_callers_audio_but_lets_them_hear() -> None:
    channel, provider, transport, _ = build()
    session = await channel.start_session("room-1", "user-1", metadata={"permissions": ["listen"]})
    binding = channel._runtimes[session.id].binding

    await transport.simulate_client_audio(session, FRAME)
    await provider.simulate_response_start(session)
    await provider.simulate_audio(session, REPLY_CHUNK)

    assert (binding.can_speak, binding.can_hear) == (False, True)
    assert provider.sent_audio == []
    assert stats(channel, session)["inbound_dropped_access"] == 1
    assert [audio for _, audio in transport.sent_audio] == [REPLY_CHUNK]
    assert stats(channel, session)["outbound_dropped_output_muted"] == 0
    await channel.close()


@pytest.mark.asyncio
async def test_a_speak_only_credential_mutes_the_output_but_lets_the_caller_speak() -> None:
    channel, provider, transport, _ = build()
    session = await channel.start_session("room-1", "user-1", metadata={"permissions": ["speak"]})
    binding = channel._runtimes[session.id].binding

    await transport.simulate_client_audio(session, FRAME)
    await provider.simulate_response_start(session)
    await provider.simulate_audio(session, REPLY_CHUNK)

    assert binding == BindingSnapshot(access="read_write", muted=False, output_muted=True)
    assert [audio for _, audio in provider.sent_audio] == [FRAME]
    assert stats(channel, session)["inbound_dropped_access"] == 0
    assert transport.sent_audio == []
    assert stats(channel, session)["outbound_dropped_output_muted"] == 1
    await channel.close()


@pytest.mark.asyncio
async def test_a_credential_caps_the_stored_binding_at_start() -> None:
    store = MemoryStore()
    store.bindings[("room-1", "user-1")] = BindingSnapshot(access="read_only")
    channel, _, _, _ = build(store=store)

    session = await channel.start_session("room-1", "user-1", metadata={"permissions": ["speak"]})

    assert channel._runtimes[session.id].binding == BindingSnapshot(
        access="read_only", muted=False, output_muted=True
    )
    await channel.close()


@pytest.mark.asyncio
async def test_a_credential_caps_a_binding_applied_later_and_never_widens_it() -> None:
    channel, provider, transport, _ = build()
    session = await channel.start_session("room-1", "user-1", metadata={"permissions": ["listen"]})

    channel.apply_binding("room-1", "user-1", BindingSnapshot(access="read_write"))
    await transport.simulate_client_audio(session, FRAME)

    assert channel._runtimes[session.id].binding == BindingSnapshot(muted=True)
    assert provider.sent_audio == []
    assert stats(channel, session)["inbound_dropped_access"] == 1
    await channel.close()


# -- the "access" message -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_apply_binding_tells_the_client_once_for_the_same_snapshot_applied_twice() -> None:
    channel, _, transport, _ = build()
    session = await channel.start_session("room-1", "user-1")
    muted = BindingSnapshot(muted=True)

    first = channel.apply_binding("room-1", "user-1", muted)
    second = channel.apply_binding("room-1", "user-1", muted)
    await channel.settle(session)

    assert (first, second) == (1, 1)
    assert transport.messages_of(session, "access") == [
        {
            "type": "access",
            "access": "read_write",
            "muted": True,
            "output_muted": False,
            "can_speak": False,
            "can_hear": True,
        }
    ]
    await channel.close()


@pytest.mark.asyncio
async def test_apply_binding_tells_the_client_each_time_the_binding_changes() -> None:
    channel, _, transport, _ = build()
    session = await channel.start_session("room-1", "user-1")
    changes = [
        BindingSnapshot(muted=True),
        BindingSnapshot(access="none"),
        BindingSnapshot(),
    ]

    for binding in changes:
        channel.apply_binding("room-1", "user-1", binding)
        await channel.settle(session)

    assert transport.messages_of(session, "access") == [access_message(b) for b in changes]
    assert transport.messages_of(session, "access")[1] == {
        "type": "access",
        "access": "none",
        "muted": False,
        "output_muted": False,
        "can_speak": False,
        "can_hear": False,
    }
    await channel.close()


@pytest.mark.asyncio
async def test_apply_binding_of_the_binding_the_session_already_has_sends_nothing() -> None:
    channel, _, transport, _ = build()
    session = await channel.start_session("room-1", "user-1")

    assert channel.apply_binding("room-1", "user-1", BindingSnapshot()) == 1
    await channel.settle(session)

    assert transport.messages_of(session, "access") == []
    await channel.close()


@pytest.mark.asyncio
async def test_a_mute_that_the_credential_already_implies_sends_nothing() -> None:
    channel, _, transport, _ = build()
    session = await channel.start_session("room-1", "user-1", metadata={"permissions": ["listen"]})

    assert channel.apply_binding("room-1", "user-1", BindingSnapshot(muted=True)) == 1
    await channel.settle(session)

    assert transport.messages_of(session, "access") == []
    await channel.close()


@pytest.mark.asyncio
async def test_apply_binding_reaches_only_that_participant_in_that_room() -> None:
    channel, _, transport, _ = build()
    target = await channel.start_session("room-1", "user-1")
    other_user = await channel.start_session("room-1", "user-2")
    other_room = await channel.start_session("room-2", "user-1")

    reached = channel.apply_binding("room-1", "user-1", BindingSnapshot(muted=True))
    for session in (target, other_user, other_room):
        await channel.settle(session)

    assert reached == 1
    assert transport.messages_of(target, "access") == [access_message(BindingSnapshot(muted=True))]
    assert transport.messages_of(other_user, "access") == []
    assert transport.messages_of(other_room, "access") == []
    assert channel._runtimes[other_user.id].binding == BindingSnapshot()
    assert channel._runtimes[other_room.id].binding == BindingSnapshot()
    await channel.close()


# -- ending a session whose provider never connects -----------------------------------------


@pytest.mark.asyncio
async def test_end_session_during_a_connect_that_never_returns_cancels_it_and_fails_the_start() -> (
    None
):
    provider = CancelRecordingProvider()
    channel, _, transport, store = build(provider=provider)
    start, session = await start_connecting(channel, provider, store)

    ended = await asyncio.wait_for(channel.end_session(session, reason="room_closed"), WAIT_S)
    with pytest.raises(SessionStateError, match=f"^session {session.id} ended while connecting$"):
        await asyncio.wait_for(start, WAIT_S)

    assert ended is True
    assert provider.connect_cancelled.is_set()
    assert not provider.release_connect.is_set()
    assert "connect" not in methods(provider)  # the mock's own connect never ran
    assert provider.connected == set()
    assert session.state is SessionState.ENDED
    assert session.end_reason == "room_closed"
    assert store.ended == {session.id: ("room_closed", "")}
    assert transport.messages_of(session, "session_ended") == [
        {"type": "session_ended", "reason": "room_closed"}
    ]
    assert transport.messages_of(session, "session_started") == []
    assert transport.messages_of(session, "error") == []
    assert channel.sessions == []
    assert channel.get_session(session.id) is None
