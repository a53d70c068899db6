"""RealtimeVoiceChannel audio paths: the pre-connect buffer, PCM16 validation, resampling in
both directions, access control per frame (RFC §7.5), audio levels, and barge-in with the
truncation position."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from typing import Any

import numpy as np
import pytest

import voice.channels
from tests.fixtures.engine import GatedConnectProvider, make_engine
from voice.audio import DEFAULT_MAX_FRAME_BYTES, rms_dbfs
from voice.channels import PRECONNECT_MAX_BYTES, RealtimeVoiceChannel
from voice.events import AudioLevelEvent
from voice.kit import HookContext, HookTrigger, RoomKit
from voice.mock import MockRealtimeProvider, MockRealtimeTransport
from voice.session import LiveSession, SessionState
from voice.store import BindingSnapshot, MemoryStore

pytestmark = pytest.mark.timeout(10)

WAIT_S = 2.0


class FakeClock:
    """Stands in for the ``time`` module inside voice.channels (only ``monotonic`` is used)."""

    def __init__(self) -> None:
        self.now = 1024.0  # binary-exact sums of the steps the tests use

    def monotonic(self) -> float:
        return self.now


class GatedTransport(MockRealtimeTransport):
    """send_audio records the chunk, then waits while ``gate`` is clear (a slow client), so
    provider audio piles up in the engine's outbound queue. ``log`` keeps the order of
    everything the engine did to the transport."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()  # a send_audio is held at the gate
        self.log: list[tuple[str, Any]] = []

    async def send_audio(self, session: LiveSession, audio: bytes) -> None:
        self.log.append(("audio", bytes(audio)))
        await super().send_audio(session, audio)
        if not self.gate.is_set():
            self.waiting.set()
            await self.gate.wait()

    async def send_message(self, session: LiveSession, message: dict[str, Any]) -> None:
        self.log.append(("message", message["type"]))
        await super().send_message(session, message)

    async def interrupt(self, session: LiveSession) -> None:
        self.log.append(("interrupt", None))
        await super().interrupt(session)


def build(
    **options: Any,
) -> tuple[RealtimeVoiceChannel, MockRealtimeProvider, MockRealtimeTransport, MemoryStore]:
    channel, provider, transport, store, _ = make_engine(**options)
    return channel, provider, transport, store


def frame(value: int, samples: int = 320) -> bytes:
    """``samples`` PCM16 samples of constant ``value`` (default 20 ms at 16 kHz)."""
    return int(value).to_bytes(2, "little", signed=True) * samples


