from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from voice.audio import (
    DEFAULT_QUALITY,
    SILENCE_DBFS,
    AudioFormatError,
    LevelThrottle,
    Pcm16Framer,
    StreamResampler,
    measure_click_delays_ms,
    rms_dbfs,
)


def tone(rate: int, seconds: float, frequency: float = 1000.0, dbfs: float = -6.0) -> bytes:
    t = np.arange(round(rate * seconds)) / rate
    amplitude = 32768 * 10 ** (dbfs / 20)
    return np.round(amplitude * np.sin(2 * np.pi * frequency * t)).astype("<i2").tobytes()


def chunks(pcm: bytes, rate: int, chunk_ms: int = 20) -> list[bytes]:
    size = 2 * rate * chunk_ms // 1000
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def stream(resampler: StreamResampler, pcm: bytes, rate: int) -> bytes:
    """Feed ``pcm`` in 20 ms chunks and flush, as a session would."""
    return b"".join([resampler.process(c) for c in chunks(pcm, rate)] + [resampler.flush()])


def samples(pcm: bytes) -> npt.NDArray[np.float64]:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def steady(pcm: bytes, rate: int) -> bytes:
    """Drop 100 ms at each end (filter start-up and tail)."""
    edge = 2 * rate // 10
    return pcm[edge:-edge]


def peak_frequency_and_bin(pcm: bytes, rate: int) -> tuple[float, float]:
    x = samples(pcm)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum) * rate / x.size), rate / x.size


def assert_tone_survives(original: bytes, in_rate: int, result: bytes, out_rate: int) -> None:
    frequency, bin_hz = peak_frequency_and_bin(steady(result, out_rate), out_rate)
    assert abs(frequency - 1000.0) <= bin_hz
    expected_level = rms_dbfs(steady(original, in_rate))
    assert rms_dbfs(steady(result, out_rate)) == pytest.approx(expected_level, abs=0.5)


# --- StreamResampler -------------------------------------------------------------------


def test_tone_survives_16k_to_24k_and_back_streamed_in_20ms_chunks() -> None:
    original = tone(16000, 1.0)
    up = StreamResampler(16000, 24000)
    down = StreamResampler(24000, 16000)

    at_24k = b"".join(up.process(c) for c in chunks(original, 16000)) + up.flush()
    back = b"".join(down.process(c) for c in chunks(at_24k, 24000)) + down.flush()

    assert_tone_survives(original, 16000, at_24k, 24000)
    assert_tone_survives(original, 16000, back, 16000)
    assert len(back) == len(original)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(48000, 16000), (44100, 24000)])
def test_tone_survives_downsampling_streamed_in_20ms_chunks(in_rate: int, out_rate: int) -> None:
    original = tone(in_rate, 1.0)

    result = stream(StreamResampler(in_rate, out_rate), original, in_rate)

    assert_tone_survives(original, in_rate, result, out_rate)


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(16000, 24000), (24000, 16000), (8000, 24000), (44100, 24000)]
)
@pytest.mark.parametrize("quality", [DEFAULT_QUALITY, "HQ"])
def test_streaming_in_chunks_gives_the_same_samples_as_one_call(
    in_rate: int, out_rate: int, quality: str
) -> None:
    noise = np.random.default_rng(5).normal(0, 4000, in_rate).clip(-32768, 32767)
    pcm = noise.astype("<i2").tobytes()
    one_call = StreamResampler(in_rate, out_rate, quality=quality)  # type: ignore[arg-type]
    chunked = StreamResampler(in_rate, out_rate, quality=quality)  # type: ignore[arg-type]

    whole = one_call.process(pcm) + one_call.flush()
    pieces = [chunked.process(c) for c in chunks(pcm, in_rate)]
    tail = chunked.flush()

    assert b"".join(pieces) + tail == whole


