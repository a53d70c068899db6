"""``TwilioRealtimeTransport`` on the engine, without Channels: Twilio's frames in, the
µ-law media, marks and clears out, and what the engine learns from the marks. The
provider is the mock and speaks 8 kHz, so audio is compared byte for byte."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from voice.channels import RealtimeVoiceChannel
from voice.g711 import ulaw_decode, ulaw_encode
from voice.mock import MockRealtimeProvider
from voice.session import LiveSession
from voice.store import MemoryStore
from voice.transports import TwilioRealtimeTransport
from voice.transports.twilio import (
    OUTBOUND_QUEUE_MESSAGES,
    StreamEnded,
    TwilioStream,
)

pytestmark = pytest.mark.asyncio

STREAM_SID = "MZ" + "5" * 32
CALL_SID = "CA" + "6" * 32
ACCOUNT_SID = "AC" + "7" * 32


def pcm(samples: int, value: int = 1000) -> bytes:
    return value.to_bytes(2, "little", signed=True) * samples


def ramp(samples: int) -> bytes:
    """A signal whose every 20 ms chunk differs (to check chunks go out in order)."""
    return b"".join(
        ((i * 37) % 20000 - 10000).to_bytes(2, "little", signed=True) for i in range(samples)
    )


class FakeSocket:
    """Where the transport writes: records Twilio-bound frames; can be held shut."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.open_gate = asyncio.Event()
        self.open_gate.set()
        self.waiting = asyncio.Event()  # a send is held at the gate
        self._changed = asyncio.Event()

    async def send_text(self, text: str) -> None:
        if not self.open_gate.is_set():
            self.waiting.set()
            await self.open_gate.wait()
        self.frames.append(json.loads(text))
        self._changed.set()

    async def send_bytes(self, data: bytes) -> None:
        raise AssertionError("Twilio takes text frames only")

    async def close(self, code: int) -> None:
        self.close_code = code
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], *, within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def events(self) -> list[str]:
        return [frame["event"] for frame in self.frames]

    def of(self, event: str) -> list[dict[str, Any]]:
        return [frame for frame in self.frames if frame["event"] == event]