def tone(frequency: float, rate: int, samples: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(samples) / rate
    return np.round(amplitude * 32767 * np.sin(2 * math.pi * frequency * t)).astype("<i2")


def stats(channel: RealtimeVoiceChannel, session: LiveSession) -> dict[str, int]:
    return channel._runtimes[session.id].stats


def audio_of(double: MockRealtimeProvider | MockRealtimeTransport) -> list[bytes]:
    return [audio for _, audio in double.sent_audio]


REPLY_CHUNK_MS = 100
REPLY_CHUNK = frame(1000, 2400)  # 100 ms at the provider's 24 kHz


# -- pre-connect buffer -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_audio_that_arrives_while_the_provider_connects_is_sent_first_and_in_order() -> None:
    provider = GatedConnectProvider()
    channel, _, transport, store = build(provider=provider)
    start = asyncio.create_task(channel.start_session("room-1", "user-1"))
    await asyncio.wait_for(provider.connect_entered.wait(), WAIT_S)
    [session] = store.sessions.values()
    early = [frame(1), frame(2), frame(3)]

    for chunk in early:
        transport._deliver_audio(session, chunk)
    assert provider.sent_audio == []
    provider.release_connect.set()
    await asyncio.wait_for(start, WAIT_S)
    await transport.simulate_client_audio(session, frame(4))

    assert audio_of(provider) == [*early, frame(4)]
    assert stats(channel, session)["inbound_dropped_preconnect"] == 0
    await channel.close()


@pytest.mark.asyncio
async def test_the_pre_connect_buffer_is_bounded_and_counts_what_it_drops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = GatedConnectProvider()
    channel, _, transport, store = build(provider=provider)
    start = asyncio.create_task(channel.start_session("room-1", "user-1"))
    await asyncio.wait_for(provider.connect_entered.wait(), WAIT_S)
    [session] = store.sessions.values()
    fitting = PRECONNECT_MAX_BYTES // DEFAULT_MAX_FRAME_BYTES
    big = [bytes([index + 1, 0]) * (DEFAULT_MAX_FRAME_BYTES // 2) for index in range(fitting + 2)]

    with caplog.at_level(logging.WARNING, logger="voice.channels"):
        for chunk in big:
            transport._deliver_audio(session, chunk)
    provider.release_connect.set()
    await asyncio.wait_for(start, WAIT_S)

    assert fitting == 4
    assert audio_of(provider) == big[:fitting]
    assert stats(channel, session)["inbound_dropped_preconnect"] == 2
    assert session.state is SessionState.ACTIVE
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "voice.channels" and r.levelno >= logging.WARNING
    ]
    assert warnings == [f"pre-connect audio buffer full ({PRECONNECT_MAX_BYTES} bytes): dropping"]
    await channel.close()


@pytest.mark.asyncio
async def test_pre_connect_audio_of_a_muted_participant_is_dropped_too() -> None:
    provider = GatedConnectProvider()
    store = MemoryStore()
    store.bindings[("room-1", "user-1")] = BindingSnapshot(muted=True)
    channel, _, transport, _ = build(provider=provider, store=store)
    start = asyncio.create_task(channel.start_session("room-1", "user-1"))
    await asyncio.wait_for(provider.connect_entered.wait(), WAIT_S)
    [session] = store.sessions.values()

    transport._deliver_audio(session, frame(1))
    provider.release_connect.set()
    await asyncio.wait_for(start, WAIT_S)

    assert provider.sent_audio == []
    assert stats(channel, session)["inbound_dropped_access"] == 1
    await channel.close()


# -- caller audio in ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_odd_byte_counts_are_reassembled_into_whole_samples_across_frames() -> None:
    channel, provider, transport, _ = build()
    session = await channel.start_session("room-1", "user-1")

    await transport.simulate_client_audio(session, b"\x01\x02\x03")
    await transport.simulate_client_audio(session, b"\x04\x05\x06\x07")
    await transport.simulate_client_audio(session, b"\x08")

    assert audio_of(provider) == [b"\x01\x02", b"\x03\x04\x05\x06", b"\x07\x08"]
    await channel.close()


@pytest.mark.asyncio
async def test_an_empty_frame_is_ignored() -> None:
    channel, provider, transport, _ = build()
    session = await channel.start_session("room-1", "user-1")

    await transport.simulate_client_audio(session, b"")

    assert provider.sent_audio == []
    assert transport.messages_of(session, "error") == []
    assert stats(channel, session)["inbound_bad_frames"] == 0
    await channel.close()


@pytest.mark.asyncio
async def test_an_oversized_frame_gets_a_bad_audio_error_and_the_session_carries_on() -> None:
    channel, provider, transport, _ = build()
    session = await channel.start_session("room-1", "user-1")

    await transport.simulate_client_audio(session, b"\x00" * (DEFAULT_MAX_FRAME_BYTES + 1))
    await transport.simulate_client_audio(session, frame(5))

    assert transport.messages_of(session, "error") == [
        {
            "type": "error",
            "code": "bad_audio",
            "message": f"audio frame of {DEFAULT_MAX_FRAME_BYTES + 1} bytes exceeds the limit "
            f"of {DEFAULT_MAX_FRAME_BYTES} bytes",
        }
    ]
    assert session.state is SessionState.ACTIVE
    assert audio_of(provider) == [frame(5)]
    assert stats(channel, session)["inbound_bad_frames"] == 1
    await channel.close()


@pytest.mark.asyncio
async def test_a_frame_that_is_not_bytes_gets_a_bad_audio_error() -> None:
    channel, provider, transport, _ = build()
    session = await channel.start_session("room-1", "user-1")

    transport._deliver_audio(session, "hello")  # type: ignore[arg-type]
    await channel.settle(session)

    assert transport.messages_of(session, "error") == [
        {"type": "error", "code": "bad_audio", "message": "audio frames must be bytes, got str"}
    ]
    assert provider.sent_audio == []
    assert session.state is SessionState.ACTIVE
    await channel.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("where", ["channel", "transport"])
async def test_48_khz_caller_audio_reaches_the_provider_at_16_khz_without_drift(where: str) -> None:
    if where == "channel":
        channel, provider, transport, _ = build(transport_sample_rate=48000)
    else:
        channel, provider, transport, _ = build(transport=MockRealtimeTransport(sample_rate=48000))
    session = await channel.start_session("room-1", "user-1")
    twenty_ms_at_48k = frame(1000, 960)
    held_back: list[int] = []

    for count in range(1, 51):
        await transport.simulate_client_audio(session, twenty_ms_at_48k)
        received_samples = sum(len(audio) for audio in audio_of(provider)) // 2
        held_back.append(count * 320 - received_samples)  # 20 ms at 16 kHz = 320 samples

    # The resampler holds back its filter delay, released in blocks: never more than one
    # frame's worth, and it does not grow over a second of audio (the ratio is exact).
    assert all(0 <= samples <= 320 for samples in held_back)
    assert held_back[-1] < 320
    assert all(len(audio) % 2 == 0 for audio in audio_of(provider))
    await channel.close()


@pytest.mark.asyncio
async def test_a_1_khz_tone_from_a_48_khz_caller_keeps_its_frequency_and_level() -> None:
    channel, provider, transport, _ = build(transport_sample_rate=48000)
    session = await channel.start_session("room-1", "user-1")
    signal = tone(1000, 48000, 48000)  # one second

    for start in range(0, signal.size, 960):
        await transport.simulate_client_audio(session, signal[start : start + 960].tobytes())

    received = np.frombuffer(b"".join(audio_of(provider)), dtype="<i2").astype(np.float64)
    steady = received[1600:14400]  # skip the filter's start; a whole number of periods
    spectrum = np.abs(np.fft.rfft(steady))
    peak_hz = np.argmax(spectrum) * 16000 / steady.size
    assert peak_hz == pytest.approx(1000, abs=16000 / steady.size)
    assert rms_dbfs(steady.astype("<i2").tobytes()) == pytest.approx(
        rms_dbfs(signal.tobytes()), abs=0.5
    )
    await channel.close()


@pytest.mark.asyncio
async def test_24_khz_provider_audio_reaches_a_48_khz_caller_resampled() -> None:
    channel, provider, transport, _ = build(transport=MockRealtimeTransport(sample_rate=48000))
    session = await channel.start_session("room-1", "user-1")
    twenty_ms_at_24k = frame(1000, 480)

    await provider.simulate_response_start(session)
    for _ in range(10):
        await provider.simulate_audio(session, twenty_ms_at_24k)
    before_end = sum(len(audio) for audio in audio_of(transport))
    await provider.simulate_response_end(session)
    total = sum(len(audio) for audio in audio_of(transport))

    assert 0 < before_end < 10 * 960 * 2  # a filter delay is still held back
    assert total == 10 * 960 * 2  # the end of the reply flushes it: exactly twice the samples
    assert [call.method for call in transport.calls][-1] == "end_of_response"
    await channel.close()


@pytest.mark.asyncio
async def test_matching_rates_pass_audio_through_unchanged_both_ways() -> None:
    channel, provider, transport, _ = build(input_sample_rate=24000, transport_sample_rate=24000)
    session = await channel.start_session("room-1", "user-1")

    await transport.simulate_client_audio(session, frame(7))
    await provider.simulate_audio(session, frame(9))

    assert audio_of(provider) == [frame(7)]
    assert audio_of(transport) == [frame(9)]
    await channel.close()


# -- access control (RFC §7.5) --------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "binding",
    [
        BindingSnapshot(muted=True),
        BindingSnapshot(access="read_only"),
        BindingSnapshot(access="none"),
    ],
    ids=["muted", "read_only", "none"],
)
async def test_caller_audio_is_dropped_and_counted_when_the_binding_may_not_speak(
    binding: BindingSnapshot,
) -> None:
    store = MemoryStore()
    store.bindings[("room-1", "user-1")] = binding
    channel, provider, transport, _ = build(store=store)
    session = await channel.start_session("room-1", "user-1")

    await transport.simulate_client_audio(session, frame(1))
    await transport.simulate_client_audio(session, frame(2))

    assert provider.sent_audio == []
    assert stats(channel, session)["inbound_dropped_access"] == 2
    await channel.close()


@pytest.mark.asyncio
async def test_caller_audio_flows_for_a_write_only_binding() -> None:
    store = MemoryStore()
    store.bindings[("room-1", "user-1")] = BindingSnapshot(access="write_only")
    channel, provider, transport, _ = build(store=store)
    session = await channel.start_session("room-1", "user-1")

    await transport.simulate_client_audio(session, frame(1))

    assert audio_of(provider) == [frame(1)]
    assert stats(channel, session)["inbound_dropped_access"] == 0
    await channel.close()


@pytest.mark.asyncio
async def test_a_binding_change_mid_stream_applies_to_the_very_next_caller_frame() -> None:
    channel, provider, transport, _ = build()
    session = await channel.start_session("room-1", "user-1")

    await transport.simulate_client_audio(session, frame(1))
    revoked = channel.apply_binding("room-1", "user-1", BindingSnapshot(access="read_only"))
    await transport.simulate_client_audio(session, frame(2))
    restored = channel.apply_binding("room-1", "user-1", BindingSnapshot())
    await transport.simulate_client_audio(session, frame(3))

    assert (revoked, restored) == (1, 1)
    assert audio_of(provider) == [frame(1), frame(3)]
    assert stats(channel, session)["inbound_dropped_access"] == 1
    await channel.close()


@pytest.mark.asyncio
async def test_output_muted_mid_stream_drops_provider_audio_until_restored() -> None:
    channel, provider, transport, _ = build()
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_audio(session, frame(1))
    channel.apply_binding("room-1", "user-1", BindingSnapshot(output_muted=True))
    await provider.simulate_audio(session, frame(2))
    await transport.simulate_client_audio(session, frame(10))  # the caller may still speak
    channel.apply_binding("room-1", "user-1", BindingSnapshot())
    await provider.simulate_audio(session, frame(3))

    assert audio_of(transport) == [frame(1), frame(3)]
    assert audio_of(provider) == [frame(10)]
    assert stats(channel, session)["outbound_dropped_output_muted"] == 1
    await channel.close()


@pytest.mark.asyncio
async def test_a_revoked_binding_drops_audio_in_both_directions() -> None:
    channel, provider, transport, _ = build()
    session = await channel.start_session("room-1", "user-1")

    channel.apply_binding("room-1", "user-1", BindingSnapshot(access="none"))
    await transport.simulate_client_audio(session, frame(1))
    await provider.simulate_audio(session, frame(2))

    assert provider.sent_audio == []
    assert transport.sent_audio == []
    await channel.close()


@pytest.mark.asyncio
async def test_a_binding_for_another_participant_or_room_does_not_touch_this_session() -> None:
    channel, provider, transport, _ = build()
    session = await channel.start_session("room-1", "user-1")
    muted = BindingSnapshot(muted=True, output_muted=True)

    other_participant = channel.apply_binding("room-1", "user-2", muted)
    other_room = channel.apply_binding("room-2", "user-1", muted)
    await transport.simulate_client_audio(session, frame(1))
    await provider.simulate_audio(session, frame(2))

    assert (other_participant, other_room) == (0, 0)
    assert audio_of(provider) == [frame(1)]
    assert audio_of(transport) == [frame(2)]
    await channel.close()


@pytest.mark.asyncio
async def test_apply_binding_matches_ids_given_as_uuids() -> None:
    channel, provider, transport, _ = build()
    room_id, participant_id = uuid.uuid4(), uuid.uuid4()
    session = await channel.start_session(room_id, participant_id)  # type: ignore[arg-type]

    reached = channel.apply_binding(room_id, participant_id, BindingSnapshot(muted=True))  # type: ignore[arg-type]
    await transport.simulate_client_audio(session, frame(1))

    assert reached == 1
    assert provider.sent_audio == []
    await channel.close()


@pytest.mark.asyncio
async def test_apply_binding_reaches_every_session_of_the_participant_in_the_room() -> None:
    channel, provider, transport, _ = build()
    first = await channel.start_session("room-1", "user-1")
    second = await channel.start_session("room-1", "user-1")
    other = await channel.start_session("room-1", "user-2")

    reached = channel.apply_binding("room-1", "user-1", BindingSnapshot(muted=True))
    for session in (first, second, other):
        await transport.simulate_client_audio(session, frame(1))

    assert reached == 2
    assert provider.sent_audio == [(other.id, frame(1))]
    await channel.close()


# -- audio levels ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_input_levels_fire_at_most_once_per_100_ms_with_the_frames_rms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(voice.channels, "time", clock)
    kit = RoomKit()
    channel, _, transport, _ = build()
    kit.register_channel(channel)
    levels: list[float] = []

    @kit.hook(HookTrigger.ON_INPUT_AUDIO_LEVEL)
    async def on_level(event: AudioLevelEvent, ctx: HookContext) -> None:
        levels.append(event.level_db)

    session = await channel.start_session("room-1", "user-1")
    frames = [frame(100 * (index + 1)) for index in range(6)]
    for index, chunk in enumerate(frames):
        clock.now = 1024.0 + index * 0.05  # 0, 50, 100, 150, 200, 250 ms
        await transport.simulate_client_audio(session, chunk)

    assert levels == [rms_dbfs(frames[0]), rms_dbfs(frames[2]), rms_dbfs(frames[4])]
    await kit.close()


@pytest.mark.asyncio
async def test_output_levels_fire_at_most_once_per_100_ms_with_the_chunks_rms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(voice.channels, "time", clock)
    kit = RoomKit()
    channel, provider, _, _ = build()
    kit.register_channel(channel)
    levels: list[float] = []

    @kit.hook(HookTrigger.ON_OUTPUT_AUDIO_LEVEL)
    async def on_level(event: AudioLevelEvent, ctx: HookContext) -> None:
        levels.append(event.level_db)

    session = await channel.start_session("room-1", "user-1")
    chunks = [frame(100 * (index + 1), 480) for index in range(5)]
    for index, chunk in enumerate(chunks):
        clock.now = 1024.0 + index * 0.06  # 0, 60, 120, 180, 240 ms
        await provider.simulate_audio(session, chunk)

    assert levels == [rms_dbfs(chunks[0]), rms_dbfs(chunks[2]), rms_dbfs(chunks[4])]
    await kit.close()


@pytest.mark.asyncio
async def test_two_sessions_are_level_throttled_independently(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(voice.channels, "time", clock)
    kit = RoomKit()
    channel, _, transport, _ = build()
    kit.register_channel(channel)
    levels: list[tuple[str, float]] = []

    @kit.hook(HookTrigger.ON_INPUT_AUDIO_LEVEL)
    async def on_level(event: AudioLevelEvent, ctx: HookContext) -> None:
        levels.append((event.session.id, event.level_db))

    first = await channel.start_session("room-1", "user-1")
    second = await channel.start_session("room-1", "user-2")
    loud, quiet = frame(8000), frame(80)
    for offset_ms, session, chunk in [
        (0, first, loud),
        (10, second, quiet),
        (50, first, loud),
        (60, second, quiet),
        (100, first, loud),
        (110, second, quiet),
    ]:
        clock.now = 1024.0 + offset_ms / 1000
        await transport.simulate_client_audio(session, chunk)

    assert levels == [
        (first.id, rms_dbfs(loud)),
        (second.id, rms_dbfs(quiet)),
        (first.id, rms_dbfs(loud)),
        (second.id, rms_dbfs(quiet)),
    ]
    await kit.close()


# -- barge-in ----------------------------------------------------------------------------------


async def reply_with_a_slow_client(
    provider: MockRealtimeProvider, transport: GatedTransport, session: LiveSession, chunks: int
) -> None:
    """The client stops reading: the first chunk is held at the transport, the rest queue."""
    transport.gate.clear()
    transport.waiting.clear()
    for index in range(chunks):
        await provider._fire("audio", session, frame(index + 1, 2400))
    await asyncio.wait_for(transport.waiting.wait(), WAIT_S)


@pytest.mark.asyncio
async def test_barge_in_drops_queued_audio_and_clears_the_client() -> None:
    transport = GatedTransport()
    channel, provider, _, _ = build(transport=transport)
    session = await channel.start_session("room-1", "user-1")
    await provider.simulate_response_start(session)
    await reply_with_a_slow_client(provider, transport, session, chunks=5)

    await provider._fire("speech_start", session)
    transport.gate.set()
    await channel.settle(session)

    assert audio_of(transport) == [frame(1, 2400)]  # held before the barge-in; none after
    after_first_chunk = transport.log[transport.log.index(("audio", frame(1, 2400))) + 1 :]
    assert after_first_chunk == [
        ("interrupt", None),
        ("message", "clear_audio"),
        ("message", "speaking"),
    ]
    assert provider.truncations == []  # no chunk had finished being sent
    await channel.close()


@pytest.mark.asyncio
async def test_barge_in_truncates_at_the_elapsed_time_clamped_to_what_was_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(voice.channels, "time", clock)
    transport = GatedTransport()
    channel, provider, _, _ = build(transport=transport)
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_response_start(session)
    for _ in range(3):
        await provider.simulate_audio(session, REPLY_CHUNK)
    clock.now += 0.125
    await reply_with_a_slow_client(provider, transport, session, chunks=3)
    await provider._fire("speech_start", session)
    transport.gate.set()
    await channel.settle(session)

    await provider.simulate_response_start(session)
    await provider.simulate_audio(session, REPLY_CHUNK)
    clock.now += 5.0  # far longer than the 100 ms that was sent
    await provider.simulate_speech_start(session)

    assert provider.truncations == [(session.id, 125), (session.id, REPLY_CHUNK_MS)]
    await channel.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(("reported", "expected"), [(120, 120), (500, 2 * REPLY_CHUNK_MS)])
async def test_barge_in_truncates_at_the_clients_playback_report_clamped_to_what_was_sent(
    reported: int, expected: int
) -> None:
    channel, provider, transport, _ = build()
    session = await channel.start_session("room-1", "user-1")
    await provider.simulate_response_start(session)
    await provider.simulate_audio(session, REPLY_CHUNK)
    await provider.simulate_audio(session, REPLY_CHUNK)

    await transport.simulate_playback(session, reported)
    await provider.simulate_speech_start(session)

    assert provider.truncations == [(session.id, expected)]
    assert transport.messages_of(session, "clear_audio") == [{"type": "clear_audio"}]
    assert [call.method for call in transport.calls].count("interrupt") == 1
    await channel.close()


@pytest.mark.asyncio
async def test_speech_start_with_no_reply_audio_neither_clears_nor_truncates() -> None:
    channel, provider, transport, _ = build()
    session = await channel.start_session("room-1", "user-1")
    await provider.simulate_response_start(session)

    await provider.simulate_speech_start(session)

    assert provider.truncations == []
    assert transport.messages_of(session, "clear_audio") == []
    assert "interrupt" not in [call.method for call in transport.calls]
    await channel.close()


@pytest.mark.asyncio
async def test_a_second_speech_start_after_a_barge_in_neither_clears_nor_truncates_again() -> None:
    transport = GatedTransport()
    channel, provider, _, _ = build(transport=transport)
    session = await channel.start_session("room-1", "user-1")
    await provider.simulate_response_start(session)
    await reply_with_a_slow_client(provider, transport, session, chunks=3)
    await provider._fire("speech_start", session)
    transport.gate.set()  # the chunk held at the transport completes after the barge-in
    await channel.settle(session)

    await provider.simulate_speech_start(session)

    assert transport.messages_of(session, "clear_audio") == [{"type": "clear_audio"}]
    assert provider.truncations == []
    await channel.close()


@pytest.mark.asyncio
async def test_reply_audio_after_a_barge_in_is_dropped_until_the_next_response_starts() -> None:
    channel, provider, transport, _ = build()
    session = await channel.start_session("room-1", "user-1")
    await provider.simulate_response_start(session)
    await provider.simulate_audio(session, frame(1))

    await provider.simulate_speech_start(session)
    await provider.simulate_audio(session, frame(2))  # the rest of the interrupted reply
    assert audio_of(transport) == [frame(1)]

    await provider.simulate_response_start(session)
    await provider.simulate_audio(session, frame(3))
    assert audio_of(transport) == [frame(1), frame(3)]
    await channel.close()


@pytest.mark.asyncio
async def test_speech_over_a_reply_whose_audio_has_not_come_yet_drops_that_audio() -> None:
    channel, provider, transport, _ = build()
    session = await channel.start_session("room-1", "user-1")
    await provider.simulate_response_start(session)

    await provider.simulate_speech_start(session)  # before the reply's first audio
    await provider.simulate_audio(session, frame(1))  # it was already on its way
    await provider.simulate_response_end(session)
    await provider.simulate_response_start(session)
    await provider.simulate_audio(session, frame(2))

    assert audio_of(transport) == [frame(2)]
    assert transport.messages_of(session, "clear_audio") == []  # nothing had been sent
    assert provider.truncations == []
    await channel.close()


@pytest.mark.asyncio
async def test_speech_between_replies_does_not_block_the_next_reply() -> None:
    channel, provider, transport, _ = build()
    session = await channel.start_session("room-1", "user-1")
    await provider.simulate_response_start(session)
    await provider.simulate_audio(session, frame(1))
    await provider.simulate_response_end(session)

    await provider.simulate_speech_start(session)  # the reply is complete: not stale
    await provider.simulate_response_start(session)
    await provider.simulate_audio(session, frame(2))

    assert audio_of(transport)[-1] == frame(2)
    await channel.close()


@pytest.mark.asyncio
async def test_interrupt_stops_the_provider_and_clears_the_client() -> None:
    channel, provider, transport, _ = build()
    session = await channel.start_session("room-1", "user-1")
    await provider.simulate_response_start(session)
    await provider.simulate_audio(session, REPLY_CHUNK)
    await transport.simulate_playback(session, 40)

    await channel.interrupt(session)
    await provider.simulate_audio(session, frame(2))

    assert [call.method for call in provider.calls] == ["connect", "interrupt", "truncate_audio"]
    assert provider.truncations == [(session.id, 40)]
    assert transport.messages_of(session, "clear_audio") == [{"type": "clear_audio"}]
    assert audio_of(transport) == [REPLY_CHUNK]
    await channel.close()
