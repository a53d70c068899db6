"""voice.vad.EnergyVad: speech boundaries from frame energy, with an adaptive noise floor."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from voice.vad import EnergyVad, VadEvent

RATE = 16000
FRAME_BYTES = 640  # 20 ms at 16 kHz


Signal = npt.NDArray[np.float64]


def silence(ms: int, rate: int = RATE) -> Signal:
    return np.zeros(rate * ms // 1000, dtype=np.float64)


def scaled(signal: Signal, dbfs: float) -> Signal:
    """``signal`` with its RMS set to ``dbfs`` (full scale 32768)."""
    gain = 10 ** (dbfs / 20) * 32768 / float(np.sqrt(np.mean(signal**2)))
    result: Signal = signal * gain
    return result


def voice(ms: int, dbfs: float, rate: int = RATE) -> Signal:
    """A voiced sound: 200 Hz and its harmonics, scaled to an RMS of ``dbfs``."""
    t = np.arange(rate * ms // 1000) / rate
    wave = np.zeros(t.size)
    for k in range(1, 6):
        wave += np.sin(2 * math.pi * 200 * k * t + k) / k
    return scaled(wave, dbfs)


def noise(ms: int, dbfs: float, seed: int = 7, rate: int = RATE) -> Signal:
    """White noise with an RMS of ``dbfs`` (fixed seed: the same on every run)."""
    return scaled(np.random.default_rng(seed).standard_normal(rate * ms // 1000), dbfs)


def pcm(*parts: Signal) -> bytes:
    joined = np.concatenate(parts)
    data: bytes = np.clip(np.rint(joined), -32768, 32767).astype("<i2").tobytes()
    return data


def run(vad: EnergyVad, audio: bytes, chunk: int = FRAME_BYTES) -> list[VadEvent]:
    events: list[VadEvent] = []
    for start in range(0, len(audio), chunk):
        events += vad.push(audio[start : start + chunk])
    return events


def test_silence_gives_no_events() -> None:
    vad = EnergyVad(RATE)

    assert run(vad, pcm(silence(3000))) == []
    assert (vad.in_speech, vad.utterance_start_ms, vad.utterance_end_ms) == (False, None, None)
    assert vad.position_ms == 3000.0


def test_a_one_second_burst_gives_one_start_and_one_end_at_its_edges() -> None:
    vad = EnergyVad(RATE)

    events = run(vad, pcm(silence(500), voice(1000, -20), silence(1000)))

    # Dated at the edges; detected start_ms (80) and silence_ms (600) later.
    assert events == [
        VadEvent("start", 500.0, 580.0, 8000),
        VadEvent("end", 1500.0, 2100.0, 24000),
    ]
    assert (vad.utterance_start_ms, vad.utterance_end_ms) == (500.0, 1500.0)
    assert not vad.in_speech


def test_a_burst_of_noise_counts_as_speech_like_a_voiced_sound() -> None:
    vad = EnergyVad(RATE)

    events = run(vad, pcm(silence(300), noise(700, -25), silence(700)))

    assert [(e.kind, e.at_ms) for e in events] == [("start", 300.0), ("end", 1000.0)]


def test_speech_that_is_still_going_has_a_start_and_no_end_yet() -> None:
    vad = EnergyVad(RATE)

    events = run(vad, pcm(silence(200), voice(700, -20), silence(400)))

    assert events == [VadEvent("start", 200.0, 280.0, 3200)]
    assert (vad.in_speech, vad.utterance_start_ms, vad.utterance_end_ms) == (True, 200.0, None)


def test_a_burst_off_the_frame_grid_is_dated_within_a_frame() -> None:
    vad = EnergyVad(RATE)

    events = run(vad, pcm(silence(510), voice(990, -20), silence(1000)))

    # 510 ms falls inside the frame [500, 520): that frame is already voiced.
    assert [(e.kind, e.at_ms) for e in events] == [("start", 500.0), ("end", 1500.0)]


def test_clicks_shorter_than_start_ms_never_start_speech() -> None:
    vad = EnergyVad(RATE)
    clicks = [part for _ in range(5) for part in (voice(60, -10), silence(300))]

    assert run(vad, pcm(silence(200), *clicks)) == []
    assert not vad.in_speech


def test_a_pause_shorter_than_silence_ms_does_not_end_speech() -> None:
    vad = EnergyVad(RATE)

    events = run(
        vad, pcm(silence(200), voice(500, -20), silence(400), voice(500, -20), silence(1000))
    )

    assert [(e.kind, e.at_ms) for e in events] == [("start", 200.0), ("end", 1600.0)]


def test_a_sound_below_the_threshold_is_not_speech() -> None:
    vad = EnergyVad(RATE, threshold_dbfs=-30.0)

    assert run(vad, pcm(silence(200), voice(1000, -35), silence(1000))) == []


def test_steady_background_noise_at_minus_50_dbfs_never_starts_speech() -> None:
    vad = EnergyVad(RATE)

    assert run(vad, pcm(noise(6000, -50))) == []
    assert vad.noise_floor_dbfs == pytest.approx(-50.0, abs=1.5)


def test_speech_20_db_above_background_noise_is_heard() -> None:
    vad = EnergyVad(RATE)
    background = noise(4000, -50)
    speech = np.concatenate([np.zeros(RATE), voice(1000, -30), np.zeros(2 * RATE)])

    events = run(vad, pcm(background + speech))

    assert [(e.kind, e.at_ms) for e in events] == [("start", 1000.0), ("end", 2000.0)]


def test_the_floor_learns_a_loud_room_so_only_speech_above_it_counts() -> None:
    vad = EnergyVad(RATE, threshold_dbfs=-60.0)
    room = noise(12000, -40, seed=3)
    speech = np.zeros(room.size)
    speech[8 * RATE : 9 * RATE] = voice(1000, -20)

    events = run(vad, pcm(room + speech))

    # At first only threshold_dbfs counts, so the room is taken for speech until the floor
    # window has seen it (about 5 s); from then on only what stands 10 dB above it does.
    assert [e.kind for e in events] == ["start", "end", "start", "end"]
    assert [e.at_ms for e in events] == [0.0, 5000.0, 8000.0, 9000.0]
    assert vad.speech_threshold_dbfs == pytest.approx(-30.0, abs=1.5)


def test_a_quieter_room_lowers_the_floor_at_once() -> None:
    vad = EnergyVad(RATE, threshold_dbfs=-70.0)

    run(vad, pcm(noise(6000, -45), noise(100, -65)))

    assert vad.noise_floor_dbfs == pytest.approx(-65.0, abs=1.5)


@pytest.mark.parametrize("chunk", [1, 3, 101, 333, 641, 4097, 100_001])
def test_any_chunking_gives_the_same_events_as_20_ms_chunks(chunk: int) -> None:
    audio = pcm(
        silence(300), voice(900, -22), silence(700), noise(400, -30), silence(800), voice(90, -25)
    )
    expected = run(EnergyVad(RATE), audio)

    assert run(EnergyVad(RATE), audio, chunk) == expected
    assert [e.kind for e in expected] == ["start", "end", "start", "end", "start"]


def test_uneven_random_chunks_give_the_same_events_as_20_ms_chunks() -> None:
    audio = pcm(silence(250), voice(1200, -18), silence(900), voice(300, -28), silence(700))
    sizes = np.random.default_rng(11).integers(1, 2000, size=len(audio)).tolist()
    vad = EnergyVad(RATE)
    events: list[VadEvent] = []
    position = 0
    for size in sizes:
        if position >= len(audio):
            break
        events += vad.push(audio[position : position + size])
        position += size

    assert events == run(EnergyVad(RATE), audio)
    assert len(events) == 4


def test_a_partial_frame_waits_for_the_rest() -> None:
    vad = EnergyVad(RATE)

    vad.push(b"\x00" * 639)
    assert vad.position_ms == 0.0
    vad.push(b"\x00")
    assert vad.position_ms == 20.0


def test_start_and_silence_durations_are_whole_frames_rounded_up() -> None:
    vad = EnergyVad(RATE, start_ms=50, silence_ms=310)

    events = run(vad, pcm(silence(100), voice(500, -20), silence(600)))

    assert events == [
        VadEvent("start", 100.0, 160.0, 1600),  # 50 ms -> 3 frames
        VadEvent("end", 600.0, 920.0, 9600),  # 310 ms -> 16 frames
    ]


def test_10_ms_frames_at_48_khz() -> None:
    vad = EnergyVad(48000, frame_ms=10)

    events = run(vad, pcm(silence(305, 48000), voice(700, -20, 48000), silence(900, 48000)), 960)

    assert events == [
        VadEvent("start", 300.0, 380.0, 14400),
        VadEvent("end", 1010.0, 1610.0, 48480),
    ]


def test_tune_changes_the_hangover_from_the_next_frame() -> None:
    vad = EnergyVad(RATE)
    run(vad, pcm(silence(100), voice(500, -20)))

    vad.tune(silence_ms=200)
    events = run(vad, pcm(silence(500)))

    assert events == [VadEvent("end", 600.0, 800.0, 9600)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threshold_dbfs": 3.0}, "threshold_dbfs must be a number in -96..0, got 3.0"),
        ({"threshold_dbfs": math.nan}, "threshold_dbfs must be a number in -96..0, got nan"),
        ({"margin_db": -1}, "margin_db must be a number in 0..60, got -1"),
        ({"start_ms": 0}, "start_ms must be an int >= 1, got 0"),
        ({"silence_ms": True}, "silence_ms must be an int >= 1, got True"),
        ({"frame_ms": 200}, "frame_ms must be at most 100, got 200"),
        ({"floor_window_ms": 0}, "floor_window_ms must be an int >= 1, got 0"),
    ],
)
def test_bad_parameters_are_rejected_by_name(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        EnergyVad(RATE, **options)  # type: ignore[arg-type]

    assert str(caught.value) == message


def test_a_bad_sample_rate_is_rejected() -> None:
    with pytest.raises(ValueError) as caught:
        EnergyVad(0)

    assert str(caught.value) == "sample_rate must be an int >= 1, got 0"
