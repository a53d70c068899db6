"""RealtimeVoiceChannel transcripts: partials, finals through ON_TRANSCRIPTION (block, modify,
fail-closed), what is stored and with which status, and the order of transcripts and the tool
calls that follow them."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

import voice.channels
from tests.fixtures.engine import make_engine
from voice.channels import RealtimeVoiceChannel
from voice.events import TranscriptionEvent
from voice.kit import HookContext, HookResult, HookTrigger, RoomKit, Tool
from voice.mock import MockRealtimeProvider, MockRealtimeTransport
from voice.session import SessionState
from voice.store import BindingSnapshot, MemoryStore, StoredToolCall, StoredTranscript

pytestmark = pytest.mark.timeout(10)

WAIT_S = 2.0
NOT_HAPPENING_S = 0.1  # how long a negative check gives the engine to do the wrong thing


class OrderedStore(MemoryStore):
    """Remembers the order in which transcripts and tool calls reach the store."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []

    async def transcript(self, record: StoredTranscript) -> None:
        self.order.append(f"transcript:{record.text}")
        await super().transcript(record)

    async def tool_call_started(self, record: StoredToolCall) -> None:
        self.order.append(f"tool:{record.call_id}")
        await super().tool_call_started(record)


class FrozenDatetime(datetime):
    """Stands in for ``datetime`` inside voice.channels; ``now()`` is whatever the test says."""

    current = datetime(2025, 1, 1, tzinfo=UTC)

    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return cls.current


def build(
    **options: Any,
) -> tuple[RealtimeVoiceChannel, MockRealtimeProvider, MockRealtimeTransport, MemoryStore, RoomKit]:
    channel, provider, transport, store, kit = make_engine(with_kit=True, **options)
    assert kit is not None
    return channel, provider, transport, store, kit


def final(text: str, role: str = "user") -> dict[str, Any]:
    return {"type": "transcription", "text": text, "role": role, "is_final": True}


def stored(store: MemoryStore) -> list[tuple[str, str, str, str, str]]:
    return [(t.role, t.participant_id, t.text, t.status, t.blocked_by) for t in store.transcripts]


# -- partials and finals ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_partial_transcript_is_forwarded_and_not_stored() -> None:
    channel, provider, transport, store, kit = build()
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_transcription(session, "Hel", role="user", is_final=False)

    assert transport.messages_of(session, "transcription") == [
        {"type": "transcription", "text": "Hel", "role": "user", "is_final": False}
    ]
    assert store.transcripts == []
    await kit.close()


@pytest.mark.asyncio
async def test_a_partial_transcript_does_not_run_on_transcription_hooks() -> None:
    channel, provider, _, _, kit = build()
    seen: list[str] = []

    @kit.hook(HookTrigger.ON_TRANSCRIPTION)
    async def moderation(event: TranscriptionEvent, ctx: HookContext) -> None:
        seen.append(event.text)

    session = await channel.start_session("room-1", "user-1")
    await provider.simulate_transcription(session, "Hel", role="user", is_final=False)

    assert seen == []
    await kit.close()


@pytest.mark.asyncio
async def test_final_transcripts_are_sent_and_stored_as_delivered() -> None:
    channel, provider, transport, store, kit = build()
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_transcription(session, "Hello", role="user")
    await provider.simulate_transcription(session, "Hi! How can I help?", role="assistant")

    assert transport.messages_of(session, "transcription") == [
        final("Hello"),
        final("Hi! How can I help?", role="assistant"),
    ]
    assert stored(store) == [
        ("user", "user-1", "Hello", "delivered", ""),
        ("assistant", "", "Hi! How can I help?", "delivered", ""),
    ]
    assert {(t.session_id, t.room_id) for t in store.transcripts} == {(session.id, "room-1")}
    await kit.close()


@pytest.mark.asyncio
async def test_emit_transcription_events_false_stores_nothing_but_still_tells_the_client() -> None:
    channel, provider, transport, store, kit = build(emit_transcription_events=False)
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_transcription(session, "Hello", role="user")

    assert store.transcripts == []
    assert transport.messages_of(session, "transcription") == [final("Hello")]
    await kit.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
async def test_a_blank_final_transcript_is_not_stored(text: str) -> None:
    channel, provider, _, store, kit = build()
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_transcription(session, text, role="assistant")

    assert store.transcripts == []
    await kit.close()


# -- ON_TRANSCRIPTION: block, modify, fail closed -------------------------------------------


