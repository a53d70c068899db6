"""The hook engine (voice.hook_engine): registration, the SYNC chain, ASYNC observers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from voice.events import ToolCallEvent, TranscriptionEvent
from voice.hook_engine import (
    DEFAULT_EXECUTION,
    HookContext,
    HookEngine,
    HookExecution,
    HookResult,
    HookTrigger,
)
from voice.kit import RoomKit
from voice.session import LiveSession

pytestmark = pytest.mark.timeout(10)

T = HookTrigger


@pytest.fixture
def session() -> LiveSession:
    return LiveSession(room_id="room-1", participant_id="user-1", channel_id="voice")


@pytest.fixture
def ctx(session: LiveSession) -> HookContext:
    return HookContext(kit=RoomKit(), room_id="room-1", channel_id="voice", session=session)


@pytest.fixture
def engine() -> HookEngine:
    return HookEngine()


def transcript(session: LiveSession, text: str = "hello there") -> TranscriptionEvent:
    return TranscriptionEvent(
        session=session, text=text, role="user", is_final=True, channel_id="voice"
    )


def tool_call(session: LiveSession) -> ToolCallEvent:
    return ToolCallEvent(
        session=session,
        tool_call_id="call-1",
        name="get_weather",
        arguments={"city": "Paris"},
        channel_id="voice",
    )


def hook_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "voice.hooks"]


def traceback_of(record: logging.LogRecord) -> str:
    """The logged traceback (the project's redacting filter moves exc_info to exc_text)."""
    if record.exc_info:
        return logging.Formatter().formatException(record.exc_info)
    return record.exc_text or ""


# -- triggers, modes, results ------------------------------------------------------------


def test_triggers_are_the_eleven_realtime_triggers() -> None:
    assert [t.name for t in HookTrigger] == [
        "ON_TRANSCRIPTION",
        "ON_PARTIAL_TRANSCRIPTION",
        "ON_TOOL_CALL",
        "ON_SPEECH_START",
        "ON_SPEECH_END",
        "ON_BARGE_IN",
        "ON_SESSION_STARTED",
        "ON_SESSION_ENDED",
        "ON_INPUT_AUDIO_LEVEL",
        "ON_OUTPUT_AUDIO_LEVEL",
        "ON_ERROR",
        "ON_DTMF",
    ]


def test_only_transcription_and_tool_call_default_to_sync() -> None:
    sync = {t for t, mode in DEFAULT_EXECUTION.items() if mode is HookExecution.SYNC}

    assert sync == {T.ON_TRANSCRIPTION, T.ON_TOOL_CALL}
    assert len(DEFAULT_EXECUTION) == 12


def test_a_sync_hook_on_an_async_only_trigger_is_refused_at_registration(
    engine: HookEngine,
) -> None:
    async def on_speech(event: Any, ctx: HookContext) -> None:
        return None

    with pytest.raises(
        ValueError,
        match="ON_SPEECH_START hooks run asynchronously; execution=SYNC is only allowed on "
        "ON_TOOL_CALL, ON_TRANSCRIPTION",
    ):
        engine.register(T.ON_SPEECH_START, on_speech, execution=HookExecution.SYNC)

    assert engine.has_hooks(T.ON_SPEECH_START) is False


def test_an_async_observer_may_listen_on_a_sync_trigger(engine: HookEngine) -> None:
    async def observer(event: Any, ctx: HookContext) -> None:
        return None

    engine.register(T.ON_TRANSCRIPTION, observer, execution="async")

    [registration] = engine.registrations(T.ON_TRANSCRIPTION)
    assert registration.execution is HookExecution.ASYNC


def test_register_returns_the_function_and_names_it_by_its_dotted_path(
    engine: HookEngine,
) -> None:
    async def observer(event: Any, ctx: HookContext) -> None:
        return None

    assert engine.register(T.ON_SPEECH_END, observer) is observer
    [registration] = engine.registrations(T.ON_SPEECH_END)
    assert registration.name == f"{__name__}.{observer.__qualname__}"
    assert registration.priority == 0
    assert registration.timeout is None


def test_register_refuses_bad_arguments(engine: HookEngine) -> None:
    def hook(event: Any, ctx: HookContext) -> None:
        return None

    with pytest.raises(TypeError, match="a hook must be callable"):
        engine.register(T.ON_ERROR, "not a function")  # type: ignore[type-var]
    with pytest.raises(ValueError, match="'ON_NOTHING' is not a valid HookTrigger"):
        engine.register("ON_NOTHING", hook)
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
        engine.register(T.ON_ERROR, hook, timeout=0)
    with pytest.raises(TypeError, match="priority must be an int"):
        engine.register(T.ON_ERROR, hook, priority=1.5)  # type: ignore[arg-type]

    assert engine.registrations() == []


def test_a_name_is_unique_per_trigger_and_unregister_removes_it_everywhere(
    engine: HookEngine,
) -> None:
    def hook(event: Any, ctx: HookContext) -> None:
        return None

    engine.register(T.ON_SPEECH_START, hook, name="speech")
    engine.register(T.ON_SPEECH_END, hook, name="speech")
    with pytest.raises(ValueError, match="'speech' is already registered on ON_SPEECH_START"):
        engine.register(T.ON_SPEECH_START, hook, name="speech")

    assert engine.unregister("speech") == 2
    assert engine.unregister("speech") == 0
    assert engine.has_hooks(T.ON_SPEECH_START) is False
    assert engine.has_hooks(T.ON_SPEECH_END) is False


def test_has_hooks_sees_sync_and_async_registrations(engine: HookEngine) -> None:
    def hook(event: Any, ctx: HookContext) -> None:
        return None

    assert engine.has_hooks(T.ON_TOOL_CALL) is False
    engine.register(T.ON_TOOL_CALL, hook, name="sync")
    engine.register(T.ON_BARGE_IN, hook, name="async")

    assert engine.has_hooks(T.ON_TOOL_CALL) is True
    assert engine.has_hooks(T.ON_BARGE_IN) is True
    assert engine.has_hooks(T.ON_TRANSCRIPTION) is False


def test_hook_result_constructors_and_the_seed_form() -> None:
    assert HookResult.allow() == HookResult(action="allow")
    assert HookResult.block("no") == HookResult(action="block", reason="no")
    assert HookResult.modify("x") == HookResult(action="modify", event="x")
    seed = HookResult(action="allow", metadata={"result": '{"t": 72}'})
    assert seed.action == "allow"
    assert seed.metadata == {"result": '{"t": 72}'}
    assert seed.reason is None
    assert seed.event is None


def test_hook_result_validates_its_action() -> None:
    with pytest.raises(ValueError, match="a 'block' HookResult needs a reason"):
        HookResult(action="block")
    with pytest.raises(ValueError, match="a 'block' HookResult needs a reason"):
        HookResult.block("")
    with pytest.raises(ValueError, match="a 'modify' HookResult needs the replacement event"):
        HookResult(action="modify")
    with pytest.raises(ValueError, match="unknown hook action 'deny'"):
        HookResult(action="deny")


def test_the_default_timeout_is_five_seconds_and_configurable() -> None:
    engine = HookEngine()
    assert engine.default_timeout == 5.0

    engine.default_timeout = 0.5
    assert engine.default_timeout == 0.5
    with pytest.raises(ValueError, match="default_timeout must be a positive number"):
        engine.default_timeout = -1
    with pytest.raises(ValueError, match="default_timeout must be a positive number"):
        HookEngine(default_timeout=0)


# -- the SYNC chain ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_sync_hooks_run_by_ascending_priority_then_registration_order(
    engine: HookEngine, ctx: HookContext, session: LiveSession
) -> None:
    order: list[str] = []

    def make(label: str) -> Any:
        async def hook(event: Any, ctx: HookContext) -> None:
            order.append(label)

        return hook

    engine.register(T.ON_TOOL_CALL, make("late"), priority=10, name="late")
    engine.register(T.ON_TOOL_CALL, make("first-0"), name="first-0")
    engine.register(T.ON_TOOL_CALL, make("early"), priority=-5, name="early")
    engine.register(T.ON_TOOL_CALL, make("second-0"), name="second-0")

    outcome = await engine.run_sync(T.ON_TOOL_CALL, tool_call(session), ctx)

    assert order == ["early", "first-0", "second-0", "late"]
    assert outcome.allowed is True
    assert outcome.errors == []


