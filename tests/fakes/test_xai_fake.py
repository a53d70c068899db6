"""Self-tests of the fake xAI Grok Voice Agent server, driven by a plain websockets client."""

from __future__ import annotations

import asyncio
import base64
import json
import warnings
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.fakes.xai_realtime import FakeXAIRealtime

pytestmark = pytest.mark.asyncio

JSON = dict[str, Any]

TRANSCRIPTION_COMPLETED = "conversation.item.input_audio_transcription.completed"
TRANSCRIPTION_UPDATED = "conversation.item.input_audio_transcription.updated"
STREAMED = {"response.output_audio.delta", "response.output_audio_transcript.delta"}


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeXAIRealtime]:
    async with FakeXAIRealtime(ping_interval_s=None) as server:
        yield server


async def _connect(
    fake: FakeXAIRealtime, key: str | None = "xai-test", query: str = "?model=grok-voice-latest"
) -> ClientConnection:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return await connect(f"{fake.base_url}/realtime{query}", additional_headers=headers)


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


async def greeted(fake: FakeXAIRealtime, **kwargs: Any) -> ClientConnection:
    """A connected client past conversation.created and session.created."""
    ws = await _connect(fake, **kwargs)
    await recv_until(ws, "session.created")
    return ws


async def send(ws: ClientConnection, event: JSON) -> None:
    await ws.send(json.dumps(event))


async def update(ws: ClientConnection, session: JSON) -> JSON:
    """session.update; returns the session.updated or the error event."""
    await send(ws, {"type": "session.update", "session": session})
    event = await recv(ws)
    assert event["type"] in ("session.updated", "error"), event
    return event


def collapse(types: list[str]) -> list[str]:
    out: list[str] = []
    for kind in types:
        if kind in STREAMED and out and out[-1] == kind:
            continue
        out.append(kind)
    return out