@pytest.mark.parametrize(
    ("in_rate", "out_rate"),
    [(16000, 24000), (24000, 16000), (8000, 24000), (24000, 8000), (48000, 24000), (44100, 24000)],
)
def test_output_length_after_flush_matches_the_rate_ratio(in_rate: int, out_rate: int) -> None:
    pcm = tone(in_rate, 1.013)  # not a whole number of chunks

    result = stream(StreamResampler(in_rate, out_rate), pcm, in_rate)

    expected = (len(pcm) // 2) * out_rate / in_rate
    assert abs(len(result) // 2 - expected) <= 2


def test_reset_drops_held_back_audio_so_silence_stays_silent() -> None:
    resampler = StreamResampler(24000, 16000)
    for chunk in chunks(tone(24000, 0.2), 24000):
        resampler.process(chunk)

    resampler.reset()
    after = stream(resampler, bytes(2 * 24000 // 5), 24000)

    assert len(after) > 0
    assert not any(after)


def test_flush_returns_the_tail_and_readies_the_stream_for_a_new_utterance() -> None:
    first, second = tone(16000, 0.3, 440.0), tone(16000, 0.5)
    reused = StreamResampler(16000, 24000)
    fresh = StreamResampler(16000, 24000)

    before_flush = b"".join(reused.process(c) for c in chunks(first, 16000))
    tail = reused.flush()

    assert len(tail) > 0
    assert abs((len(before_flush) + len(tail)) // 2 - 0.3 * 24000) <= 2
    assert stream(reused, second, 16000) == stream(fresh, second, 16000)


def test_equal_rates_pass_audio_through_unchanged() -> None:
    resampler = StreamResampler(24000, 24000)
    pcm = tone(24000, 0.02)

    assert resampler.is_passthrough
    assert resampler.process(pcm) == pcm
    assert resampler.process(bytearray(pcm)) == pcm
    assert resampler.flush() == b""
    assert resampler.delay_ms == 0.0


def test_process_accepts_any_bytes_like_and_returns_bytes() -> None:
    pcm = tone(16000, 0.1)

    from_bytes = StreamResampler(16000, 24000).process(pcm)
    from_view = StreamResampler(16000, 24000).process(memoryview(pcm))

    assert type(from_view) is bytes
    assert from_view == from_bytes


def test_process_rejects_half_samples() -> None:
    resampler = StreamResampler(16000, 24000)

    with pytest.raises(AudioFormatError, match="321 bytes"):
        resampler.process(bytes(321))
    with pytest.raises(AudioFormatError):
        StreamResampler(16000, 16000).process(b"\x01")


def test_empty_chunk_gives_empty_output() -> None:
    assert StreamResampler(16000, 24000).process(b"") == b""


@pytest.mark.parametrize("rate", [0, -16000, 192001, 16000.0, True, "16000", None])
def test_sample_rates_must_be_positive_ints_up_to_192k(rate: object) -> None:
    with pytest.raises(ValueError, match="in_rate"):
        StreamResampler(rate, 24000)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out_rate"):
        StreamResampler(24000, rate)  # type: ignore[arg-type]


def test_highest_sample_rate_is_accepted() -> None:
    assert StreamResampler(192000, 48000).out_rate == 48000


def test_unknown_quality_is_rejected() -> None:
    with pytest.raises(ValueError, match="quality"):
        StreamResampler(16000, 24000, quality="best")  # type: ignore[arg-type]


def test_default_quality_filters_what_would_alias_when_downsampling() -> None:
    # 5.6 kHz is above 8 kHz's Nyquist: without an anti-alias filter (QQ) it folds to 2.4 kHz.
    above_nyquist = tone(24000, 1.0, frequency=5600.0, dbfs=-6.0)

    result = stream(StreamResampler(24000, 8000), above_nyquist, 24000)

    assert rms_dbfs(steady(result, 8000)) < -60.0


def test_default_quality_delays_less_than_soxr_default_hq() -> None:
    for in_rate, out_rate in [(16000, 24000), (24000, 16000), (8000, 24000), (24000, 8000)]:
        chosen = measure_click_delays_ms(in_rate, out_rate, quality=DEFAULT_QUALITY)
        hq = measure_click_delays_ms(in_rate, out_rate, quality="HQ")
        assert len(chosen) == len(hq) == 32  # no click lost
        assert max(chosen) < max(hq)
        assert sum(chosen) / len(chosen) < sum(hq) / len(hq)

    assert 0.0 < StreamResampler(16000, 24000).delay_ms
    assert (
        StreamResampler(16000, 24000).delay_ms
        < StreamResampler(16000, 24000, quality="HQ").delay_ms
    )


def test_click_delay_of_equal_rates_is_not_measured() -> None:
    assert measure_click_delays_ms(16000, 16000) == []


# --- Pcm16Framer -----------------------------------------------------------------------


def test_framer_carries_an_odd_byte_over_to_the_next_frame() -> None:
    framer = Pcm16Framer()

    assert framer.push(b"\x01") == b""
    assert framer.push(b"\x02\x03") == b"\x01\x02"
    assert framer.push(b"\x04") == b"\x03\x04"
    assert framer.push(b"\x05\x06") == b"\x05\x06"


def test_framer_returns_nothing_for_an_empty_frame_and_keeps_the_carry() -> None:
    framer = Pcm16Framer()
    framer.push(b"\x01")

    assert framer.push(b"") == b""
    assert framer.push(b"\x02") == b"\x01\x02"


def test_framer_accepts_bytearray_and_memoryview() -> None:
    framer = Pcm16Framer()

    assert framer.push(bytearray(b"\x01\x02\x03")) == b"\x01\x02"
    result = framer.push(memoryview(b"\x04\x05"))

    assert result == b"\x03\x04"
    assert type(result) is bytes


def test_framer_rejects_an_oversize_frame_naming_its_size_and_keeps_state() -> None:
    framer = Pcm16Framer(max_frame_bytes=8)
    framer.push(b"\x01")

    with pytest.raises(AudioFormatError, match=r"\b9 bytes\b.*\b8 bytes\b"):
        framer.push(bytes(9))

    assert framer.push(b"\x02") == b"\x01\x02"
    assert framer.push(bytes(8)) == bytes(8)


def test_framer_default_limit_is_256_kib() -> None:
    framer = Pcm16Framer()

    assert framer.push(bytes(256 * 1024)) == bytes(256 * 1024)
    with pytest.raises(AudioFormatError, match=str(256 * 1024 + 2)):
        framer.push(bytes(256 * 1024 + 2))


@pytest.mark.parametrize("frame", ["\x01\x02", None, 12, [1, 2]])
def test_framer_rejects_frames_that_are_not_bytes(frame: object) -> None:
    framer = Pcm16Framer()

    with pytest.raises(AudioFormatError, match="bytes"):
        framer.push(frame)  # type: ignore[arg-type]

    assert framer.push(b"\x01\x02") == b"\x01\x02"


def test_framer_reset_drops_the_carried_byte() -> None:
    framer = Pcm16Framer()
    framer.push(b"\x01")

    framer.reset()

    assert framer.push(b"\x02\x03") == b"\x02\x03"


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_framer_limit_must_be_a_positive_int(limit: object) -> None:
    with pytest.raises(ValueError, match="max_frame_bytes"):
        Pcm16Framer(max_frame_bytes=limit)  # type: ignore[arg-type]


# --- rms_dbfs --------------------------------------------------------------------------


def test_full_scale_square_wave_is_0_dbfs() -> None:
    square = np.tile(np.array([32767, -32768], dtype="<i2").repeat(20), 50).tobytes()

    assert rms_dbfs(square) == pytest.approx(0.0, abs=0.001)
    assert rms_dbfs(np.full(480, -32768, dtype="<i2").tobytes()) == 0.0


def test_sine_at_minus_20_dbfs_rms_reads_minus_20() -> None:
    # RMS of -20 dBFS means a peak of 0.1 * sqrt(2) of full scale.
    sine = tone(16000, 1.0, frequency=1000.0, dbfs=-20.0 + 3.0103)

    assert rms_dbfs(sine) == pytest.approx(-20.0, abs=0.1)


def test_silence_and_empty_input_are_the_floor() -> None:
    assert rms_dbfs(bytes(960)) == SILENCE_DBFS == -96.0
    assert rms_dbfs(b"") == -96.0


def test_level_is_clamped_to_the_floor() -> None:
    one_lsb_every_100 = np.zeros(4800, dtype="<i2")
    one_lsb_every_100[::100] = 1

    assert rms_dbfs(one_lsb_every_100.tobytes()) == -96.0


def test_rms_dbfs_rejects_half_samples() -> None:
    with pytest.raises(AudioFormatError):
        rms_dbfs(b"\x00\x01\x02")


# --- LevelThrottle ---------------------------------------------------------------------


def test_throttle_is_due_at_most_once_per_interval() -> None:
    throttle = LevelThrottle(interval_s=0.1)

    assert throttle.due(0.0) is True
    assert throttle.due(0.05) is False
    assert throttle.due(0.1) is True
    assert throttle.due(0.15) is False


def test_throttle_fires_every_fifth_20ms_frame_despite_float_sums() -> None:
    throttle = LevelThrottle()
    now, fired = 0.0, []
    for frame in range(25):
        if throttle.due(now):
            fired.append(frame)
        now += 0.02

    assert fired == [0, 5, 10, 15, 20]


def test_throttles_are_independent_per_instance() -> None:
    caller_a, caller_b = LevelThrottle(), LevelThrottle()

    assert caller_a.due(0.0) is True
    assert caller_b.due(0.01) is True
    assert caller_a.due(0.05) is False
    assert caller_b.due(0.05) is False


def test_throttle_interval_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        LevelThrottle(interval_s=-0.1)