@pytest.mark.asyncio
async def test_a_blocking_hook_keeps_the_transcript_from_the_client_and_stores_it_blocked() -> None:
    channel, provider, transport, store, kit = build()

    @kit.hook(HookTrigger.ON_TRANSCRIPTION, name="moderation")
    async def moderation(event: TranscriptionEvent, ctx: HookContext) -> HookResult:
        return HookResult.block("profanity")

    session = await channel.start_session("room-1", "user-1")
    await provider.simulate_transcription(session, "something rude", role="user")

    assert transport.messages_of(session, "transcription") == []
    assert stored(store) == [("user", "user-1", "something rude", "blocked", "hook:moderation")]
    await kit.close()


@pytest.mark.asyncio
async def test_a_hook_that_modifies_with_a_string_changes_what_the_client_and_store_get() -> None:
    channel, provider, transport, store, kit = build()

    @kit.hook(HookTrigger.ON_TRANSCRIPTION)
    async def redact(event: TranscriptionEvent, ctx: HookContext) -> HookResult:
        return HookResult.modify(event.text.replace("4111", "****"))

    session = await channel.start_session("room-1", "user-1")
    await provider.simulate_transcription(session, "my card is 4111", role="user")

    assert transport.messages_of(session, "transcription") == [final("my card is ****")]
    assert stored(store) == [("user", "user-1", "my card is ****", "delivered", "")]
    await kit.close()


@pytest.mark.asyncio
async def test_a_hook_that_modifies_with_an_event_changes_what_the_client_and_store_get() -> None:
    channel, provider, transport, store, kit = build()

    @kit.hook(HookTrigger.ON_TRANSCRIPTION)
    async def translate(event: TranscriptionEvent, ctx: HookContext) -> HookResult:
        return HookResult.modify(dataclasses.replace(event, text="Bonjour"))

    session = await channel.start_session("room-1", "user-1")
    await provider.simulate_transcription(session, "Hello", role="assistant")

    assert transport.messages_of(session, "transcription") == [final("Bonjour", role="assistant")]
    assert stored(store) == [("assistant", "", "Bonjour", "delivered", "")]
    await kit.close()


@pytest.mark.asyncio
async def test_a_hook_that_raises_blocks_the_transcript_and_says_so_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel, provider, transport, store, kit = build()

    @kit.hook(HookTrigger.ON_TRANSCRIPTION, name="broken")
    async def broken(event: TranscriptionEvent, ctx: HookContext) -> None:
        raise RuntimeError("hook bug")

    session = await channel.start_session("room-1", "user-1")
    with caplog.at_level(logging.INFO):
        await provider.simulate_transcription(session, "Hello", role="user")

    assert transport.messages_of(session, "transcription") == []
    assert stored(store) == [("user", "user-1", "Hello", "blocked", "hook:broken")]
    messages = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert (
        "voice.hooks",
        logging.ERROR,
        "hook broken on ON_TRANSCRIPTION failed; blocking (fail-closed trigger)",
    ) in messages
    assert (
        "voice.channels",
        logging.INFO,
        "transcript blocked by hook broken: hook broken failed: RuntimeError: hook bug",
    ) in messages
    assert session.state is SessionState.ACTIVE
    await kit.close()


@pytest.mark.asyncio
async def test_a_hook_that_times_out_blocks_the_transcript() -> None:
    channel, provider, transport, store, kit = build()
    never = asyncio.Event()

    @kit.hook(HookTrigger.ON_TRANSCRIPTION, name="slow", timeout=0.05)
    async def slow(event: TranscriptionEvent, ctx: HookContext) -> None:
        await never.wait()

    session = await channel.start_session("room-1", "user-1")
    await provider.simulate_transcription(session, "Hello", role="user")

    assert transport.messages_of(session, "transcription") == []
    assert stored(store) == [("user", "user-1", "Hello", "blocked", "hook:slow")]
    await kit.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("binding", "blocked_by"),
    [
        (BindingSnapshot(muted=True), "source_muted"),
        (BindingSnapshot(access="read_only"), "source_read_only"),
    ],
)
async def test_a_user_final_from_a_participant_who_may_not_speak_is_stored_blocked(
    binding: BindingSnapshot, blocked_by: str
) -> None:
    channel, provider, _, store, kit = build()
    session = await channel.start_session("room-1", "user-1")

    channel.apply_binding("room-1", "user-1", binding)
    await provider.simulate_transcription(session, "said before the mute", role="user")
    await provider.simulate_transcription(session, "the reply", role="assistant")

    assert stored(store) == [
        ("user", "user-1", "said before the mute", "blocked", blocked_by),
        ("assistant", "", "the reply", "delivered", ""),
    ]
    await kit.close()