def tone(ms: int, rate: int, *, amplitude: int = 3000, freq: float = 440.0) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return bytes((amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes())


def silence(ms: int, rate: int) -> bytes:
    return b"\x00\x00" * (rate * ms // 1000)


async def append(ws: ClientConnection, audio: bytes, chunk: int = 640) -> int:
    count = 0
    for i in range(0, len(audio), chunk):
        await send(
            ws,
            {
                "type": "input_audio_buffer.append",
                "audio": base64.b64encode(audio[i : i + chunk]).decode(),
            },
        )
        count += 1
    return count


# ---------------------------------------------------------------------- connection


async def test_greeting_is_conversation_created_then_session_created(
    fake: FakeXAIRealtime,
) -> None:
    async with await _connect(fake, query="") as ws:
        conversation = await recv(ws)
        created = await recv(ws)

    assert conversation["type"] == "conversation.created"
    assert conversation["conversation"]["object"] == "realtime.conversation"
    assert conversation["conversation"]["id"].startswith("conv_")
    assert created["type"] == "session.created"
    session = created["session"]
    assert session["model"] == "grok-voice-latest"  # ?model= is optional
    assert session["voice"] == "eve"
    assert session["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.85,
        "prefix_padding_ms": 333,
        "silence_duration_ms": 500,
        "idle_timeout_ms": None,
    }
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    # The OpenAI GA session keys are not xAI's.
    assert "type" not in session
    assert "output_modalities" not in session
    assert "voice" not in session["audio"]["output"]
    assert "turn_detection" not in session["audio"]["input"]
    assert fake.request_paths == ["/v1/realtime"]


@pytest.mark.parametrize(
    ("key", "status", "text"),
    [
        ("xai-wrong-key", 400, "Incorrect API key provided: xa***ey."),
        (None, 401, "No authorization header"),
    ],
)
async def test_a_bad_key_is_refused_at_the_handshake(
    fake: FakeXAIRealtime, key: str | None, status: int, text: str
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await _connect(fake, key=key)

    response = refused.value.response
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert text in json.loads(response.body)["error"]
    assert fake.connections == 0
    assert [code for code, _ in fake.refused_handshakes] == [status]


async def test_keep_alive_pings() -> None:
    async with FakeXAIRealtime(ping_interval_s=0.02) as fake:
        async with await greeted(fake) as ws:
            pings = [await recv(ws), await recv(ws)]
    assert [p["type"] for p in pings] == ["ping", "ping"]
    assert all(isinstance(p["timestamp"], int) and p["timestamp"] > 1e12 for p in pings)
    assert fake.pings >= 2


async def test_reconnect_gets_a_new_session_and_conversation(fake: FakeXAIRealtime) -> None:
    async with await _connect(fake) as ws:
        first = await recv(ws)
        await recv(ws)
        await fake.user_speaks("remember this")
        await recv_until(ws, "response.done")
        await fake.drop_connection()
        with pytest.raises(ConnectionClosed):
            while True:
                await recv(ws)
    async with await _connect(fake) as ws:
        second = await recv(ws)
        await fake.wait_for_connections(2)

    assert first["conversation"]["id"] != second["conversation"]["id"]
    assert [item["role"] for item in fake.items_of(0).values()] == ["user", "assistant"]
    assert fake.items_of(1) == {}
    assert [e["type"] for e in fake.sent_per_connection[1]] == [
        "conversation.created",
        "session.created",
    ]


async def test_expire_session_sends_max_duration_then_closes(fake: FakeXAIRealtime) -> None:
    async with await greeted(fake) as ws:
        await fake.expire_session()
        error = await recv(ws)
        with pytest.raises(ConnectionClosed):
            await recv(ws)
    assert error["error"]["type"] == "max_duration"
    assert "120 minutes" in error["error"]["message"]
    assert ws.close_code == 1000


# ---------------------------------------------------------------------- session shape


async def test_the_xai_session_shape_is_accepted_and_echoed(fake: FakeXAIRealtime) -> None:
    async with await greeted(fake) as ws:
        updated = await update(
            ws,
            {
                "type": "realtime",  # not xAI's, but harmless
                "output_modalities": ["audio"],  # ignored
                "voice": "Ara",
                "instructions": "Be brief.",
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 16000},
                        "transcription": {"language_hint": "en", "keyterms": ["Grok"]},
                    },
                    "output": {"format": {"type": "audio/pcmu"}},
                },
            },
        )

    assert updated["type"] == "session.updated"
    session = updated["session"]
    assert session["voice"] == "Ara"
    assert session["instructions"] == "Be brief."
    assert session["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.85,
        "prefix_padding_ms": 333,
        "silence_duration_ms": 300,
        "idle_timeout_ms": None,
    }
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 16000}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["input"]["transcription"]["keyterms"] == ["Grok"]
    assert "type" not in session
    assert "output_modalities" not in session


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 32000, 44100, 48000])
async def test_every_documented_pcm_rate_is_accepted(fake: FakeXAIRealtime, rate: int) -> None:
    async with await greeted(fake) as ws:
        event = await update(
            ws, {"audio": {"input": {"format": {"type": "audio/pcm", "rate": rate}}}}
        )
    assert event["session"]["audio"]["input"]["format"]["rate"] == rate


def _input_format(value: JSON) -> JSON:
    return {"audio": {"input": {"format": value}}}


