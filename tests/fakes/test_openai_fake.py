"""Self-tests of the fake OpenAI Realtime server, driven by a plain websockets client."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.fakes.openai_realtime import (
    FakeOpenAIRealtime,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
)

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


# ---------------------------------------------------------------------- audio helpers


def tone(ms: int, rate: int = 24000, *, amplitude: int = 3000, freq: float = 440.0) -> bytes:
    """A sine burst, PCM16 LE mono."""
    t = np.arange(rate * ms // 1000) / rate
    return bytes((amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes())


def silence(ms: int, rate: int = 24000) -> bytes:
    return b"\x00\x00" * (rate * ms // 1000)


def dominant_frequency(pcm16: bytes, rate: int) -> float:
    samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[int(np.argmax(spectrum))])


def rms(pcm16: bytes) -> float:
    samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples * samples)))


@pytest.fixture
def audioop() -> Any:
    """The stdlib G.711 reference (3.11/3.12), an independent check of the fake's codec."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pytest.importorskip("audioop")


async def append(ws: ClientConnection, audio: bytes, chunk: int = 960) -> int:
    """Send ``audio`` in ``input_audio_buffer.append`` events; returns how many."""
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


async def update_session(ws: ClientConnection, session: JSON) -> JSON:
    await send(ws, {"type": "session.update", "session": {"type": "realtime", **session}})
    updated: JSON = (await recv_until(ws, "session.updated"))[-1]["session"]
    return updated


def types_of(events: list[JSON]) -> list[str]:
    return collapse(
        [e["type"] for e in events],
        {
            "conversation.item.input_audio_transcription.delta",
            "response.output_audio.delta",
            "response.output_audio_transcript.delta",
        },
    )


# ---------------------------------------------------------------------- G.711


async def test_g711_codec_matches_the_reference_bit_for_bit(audioop: Any) -> None:
    every_sample = np.arange(-32768, 32768, dtype="<i2").tobytes()
    every_code = bytes(range(256))

    assert ulaw_encode(every_sample) == audioop.lin2ulaw(every_sample, 2)
    assert alaw_encode(every_sample) == audioop.lin2alaw(every_sample, 2)
    assert ulaw_decode(every_code) == audioop.ulaw2lin(every_code, 2)
    assert alaw_decode(every_code) == audioop.alaw2lin(every_code, 2)


async def test_mu_law_input_is_counted_and_decoded_at_8_khz(
    fake: FakeOpenAIRealtime, audioop: Any
) -> None:
    original = tone(1000, 8000)
    async with await _connect(fake) as ws:
        await recv(ws)
        session = await update_session(
            ws,
            {"audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": None}}},
        )
        assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        await append(ws, audioop.lin2ulaw(original[: 80 * 16], 2))  # 80 ms: 640 bytes
        await send(ws, {"type": "input_audio_buffer.commit"})
        error = await recv(ws)
        assert error["error"]["code"] == "input_audio_buffer_commit_empty"
        assert "80.00ms" in error["error"]["message"]

        await append(ws, audioop.lin2ulaw(original[80 * 16 :], 2))
        await fake.wait_for("input_audio_buffer.append", count=2)
        await send(ws, {"type": "input_audio_buffer.commit"})
        assert [e["type"] for e in await recv_until(ws, "conversation.item.done")] == [
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
        ]

    assert fake.audio_bytes == 8000  # one second of mu-law, one byte a sample
    assert fake.input_rate() == 8000
    decoded = fake.input_pcm16()
    assert decoded == audioop.ulaw2lin(audioop.lin2ulaw(original, 2), 2)
    assert abs(dominant_frequency(decoded, 8000) - 440) < 2
    assert abs(rms(decoded) - rms(original)) / rms(original) < 0.02


