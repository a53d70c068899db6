"""Benchmark and measure voice/audio.py: resampler delay, quality, speed and memory.

Run: .venv/bin/python bench/bench_audio.py   (about 10 s; no Django, no network)
Results and the reasoning behind the default quality are in bench/README.md.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voice.audio import (
    DEFAULT_QUALITY,
    QUALITIES,
    Pcm16Framer,
    StreamResampler,
    measure_click_delays_ms,
    rms_dbfs,
)

PAIRS = [
    (16000, 24000),
    (24000, 16000),
    (8000, 24000),
    (24000, 8000),
    (48000, 24000),
    (44100, 24000),
]
CHUNKS = 5000
WARMUP_CHUNKS = 200


def pair_name(pair: tuple[int, int]) -> str:
    def k(rate: int) -> str:
        return f"{rate / 1000:g}k"

    return f"{k(pair[0])}>{k(pair[1])}"


def tone(rate: int, seconds: float, frequency: float, dbfs: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(32768 * 10 ** (dbfs / 20) * np.sin(2 * np.pi * frequency * t)).astype("<i2")


def stream(resampler: StreamResampler, pcm: np.ndarray, chunk: int) -> np.ndarray:
    parts = [resampler.process(pcm[i : i + chunk].tobytes()) for i in range(0, pcm.size, chunk)]
    parts.append(resampler.flush())
    return np.frombuffer(b"".join(parts), dtype="<i2").astype(np.float64)


def tone_quality(pair: tuple[int, int], quality: str) -> tuple[float, float, float]:
    """1 kHz at -6 dBFS, 1 s in 20 ms chunks: level error (dB), FFT peak (Hz), spur (dBc)."""
    in_rate, out_rate = pair
    x = tone(in_rate, 1.0, 1000.0, -6.0)
    y = stream(StreamResampler(in_rate, out_rate, quality=quality), x, in_rate // 50)
    edge = out_rate // 10
    segment = y[edge:-edge]
    level = 10 * np.log10(np.mean(segment**2) / 32768**2)
    reference = 10 * np.log10(
        np.mean(x[in_rate // 10 : -in_rate // 10].astype(float) ** 2) / 32768**2
    )
    spectrum = np.abs(np.fft.rfft(segment * np.blackman(segment.size)))
    frequencies = np.fft.rfftfreq(segment.size, 1 / out_rate)
    peak = int(np.argmax(spectrum))
    others = np.abs(frequencies - frequencies[peak]) > 50
    spur = 20 * np.log10(spectrum[others].max() / spectrum[peak])
    return level - reference, float(frequencies[peak]), spur


def tone_quality_of_input(rate: int) -> float:
    """Spur (dBc) of the int16 test tone generated directly at ``rate``: the floor."""
    x = tone(rate, 0.8, 1000.0, -6.0).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.blackman(x.size)))
    frequencies = np.fft.rfftfreq(x.size, 1 / rate)
    peak = int(np.argmax(spectrum))
    return float(20 * np.log10(spectrum[np.abs(frequencies - 1000) > 50].max() / spectrum[peak]))


def passband_edge(pair: tuple[int, int], quality: str) -> float:
    """Level change (dB) of a tone at 0.4 x the lower rate."""
    in_rate, out_rate = pair
    frequency = 0.4 * min(in_rate, out_rate)
    x = tone(in_rate, 1.0, frequency, -6.0)
    y = stream(StreamResampler(in_rate, out_rate, quality=quality), x, in_rate // 50)
    edge = out_rate // 10
    out_ms = np.mean(y[edge:-edge] ** 2)
    in_ms = np.mean(x[in_rate // 10 : -in_rate // 10].astype(float) ** 2)
    return float(10 * np.log10(out_ms / in_ms))


def tone_gain(pair: tuple[int, int], quality: str, frequency: float) -> float:
    in_rate, out_rate = pair
    x = tone(in_rate, 0.5, frequency, -6.0)
    y = stream(StreamResampler(in_rate, out_rate, quality=quality), x, in_rate // 50)
    out_ms = np.mean(y[out_rate // 10 : -out_rate // 10] ** 2)
    return float(
        10 * np.log10(out_ms / np.mean(x[in_rate // 10 : -in_rate // 10].astype(float) ** 2))
    )


def passband_corners(pair: tuple[int, int], quality: str) -> str:
    """Highest frequency still within 0.5 dB, and the -3 dB point (20 Hz steps from 0.3 fs)."""
    low_rate = min(pair)
    within: float | None = None
    for frequency in np.arange(0.3 * low_rate, 0.5 * low_rate, 20.0):
        gain = tone_gain(pair, quality, float(frequency))
        if gain < -0.5 and within is None:
            within = float(frequency) - 20.0
        if gain < -3.0:
            return f"{within / 1000:.2f} / {frequency / 1000:.2f}"
    return f"{(within or 0.5 * low_rate) / 1000:.2f} / > {0.5 * low_rate / 1000:.2f}"


def alias_level(pair: tuple[int, int], quality: str) -> float | None:
    """Downsampling only: what is left of a tone between the two Nyquist frequencies (dB)."""
    in_rate, out_rate = pair
    if out_rate >= in_rate:
        return None
    frequency = min(0.5 * out_rate + 0.25 * (in_rate - out_rate) / 2, 0.7 * out_rate)
    x = tone(in_rate, 1.0, frequency, -6.0)
    y = stream(StreamResampler(in_rate, out_rate, quality=quality), x, in_rate // 50)
    edge = out_rate // 10
    out_ms = max(np.mean(y[edge:-edge] ** 2), 1e-12)
    in_ms = np.mean(x.astype(float) ** 2)
    return float(10 * np.log10(out_ms / in_ms))


def time_per_call(function: Callable[[], object], calls: int) -> str:
    """ "median / p99 / mean" in microseconds, GC off. soxr works in blocks, so many calls
    return b"" and the median can be the cost of doing nothing: the mean (of the fastest
    99.9 %, so one scheduler hiccup on a shared machine does not dominate it) is the CPU a
    chunk costs."""
    for _ in range(WARMUP_CHUNKS):
        function()
    samples = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for _ in range(calls):
            start = clock()
            function()
            samples.append(clock() - start)
    finally:
        gc.enable()
    samples.sort()
    median = statistics.median(samples) / 1000
    p99 = samples[int(len(samples) * 0.99)] / 1000
    mean = statistics.fmean(samples[: int(len(samples) * 0.999)]) / 1000
    return f"{median:.1f} / {p99:.1f} / {mean:.1f}"


def speechlike_chunks(rate: int, count: int) -> list[bytes]:
    rng = np.random.default_rng(7)
    chunk = rate // 50
    x = np.clip(rng.normal(0, 3000, chunk * 50), -32768, 32767).astype("<i2")
    return [x[(i % 50) * chunk : (i % 50 + 1) * chunk].tobytes() for i in range(count)]


def resample_speed(pair: tuple[int, int], quality: str) -> str:
    resampler = StreamResampler(*pair, quality=quality)
    chunks = speechlike_chunks(pair[0], 50)
    state = {"i": 0}

    def call() -> None:
        resampler.process(chunks[state["i"] % 50])
        state["i"] += 1

    return time_per_call(call, CHUNKS)


def raw_soxr_int16_speed(pair: tuple[int, int], quality: str) -> str:
    """soxr with int16 I/O and no conversion: the floor our float32 wrapper adds to."""
    stream_ = soxr.ResampleStream(pair[0], pair[1], 1, dtype="int16", quality=quality)
    chunks = [np.frombuffer(c, dtype=np.int16) for c in speechlike_chunks(pair[0], 50)]
    state = {"i": 0}

    def call() -> None:
        stream_.resample_chunk(chunks[state["i"] % 50]).tobytes()
        state["i"] += 1

    return time_per_call(call, CHUNKS)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_per_resampler(quality: str, count: int = 200) -> tuple[float, float | None]:
    """Bytes per primed 16k>24k StreamResampler: tracemalloc (Python heap) and RSS delta."""
    chunk = speechlike_chunks(16000, 1)[0]
    gc.collect()
    rss_before = rss_bytes() if os.path.exists("/proc/self/statm") else None
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    keep = []
    for _ in range(count):
        resampler = StreamResampler(16000, 24000, quality=quality)
        resampler.process(chunk)  # soxr allocates its filter state on first use
        keep.append(resampler)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    traced = sum(stat.size_diff for stat in after.compare_to(before, "filename")) / count
    rss = (rss_bytes() - rss_before) / count if rss_before is not None else None
    del keep
    return traced, rss


def main() -> None:
    started = time.perf_counter()
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, soxr {soxr.__version__} "
        f"(libsoxr {soxr.__libsoxr_version__}), {platform.machine()}, {os.cpu_count()} cpus; "
        f"default quality {DEFAULT_QUALITY}\n"
    )
    header = "".join(f"{pair_name(p):>20}" for p in PAIRS)

    print("Click delay, ms, 20 ms chunks: worst case (mean) over 32 clicks; 'lost n' = clicks")
    print("that vanished (no anti-alias filter)")
    print(f"{'quality':<8}{header}")
    for quality in QUALITIES:
        cells = []
        for pair in PAIRS:
            delays = measure_click_delays_ms(*pair, quality=quality)
            lost = 32 - len(delays)
            cell = f"{max(delays):.1f} ({statistics.mean(delays):.1f})"
            cells.append(f"{cell + (f' lost {lost}' if lost else ''):>20}")
        print(f"{quality:<8}{''.join(cells)}")

    print("\nTone quality, 1 s in 20 ms chunks (worst over the directions above):")
    print(
        f"{'quality':<8}{'1k level dB':>13}{'1k peak Hz':>12}{'1k spur dBc':>13}"
        f"{'0.4fs dB':>10}{'alias dB':>10}"
    )
    for quality in QUALITIES:
        results = [tone_quality(pair, quality) for pair in PAIRS]
        level = max((r[0] for r in results), key=abs)
        peak_error = max((r[1] - 1000.0 for r in results), key=abs)
        spur = max(r[2] for r in results)
        edge = min(passband_edge(pair, quality) for pair in PAIRS)
        aliases = [a for pair in PAIRS if (a := alias_level(pair, quality)) is not None]
        print(
            f"{quality:<8}{level:>+13.3f}{1000 + peak_error:>12.1f}{spur:>13.1f}"
            f"{edge:>+10.2f}{max(aliases):>+10.1f}"
        )
    floor = "".join(f"{tone_quality_of_input(pair[1]):>20.1f}" for pair in PAIRS)
    print("per direction, 1k spur dBc (first row: the int16 tone itself at the output rate):")
    print(f"{'input':<8}{floor}")
    for quality in QUALITIES:
        spurs = "".join(f"{tone_quality(pair, quality)[2]:>20.1f}" for pair in PAIRS)
        print(f"{quality:<8}{spurs}")

    print("\nPassband, kHz: last frequency within 0.5 dB / first below -3 dB")
    corner_pairs = [(16000, 24000), (8000, 24000), (24000, 8000)]
    print(f"{'quality':<8}" + "".join(f"{pair_name(p):>20}" for p in corner_pairs))
    for quality in QUALITIES:
        cells = "".join(f"{passband_corners(pair, quality):>20}" for pair in corner_pairs)
        print(f"{quality:<8}{cells}")

    print(
        f"\nStreamResampler.process per 20 ms chunk, us: median / p99 / mean over {CHUNKS} chunks"
    )
    print(f"{'quality':<8}{header}")
    for quality in QUALITIES:
        cells = "".join(f"{resample_speed(pair, quality):>20}" for pair in PAIRS)
        print(f"{quality:<8}{cells}")
    cells = "".join(f"{raw_soxr_int16_speed(pair, DEFAULT_QUALITY):>20}" for pair in PAIRS)
    print(f"{'raw ' + DEFAULT_QUALITY:<8}{cells}   (soxr int16 I/O, no wrapper, for reference)")

    print("\nrms_dbfs and Pcm16Framer.push per 20 ms chunk, us: median / p99 / mean")
    for rate in (8000, 16000, 24000, 48000):
        chunks = speechlike_chunks(rate, 50)
        state = {"i": 0}

        def level(chunks: list[bytes] = chunks, state: dict[str, int] = state) -> None:
            rms_dbfs(chunks[state["i"] % 50])
            state["i"] += 1

        framer = Pcm16Framer()
        odd = [c[:-1] for c in chunks]  # every push carries a byte over

        def push(
            framer: Pcm16Framer = framer, odd: list[bytes] = odd, state: dict[str, int] = state
        ) -> None:
            framer.push(odd[state["i"] % 50])
            state["i"] += 1

        print(
            f"{rate:>6} Hz: rms_dbfs {time_per_call(level, CHUNKS):>18}"
            f"   framer.push (odd frames) {time_per_call(push, CHUNKS):>18}"
        )

    print("\nMemory per primed 16k>24k StreamResampler (200 instances, a fresh process each)")
    print("tracemalloc sees only the Python heap; the RSS delta includes libsoxr's C heap")
    for quality in QUALITIES:
        result = subprocess.run(  # noqa: S603 - this script, fixed arguments
            [sys.executable, __file__, "--memory", quality],
            capture_output=True,
            text=True,
            check=True,
        )
        print(result.stdout.rstrip())

    print(f"\ntotal {time.perf_counter() - started:.1f} s")


def print_memory(quality: str) -> None:
    traced, rss = memory_per_resampler(quality)
    rss_text = f"{rss / 1024:.1f} KiB" if rss is not None else "n/a"
    print(f"{quality:<8} tracemalloc {traced:>6.0f} B   RSS {rss_text:>10}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--memory"]:
        print_memory(sys.argv[2])
    else:
        main()
