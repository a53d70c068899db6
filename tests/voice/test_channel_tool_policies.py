"""Tool options beyond the seed's: per-tool timeout, progress message, barge-in policy,
ToolError texts, the current call id, and remote execution (``Tool.remote``: the Celery
path's engine side) with its delivery, timeout, revocation and late results."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.fixtures.engine import Gate, make_engine
from voice.channels import RealtimeVoiceChannel
from voice.kit import Tool, ToolError, current_tool_call_id
from voice.mock import MockRealtimeProvider, MockRealtimeTransport
from voice.session import LiveSession
from voice.store import MemoryStore, StoredToolCall

pytestmark = [pytest.mark.timeout(10), pytest.mark.asyncio]

WAIT_S = 2.0


class FakeRemote:
    """A RemoteExecution that records what the engine asks of it."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.submitted: list[StoredToolCall] = []
        self.revoked: list[tuple[str, bool]] = []
        self.submitted_event = asyncio.Event()
        self.revoked_event = asyncio.Event()
        self.fail = fail

    async def submit(self, record: StoredToolCall, tool: Tool) -> None:
        self.submitted.append(record)
        self.submitted_event.set()
        if self.fail is not None:
            raise self.fail

    async def revoke(self, record: StoredToolCall, tool: Tool, *, terminate: bool) -> None:
        self.revoked.append((record.call_id, terminate))
        self.revoked_event.set()


def build(
    *tools: Tool, **options: Any
) -> tuple[RealtimeVoiceChannel, MockRealtimeProvider, MockRealtimeTransport, MemoryStore]:
    channel, provider, transport, store, _ = make_engine(tools=list(tools), **options)
    return channel, provider, transport, store


def statuses(transport: MockRealtimeTransport, session: LiveSession) -> list[str]:
    return [m["status"] for m in transport.messages_of(session, "tool_call")]


def error(message: str) -> str:
    return json.dumps({"error": message})


async def test_a_tool_error_message_reaches_the_model_as_the_error() -> None:
    def refuse(order_id: str) -> str:
        raise ToolError(f"order {order_id} does not exist")

    channel, provider, _, store = build(Tool(name="lookup", handler=refuse))
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_tool_call(session, "call-1", "lookup", {"order_id": "A7"})

    assert provider.tool_results == [(session.id, "call-1", error("order A7 does not exist"))]
    assert store.tool_calls[(session.id, "call-1")].status == "failed"


async def test_a_handler_can_read_the_provider_call_id() -> None:
    seen: list[str] = []

    async def handler() -> str:
        seen.append(current_tool_call_id())
        return "ok"

    channel, provider, _, _ = build(Tool(name="lookup", handler=handler))
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_tool_call(session, "call-77", "lookup", {})

    assert seen == ["call-77"]
    assert current_tool_call_id() == ""  # only inside the call's own task


async def test_a_tools_own_timeout_wins_over_the_channel_default() -> None:
    gate = Gate()
    channel, provider, _, store = build(
        Tool(name="slow", handler=gate, timeout=0.05), tool_timeout=30
    )
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_tool_call(session, "call-1", "slow", {})

    assert provider.tool_results == [
        (session.id, "call-1", error("Tool 'slow' timed out after 0.05 s"))
    ]
    assert gate.cancelled
    assert store.tool_calls[(session.id, "call-1")].status == "timed_out"


# --- progress message ------------------------------------------------------------------------


async def test_a_slow_tool_says_its_progress_message_after_the_delay() -> None:
    gate = Gate(result="found it")
    tool = Tool(
        name="lookup", handler=gate, progress_message="Let me check that…", progress_delay=0
    )
    channel, provider, transport, _ = build(tool)
    session = await channel.start_session("room-1", "user-1")
    await provider._fire("tool_call", session, "call-1", "lookup", {})
    await asyncio.wait_for(gate.entered.wait(), WAIT_S)

    await provider.wait_until(lambda: provider.injected_texts, within=WAIT_S)
    assert provider.tool_results == []  # spoken while the tool still runs
    gate.release.set()
    await provider.wait_until(lambda: provider.tool_results, within=WAIT_S)

    [(session_id, instruction, role, silent)] = provider.injected_texts
    assert (session_id, role, silent) == (session.id, "system", False)
    assert "Let me check that…" in instruction and "'lookup'" in instruction
    progress = [m for m in transport.messages_of(session, "tool_call") if m["status"] == "progress"]
    assert progress == [
        {
            "type": "tool_call",
            "call_id": "call-1",
            "name": "lookup",
            "status": "progress",
            "message": "Let me check that…",
        }
    ]
    assert provider.tool_results == [(session.id, "call-1", "found it")]


