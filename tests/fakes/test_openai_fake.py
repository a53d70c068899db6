"""Self-tests of the fake OpenAI Realtime server, driven by a plain websockets client."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.fakes.openai_realtime import FakeOpenAIRealtime

pytestmark = pytest.mark.asyncio

JSON = dict[str, Any]

RESPONSE_HEAD = [
    "response.created",
    "rate_limits.updated",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
]
RESPONSE_TAIL = [
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "conversation.item.done",
    "response.done",
]


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeOpenAIRealtime]:
    async with FakeOpenAIRealtime() as server:
        yield server


async def _connect(fake: FakeOpenAIRealtime, key: str = "sk-test") -> ClientConnection:
    return await connect(
        f"{fake.base_url}/realtime?model=gpt-realtime",
        additional_headers={"Authorization": f"Bearer {key}"},
    )


async def recv(ws: ClientConnection, within: float = 5) -> JSON:
    async with asyncio.timeout(within):
        event: JSON = json.loads(await ws.recv())
    assert event["event_id"].startswith("event_")
    return event


async def recv_until(ws: ClientConnection, kind: str) -> list[JSON]:
    """Events up to and including the first of type ``kind``."""
    events: list[JSON] = []
    while not events or events[-1]["type"] != kind:
        events.append(await recv(ws))
    return events


async def send(ws: ClientConnection, event: JSON) -> None:
    await ws.send(json.dumps(event))


def collapse(types: list[str], repeated: set[str]) -> list[str]:
    """Consecutive runs of the ``repeated`` types squeezed to one entry (for delta streams)."""
    out: list[str] = []
    for kind in types:
        if kind in repeated and out and out[-1] == kind:
            continue
        out.append(kind)
    return out


async def test_session_created_then_update_merges(fake: FakeOpenAIRealtime) -> None:
    async with await _connect(fake) as ws:
        created = await recv(ws)
        assert created["type"] == "session.created"
        session = created["session"]
        assert session["type"] == "realtime"
        assert session["model"] == "gpt-realtime"
        assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        assert session["audio"]["input"]["turn_detection"]["create_response"] is True

        await send(
            ws,
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "instructions": "Be brief.",
                    "audio": {
                        "input": {
                            "transcription": {"model": "gpt-4o-mini-transcribe"},
                            "turn_detection": {"type": "semantic_vad"},
                        },
                        "output": {"voice": "cedar"},
                    },
                },
            },
        )
        updated = await recv(ws)
        assert updated["type"] == "session.updated"
        merged = updated["session"]
        assert merged["instructions"] == "Be brief."
        assert merged["audio"]["output"]["voice"] == "cedar"
        assert merged["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert merged["audio"]["input"]["turn_detection"] == {
            "type": "semantic_vad",
            "eagerness": "auto",
            "create_response": True,
            "interrupt_response": True,
        }
        assert merged["id"] == session["id"]

        await send(ws, {"type": "session.update", "session": {"instructions": "x"}})
        error = await recv(ws)
        assert error["type"] == "error"
        assert error["error"]["type"] == "invalid_request_error"
        assert error["error"]["param"] == "session.type"

    headers = fake.request_headers[0]
    assert "OpenAI-Beta" not in headers
    assert fake.received_types() == ["session.update", "session.update"]


async def test_bad_key_gets_error_then_close(fake: FakeOpenAIRealtime) -> None:
    async with await _connect(fake, key="sk-wrong") as ws:
        error = await recv(ws)
        assert error["type"] == "error"
        assert error["error"]["code"] == "invalid_api_key"
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 3000
    assert fake.connections == 1


async def test_user_speaks_full_event_order(fake: FakeOpenAIRealtime) -> None:
    async with await _connect(fake) as ws:
        await recv(ws)
        await send(
            ws,
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}},
                },
            },
        )
        await recv_until(ws, "session.updated")
        pcm = b"\x00\x00" * 24000  # one second of silence
        for i in range(0, len(pcm), 4800):
            await send(
                ws,
                {
                    "type": "input_audio_buffer.append",
                    "audio": base64.b64encode(pcm[i : i + 4800]).decode(),
                },
            )
        await fake.wait_for("input_audio_buffer.append", count=10)
        assert fake.audio_bytes == len(pcm)

        await fake.user_speaks("what is the weather like today", duration_ms=800)
        events = await recv_until(ws, "response.done")
        types = collapse(
            [e["type"] for e in events],
            {
                "conversation.item.input_audio_transcription.delta",
                "response.output_audio.delta",
                "response.output_audio_transcript.delta",
            },
        )
        assert types[:9] == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
            "conversation.item.input_audio_transcription.delta",
            "conversation.item.input_audio_transcription.completed",
            *RESPONSE_HEAD[:2],
        ]
        assert types[9:12] == RESPONSE_HEAD[2:]
        middle = types[12:-6]
        assert set(middle) == {
            "response.output_audio.delta",
            "response.output_audio_transcript.delta",
        }
        assert types[-6:] == RESPONSE_TAIL

        by_type = {e["type"]: e for e in events}
        user_item = by_type["input_audio_buffer.committed"]["item_id"]
        assert by_type["input_audio_buffer.speech_started"]["item_id"] == user_item
        assert by_type["input_audio_buffer.speech_started"]["audio_start_ms"] == 200
        assert by_type["input_audio_buffer.speech_stopped"]["audio_end_ms"] == 1000
        completed = by_type["conversation.item.input_audio_transcription.completed"]
        assert completed["transcript"] == "what is the weather like today"
        assert completed["usage"]["type"] == "tokens"
        deltas = [
            e["delta"]
            for e in events
            if e["type"] == "conversation.item.input_audio_transcription.delta"
        ]
        assert "".join(deltas) == completed["transcript"]

        audio = b"".join(
            base64.b64decode(e["delta"])
            for e in events
            if e["type"] == "response.output_audio.delta"
        )
        assert len(audio) == 600 * 48
        transcript = "".join(
            e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"
        )
        assert transcript == "Hello from the fake."
        done = by_type["response.done"]["response"]
        assert done["status"] == "completed"
        assert done["output"][0]["content"][0]["transcript"] == "Hello from the fake."
        usage = done["usage"]
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert "cached_tokens" in usage["input_token_details"]
        assert "audio_tokens" in usage["output_token_details"]


async def test_no_transcription_events_without_transcription_config(
    fake: FakeOpenAIRealtime,
) -> None:
    async with await _connect(fake) as ws:
        await recv(ws)
        await fake.user_speaks("hi")
        events = await recv_until(ws, "response.done")
        assert not any("transcription" in e["type"] for e in events)


async def test_cancel_without_response_is_a_recoverable_error(fake: FakeOpenAIRealtime) -> None:
    async with await _connect(fake) as ws:
        await recv(ws)
        await send(ws, {"type": "response.cancel", "event_id": "evt_1"})
        error = await recv(ws)
        assert error["type"] == "error"
        assert error["error"]["code"] == "response_cancel_not_active"
        assert error["error"]["event_id"] == "evt_1"
        await send(ws, {"type": "no.such.event"})
        error = await recv(ws)
        assert error["error"]["type"] == "invalid_request_error"
        await ws.send("{not json")
        error = await recv(ws)
        assert error["type"] == "error"
        await send(ws, {"type": "input_audio_buffer.clear"})
        assert (await recv(ws))["type"] == "input_audio_buffer.cleared"


async def test_cancel_active_response(fake: FakeOpenAIRealtime) -> None:
    fake.chunk_interval_s = 0.05
    async with await _connect(fake) as ws:
        await recv(ws)
        await send(
            ws,
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hi"}],
                },
            },
        )
        assert [e["type"] for e in await recv_until(ws, "conversation.item.done")] == [
            "conversation.item.added",
            "conversation.item.done",
        ]
        await send(ws, {"type": "response.create"})
        await recv_until(ws, "response.output_audio.delta")
        await send(ws, {"type": "response.create"})
        error = await recv_until(ws, "error")
        assert error[-1]["error"]["code"] == "conversation_already_has_active_response"
        await send(ws, {"type": "response.cancel"})
        events = await recv_until(ws, "response.done")
        done = events[-1]["response"]
        assert done["status"] == "cancelled"
        assert done["status_details"]["reason"] == "client_cancelled"
        assert not fake.response_active


async def test_barge_in_cancels_with_turn_detected(fake: FakeOpenAIRealtime) -> None:
    fake.chunk_interval_s = 0.05
    async with await _connect(fake) as ws:
        await recv(ws)
        await fake.user_speaks("first")
        await recv_until(ws, "response.output_audio.delta")
        await fake.user_speaks("second")
        events = await recv_until(ws, "response.done")
        types = [e["type"] for e in events]
        assert "input_audio_buffer.speech_started" in types
        assert types.index("input_audio_buffer.speech_started") < types.index("response.done")
        assert events[-1]["response"]["status_details"]["reason"] == "turn_detected"
        # The second turn then gets its own, complete response.
        events = await recv_until(ws, "response.done")
        assert events[-1]["response"]["status"] == "completed"
        await fake.wait_idle()
        assert not fake.response_active


async def test_truncate(fake: FakeOpenAIRealtime) -> None:
    async with await _connect(fake) as ws:
        await recv(ws)
        await fake.user_speaks("hello")
        events = await recv_until(ws, "response.done")
        item_id = events[-1]["response"]["output"][0]["id"]

        await send(
            ws,
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 700,
            },
        )
        error = await recv(ws)
        assert error["type"] == "error"
        assert error["error"]["type"] == "invalid_request_error"
        assert error["error"]["code"] == "invalid_value"

        await send(
            ws,
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 300,
            },
        )
        truncated = await recv(ws)
        assert truncated["type"] == "conversation.item.truncated"
        assert (truncated["item_id"], truncated["content_index"], truncated["audio_end_ms"]) == (
            item_id,
            0,
            300,
        )
        assert fake.truncations[0]["audio_end_ms"] == 300

        await send(
            ws,
            {
                "type": "conversation.item.truncate",
                "item_id": "item_nope",
                "content_index": 0,
                "audio_end_ms": 1,
            },
        )
        assert (await recv(ws))["type"] == "error"

        await send(ws, {"type": "conversation.item.delete", "item_id": item_id})
        deleted = await recv(ws)
        assert deleted == {**deleted, "type": "conversation.item.deleted", "item_id": item_id}


async def test_tool_call_flow(fake: FakeOpenAIRealtime) -> None:
    fake.next_tool_call = ("get_weather", {"city": "Paris"})
    async with await _connect(fake) as ws:
        await recv(ws)
        await fake.user_speaks("weather in Paris?")
        events = await recv_until(ws, "response.done")
        types = collapse([e["type"] for e in events], {"response.function_call_arguments.delta"})
        assert types[5:] == [
            "response.created",
            "rate_limits.updated",
            "response.output_item.added",
            "conversation.item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
        args_done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert args_done["name"] == "get_weather"
        assert json.loads(args_done["arguments"]) == {"city": "Paris"}
        added = next(e for e in events if e["type"] == "response.output_item.added")["item"]
        assert added["type"] == "function_call"
        assert added["call_id"] == args_done["call_id"]
        assert added["id"] == args_done["item_id"]
        deltas = "".join(
            e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"
        )
        assert deltas == args_done["arguments"]

        await send(
            ws,
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "function_call_output",
                    "call_id": args_done["call_id"],
                    "output": '{"t": 20}',
                },
            },
        )
        assert [e["type"] for e in await recv_until(ws, "conversation.item.done")] == [
            "conversation.item.added",
            "conversation.item.done",
        ]
        await send(ws, {"type": "response.create"})
        events = await recv_until(ws, "response.done")
        assert "response.output_audio.delta" in {e["type"] for e in events}
        assert events[-1]["response"]["status"] == "completed"
    assert fake.tool_outputs[0]["call_id"] == args_done["call_id"]
    assert fake.tool_outputs[0]["output"] == '{"t": 20}'


async def test_drop_connection_and_reconnect(fake: FakeOpenAIRealtime) -> None:
    async with await _connect(fake) as ws:
        await recv(ws)
        await fake.drop_connection()
        with pytest.raises(ConnectionClosed):
            await recv(ws)
    async with await _connect(fake) as ws:
        assert (await recv(ws))["type"] == "session.created"
        await fake.wait_for_connections(2)
        await fake.send_error("server_error", "boom", type="server_error")
        error = await recv(ws)
        assert error["error"] == {**error["error"], "type": "server_error", "code": "server_error"}
    assert fake.connections == 2
