"""RealtimeVoiceChannel tool calls: Tool objects, tool_handler, the ON_TOOL_CALL hook and their
precedence; schema validation; errors, timeouts and truncation; mute_on_tool_call; tools that
outlive their session; concurrency and the status messages the client gets."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from tests.fixtures.engine import Gate, make_engine
from voice.channels import RealtimeVoiceChannel
from voice.events import ToolCallEvent
from voice.kit import HookContext, HookResult, HookTrigger, RoomKit, Tool
from voice.mock import MockRealtimeProvider, MockRealtimeTransport
from voice.session import LiveSession, SessionState
from voice.store import MemoryStore, StoredToolCall

pytestmark = pytest.mark.timeout(10)

WAIT_S = 2.0
FRAME = b"\x01\x00" * 320

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "City name"}},
    "required": ["city"],
}
WEATHER_DEFINITION = {
    "type": "function",
    "name": "get_weather",
    "description": "Get current weather for a city",
    "parameters": WEATHER_PARAMETERS,
}


class NotifyingProvider(MockRealtimeProvider):
    def __init__(self) -> None:
        super().__init__()
        self.result_submitted = asyncio.Event()

    async def submit_tool_result(self, session: LiveSession, call_id: str, result: str) -> None:
        await super().submit_tool_result(session, call_id, result)
        self.result_submitted.set()


def build(
    **options: Any,
) -> tuple[RealtimeVoiceChannel, MockRealtimeProvider, MockRealtimeTransport, MemoryStore, RoomKit]:
    channel, provider, transport, store, kit = make_engine(with_kit=True, **options)
    assert kit is not None
    return channel, provider, transport, store, kit


def weather_tool(handler: Any) -> Tool:
    return Tool(
        name="get_weather",
        description="Get current weather for a city",
        parameters=WEATHER_PARAMETERS,
        handler=handler,
    )


async def get_weather(city: str) -> str:
    return json.dumps({"temperature": 72, "city": city})


def error(message: str) -> str:
    return json.dumps({"error": message})


def record_of(store: MemoryStore, session: LiveSession, call_id: str) -> StoredToolCall:
    return store.tool_calls[(session.id, call_id)]


def traceback_of(record: logging.LogRecord) -> str:
    """The logged traceback (the project's redacting filter moves exc_info to exc_text)."""
    if record.exc_info:
        return logging.Formatter().formatException(record.exc_info)
    return record.exc_text or ""


def statuses(transport: MockRealtimeTransport, session: LiveSession) -> list[tuple[str, str]]:
    return [(m["call_id"], m["status"]) for m in transport.messages_of(session, "tool_call")]


# -- where the answer comes from ------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_tool_objects_handler_answers_and_the_call_is_recorded() -> None:
    channel, provider, transport, store, kit = build(tools=[weather_tool(get_weather)])
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_tool_call(session, "call-1", "get_weather", {"city": "Paris"})

    result = json.dumps({"temperature": 72, "city": "Paris"})
    assert provider.tool_results == [(session.id, "call-1", result)]
    record = record_of(store, session, "call-1")
    assert (record.name, record.arguments, record.status) == (
        "get_weather",
        {"city": "Paris"},
        "succeeded",
    )
    assert (record.result, record.error) == (result, "")
    assert record.finished_at is not None and record.finished_at >= record.started_at
    assert transport.messages_of(session, "tool_call") == [
        {"type": "tool_call", "call_id": "call-1", "name": "get_weather", "status": "running"},
        {"type": "tool_call", "call_id": "call-1", "name": "get_weather", "status": "succeeded"},
    ]
    await kit.close()


@pytest.mark.asyncio
async def test_a_plain_function_handler_runs_too() -> None:
    def shout(text: str) -> str:
        return text.upper()

    tool = Tool(
        name="shout",
        parameters={"type": "object", "properties": {"text": {"type": "string"}}},
        handler=shout,
    )
    channel, provider, _, _, kit = build(tools=[tool])
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_tool_call(session, "call-1", "shout", {"text": "hi"})

    assert provider.tool_results == [(session.id, "call-1", "HI")]
    await kit.close()


@pytest.mark.asyncio
async def test_tool_handler_answers_raw_definitions_with_the_name_and_arguments() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    async def handle_tool(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        calls.append((name, arguments))
        return {"temperature": 72, "city": arguments["city"]}

    channel, provider, _, store, kit = build(tools=[WEATHER_DEFINITION], tool_handler=handle_tool)
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_tool_call(session, "call-1", "get_weather", {"city": "Oslo"})

    assert calls == [("get_weather", {"city": "Oslo"})]
    assert provider.tool_results == [
        (session.id, "call-1", json.dumps({"temperature": 72, "city": "Oslo"}))
    ]
    assert record_of(store, session, "call-1").status == "succeeded"
    await kit.close()


@pytest.mark.asyncio
async def test_an_on_tool_call_hook_result_overrides_the_handlers() -> None:
    channel, provider, _, store, kit = build(tools=[weather_tool(get_weather)])
    seen: list[str | None] = []

    @kit.hook(HookTrigger.ON_TOOL_CALL)
    async def cached(event: ToolCallEvent, ctx: HookContext) -> HookResult:
        seen.append(event.result)
        return HookResult(action="allow", metadata={"result": {"cached": True}})

    session = await channel.start_session("room-1", "user-1")
    await provider.simulate_tool_call(session, "call-1", "get_weather", {"city": "Rome"})

    assert seen == [json.dumps({"temperature": 72, "city": "Rome"})]
    assert provider.tool_results == [(session.id, "call-1", json.dumps({"cached": True}))]
    assert record_of(store, session, "call-1").result == json.dumps({"cached": True})
    await kit.close()


@pytest.mark.asyncio
async def test_an_on_tool_call_hook_without_a_result_keeps_the_handlers() -> None:
    channel, provider, _, _, kit = build(tools=[weather_tool(get_weather)])

    @kit.hook(HookTrigger.ON_TOOL_CALL)
    async def audit(event: ToolCallEvent, ctx: HookContext) -> HookResult:
        return HookResult.allow()

    session = await channel.start_session("room-1", "user-1")
    await provider.simulate_tool_call(session, "call-1", "get_weather", {"city": "Rome"})

    assert provider.tool_results == [
        (session.id, "call-1", json.dumps({"temperature": 72, "city": "Rome"}))
    ]
    await kit.close()


@pytest.mark.asyncio
async def test_a_blocking_on_tool_call_hook_returns_its_reason_as_an_error() -> None:
    handled: list[str] = []

    async def refund(**arguments: Any) -> str:
        handled.append("refund")
        return "refunded"

    channel, provider, transport, store, kit = build(tools=[Tool(name="refund", handler=refund)])

    @kit.hook(HookTrigger.ON_TOOL_CALL)
    async def policy(event: ToolCallEvent, ctx: HookContext) -> HookResult:
        return HookResult.block("refunds need a human")

    session = await channel.start_session("room-1", "user-1")
    await provider.simulate_tool_call(session, "call-1", "refund", {})

    assert provider.tool_results == [(session.id, "call-1", error("refunds need a human"))]
    record = record_of(store, session, "call-1")
    assert (record.status, record.result, record.error) == (
        "failed",
        "",
        error("refunds need a human"),
    )
    assert statuses(transport, session) == [("call-1", "running"), ("call-1", "failed")]
    await kit.close()


# -- bad calls --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_undeclared_tool_gets_a_clear_error_and_no_handler_runs() -> None:
    calls: list[str] = []

    async def handle_tool(name: str, arguments: dict[str, Any]) -> str:
        calls.append(name)
        return "ran"

    channel, provider, _, store, kit = build(tools=[WEATHER_DEFINITION], tool_handler=handle_tool)
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_tool_call(session, "call-1", "x", {})

    assert provider.tool_results == [(session.id, "call-1", error("Tool 'x' is not declared"))]
    assert calls == []
    assert record_of(store, session, "call-1").status == "failed"
    await kit.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "Invalid arguments for 'get_weather': arguments: 'city' is a required property"),
        ({"city": 5}, "Invalid arguments for 'get_weather': city: 5 is not of type 'string'"),
    ],
)
async def test_arguments_that_break_the_schema_get_an_error_naming_the_field(
    arguments: dict[str, Any], message: str
) -> None:
    calls: list[dict[str, Any]] = []

    async def handler(**given: Any) -> str:
        calls.append(given)
        return "ran"

    channel, provider, _, store, kit = build(tools=[weather_tool(handler)])
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_tool_call(session, "call-1", "get_weather", arguments)

    assert provider.tool_results == [(session.id, "call-1", error(message))]
    assert calls == []
    assert record_of(store, session, "call-1").status == "failed"
    await kit.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("arguments", [["Paris"], "Paris", None])