@dataclass
class Call:
    channel: RealtimeVoiceChannel
    provider: MockRealtimeProvider
    transport: TwilioRealtimeTransport
    store: MemoryStore
    socket: FakeSocket
    stream: TwilioStream
    session: LiveSession
    pressed: asyncio.Queue[str]  # keys the engine has handled, in order

    def send(self, message: dict[str, Any]) -> None:
        self.stream.receive(text=json.dumps(message))

    def media(self, ulaw: bytes, stream_sid: str = STREAM_SID) -> None:
        payload = base64.b64encode(ulaw).decode()
        self.send(
            {
                "event": "media",
                "sequenceNumber": "3",
                "media": {"track": "inbound", "chunk": "1", "timestamp": "20", "payload": payload},
                "streamSid": stream_sid,
            }
        )

    def mark(self, name: str) -> None:
        self.send(
            {
                "event": "mark",
                "sequenceNumber": "9",
                "streamSid": STREAM_SID,
                "mark": {"name": name},
            }
        )

    def dtmf(self, digit: str) -> None:
        self.send(
            {
                "event": "dtmf",
                "streamSid": STREAM_SID,
                "sequenceNumber": "5",
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def stop(self, stream_sid: str = STREAM_SID) -> None:
        self.send(
            {
                "event": "stop",
                "sequenceNumber": "10",
                "streamSid": stream_sid,
                "stop": {"accountSid": ACCOUNT_SID, "callSid": CALL_SID},
            }
        )

    async def reply(self, audio: bytes) -> None:
        """The model answers with ``audio`` (8 kHz): its frames are queued to Twilio."""
        await self.provider.simulate_response_start(self.session)
        await self.provider.simulate_audio(self.session, audio)


def start_message(**media_format: Any) -> dict[str, Any]:
    return {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": ACCOUNT_SID,
            "streamSid": STREAM_SID,
            "callSid": CALL_SID,
            "tracks": ["inbound"],
            "customParameters": {"token": "t0k3n"},
            "mediaFormat": {
                "encoding": "audio/x-mulaw",
                "sampleRate": 8000,
                "channels": 1,
                **media_format,
            },
        },
        "streamSid": STREAM_SID,
    }


@pytest_asyncio.fixture
async def call() -> AsyncIterator[Call]:
    provider = MockRealtimeProvider()
    transport = TwilioRealtimeTransport()
    store = MemoryStore()
    channel = RealtimeVoiceChannel(
        "voice",
        provider=provider,
        transport=transport,
        store=store,
        input_sample_rate=8000,
        output_sample_rate=8000,
    )
    pressed: asyncio.Queue[str] = asyncio.Queue()

    async def handled(session: LiveSession, digit: str, duration_ms: int | None) -> None:
        await pressed.put(digit)

    transport.on_dtmf(handled)  # after the engine's: it has recorded the key by then
    socket = FakeSocket()
    stream = transport.stream(socket)
    stream.receive(text=json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    stream.receive(text=json.dumps(start_message()))
    start = await stream.wait_started()
    assert (start.stream_sid, start.call_sid, start.account_sid) == (
        STREAM_SID,
        CALL_SID,
        ACCOUNT_SID,
    )
    assert start.custom_parameters == {"token": "t0k3n"}
    session = await channel.start_session("room-1", "+15550109999", connection=stream)
    yield Call(channel, provider, transport, store, socket, stream, session, pressed)
    await channel.close()
    await transport.connection_lost(stream)


# --- inbound -----------------------------------------------------------------------------------


async def test_caller_media_reaches_the_engine_as_pcm16(call: Call) -> None:
    ulaw = ulaw_encode(ramp(160)) + ulaw_encode(ramp(160)[::-1])

    call.media(ulaw[:160])
    call.media(ulaw[160:])
    await call.channel.settle(call.session)

    sent = b"".join(audio for _, audio in call.provider.sent_audio)
    assert sent == ulaw_decode(ulaw)
    assert call.transport.transport_sample_rate(call.session) == 8000
    assert call.stream.problems == {}


async def test_audio_and_keys_before_the_session_are_kept_for_it() -> None:
    provider = MockRealtimeProvider()
    transport = TwilioRealtimeTransport()
    store = MemoryStore()
    channel = RealtimeVoiceChannel(
        "voice", provider=provider, transport=transport, store=store, input_sample_rate=8000
    )
    pressed: asyncio.Queue[str] = asyncio.Queue()

    async def handled(session: LiveSession, digit: str, duration_ms: int | None) -> None:
        await pressed.put(digit)

    transport.on_dtmf(handled)
    stream = transport.stream(FakeSocket())
    stream.receive(text=json.dumps(start_message()))
    early = ulaw_encode(pcm(160, 500))
    stream.receive(
        text=json.dumps(
            {
                "event": "media",
                "streamSid": STREAM_SID,
                "media": {"track": "inbound", "payload": base64.b64encode(early).decode()},
            }
        )
    )
    stream.receive(
        text=json.dumps(
            {
                "event": "dtmf",
                "streamSid": STREAM_SID,
                "dtmf": {"track": "inbound_track", "digit": "9"},
            }
        )
    )

    session = await channel.start_session("room-1", "+15550109999", connection=stream)
    await channel.settle(session)
    digit = await asyncio.wait_for(pressed.get(), 5)
    await channel.close()

    assert provider.sent_audio == [(session.id, ulaw_decode(early))]
    assert digit == "9"
    assert store.dtmf_digits == [(session.id, "9", None)]


async def test_dtmf_goes_to_the_engine(call: Call) -> None:
    call.dtmf("5")
    call.dtmf("#")
    handled = [await asyncio.wait_for(call.pressed.get(), 5) for _ in range(2)]

    assert handled == ["5", "#"]

    assert call.store.dtmf_digits == [(call.session.id, "5", None), (call.session.id, "#", None)]


async def test_stop_ends_the_session_as_a_hang_up_and_closes_the_socket(call: Call) -> None:
    call.dtmf("1")
    call.stop()
    await call.socket.wait_for(lambda: call.socket.close_code is not None)
    await call.channel.close()

    assert call.session.end_reason == "client_hangup"
    assert call.socket.close_code == 1000
    assert call.store.dtmf_digits == [(call.session.id, "1", None)]  # in order, before the end


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_json"),
        (json.dumps({"event": "dance"}), "unknown_event"),
        (json.dumps({"no": "event"}), "unknown_event"),
        (
            json.dumps({"event": "media", "streamSid": STREAM_SID, "media": {"payload": "!!!"}}),
            "bad_audio",
        ),
        (json.dumps({"event": "media", "streamSid": STREAM_SID, "media": {}}), "bad_audio"),
        (json.dumps({"event": "media", "streamSid": STREAM_SID}), "bad_message"),
        (
            json.dumps({"event": "media", "streamSid": "MZother", "media": {"payload": "AAAA"}}),
            "wrong_stream",
        ),
        (json.dumps({"event": "stop", "streamSid": "MZother", "stop": {}}), "wrong_stream"),
        (
            json.dumps({"event": "mark", "streamSid": STREAM_SID, "mark": {"name": "rv-999"}}),
            "unknown_mark",
        ),
        (
            json.dumps({"event": "mark", "streamSid": STREAM_SID, "mark": {"name": "theirs"}}),
            "unknown_mark",
        ),
        (json.dumps(start_message()), "duplicate_start"),
        ("x" * (64 * 1024 + 1), "frame_too_large"),
    ],
)
async def test_bad_frames_are_dropped_counted_and_the_call_goes_on(
    call: Call, frame: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="voice.transports.twilio")

    call.stream.receive(text=frame)
    call.stream.receive(text=frame)
    call.media(ulaw_encode(pcm(160)))
    await call.channel.settle(call.session)

    assert call.stream.problems == {kind: 2}
    assert len([r for r in caplog.records if kind in r.getMessage()]) == 1  # logged once
    assert call.session.is_active
    assert call.socket.close_code is None
    assert b"".join(a for _, a in call.provider.sent_audio) == ulaw_decode(ulaw_encode(pcm(160)))