async def test_a_law_output_carries_the_reply_tone_at_8_khz(
    fake: FakeOpenAIRealtime, audioop: Any
) -> None:
    async with await _connect(fake) as ws:
        await recv(ws)
        await update_session(ws, {"audio": {"output": {"format": {"type": "audio/pcma"}}}})
        await fake.user_speaks("hi")
        events = await recv_until(ws, "response.done")

    alaw = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    assert len(alaw) == 600 * 8  # 600 ms at 8 kHz, one byte a sample
    pcm = audioop.alaw2lin(alaw, 2)
    assert abs(dominant_frequency(pcm, 8000) - 440) < 2
    assert 500 < rms(pcm) < 640  # the fake's quiet tone (amplitude 800, RMS ~566)
    done = events[-1]["response"]
    assert done["audio"]["output"]["format"] == {"type": "audio/pcma"}


async def test_truncation_counts_milliseconds_of_the_g711_output(fake: FakeOpenAIRealtime) -> None:
    async with await _connect(fake) as ws:
        await recv(ws)
        await update_session(ws, {"audio": {"output": {"format": {"type": "audio/pcmu"}}}})
        await fake.user_speaks("hello")
        item_id = (await recv_until(ws, "response.done"))[-1]["response"]["output"][0]["id"]
        for end_ms, expected in ((601, "error"), (600, "conversation.item.truncated")):
            await send(
                ws,
                {
                    "type": "conversation.item.truncate",
                    "item_id": item_id,
                    "content_index": 0,
                    "audio_end_ms": end_ms,
                },
            )
            assert (await recv(ws))["type"] == expected


@pytest.mark.parametrize(
    ("audio", "param"),
    [
        ({"input": {"format": {"type": "audio/pcm", "rate": 16000}}}, "input.format.rate"),
        ({"output": {"format": {"type": "audio/pcm", "rate": 48000}}}, "output.format.rate"),
        ({"input": {"format": {"type": "g711_ulaw"}}}, "input.format.type"),
    ],
)
async def test_a_format_ga_does_not_accept_is_refused_and_changes_nothing(
    fake: FakeOpenAIRealtime, audio: JSON, param: str
) -> None:
    async with await _connect(fake) as ws:
        before = (await recv(ws))["session"]
        await send(ws, {"type": "session.update", "session": {"type": "realtime", "audio": audio}})
        error = await recv(ws)
        assert error["type"] == "error"
        assert error["error"]["code"] == "invalid_value"
        assert error["error"]["param"] == f"session.audio.{param}"
        assert fake.session == before


async def test_input_pcm16_is_what_the_client_appended(fake: FakeOpenAIRealtime) -> None:
    audio = tone(300) + silence(100)
    async with await _connect(fake) as ws:
        await recv(ws)
        count = await append(ws, audio, chunk=1234)  # odd chunks: PCM frames split across events
        await fake.wait_for("input_audio_buffer.append", count=count)
    assert fake.input_pcm16(0) == audio
    assert fake.input_rate(0) == 24000


# ---------------------------------------------------------------------- auto VAD


async def test_auto_vad_detects_a_tone_burst_as_a_user_turn() -> None:
    async with FakeOpenAIRealtime(auto_vad=True) as fake:
        fake.user_transcripts.append("is it raining")
        async with await _connect(fake) as ws:
            await recv(ws)
            await update_session(
                ws, {"audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}}
            )
            # 500 ms quiet, 600 ms "speech", then quiet: prefix_padding_ms 300 and
            # silence_duration_ms 500 (the server_vad defaults).
            await append(ws, silence(500) + tone(600) + silence(700))
            events = await recv_until(ws, "response.done")
            # A second turn with nothing queued gets the placeholder transcript.
            await append(ws, tone(300) + silence(600))
            second = await recv_until(ws, "response.done")

    assert types_of(events)[:9] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "rate_limits.updated",
    ]
    assert types_of(events)[-6:] == RESPONSE_TAIL
    by_type = {e["type"]: e for e in events}
    started = by_type["input_audio_buffer.speech_started"]
    stopped = by_type["input_audio_buffer.speech_stopped"]
    assert started["audio_start_ms"] == 500 - 300
    assert stopped["audio_end_ms"] == 500 + 600 + 500
    assert (
        started["item_id"]
        == stopped["item_id"]
        == by_type["input_audio_buffer.committed"]["item_id"]
    )
    completed = by_type["conversation.item.input_audio_transcription.completed"]
    assert completed["transcript"] == "is it raining"
    assert [
        e["transcript"]
        for e in second
        if e["type"] == "conversation.item.input_audio_transcription.completed"
    ] == ["(unintelligible)"]
    second_start = next(e for e in second if e["type"] == "input_audio_buffer.speech_started")
    assert second_start["audio_start_ms"] == 1600  # never before the previous turn's end