async def test_a_tool_that_answers_before_the_delay_says_nothing() -> None:
    async def quick() -> str:
        return "fast"

    tool = Tool(name="lookup", handler=quick, progress_message="One moment", progress_delay=5)
    channel, provider, transport, _ = build(tool)
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_tool_call(session, "call-1", "lookup", {})

    assert provider.tool_results == [(session.id, "call-1", "fast")]
    assert provider.injected_texts == []
    assert statuses(transport, session) == ["running", "succeeded"]


# --- barge-in policy -------------------------------------------------------------------------


async def test_barge_in_cancels_a_cancel_policy_tool_and_tells_the_model() -> None:
    gate = Gate()
    channel, provider, transport, store = build(
        Tool(name="search", handler=gate, on_barge_in="cancel")
    )
    session = await channel.start_session("room-1", "user-1")
    await provider._fire("tool_call", session, "call-1", "search", {})
    await asyncio.wait_for(gate.entered.wait(), WAIT_S)

    await provider._fire("speech_start", session)
    await provider.wait_until(lambda: provider.tool_results, within=WAIT_S)
    await channel.settle(session)

    assert gate.cancelled
    assert provider.tool_results == [
        (session.id, "call-1", error("Tool 'search' was cancelled: the caller interrupted"))
    ]
    record = store.tool_calls[(session.id, "call-1")]
    assert record.status == "cancelled" and "caller started speaking" in record.error
    assert record.delivered
    assert statuses(transport, session) == ["running", "cancelled"]
    assert channel.sessions == [session]  # the session goes on


async def test_barge_in_keeps_a_keep_policy_tool_running() -> None:
    gate = Gate(result="kept")
    channel, provider, _, store = build(Tool(name="search", handler=gate))
    session = await channel.start_session("room-1", "user-1")
    await provider._fire("tool_call", session, "call-1", "search", {})
    await asyncio.wait_for(gate.entered.wait(), WAIT_S)

    await provider._fire("speech_start", session)
    gate.release.set()
    await provider.wait_until(lambda: provider.tool_results, within=WAIT_S)

    assert not gate.cancelled
    assert provider.tool_results == [(session.id, "call-1", "kept")]
    assert store.tool_calls[(session.id, "call-1")].status == "succeeded"


# --- remote execution ------------------------------------------------------------------------


async def test_a_remote_tool_is_submitted_and_its_delivered_result_reaches_the_model() -> None:
    remote = FakeRemote()
    channel, provider, transport, store = build(Tool(name="lookup", remote=remote))
    session = await channel.start_session("room-1", "user-1")
    await provider._fire("tool_call", session, "call-1", "lookup", {"q": "x"})
    await asyncio.wait_for(remote.submitted_event.wait(), WAIT_S)

    [record] = remote.submitted
    assert (record.call_id, record.execution, record.arguments) == ("call-1", "remote", {"q": "x"})
    assert channel.deliver_tool_result(session.id, "call-1", "succeeded", '{"ok": true}')
    await provider.wait_until(lambda: provider.tool_results, within=WAIT_S)
    await channel.settle(session)

    assert provider.tool_results == [(session.id, "call-1", '{"ok": true}')]
    assert store.tool_calls[(session.id, "call-1")].status == "succeeded"
    assert remote.revoked == []
    assert statuses(transport, session) == ["running", "succeeded"]
    # Delivered once: a second copy of the result is late.
    assert not channel.deliver_tool_result(session.id, "call-1", "succeeded", "again")


async def test_a_remote_failure_keeps_the_workers_status_and_text() -> None:
    remote = FakeRemote()
    channel, provider, _, store = build(Tool(name="lookup", remote=remote))
    session = await channel.start_session("room-1", "user-1")
    await provider._fire("tool_call", session, "call-1", "lookup", {})
    await asyncio.wait_for(remote.submitted_event.wait(), WAIT_S)

    channel.deliver_tool_result(session.id, "call-1", "failed", error("no such order"))
    await provider.wait_until(lambda: provider.tool_results, within=WAIT_S)
    await channel.settle(session)

    assert provider.tool_results == [(session.id, "call-1", error("no such order"))]
    record = store.tool_calls[(session.id, "call-1")]
    assert (record.status, record.error) == ("failed", error("no such order"))