@pytest.mark.asyncio
async def test_every_hook_gets_the_payload_and_the_context(
    engine: HookEngine, ctx: HookContext, session: LiveSession
) -> None:
    seen: list[tuple[Any, HookContext]] = []

    async def hook(event: Any, hook_ctx: HookContext) -> None:
        seen.append((event, hook_ctx))

    event = tool_call(session)
    engine.register(T.ON_TOOL_CALL, hook)

    outcome = await engine.run_sync(T.ON_TOOL_CALL, event, ctx)

    assert seen == [(event, ctx)]
    assert seen[0][1].session is session
    assert outcome.event is event


@pytest.mark.asyncio
async def test_a_block_stops_the_chain_and_names_the_hook(
    engine: HookEngine, ctx: HookContext, session: LiveSession
) -> None:
    ran: list[str] = []

    async def guard(event: TranscriptionEvent, ctx: HookContext) -> HookResult:
        ran.append("guard")
        return HookResult.block("profanity", metadata={"rule": "r1"})

    async def later(event: TranscriptionEvent, ctx: HookContext) -> None:
        ran.append("later")

    async def observer(event: TranscriptionEvent, ctx: HookContext) -> None:
        ran.append("observer")

    engine.register(T.ON_TRANSCRIPTION, guard, name="guard")
    engine.register(T.ON_TRANSCRIPTION, later, name="later", priority=1)
    engine.register(T.ON_TRANSCRIPTION, observer, name="observer", execution="async")

    outcome = await engine.run_sync(T.ON_TRANSCRIPTION, transcript(session), ctx)
    await engine.drain(timeout=1)

    assert outcome.allowed is False
    assert outcome.blocked is True
    assert outcome.reason == "profanity"
    assert outcome.blocked_by == "guard"
    assert outcome.metadata == {"rule": "r1"}
    assert ran == ["guard"]  # neither the later SYNC hook nor the observer ran