@pytest.mark.parametrize(
    ("session", "param"),
    [
        ({"turn_detection": {"type": "semantic_vad"}}, "turn_detection.type"),
        ({"turn_detection": {"type": "server_vad", "threshold": 1.5}}, "turn_detection.threshold"),
        (_input_format({"type": "audio/pcm", "rate": 96000}), "audio.input.format.rate"),
        (_input_format({"type": "audio/pcm", "rate": 11025}), "audio.input.format.rate"),
        ({"audio": {"output": {"format": {"type": "pcm16"}}}}, "audio.output.format.type"),
        ({"voice": "alloy"}, "voice"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools[0].type"),
        (
            {"tools": [{"type": "x_search", "allowed_x_handles": "xai"}]},
            "tools[0].allowed_x_handles",
        ),
        ({"tools": [{"type": "file_search"}]}, "tools[0].vector_store_ids"),
    ],
)
async def test_an_invalid_session_gets_an_error_and_changes_nothing(
    fake: FakeXAIRealtime, session: JSON, param: str
) -> None:
    async with await greeted(fake) as ws:
        before = fake.session
        error = await update(ws, session)
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["param"] == f"session.{param}"
    assert fake.session == before


async def test_voices_are_case_insensitive_and_custom_ids_need_registering() -> None:
    async with FakeXAIRealtime(ping_interval_s=None, custom_voices={"voice_abc"}) as fake:
        async with await greeted(fake) as ws:
            voices = [(await update(ws, {"voice": v}))["type"] for v in ("REX", "sal", "voice_abc")]
            unknown = await update(ws, {"voice": "voice_xyz"})
    assert voices == ["session.updated"] * 3
    assert unknown["type"] == "error"


async def test_null_turn_detection_means_manual_turns(fake: FakeXAIRealtime) -> None:
    fake.user_transcripts.append("typed by hand")
    async with await greeted(fake) as ws:
        manual = await update(ws, {"turn_detection": {"type": None}})
        assert manual["session"]["turn_detection"] is None
        with pytest.raises(RuntimeError):
            await fake.user_speaks("no vad")
        await append(ws, tone(200, 24000))
        await send(ws, {"type": "input_audio_buffer.commit"})
        events = await recv_until(ws, TRANSCRIPTION_COMPLETED)
    assert [e["type"] for e in events] == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        TRANSCRIPTION_COMPLETED,
    ]
    assert events[-1]["transcript"] == "typed by hand"
    assert events[-1]["status"] == "completed"


async def test_commit_is_refused_while_server_vad_is_on(fake: FakeXAIRealtime) -> None:
    async with await greeted(fake) as ws:
        await append(ws, tone(200, 24000))
        await send(ws, {"type": "input_audio_buffer.commit", "event_id": "evt_9"})
        error = await recv(ws)
    assert error["type"] == "error"
    assert "only available when turn_detection is null" in error["error"]["message"]
    assert error["error"]["event_id"] == "evt_9"


# ---------------------------------------------------------------------- tools


async def test_native_tools_are_accepted_beside_functions(fake: FakeXAIRealtime) -> None:
    tools = [
        {"type": "web_search"},
        {"type": "x_search", "allowed_x_handles": ["xai"]},
        {"type": "file_search", "vector_store_ids": ["collection_1"], "max_num_results": 5},
        {"type": "function", "name": "get_weather", "description": "d", "parameters": {}},
        {"type": "function", "function": {"name": "get_time", "parameters": {}}},
    ]
    fake.next_tool_call = ("get_weather", {"city": "Paris"})
    async with await greeted(fake) as ws:
        updated = await update(ws, {"tools": tools})
        await fake.user_speaks("weather in Paris?")
        events = await recv_until(ws, "response.done")

    assert updated["session"]["tools"] == tools
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert (done["name"], json.loads(done["arguments"])) == ("get_weather", {"city": "Paris"})
    assert "conversation.item.done" not in {e["type"] for e in events}
    assert events[-1]["response"]["output"][0]["type"] == "function_call"


@pytest.mark.parametrize(
    ("native", "function"),
    [
        ("web_search", "browse_page"),
        ("x_search", "x_keyword_search"),
        ("file_search", "file_search"),
    ],
)
async def test_a_function_shadowing_a_native_tool_fails_the_response(
    fake: FakeXAIRealtime, native: str, function: str
) -> None:
    native_tool: JSON = {"type": native}
    if native == "file_search":
        native_tool["vector_store_ids"] = ["c1"]
    async with await greeted(fake) as ws:
        updated = await update(
            ws, {"tools": [native_tool, {"type": "function", "name": function, "parameters": {}}]}
        )
        assert updated["type"] == "session.updated"  # accepted by session.update...
        await send(ws, {"type": "response.create"})
        error = await recv(ws)  # ...but the response fails
        await fake.wait_idle()
    assert error["type"] == "error"
    assert error["error"]["type"] == "internal_error"
    assert error["error"]["code"] == "server_error"
    assert "response.created" not in fake.sent_types()