async def test_a_binary_frame_is_dropped(call: Call) -> None:
    call.stream.receive(data=b"\x00\x01")

    assert call.stream.problems == {"binary_frame": 1}
    assert call.session.is_active


async def test_a_flood_is_dropped_then_closed(call: Call) -> None:
    for _ in range(1000):  # far beyond 200 frames/s with a 2 s burst
        call.stream.receive(text="{}")
    await call.socket.wait_for(lambda: call.socket.close_code is not None)

    assert call.socket.close_code == 4429
    # Dropped (and counted) up to the flood limit, 500 drops within 5 s; the next closes.
    assert call.stream.stats["rate_limited"] == 500


# --- the start ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "media_format",
    [{"encoding": "audio/x-alaw"}, {"sampleRate": 16000}, {"channels": 2}],
)
async def test_a_start_in_another_media_format_ends_the_wait(media_format: dict[str, Any]) -> None:
    stream = TwilioRealtimeTransport().stream(FakeSocket())

    stream.receive(text=json.dumps(start_message(**media_format)))

    with pytest.raises(StreamEnded, match="media format"):
        await stream.wait_started()
    assert stream.problems == {"bad_start": 1}


async def test_a_stop_before_the_start_ends_the_wait() -> None:
    stream = TwilioRealtimeTransport().stream(FakeSocket())

    stream.receive(text=json.dumps({"event": "stop", "streamSid": STREAM_SID, "stop": {}}))

    with pytest.raises(StreamEnded):
        await stream.wait_started()


async def test_media_before_the_start_is_dropped() -> None:
    stream = TwilioRealtimeTransport().stream(FakeSocket())

    stream.receive(text=json.dumps({"event": "media", "streamSid": STREAM_SID, "media": {}}))

    assert stream.problems == {"before_start": 1}


# --- outbound: media and marks -----------------------------------------------------------------


async def test_reply_audio_goes_out_as_20_ms_mulaw_chunks_followed_by_marks(call: Call) -> None:
    audio = ramp(16 * 160 + 80)  # 330 ms: 16 whole chunks and half of one

    await call.reply(audio)
    await call.provider.simulate_response_end(call.session)
    await call.socket.wait_for(lambda: len(call.socket.of("mark")) == 5)

    assert call.socket.events() == (
        ["media"] * 5 + ["mark"] + ["media"] * 5 + ["mark"] + ["media"] * 5 + ["mark"]
    ) + ["media", "mark"] + ["media", "mark"]
    payloads = [base64.b64decode(f["media"]["payload"]) for f in call.socket.of("media")]
    assert {len(p) for p in payloads} == {160}
    # In order, byte for byte; the reply's tail is padded with silence (µ-law 0xFF).
    assert b"".join(payloads) == ulaw_encode(audio) + b"\xff" * 80
    assert all(f["streamSid"] == STREAM_SID for f in call.socket.frames)
    names = [f["mark"]["name"] for f in call.socket.of("mark")]
    assert len(set(names)) == 5