@pytest.mark.asyncio
async def test_modify_passes_the_new_payload_down_the_chain(
    engine: HookEngine, ctx: HookContext, session: LiveSession
) -> None:
    seen: list[str] = []
    original = transcript(session, "darn it")

    async def first(event: TranscriptionEvent, ctx: HookContext) -> HookResult:
        seen.append(event.text)
        return HookResult.modify(transcript(session, "d*** it"))

    async def second(event: TranscriptionEvent, ctx: HookContext) -> HookResult:
        seen.append(event.text)
        return HookResult.modify(event.text.upper())

    async def third(event: TranscriptionEvent, ctx: HookContext) -> None:
        seen.append(event.text)

    engine.register(T.ON_TRANSCRIPTION, first, priority=0, name="first")
    engine.register(T.ON_TRANSCRIPTION, second, priority=1, name="second")
    engine.register(T.ON_TRANSCRIPTION, third, priority=2, name="third")

    outcome = await engine.run_sync(T.ON_TRANSCRIPTION, original, ctx)

    assert seen == ["darn it", "d*** it", "D*** IT"]
    assert outcome.allowed is True
    assert outcome.event.text == "D*** IT"
    assert original.text == "darn it"


@pytest.mark.asyncio
async def test_a_string_modify_on_transcription_returns_a_copy_with_the_new_text(
    engine: HookEngine, ctx: HookContext, session: LiveSession
) -> None:
    original = transcript(session, "my card is 4111")

    def redact(event: TranscriptionEvent, ctx: HookContext) -> HookResult:
        return HookResult.modify("my card is [redacted]")

    engine.register(T.ON_TRANSCRIPTION, redact)

    outcome = await engine.run_sync(T.ON_TRANSCRIPTION, original, ctx)

    assert isinstance(outcome.event, TranscriptionEvent)
    assert outcome.event is not original
    assert outcome.event.text == "my card is [redacted]"
    assert (outcome.event.role, outcome.event.is_final, outcome.event.session) == (
        "user",
        True,
        session,
    )
    assert original.text == "my card is 4111"