# ---------------------------------------------------------------------- turns and transcripts


async def test_a_user_turn_streams_partials_as_in_progress_completed_events(
    fake: FakeXAIRealtime,
) -> None:
    async with await greeted(fake) as ws:
        await fake.user_speaks("what is the weather like")
        events = await recv_until(ws, "response.done")

    types = collapse([e["type"] for e in events])
    assert types[:8] == [
        "input_audio_buffer.speech_started",
        TRANSCRIPTION_COMPLETED,
        TRANSCRIPTION_COMPLETED,
        TRANSCRIPTION_COMPLETED,
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        TRANSCRIPTION_COMPLETED,
    ]
    assert types[8:] == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    transcripts = [
        (e["transcript"], e["status"]) for e in events if e["type"] == TRANSCRIPTION_COMPLETED
    ]
    assert transcripts == [
        ("what is ", "in_progress"),
        ("what is the weather ", "in_progress"),
        ("what is the weather like", "in_progress"),
        ("what is the weather like", "completed"),
    ]
    added = [e for e in events if e["type"] == "conversation.item.added"]
    assert added[0]["item"]["content"][0]["transcript"] == "what is the weather like"
    assert all(e["previous_item_id"] is None for e in added)
    assert not {"rate_limits.updated", "conversation.item.done"} & set(types)
    assert not any(t.endswith("transcription.delta") for t in types)


async def test_a_transcription_model_switches_partials_to_updated_events(
    fake: FakeXAIRealtime,
) -> None:
    async with await greeted(fake) as ws:
        await update(ws, {"audio": {"input": {"transcription": {"model": "grok-transcribe"}}}})
        await fake.user_speaks("hello grok")
        events = await recv_until(ws, "input_audio_buffer.committed")
        events += await recv_until(ws, TRANSCRIPTION_COMPLETED)

    updates = [e["transcript"] for e in events if e["type"] == TRANSCRIPTION_UPDATED]
    completed = [e for e in events if e["type"] == TRANSCRIPTION_COMPLETED]
    assert updates == ["hello ", "hello grok"]
    assert [(e["transcript"], e["status"]) for e in completed] == [("hello grok", "completed")]


async def test_response_usage_as_xai_sends_it(fake: FakeXAIRealtime) -> None:
    async with await greeted(fake) as ws:
        await send(ws, {"type": "response.create", "response": {"metadata": {"src": "test"}}})
        events = await recv_until(ws, "response.done")

    created, done = events[0], events[-1]
    assert created["type"] == "response.created"
    assert created["response"]["usage"] == {}
    assert created["response"]["metadata"] == {"src": "test"}
    usage = done["response"]["usage"]
    assert set(usage) == {"input_tokens", "output_tokens", "total_tokens"}
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert done["usage"] == usage
    assert done["response"]["metadata"] == {"src": "test"}
    assert done["response"]["status"] == "completed"


async def test_text_modality_streams_output_text(fake: FakeXAIRealtime) -> None:
    async with await greeted(fake) as ws:
        await send(ws, {"type": "response.create", "response": {"modalities": ["text"]}})
        events = await recv_until(ws, "response.done")
    types = {e["type"] for e in events}
    assert "response.output_text.delta" in types
    assert "response.output_audio.delta" not in types


async def test_truncation_reports_the_transcript_kept(fake: FakeXAIRealtime) -> None:
    fake.next_reply = "one two three four five six"
    async with await greeted(fake) as ws:
        await fake.user_speaks("count")
        item_id = (await recv_until(ws, "response.done"))[-1]["response"]["output"][0]["id"]
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
        await send(ws, {"type": "conversation.item.delete", "item_id": item_id})
        deleted = await recv(ws)

    assert truncated["type"] == "conversation.item.truncated"
    assert (truncated["item_id"], truncated["audio_end_ms"]) == (item_id, 300)
    assert truncated["transcript"] == "one two three"  # half of the 600 ms reply
    assert deleted["type"] == "conversation.item.deleted"
    assert deleted["item_id"] == ""  # as xAI sends it