async def test_an_unknown_remote_status_counts_as_a_failure() -> None:
    remote = FakeRemote()
    channel, provider, _, store = build(Tool(name="lookup", remote=remote))
    session = await channel.start_session("room-1", "user-1")
    await provider._fire("tool_call", session, "call-1", "lookup", {})
    await asyncio.wait_for(remote.submitted_event.wait(), WAIT_S)

    assert channel.deliver_tool_result(session.id, "call-1", "great", "{}")
    await provider.wait_until(lambda: provider.tool_results, within=WAIT_S)
    await channel.settle(session)

    assert store.tool_calls[(session.id, "call-1")].status == "failed"


async def test_a_remote_tool_that_never_answers_times_out_and_is_revoked() -> None:
    remote = FakeRemote()
    channel, provider, _, store = build(Tool(name="lookup", remote=remote, timeout=0.05))
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_tool_call(session, "call-1", "lookup", {})
    await asyncio.wait_for(remote.revoked_event.wait(), WAIT_S)

    assert provider.tool_results == [
        (session.id, "call-1", error("Tool 'lookup' timed out after 0.05 s"))
    ]
    assert store.tool_calls[(session.id, "call-1")].status == "timed_out"
    assert remote.revoked == [("call-1", False)]  # timed out: only if still queued
    # The worker's answer comes too late: nothing waits for it.
    assert not channel.deliver_tool_result(session.id, "call-1", "succeeded", "late")
    assert len(provider.tool_results) == 1


async def test_a_remote_tool_whose_submission_fails_answers_with_the_reason() -> None:
    remote = FakeRemote(fail=ToolError("the tool queue is unavailable"))
    channel, provider, _, store = build(Tool(name="lookup", remote=remote, timeout=5))
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_tool_call(session, "call-1", "lookup", {})

    assert provider.tool_results == [(session.id, "call-1", error("the tool queue is unavailable"))]
    assert store.tool_calls[(session.id, "call-1")].status == "failed"


async def test_ending_the_session_revokes_a_running_remote_call() -> None:
    remote = FakeRemote()
    channel, provider, _, store = build(Tool(name="lookup", remote=remote))
    session = await channel.start_session("room-1", "user-1")
    await provider._fire("tool_call", session, "call-1", "lookup", {})
    await asyncio.wait_for(remote.submitted_event.wait(), WAIT_S)

    await channel.end_session(session.id)
    await asyncio.wait_for(remote.revoked_event.wait(), WAIT_S)

    assert remote.revoked == [("call-1", True)]  # cancelled: stopped even if running
    assert store.tool_calls[(session.id, "call-1")].status == "cancelled"
    assert provider.tool_results == []
    assert not channel.deliver_tool_result(session.id, "call-1", "succeeded", "late")


async def test_a_provider_cancellation_revokes_a_remote_call_without_an_answer() -> None:
    remote = FakeRemote()
    channel, provider, transport, store = build(Tool(name="lookup", remote=remote))
    session = await channel.start_session("room-1", "user-1")
    await provider._fire("tool_call", session, "call-1", "lookup", {})
    await asyncio.wait_for(remote.submitted_event.wait(), WAIT_S)

    await provider._fire("tool_cancel", session, ["call-1"])
    await asyncio.wait_for(remote.revoked_event.wait(), WAIT_S)
    await channel.settle(session)

    assert provider.tool_results == []
    assert remote.revoked == [("call-1", True)]
    assert store.tool_calls[(session.id, "call-1")].status == "cancelled"
    assert statuses(transport, session) == ["running", "cancelled"]


@pytest.mark.filterwarnings("ignore")
def test_tool_options_are_checked() -> None:
    async def handler() -> str:
        return ""

    with pytest.raises(ValueError, match="on_barge_in"):
        Tool(name="t", handler=handler, on_barge_in="ignore")
    with pytest.raises(ValueError, match="timeout"):
        Tool(name="t", handler=handler, timeout=0)
    with pytest.raises(ValueError, match="progress_delay"):
        Tool(name="t", handler=handler, progress_delay=-1)
    with pytest.raises(TypeError, match="handler"):
        Tool(name="t")