# -- order and timing -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_transcripts_are_handled_in_arrival_order_even_when_a_hook_is_slow() -> None:
    channel, provider, transport, store, kit = build()
    first_entered, release_first, second_seen = asyncio.Event(), asyncio.Event(), asyncio.Event()
    seen: list[str] = []

    @kit.hook(HookTrigger.ON_TRANSCRIPTION)
    async def slow_for_the_first(event: TranscriptionEvent, ctx: HookContext) -> None:
        seen.append(event.text)
        if event.text == "first":
            first_entered.set()
            await release_first.wait()
        else:
            second_seen.set()

    session = await channel.start_session("room-1", "user-1")
    await provider._fire("transcription", session, "first", "user", True)
    await provider._fire("transcription", session, "second", "assistant", True)
    await asyncio.wait_for(first_entered.wait(), WAIT_S)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(second_seen.wait(), NOT_HAPPENING_S)
    release_first.set()
    await channel.settle(session)

    assert seen == ["first", "second"]
    assert [t.text for t in store.transcripts] == ["first", "second"]
    assert transport.messages_of(session, "transcription") == [
        final("first"),
        final("second", role="assistant"),
    ]
    await kit.close()


@pytest.mark.asyncio
async def test_a_tool_call_after_a_user_final_starts_only_after_that_final_was_handled() -> None:
    tool_started, release_hook = asyncio.Event(), asyncio.Event()

    async def lookup(**arguments: Any) -> str:
        tool_started.set()
        return "found"

    store = OrderedStore()
    channel, provider, _, _, kit = build(store=store, tools=[Tool(name="lookup", handler=lookup)])

    @kit.hook(HookTrigger.ON_TRANSCRIPTION)
    async def slow(event: TranscriptionEvent, ctx: HookContext) -> None:
        await release_hook.wait()

    session = await channel.start_session("room-1", "user-1")
    await provider._fire("transcription", session, "look it up", "user", True)
    await provider._fire("tool_call", session, "call-1", "lookup", {})
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(tool_started.wait(), NOT_HAPPENING_S)
    release_hook.set()
    await channel.settle(session)

    assert store.order == ["transcript:look it up", "tool:call-1"]
    assert provider.tool_results == [(session.id, "call-1", "found")]
    await kit.close()


@pytest.mark.asyncio
async def test_a_user_final_is_dated_at_the_start_of_speech_and_an_assistant_final_when_heard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(voice.channels, "datetime", FrozenDatetime)
    channel, provider, _, store, kit = build()
    session = await channel.start_session("room-1", "user-1")
    spoke_at = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    transcribed_at = datetime(2025, 1, 1, 12, 0, 3, tzinfo=UTC)

    monkeypatch.setattr(FrozenDatetime, "current", spoke_at)
    await provider.simulate_speech_start(session)
    monkeypatch.setattr(FrozenDatetime, "current", transcribed_at)
    await provider.simulate_speech_end(session)
    await provider.simulate_transcription(session, "What's the time?", role="user")
    await provider.simulate_transcription(session, "Noon.", role="assistant")

    assert [(t.role, t.occurred_at) for t in store.transcripts] == [
        ("user", spoke_at),
        ("assistant", transcribed_at),
    ]
    await kit.close()


@pytest.mark.asyncio
async def test_a_user_final_after_a_barge_in_is_marked_as_one() -> None:
    channel, provider, _, _, kit = build()
    barge_ins: list[tuple[str, bool]] = []

    @kit.hook(HookTrigger.ON_TRANSCRIPTION)
    async def record(event: TranscriptionEvent, ctx: HookContext) -> None:
        barge_ins.append((event.text, event.was_barge_in))

    session = await channel.start_session("room-1", "user-1")
    await provider.simulate_response_start(session)
    await provider.simulate_audio(session, b"\x01\x00" * 240)
    await provider.simulate_speech_start(session)
    await provider.simulate_transcription(session, "Stop, wait", role="user")
    await provider.simulate_transcription(session, "Next turn", role="user")

    assert barge_ins == [("Stop, wait", True), ("Next turn", False)]
    await kit.close()


@pytest.mark.asyncio
async def test_a_final_in_its_hook_when_the_session_ends_is_still_stored() -> None:
    channel, provider, _, store, kit = build()
    hook_entered, release_hook = asyncio.Event(), asyncio.Event()

    @kit.hook(HookTrigger.ON_TRANSCRIPTION)
    async def slow(event: TranscriptionEvent, ctx: HookContext) -> None:
        hook_entered.set()
        await release_hook.wait()

    session = await channel.start_session("room-1", "user-1")
    await provider._fire("transcription", session, "Goodbye", "user", True)
    await asyncio.wait_for(hook_entered.wait(), WAIT_S)
    ending = asyncio.create_task(channel.end_session(session.id, reason="client_hangup"))
    release_hook.set()
    assert await asyncio.wait_for(ending, WAIT_S) is True

    assert stored(store) == [("user", "user-1", "Goodbye", "delivered", "")]
    assert session.state is SessionState.ENDED
    await kit.close()
