"""Benchmark voice/g711.py: G.711 encode/decode cost per 20 ms telephony frame.

Run: .venv/bin/python bench/bench_g711.py   (about 1 s; no Django, no network)
A 20 ms frame at 8 kHz is 160 samples: 320 bytes of PCM16, 160 bytes of G.711. The stdlib
audioop (removed in Python 3.13) is timed alongside for reference when it is available.
"""

from __future__ import annotations

import gc
import importlib
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voice import g711

CALLS = 20000
WARMUP_CALLS = 500
FRAME_SAMPLES = 160  # 20 ms at 8 kHz


def time_per_call(function: Callable[[], object], calls: int = CALLS) -> str:
    """ "median / p99 / mean" in microseconds, GC off; the mean leaves out the slowest 0.1 %
    (one scheduler hiccup on a shared machine)."""
    for _ in range(WARMUP_CALLS):
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
    return f"{median:.2f} / {p99:.2f} / {mean:.2f}"


def speechlike_frames(count: int) -> list[bytes]:
    rng = np.random.default_rng(7)
    x = np.clip(rng.normal(0, 3000, FRAME_SAMPLES * count), -32768, 32767).astype("<i2")
    return [x[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES].tobytes() for i in range(count)]


def cycling(function: Callable[[bytes], bytes], inputs: list[bytes]) -> Callable[[], object]:
    state = {"i": 0}

    def call() -> object:
        state["i"] += 1
        return function(inputs[state["i"] % len(inputs)])

    return call


def width_2(function: Callable[[bytes, int], bytes]) -> Callable[[bytes], bytes]:
    def call(data: bytes) -> bytes:
        return function(data, 2)

    return call


def load_audioop() -> ModuleType | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ImportError:
            return None


def table_build_ms() -> float:
    """Import-time cost: building the four tables, best of 20."""
    builders = (
        g711._ulaw_encode_table,
        g711._ulaw_decode_table,
        g711._alaw_encode_table,
        g711._alaw_decode_table,
    )
    best = float("inf")
    for _ in range(20):
        start = time.perf_counter()
        for build in builders:
            build()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> None:
    started = time.perf_counter()
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} cpus\n"
    )
    pcm = speechlike_frames(50)
    ulaw = [g711.ulaw_encode(frame) for frame in pcm]
    alaw = [g711.alaw_encode(frame) for frame in pcm]
    audioop = load_audioop()

    print(f"Per 20 ms frame (160 samples), us: median / p99 / mean over {CALLS} calls")
    print(f"{'':<14}{'voice.g711':>22}{'audioop':>22}")
    rows: list[tuple[str, Callable[[bytes], bytes], list[bytes], str]] = [
        ("ulaw encode", g711.ulaw_encode, pcm, "lin2ulaw"),
        ("ulaw decode", g711.ulaw_decode, ulaw, "ulaw2lin"),
        ("alaw encode", g711.alaw_encode, pcm, "lin2alaw"),
        ("alaw decode", g711.alaw_decode, alaw, "alaw2lin"),
    ]
    baseline = time_per_call(cycling(bytes, pcm))
    print(f"{'bytes() call':<14}{baseline:>22}{'':>22}   (timing overhead, for reference)")
    for name, ours, inputs, reference_name in rows:
        reference = "n/a (no audioop)"
        if audioop is not None:
            function = getattr(audioop, reference_name)
            reference = time_per_call(cycling(width_2(function), inputs))
        print(f"{name:<14}{time_per_call(cycling(ours, inputs)):>22}{reference:>22}")

    second = b"".join(pcm)  # 50 frames: one second
    second_ulaw = b"".join(ulaw)
    print(
        f"\nOne second (8000 samples) in one call, us: ulaw encode "
        f"{time_per_call(lambda: g711.ulaw_encode(second), 2000)}, decode "
        f"{time_per_call(lambda: g711.ulaw_decode(second_ulaw), 2000)}"
    )
    print(f"Tables built at import: {table_build_ms():.2f} ms; 128 KiB + 1 KiB of memory")
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