async def test_arguments_that_are_not_an_object_get_an_error(arguments: Any) -> None:
    channel, provider, _, store, kit = build(tools=[weather_tool(get_weather)])
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_tool_call(session, "call-1", "get_weather", arguments)

    assert provider.tool_results == [
        (session.id, "call-1", error("Invalid arguments for 'get_weather': expected a JSON object"))
    ]
    record = record_of(store, session, "call-1")
    assert (record.status, record.arguments) == ("failed", {"_raw": arguments})
    await kit.close()


@pytest.mark.asyncio
async def test_a_handler_that_raises_returns_an_error_without_a_traceback_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(city: str) -> str:
        raise RuntimeError("backend down")

    channel, provider, transport, store, kit = build(tools=[weather_tool(broken)])
    session = await channel.start_session("room-1", "user-1")

    with caplog.at_level(logging.ERROR, logger="voice.channels"):
        await provider.simulate_tool_call(session, "call-1", "get_weather", {"city": "Paris"})

    expected = error("Tool 'get_weather' failed (RuntimeError)")
    [(_, _, result)] = provider.tool_results
    assert result == expected
    assert "Traceback" not in result
    assert "backend down" not in result  # the message may hold internals: log only
    record = record_of(store, session, "call-1")
    assert (record.status, record.error) == ("failed", expected)
    [logged] = [
        r for r in caplog.records if r.name == "voice.channels" and r.levelno >= logging.ERROR
    ]
    assert logged.getMessage() == "tool get_weather raised"
    assert "RuntimeError: backend down" in traceback_of(logged)
    assert statuses(transport, session) == [("call-1", "running"), ("call-1", "failed")]
    assert session.state is SessionState.ACTIVE
    await kit.close()