async def test_auto_vad_and_user_speaks_emit_the_same_sequence() -> None:
    sequences = []
    for auto in (True, False):
        async with FakeOpenAIRealtime(auto_vad=auto) as fake:
            async with await _connect(fake) as ws:
                await recv(ws)
                await update_session(
                    ws, {"audio": {"input": {"transcription": {"model": "whisper-1"}}}}
                )
                if auto:
                    fake.user_transcripts.append("hello there")
                    await append(ws, tone(400) + silence(600))
                else:
                    await fake.user_speaks("hello there", duration_ms=400)
                sequences.append(types_of(await recv_until(ws, "response.done")))
    assert sequences[0] == sequences[1]


async def test_auto_vad_ignores_blips_and_respects_silence_duration() -> None:
    async with FakeOpenAIRealtime(auto_vad=True) as fake:
        async with await _connect(fake) as ws:
            await recv(ws)
            await update_session(
                ws,
                {
                    "audio": {
                        "input": {
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 200}
                        }
                    }
                },
            )
            # A 50 ms click is not speech; a 150 ms gap inside speech is not its end.
            audio = tone(50) + silence(300) + tone(300) + silence(150) + tone(300) + silence(250)
            count = await append(ws, audio)
            await fake.wait_for("input_audio_buffer.append", count=count)
            events = await recv_until(ws, "input_audio_buffer.speech_stopped")

    assert [e["type"] for e in events] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
    ]
    assert events[0]["audio_start_ms"] == 50  # onset 350 ms less 300 ms of prefix padding
    assert events[1]["audio_end_ms"] == 350 + 300 + 150 + 300 + 200


async def test_auto_vad_barge_in_cancels_the_reply() -> None:
    async with FakeOpenAIRealtime(
        auto_vad=True, reply_audio_ms=3000, chunk_interval_s=0.02
    ) as fake:
        async with await _connect(fake) as ws:
            await recv(ws)
            await append(ws, tone(300) + silence(600))
            await recv_until(ws, "response.output_audio.delta")
            await append(ws, tone(300))
            events = await recv_until(ws, "response.done")
            assert events[-1]["response"]["status"] == "cancelled"
            assert events[-1]["response"]["status_details"]["reason"] == "turn_detected"
            assert "input_audio_buffer.speech_started" in [e["type"] for e in events]


async def test_auto_vad_does_nothing_without_turn_detection() -> None:
    async with FakeOpenAIRealtime(auto_vad=True) as fake:
        async with await _connect(fake) as ws:
            await recv(ws)
            await update_session(ws, {"audio": {"input": {"turn_detection": None}}})
            count = await append(ws, tone(500) + silence(700))
            await fake.wait_for("input_audio_buffer.append", count=count)
            await send(ws, {"type": "input_audio_buffer.clear"})
            assert (await recv(ws))["type"] == "input_audio_buffer.cleared"
    assert "input_audio_buffer.speech_started" not in fake.sent_types()


async def test_a_manual_commit_is_transcribed_when_configured(fake: FakeOpenAIRealtime) -> None:
    fake.user_transcripts.append("manual turn")
    async with await _connect(fake) as ws:
        await recv(ws)
        await update_session(
            ws,
            {
                "audio": {
                    "input": {
                        "turn_detection": None,
                        "transcription": {"model": "gpt-4o-mini-transcribe"},
                    }
                }
            },
        )
        await append(ws, tone(200))
        await send(ws, {"type": "input_audio_buffer.commit"})
        events = await recv_until(ws, "conversation.item.input_audio_transcription.completed")
    assert types_of(events) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
    ]
    assert events[-1]["transcript"] == "manual turn"
    assert fake.response_active is False


# ---------------------------------------------------------------------- session limit