@pytest.mark.asyncio
async def test_metadata_merges_across_hooks_and_the_later_hook_wins(
    engine: HookEngine, ctx: HookContext, session: LiveSession
) -> None:
    async def first(event: Any, ctx: HookContext) -> HookResult:
        return HookResult(action="allow", metadata={"result": "one", "audit": "a"})

    async def second(event: Any, ctx: HookContext) -> HookResult:
        return HookResult(action="allow", metadata={"result": "two", "trace": "t"})

    engine.register(T.ON_TOOL_CALL, first, name="first")
    engine.register(T.ON_TOOL_CALL, second, name="second")

    outcome = await engine.run_sync(T.ON_TOOL_CALL, tool_call(session), ctx)

    assert outcome.metadata == {"result": "two", "audit": "a", "trace": "t"}


@pytest.mark.asyncio
async def test_none_and_plain_functions_mean_allow(
    engine: HookEngine, ctx: HookContext, session: LiveSession
) -> None:
    calls: list[str] = []

    def plain(event: Any, ctx: HookContext) -> None:
        calls.append("plain")

    def plain_result(event: Any, ctx: HookContext) -> HookResult:
        calls.append("plain_result")
        return HookResult.allow(metadata={"k": 1})

    engine.register(T.ON_TOOL_CALL, plain, name="plain")
    engine.register(T.ON_TOOL_CALL, plain_result, name="plain_result")
    event = tool_call(session)

    outcome = await engine.run_sync(T.ON_TOOL_CALL, event, ctx)

    assert calls == ["plain", "plain_result"]
    assert outcome.allowed is True
    assert outcome.event is event
    assert outcome.metadata == {"k": 1}


@pytest.mark.asyncio
async def test_run_sync_without_hooks_allows_the_payload_unchanged(
    engine: HookEngine, ctx: HookContext, session: LiveSession
) -> None:
    event = transcript(session)

    outcome = await engine.run_sync(T.ON_TRANSCRIPTION, event, ctx)

    assert (outcome.allowed, outcome.event, outcome.reason, outcome.blocked_by) == (
        True,
        event,
        None,
        None,
    )
    assert outcome.metadata == {}
    assert outcome.errors == []


# -- fail-closed ON_TRANSCRIPTION ------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_raising_transcription_hook_blocks_and_the_log_says_so(
    engine: HookEngine,
    ctx: HookContext,
    session: LiveSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    async def broken(event: TranscriptionEvent, ctx: HookContext) -> None:
        raise RuntimeError("moderation service down")

    async def later(event: TranscriptionEvent, ctx: HookContext) -> None:
        ran.append("later")

    engine.register(T.ON_TRANSCRIPTION, broken, name="moderate")
    engine.register(T.ON_TRANSCRIPTION, later, name="later", priority=1)

    with caplog.at_level(logging.WARNING, logger="voice.hooks"):
        outcome = await engine.run_sync(T.ON_TRANSCRIPTION, transcript(session), ctx)

    assert outcome.allowed is False
    assert outcome.reason == "hook moderate failed: RuntimeError: moderation service down"
    assert outcome.blocked_by == "moderate"
    assert outcome.errors == [("moderate", "RuntimeError: moderation service down")]
    assert ran == []
    [record] = hook_records(caplog)
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        "hook moderate on ON_TRANSCRIPTION failed; blocking (fail-closed trigger)"
    )
    assert traceback_of(record).endswith("RuntimeError: moderation service down")