@pytest.mark.asyncio
async def test_a_hanging_handler_times_out_with_a_clear_error() -> None:
    gate = Gate()
    channel, provider, transport, store, kit = build(tools=[weather_tool(gate)], tool_timeout=0.05)
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_tool_call(session, "call-1", "get_weather", {"city": "Paris"})

    expected = error("Tool 'get_weather' timed out after 0.05 s")
    assert provider.tool_results == [(session.id, "call-1", expected)]
    assert gate.cancelled is True
    record = record_of(store, session, "call-1")
    assert (record.status, record.error) == ("timed_out", expected)
    assert statuses(transport, session) == [("call-1", "running"), ("call-1", "timed_out")]
    await kit.close()


@pytest.mark.asyncio
async def test_a_result_longer_than_the_limit_is_cut_to_the_limit_with_an_honest_notice() -> None:
    async def big(**arguments: Any) -> str:
        return "x" * 500

    channel, provider, _, store, kit = build(
        tools=[Tool(name="big", handler=big)], tool_result_max_length=100
    )
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_tool_call(session, "call-1", "big", {})

    [(_, _, result)] = provider.tool_results
    notice = "\n[truncated: the result was 500 characters; only the first 28 are shown]"
    assert result == "x" * 28 + notice
    assert len(result) == 100
    assert record_of(store, session, "call-1").result == result
    await kit.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("length", [99, 100])
async def test_a_result_within_the_limit_is_not_touched(length: int) -> None:
    async def sized(**arguments: Any) -> str:
        return "y" * length

    channel, provider, _, _, kit = build(
        tools=[Tool(name="sized", handler=sized)], tool_result_max_length=100
    )
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_tool_call(session, "call-1", "sized", {})

    assert provider.tool_results == [(session.id, "call-1", "y" * length)]
    await kit.close()