async def test_expire_session_sends_session_expired_then_closes_1001(
    fake: FakeOpenAIRealtime,
) -> None:
    async with await _connect(fake) as ws:
        created = await recv(ws)
        assert abs(created["session"]["expires_at"] - (time.time() + 3600)) < 5
        await fake.expire_session()
        error = await recv(ws)
        with pytest.raises(ConnectionClosed):
            await recv(ws)
    assert error["error"] == {
        "type": "invalid_request_error",
        "code": "session_expired",
        "message": "Your session hit the maximum duration of 60 minutes.",
        "param": None,
        "event_id": None,
    }
    assert ws.close_code == 1001
    assert ws.close_reason == "Your session hit the maximum duration of 60 minutes."


async def test_max_session_length_is_configurable() -> None:
    async with FakeOpenAIRealtime(max_session_s=30 * 60) as fake:
        async with await _connect(fake) as ws:
            created = await recv(ws)
            await fake.expire_session()
            error = await recv(ws)
            with pytest.raises(ConnectionClosed):
                await recv(ws)
    assert abs(created["session"]["expires_at"] - (time.time() + 1800)) < 5
    assert error["error"]["message"] == "Your session hit the maximum duration of 30 minutes."


async def test_expiry_mid_reply_ends_the_reply_without_response_done() -> None:
    async with FakeOpenAIRealtime(reply_audio_ms=3000, chunk_interval_s=0.02) as fake:
        async with await _connect(fake) as ws:
            await recv(ws)
            await fake.user_speaks("tell me a story")
            await recv_until(ws, "response.output_audio.delta")
            await fake.expire_session()
            events = await recv_until(ws, "error")
            with pytest.raises(ConnectionClosed):
                while True:
                    events.append(await recv(ws))
            await fake.wait_idle()
    assert "response.done" not in [e["type"] for e in events]
    assert ws.close_code == 1001


# ---------------------------------------------------------------------- reconnection


async def test_each_connection_has_its_own_session_and_conversation(
    fake: FakeOpenAIRealtime,
) -> None:
    async with await _connect(fake) as ws:
        first = (await recv(ws))["session"]
        await update_session(ws, {"instructions": "first"})
        await fake.user_speaks("before the drop")
        await recv_until(ws, "response.done")
        await fake.drop_connection()
        with pytest.raises(ConnectionClosed):
            while True:
                await recv(ws)
    async with await _connect(fake) as ws:
        second = (await recv(ws))["session"]
        await fake.wait_for_connections(2)
        assert fake.items == {}
        await send(
            ws,
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "after"}],
                },
            },
        )
        added = (await recv_until(ws, "conversation.item.added"))[-1]
        assert added["previous_item_id"] is None  # a fresh conversation

    assert first["id"] != second["id"]
    assert second["instructions"] == ""
    assert fake.session_of(0)["instructions"] == "first"
    assert [item["role"] for item in fake.items_of(0).values()] == ["user", "assistant"]
    assert [item["role"] for item in fake.items_of(1).values()] == ["user"]
    assert [e["type"] for e in fake.received_per_connection[0]] == ["session.update"]
    assert [e["type"] for e in fake.received_per_connection[1]] == ["conversation.item.create"]
    assert fake.sent_per_connection[1][0]["type"] == "session.created"
    assert fake.connections == 2


# ---------------------------------------------------------------------- client frame hook


async def test_client_validator_records_rejected_frames_which_are_still_handled() -> None:
    def no_beta_names(raw: str) -> None:
        if "response.audio" in raw:
            raise ValueError("beta event name")

    async with FakeOpenAIRealtime(client_validator=no_beta_names) as fake:
        async with await _connect(fake) as ws:
            await recv(ws)
            good = json.dumps({"type": "input_audio_buffer.clear"})
            bad = json.dumps({"type": "response.audio.delta"})
            await ws.send(good)
            assert (await recv(ws))["type"] == "input_audio_buffer.cleared"
            await ws.send(bad)
            error = await recv(ws)

    assert fake.invalid_client_frames == [(bad, "beta event name")]
    assert error["error"]["param"] == "type"  # the frame still reached the fake's own checks
    assert fake.received_types() == ["input_audio_buffer.clear", "response.audio.delta"]