@pytest.mark.asyncio
async def test_a_transcription_hook_that_times_out_blocks_and_the_log_names_the_seconds(
    engine: HookEngine,
    ctx: HookContext,
    session: LiveSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    never = asyncio.Event()
    ran: list[str] = []

    async def slow(event: TranscriptionEvent, ctx: HookContext) -> None:
        await never.wait()

    async def later(event: TranscriptionEvent, ctx: HookContext) -> None:
        ran.append("later")

    engine.register(T.ON_TRANSCRIPTION, slow, name="slow", timeout=0.05)
    engine.register(T.ON_TRANSCRIPTION, later, name="later", priority=1)

    with caplog.at_level(logging.WARNING, logger="voice.hooks"):
        outcome = await engine.run_sync(T.ON_TRANSCRIPTION, transcript(session), ctx)

    assert outcome.allowed is False
    assert outcome.reason == "hook slow timed out after 0.05s"
    assert outcome.blocked_by == "slow"
    assert outcome.errors == [("slow", "timed out after 0.05s")]
    assert ran == []
    [record] = hook_records(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "hook slow on ON_TRANSCRIPTION timed out after 0.05s; blocking (fail-closed trigger)"
    )


@pytest.mark.asyncio
async def test_the_engine_default_timeout_applies_to_hooks_without_their_own(
    ctx: HookContext, session: LiveSession
) -> None:
    engine = HookEngine(default_timeout=0.05)
    never = asyncio.Event()

    async def slow(event: TranscriptionEvent, ctx: HookContext) -> None:
        await never.wait()

    engine.register(T.ON_TRANSCRIPTION, slow, name="slow")

    outcome = await engine.run_sync(T.ON_TRANSCRIPTION, transcript(session), ctx)

    assert outcome.reason == "hook slow timed out after 0.05s"


@pytest.mark.asyncio
async def test_a_timeout_error_raised_by_the_hook_itself_is_a_failure_not_a_timeout(
    engine: HookEngine, ctx: HookContext, session: LiveSession
) -> None:
    async def upstream(event: TranscriptionEvent, ctx: HookContext) -> None:
        raise TimeoutError("upstream API")

    engine.register(T.ON_TRANSCRIPTION, upstream, name="upstream")

    outcome = await engine.run_sync(T.ON_TRANSCRIPTION, transcript(session), ctx)

    assert outcome.allowed is False
    assert outcome.reason == "hook upstream failed: TimeoutError: upstream API"


@pytest.mark.asyncio
async def test_a_transcription_hook_returning_a_non_hook_result_blocks(
    engine: HookEngine,
    ctx: HookContext,
    session: LiveSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def chatty(event: TranscriptionEvent, ctx: HookContext) -> str:
        return "ok"

    engine.register(T.ON_TRANSCRIPTION, chatty, name="chatty")  # type: ignore[type-var]

    with caplog.at_level(logging.WARNING, logger="voice.hooks"):
        outcome = await engine.run_sync(T.ON_TRANSCRIPTION, transcript(session), ctx)

    assert outcome.allowed is False
    assert outcome.reason == "hook chatty failed: returned str, not HookResult or None"
    assert outcome.blocked_by == "chatty"
    [record] = hook_records(caplog)
    assert record.getMessage() == (
        "hook chatty on ON_TRANSCRIPTION failed; blocking (fail-closed trigger)"
    )


@pytest.mark.asyncio
async def test_a_transcription_modify_with_the_wrong_payload_type_blocks(
    engine: HookEngine,
    ctx: HookContext,
    session: LiveSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def bad_modify(event: TranscriptionEvent, ctx: HookContext) -> HookResult:
        return HookResult.modify({"text": "dict is not a transcript"})

    engine.register(T.ON_TRANSCRIPTION, bad_modify, name="bad_modify")

    with caplog.at_level(logging.WARNING, logger="voice.hooks"):
        outcome = await engine.run_sync(T.ON_TRANSCRIPTION, transcript(session), ctx)

    assert outcome.allowed is False
    assert outcome.reason == (
        "hook bad_modify failed: modified ON_TRANSCRIPTION with dict, not TranscriptionEvent"
    )
    assert [r.getMessage() for r in hook_records(caplog)] == [
        "hook bad_modify on ON_TRANSCRIPTION failed; blocking (fail-closed trigger)"
    ]


# -- fail-open ON_TOOL_CALL ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_tool_call_hook_error_is_recorded_and_the_chain_continues(
    engine: HookEngine,
    ctx: HookContext,
    session: LiveSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    never = asyncio.Event()

    async def broken(event: ToolCallEvent, ctx: HookContext) -> None:
        raise KeyError("city")

    async def slow(event: ToolCallEvent, ctx: HookContext) -> None:
        await never.wait()

    async def wrong(event: ToolCallEvent, ctx: HookContext) -> int:
        return 42

    async def serves(event: ToolCallEvent, ctx: HookContext) -> HookResult:
        return HookResult(action="allow", metadata={"result": "sunny"})

    engine.register(T.ON_TOOL_CALL, broken, name="broken", priority=0)
    engine.register(T.ON_TOOL_CALL, slow, name="slow", priority=1, timeout=0.05)
    engine.register(T.ON_TOOL_CALL, wrong, name="wrong", priority=2)  # type: ignore[type-var]
    engine.register(T.ON_TOOL_CALL, serves, name="serves", priority=3)

    with caplog.at_level(logging.WARNING, logger="voice.hooks"):
        outcome = await engine.run_sync(T.ON_TOOL_CALL, tool_call(session), ctx)

    assert outcome.allowed is True
    assert outcome.metadata == {"result": "sunny"}
    assert outcome.errors == [
        ("broken", "KeyError: 'city'"),
        ("slow", "timed out after 0.05s"),
        ("wrong", "returned int, not HookResult or None"),
    ]
    assert [r.getMessage() for r in hook_records(caplog)] == [
        "hook broken on ON_TOOL_CALL failed; continuing",
        "hook slow on ON_TOOL_CALL timed out after 0.05s; continuing",
        "hook wrong on ON_TOOL_CALL failed; continuing",
    ]


@pytest.mark.asyncio
async def test_a_tool_call_modify_with_the_wrong_type_is_ignored_and_recorded(
    engine: HookEngine, ctx: HookContext, session: LiveSession
) -> None:
    seen: list[Any] = []

    async def bad_modify(event: ToolCallEvent, ctx: HookContext) -> HookResult:
        return HookResult.modify("not a tool call")

    async def later(event: ToolCallEvent, ctx: HookContext) -> None:
        seen.append(event)

    event = tool_call(session)
    engine.register(T.ON_TOOL_CALL, bad_modify, name="bad_modify")
    engine.register(T.ON_TOOL_CALL, later, name="later", priority=1)

    outcome = await engine.run_sync(T.ON_TOOL_CALL, event, ctx)

    assert outcome.allowed is True
    assert outcome.event is event
    assert seen == [event]
    assert outcome.errors == [
        ("bad_modify", "modified ON_TOOL_CALL with str, not ToolCallEvent"),
    ]


# -- ASYNC observers -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_async_hooks_run_after_the_sync_chain_with_the_final_payload(
    engine: HookEngine, ctx: HookContext, session: LiveSession
) -> None:
    order: list[str] = []

    async def rewrite(event: TranscriptionEvent, ctx: HookContext) -> HookResult:
        order.append("sync")
        return HookResult.modify("rewritten")

    async def observer(event: TranscriptionEvent, ctx: HookContext) -> None:
        order.append(f"async:{event.text}")

    engine.register(T.ON_TRANSCRIPTION, observer, name="observer", execution="async")
    engine.register(T.ON_TRANSCRIPTION, rewrite, name="rewrite")

    outcome = await engine.run_sync(T.ON_TRANSCRIPTION, transcript(session, "original"), ctx)
    assert order == ["sync"]  # fired, not awaited
    await engine.drain(timeout=1)

    assert outcome.event.text == "rewritten"
    assert order == ["sync", "async:rewritten"]
    assert engine.pending == 0


@pytest.mark.asyncio
async def test_fire_runs_async_hooks_concurrently(
    engine: HookEngine, ctx: HookContext, session: LiveSession
) -> None:
    first_started = asyncio.Event()
    second_started = asyncio.Event()

    async def first(event: Any, ctx: HookContext) -> None:
        first_started.set()
        await second_started.wait()

    async def second(event: Any, ctx: HookContext) -> None:
        second_started.set()
        await first_started.wait()

    engine.register(T.ON_SPEECH_START, first, name="first")
    engine.register(T.ON_SPEECH_START, second, name="second")

    engine.fire(T.ON_SPEECH_START, session, ctx)
    assert engine.pending == 2
    await engine.drain(timeout=1)

    assert first_started.is_set()
    assert second_started.is_set()
    assert engine.pending == 0


@pytest.mark.asyncio
async def test_fire_ignores_sync_hooks(
    engine: HookEngine, ctx: HookContext, session: LiveSession
) -> None:
    calls: list[str] = []

    async def sync_hook(event: Any, ctx: HookContext) -> None:
        calls.append("sync")

    engine.register(T.ON_TOOL_CALL, sync_hook)

    engine.fire(T.ON_TOOL_CALL, tool_call(session), ctx)
    await engine.drain(timeout=1)

    assert calls == []
    assert engine.pending == 0


def test_fire_without_hooks_starts_nothing_and_needs_no_loop(
    engine: HookEngine, ctx: HookContext, session: LiveSession
) -> None:
    engine.fire(T.ON_SPEECH_END, session, ctx)

    assert engine.pending == 0


@pytest.mark.asyncio
async def test_fire_logs_hook_errors_and_timeouts_and_never_raises(
    engine: HookEngine,
    ctx: HookContext,
    session: LiveSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    never = asyncio.Event()
    ran: list[str] = []

    def broken(event: Any, ctx: HookContext) -> None:
        raise ValueError("bad level")

    async def slow(event: Any, ctx: HookContext) -> None:
        await never.wait()

    async def healthy(event: Any, ctx: HookContext) -> None:
        ran.append("healthy")

    engine.register(T.ON_INPUT_AUDIO_LEVEL, broken, name="broken")
    engine.register(T.ON_INPUT_AUDIO_LEVEL, slow, name="slow", timeout=0.05)
    engine.register(T.ON_INPUT_AUDIO_LEVEL, healthy, name="healthy")

    with caplog.at_level(logging.WARNING, logger="voice.hooks"):
        engine.fire(T.ON_INPUT_AUDIO_LEVEL, session, ctx)
        await engine.drain(timeout=1)

    assert ran == ["healthy"]
    records = sorted(hook_records(caplog), key=lambda r: r.getMessage())
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.ERROR, "hook broken on ON_INPUT_AUDIO_LEVEL failed"),
        (logging.WARNING, "hook slow on ON_INPUT_AUDIO_LEVEL timed out after 0.05s"),
    ]
    assert traceback_of(records[0]).endswith("ValueError: bad level")


@pytest.mark.asyncio
async def test_drain_waits_for_pending_hooks(
    engine: HookEngine, ctx: HookContext, session: LiveSession
) -> None:
    release = asyncio.Event()
    finished: list[str] = []

    async def waits(event: Any, ctx: HookContext) -> None:
        await release.wait()
        finished.append("waits")

    engine.register(T.ON_SESSION_ENDED, waits)
    engine.fire(T.ON_SESSION_ENDED, session, ctx)

    with pytest.raises(TimeoutError):
        await engine.drain(timeout=0.05)
    assert finished == []
    assert engine.pending == 1

    release.set()
    await engine.drain(timeout=1)

    assert finished == ["waits"]
    assert engine.pending == 0


@pytest.mark.asyncio
async def test_drain_also_waits_for_hooks_fired_by_hooks(
    engine: HookEngine, ctx: HookContext, session: LiveSession
) -> None:
    finished: list[str] = []

    async def on_start(event: Any, hook_ctx: HookContext) -> None:
        await asyncio.sleep(0)
        engine.fire(T.ON_SPEECH_END, event, hook_ctx)

    async def on_end(event: Any, ctx: HookContext) -> None:
        await asyncio.sleep(0)
        finished.append("end")

    engine.register(T.ON_SPEECH_START, on_start)
    engine.register(T.ON_SPEECH_END, on_end)

    engine.fire(T.ON_SPEECH_START, session, ctx)
    await engine.drain(timeout=1)

    assert finished == ["end"]
    assert engine.pending == 0


@pytest.mark.asyncio
async def test_aclose_cancels_pending_hooks_and_waits_for_them(
    engine: HookEngine, ctx: HookContext, session: LiveSession
) -> None:
    never = asyncio.Event()
    started = asyncio.Event()
    cancelled: list[str] = []

    async def stuck(event: Any, ctx: HookContext) -> None:
        started.set()
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append("stuck")
            raise

    engine.register(T.ON_BARGE_IN, stuck)
    engine.fire(T.ON_BARGE_IN, session, ctx)
    await asyncio.wait_for(started.wait(), timeout=1)

    await engine.aclose()

    assert cancelled == ["stuck"]
    assert engine.pending == 0