async def test_unsupported_client_events_get_invalid_event_errors(fake: FakeXAIRealtime) -> None:
    async with await greeted(fake) as ws:
        await send(ws, {"type": "conversation.item.retrieve", "item_id": "item_1"})
        retrieve = await recv(ws)
        await send(ws, {"type": "response.cancel"})
        cancel = await recv(ws)
    assert retrieve["error"]["type"] == "invalid_event"
    assert cancel["error"]["message"] == "Cancellation failed: no active response found."


async def test_force_message_speaks_the_given_line(fake: FakeXAIRealtime) -> None:
    async with await greeted(fake) as ws:
        await send(
            ws,
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "force_message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "One moment please."}],
                },
            },
        )
        events = await recv_until(ws, "response.done")
    assert events[0]["type"] == "response.created"
    done = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
    assert done["transcript"] == "One moment please."
    assert fake.received_types() == ["conversation.item.create"]  # no response.create


# ---------------------------------------------------------------------- audio


async def test_auto_vad_on_16_khz_input(fake: FakeXAIRealtime) -> None:
    fake.auto_vad = True
    fake.user_transcripts.append("turn from audio")
    audio = silence(400, 16000) + tone(500, 16000) + silence(600, 16000)
    async with await greeted(fake) as ws:
        await update(ws, {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}})
        await append(ws, audio)
        events = await recv_until(ws, "response.done")

    started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
    stopped = next(e for e in events if e["type"] == "input_audio_buffer.speech_stopped")
    assert started["audio_start_ms"] == 400 - 333  # prefix_padding_ms 333
    assert stopped["audio_end_ms"] == 400 + 500 + 500  # silence_duration_ms 500
    final = [e for e in events if e["type"] == TRANSCRIPTION_COMPLETED][-1]
    assert (final["transcript"], final["status"]) == ("turn from audio", "completed")
    assert fake.input_rate() == 16000
    assert fake.input_pcm16() == audio


async def test_mu_law_output_is_the_reply_tone_at_8_khz(fake: FakeXAIRealtime) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    async with await greeted(fake) as ws:
        await update(ws, {"audio": {"output": {"format": {"type": "audio/pcmu"}}}})
        await fake.user_speaks("hi")
        events = await recv_until(ws, "response.done")
    mulaw = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    assert len(mulaw) == 600 * 8
    samples = np.frombuffer(audioop.ulaw2lin(mulaw, 2), dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.fft.rfftfreq(samples.size, 1 / 8000)[int(np.argmax(spectrum))] - 440) < 2


async def test_pcm_output_at_a_non_default_rate(fake: FakeXAIRealtime) -> None:
    async with await greeted(fake) as ws:
        await update(ws, {"audio": {"output": {"format": {"type": "audio/pcm", "rate": 44100}}}})
        await fake.user_speaks("hi")
        events = await recv_until(ws, "response.done")
        item_id = events[-1]["response"]["output"][0]["id"]
        await send(
            ws,
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 600,
            },
        )
        truncated = await recv(ws)
    pcm = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    assert len(pcm) == 44100 * 600 // 1000 * 2
    assert truncated["type"] == "conversation.item.truncated"


async def test_client_validator_hook_sees_every_text_frame() -> None:
    seen: list[str] = []

    def validator(raw: str) -> None:
        seen.append(raw)
        if json.loads(raw).get("type") == "input_audio_buffer.clear":
            raise ValueError("not in my schema")

    async with FakeXAIRealtime(ping_interval_s=None, client_validator=validator) as fake:
        async with await greeted(fake) as ws:
            await send(ws, {"type": "input_audio_buffer.clear"})
            assert (await recv(ws))["type"] == "input_audio_buffer.cleared"
    assert fake.invalid_client_frames == [(seen[0], "not in my schema")]