async def test_returned_marks_are_the_exact_playback_and_barge_in_truncates_there(
    call: Call,
) -> None:
    await call.reply(ramp(50 * 160))  # 1 s
    await call.socket.wait_for(lambda: len(call.socket.of("mark")) == 10)
    marks = [f["mark"]["name"] for f in call.socket.of("mark")]

    # Twilio played 300 ms: the marks after 100, 200 and 300 ms come back.
    for name in marks[:3]:
        call.mark(name)
    await call.provider.simulate_speech_start(call.session)  # the caller talks over it
    await call.socket.wait_for(lambda: "clear" in call.socket.events())
    # After a clear, Twilio sends back the marks it dropped: that audio was never heard.
    for name in marks[3:]:
        call.mark(name)

    assert call.provider.truncations == [(call.session.id, 300)]
    assert call.socket.frames[-1] == {"event": "clear", "streamSid": STREAM_SID}
    assert call.stream.stats["marks_played"] == 3
    assert call.stream.stats["marks_cleared"] == 7
    assert call.stream.problems == {}


async def test_a_barge_in_before_any_mark_came_back_truncates_at_zero(call: Call) -> None:
    await call.reply(ramp(25 * 160))
    await call.socket.wait_for(lambda: len(call.socket.of("mark")) == 5)

    await call.provider.simulate_speech_start(call.session)

    assert call.provider.truncations == [(call.session.id, 0)]


async def test_marks_of_an_earlier_reply_do_not_count_for_the_next(call: Call) -> None:
    await call.reply(ramp(10 * 160))  # reply 1: 200 ms, marks at 100 and 200 ms
    await call.provider.simulate_response_end(call.session)
    await call.reply(ramp(15 * 160))  # reply 2: 300 ms, still behind reply 1 at Twilio
    await call.socket.wait_for(lambda: len(call.socket.of("mark")) == 5)
    first, second, third, *_ = [f["mark"]["name"] for f in call.socket.of("mark")]

    call.mark(first)
    call.mark(second)  # reply 1 fully played; nothing of reply 2 yet
    await call.provider.simulate_speech_start(call.session)

    assert call.provider.truncations == [(call.session.id, 0)]
    assert third not in [f["mark"]["name"] for f in call.socket.of("mark")[:2]]


async def test_the_second_reply_counts_from_its_own_start(call: Call) -> None:
    await call.reply(ramp(10 * 160))
    await call.provider.simulate_response_end(call.session)
    await call.reply(ramp(15 * 160))
    await call.socket.wait_for(lambda: len(call.socket.of("mark")) == 5)
    names = [f["mark"]["name"] for f in call.socket.of("mark")]

    for name in names[:4]:  # reply 1's two marks, then reply 2's first two (100, 200 ms)
        call.mark(name)
    await call.provider.simulate_speech_start(call.session)

    assert call.provider.truncations == [(call.session.id, 200)]


# --- outbound: the send queue ------------------------------------------------------------------


async def test_clear_drops_what_was_not_written_yet_and_goes_first(call: Call) -> None:
    call.socket.open_gate.clear()  # the socket stalls
    await call.reply(ramp(20 * 160))  # 20 media and 4 marks queued
    await asyncio.wait_for(call.socket.waiting.wait(), 5)  # the writer holds the first media

    await call.provider.simulate_speech_start(call.session)
    call.socket.open_gate.set()
    await call.socket.wait_for(lambda: "clear" in call.socket.events())

    assert call.socket.events() == ["media", "clear"]  # the one in flight, then the clear
    assert call.stream.stats["outbound_dropped_cleared"] == 23
    assert call.provider.truncations == [(call.session.id, 0)]


async def test_a_full_send_queue_holds_the_sender_back_without_losing_audio(call: Call) -> None:
    call.socket.open_gate.clear()
    chunks = OUTBOUND_QUEUE_MESSAGES + 100  # more than the queue holds, marks aside
    audio = ramp(chunks * 160)
    sending = asyncio.ensure_future(call.stream.send_audio(audio))
    await asyncio.wait_for(call.socket.waiting.wait(), 5)
    for _ in range(10_000):  # yield until the sender has filled the queue
        if call.stream._outbound.full():
            break
        await asyncio.sleep(0)

    assert call.stream._outbound.full()
    assert not sending.done()  # back-pressure: it waits for room, drops nothing

    call.socket.open_gate.set()
    await asyncio.wait_for(sending, 10)
    await call.socket.wait_for(lambda: len(call.socket.of("media")) == chunks)
    payloads = [base64.b64decode(f["media"]["payload"]) for f in call.socket.of("media")]
    assert b"".join(payloads) == ulaw_encode(audio)


async def test_ending_the_session_closes_the_socket(call: Call) -> None:
    await call.channel.end_session(call.session, reason="ended_by_operator")

    assert call.socket.close_code == 1000
    assert call.session.end_reason == "ended_by_operator"