# -- mute_on_tool_call --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_mute_on_tool_call_drops_caller_audio_while_the_tool_runs_then_lets_it_flow() -> None:
    gate = Gate()
    channel, provider, transport, _, kit = build(
        tools=[Tool(name="slow", handler=gate)], mute_on_tool_call=True
    )
    session = await channel.start_session("room-1", "user-1")
    runtime = channel._runtimes[session.id]

    await provider._fire("tool_call", session, "call-1", "slow", {})
    await asyncio.wait_for(gate.entered.wait(), WAIT_S)
    transport._deliver_audio(session, b"\x02\x00" * 320)
    transport._deliver_audio(session, b"\x03\x00" * 320)
    await asyncio.wait_for(runtime.inbound.join(), WAIT_S)
    assert provider.sent_audio == []
    assert runtime.stats["inbound_dropped_tool_mute"] == 2

    gate.release.set()
    await channel.settle(session)
    await transport.simulate_client_audio(session, FRAME)
    assert provider.sent_audio == [(session.id, FRAME)]
    assert runtime.stats["inbound_dropped_tool_mute"] == 2
    await kit.close()


@pytest.mark.asyncio
async def test_without_mute_on_tool_call_caller_audio_flows_while_the_tool_runs() -> None:
    gate = Gate()
    channel, provider, transport, _, kit = build(tools=[Tool(name="slow", handler=gate)])
    session = await channel.start_session("room-1", "user-1")
    runtime = channel._runtimes[session.id]

    await provider._fire("tool_call", session, "call-1", "slow", {})
    await asyncio.wait_for(gate.entered.wait(), WAIT_S)
    transport._deliver_audio(session, FRAME)
    await asyncio.wait_for(runtime.inbound.join(), WAIT_S)

    assert provider.sent_audio == [(session.id, FRAME)]
    assert runtime.stats["inbound_dropped_tool_mute"] == 0
    gate.release.set()
    await kit.close()


# -- tools and the session's life ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_ending_the_session_while_a_tool_runs_records_it_cancelled_and_submits_nothing() -> (
    None
):
    gate = Gate()
    channel, provider, transport, store, kit = build(tools=[Tool(name="slow", handler=gate)])
    session = await channel.start_session("room-1", "user-1")
    await provider._fire("tool_call", session, "call-1", "slow", {})
    await asyncio.wait_for(gate.entered.wait(), WAIT_S)

    await channel.end_session(session.id)
    gate.release.set()

    assert gate.cancelled is True
    record = record_of(store, session, "call-1")
    assert record.status == "cancelled"
    assert record.finished_at is not None
    assert provider.tool_results == []
    assert "submit_tool_result" not in [call.method for call in provider.calls]
    assert statuses(transport, session) == [("call-1", "running")]
    await kit.close()


@pytest.mark.asyncio
async def test_a_slow_tool_does_not_hold_up_a_fast_one() -> None:
    slow = Gate(result="slow result")

    async def fast(**arguments: Any) -> str:
        return "fast result"

    provider = NotifyingProvider()
    channel, _, transport, _, kit = build(
        provider=provider,
        tools=[Tool(name="slow", handler=slow), Tool(name="fast", handler=fast)],
    )
    session = await channel.start_session("room-1", "user-1")

    await provider._fire("tool_call", session, "call-slow", "slow", {})
    await provider._fire("tool_call", session, "call-fast", "fast", {})
    await asyncio.wait_for(provider.result_submitted.wait(), WAIT_S)
    assert provider.tool_results == [(session.id, "call-fast", "fast result")]
    assert slow.entered.is_set()

    slow.release.set()
    await channel.settle(session)
    assert provider.tool_results == [
        (session.id, "call-fast", "fast result"),
        (session.id, "call-slow", "slow result"),
    ]
    assert statuses(transport, session) == [
        ("call-slow", "running"),
        ("call-fast", "running"),
        ("call-fast", "succeeded"),
        ("call-slow", "succeeded"),
    ]
    await kit.close()
