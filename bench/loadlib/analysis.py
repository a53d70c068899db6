"""Latency by sample position, losses, and the result tables.

How a latency is matched (both directions work the same way):

* The resampler is deterministic in *how many* samples it returns per chunk: that depends
  only on the chunk sizes fed so far, never on their content. The benchmark replays the
  chunk sizes through the same ``voice.audio.StreamResampler`` (same rates, same quality)
  and so knows ``released[k]``: the cumulative output sample count after input chunk k.
* Caller → provider: the load generator sends 20 ms frames (320 samples at 16 kHz); the
  fake records the cumulative 24 kHz sample count after each append and when it arrived.
  An append that brings the count to ``c`` carries output released by frame
  ``k = min{k : released[k] >= c}``; its latency is ``arrival - send_time[k]``.
* Provider → caller: the fake's deltas are the chunk sizes, replayed 24 → 16 kHz; a client
  message that brings its 16 kHz count to ``c`` was released by delta ``d``; its latency is
  ``arrival - delta_send_time[d]``.

So the latency starts when the chunk that let the resampler release those samples was
sent, not when the samples themselves were: the resampler's hold-back (soxr emits in
blocks and keeps a filter's worth of look-ahead) is left out. It is an algorithmic delay
that any relay with this resampler pays (the floor pays it identically) and that
``bench_audio.py`` reports; :func:`holdback_ms` gives it for this stream. What remains is
the server's own: parsing, queues, scheduling, resampling time, encoding, sockets.

When the server passes every chunk through (no loss), each count the receiver sees is
exactly one of ``released`` (reported as ``exact``, a self-check of the method). A lost
chunk shifts later counts down, so later chunks map to earlier ones and look later: loss
shows as latency as well as in the loss count. Samples that never arrive (within the
load generator's grace period after its last frame) count as lost, in 20 ms frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from voice.audio import StreamResampler

CALLER_RATE = 16000
PROVIDER_RATE = 24000
FRAME_SAMPLES = 320  # 20 ms at 16 kHz
PROVIDER_FRAME_SAMPLES = 480  # 20 ms at 24 kHz

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


def released_counts(chunk_sizes: Ints, in_rate: int, out_rate: int) -> Ints:
    """Cumulative output samples after each chunk, through a fresh ``StreamResampler``."""
    return _released_cached(tuple(int(size) for size in chunk_sizes), in_rate, out_rate)


@cache
def _released_cached(sizes: tuple[int, ...], in_rate: int, out_rate: int) -> Ints:
    resampler = StreamResampler(in_rate, out_rate)
    zeros = bytes(2 * max(sizes, default=0))
    total = 0
    counts = np.empty(len(sizes), dtype=np.int64)
    for index, size in enumerate(sizes):
        total += len(resampler.process(zeros[: 2 * size])) // 2
        counts[index] = total
    return counts


def frame_released(frames: int) -> Ints:
    """``released`` for ``frames`` caller frames (16 → 24 kHz)."""
    return released_counts(np.full(frames, FRAME_SAMPLES, dtype=np.int64), 16000, 24000)


def holdback_ms(frames: int = 500) -> dict[str, tuple[float, float]]:
    """The resampler's hold-back that the latencies leave out, per direction, as (mean, max)
    ms: from the chunk holding a sample to the chunk that released it, for the last sample
    of each chunk. Caller → provider: 20 ms frames; provider → caller: the echo's chunks
    (the sizes released by the first resampler, each sent with the frame that released it)."""
    released_in = frame_released(frames)
    frame_index = np.arange(frames)
    needed_in = (frame_index + 1) * PROVIDER_FRAME_SAMPLES
    release_in = np.searchsorted(released_in, needed_in, side="left")
    known = release_in < frames
    waits_in = (release_in[known] - frame_index[known]) * 20.0
    sizes = np.diff(released_in, prepend=0)
    chunk_frame = np.nonzero(sizes)[0]  # the frame with which each echoed chunk goes out
    chunk_sizes = sizes[chunk_frame]
    released_out = released_counts(chunk_sizes, PROVIDER_RATE, CALLER_RATE)
    needed_out = -(-np.cumsum(chunk_sizes) * CALLER_RATE // PROVIDER_RATE)  # rounded up
    release_out = np.searchsorted(released_out, needed_out, side="left")
    known = release_out < chunk_sizes.size
    waits_out = (chunk_frame[release_out[known]] - chunk_frame[known]) * 20.0
    return {
        "in": (float(waits_in.mean()), float(waits_in.max())),
        "out": (float(waits_out.mean()), float(waits_out.max())),
    }


@dataclass
class Direction:
    latencies_ms: list[Floats] = field(default_factory=list)
    expected_samples: int = 0
    received_samples: int = 0
    counts_seen: int = 0
    counts_exact: int = 0

    def add(
        self,
        released: Ints,
        chunk_times: Floats,
        counts: Ints,
        times: Floats,
        window: tuple[float, float],
    ) -> None:
        self.expected_samples += int(released[-1]) if released.size else 0
        self.received_samples += int(counts[-1]) if counts.size else 0
        if not counts.size or not released.size:
            return
        index = np.searchsorted(released, counts, side="left")
        known = index < released.size
        index, counts, times = index[known], counts[known], times[known]
        self.counts_seen += int(counts.size)
        self.counts_exact += int(np.count_nonzero(released[index] == counts))
        sent = chunk_times[index]
        steady = (sent >= window[0]) & (sent <= window[1])
        self.latencies_ms.append((times[steady] - sent[steady]) * 1000.0)

    def percentiles(self) -> tuple[float, float, float, float]:
        """p50, p95, p99, max in ms (NaN when nothing arrived)."""
        values = np.concatenate(self.latencies_ms) if self.latencies_ms else np.zeros(0)
        if values.size == 0:
            return (float("nan"),) * 4
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return float(p50), float(p95), float(p99), float(values.max())

    def lost_frames(self, frame_samples: int) -> float:
        return max(0, self.expected_samples - self.received_samples) / frame_samples

    def samples(self) -> int:
        return sum(int(values.size) for values in self.latencies_ms)


@dataclass
class Latencies:
    inbound: Direction
    outbound: Direction
    callers: int
    unmatched_callers: int
    extra_upstream_connections: int
    send_late_p99_ms: float
    send_late_max_ms: float

    @property
    def exact_fraction(self) -> float:
        seen = self.inbound.counts_seen + self.outbound.counts_seen
        exact = self.inbound.counts_exact + self.outbound.counts_exact
        return exact / seen if seen else float("nan")


def _fake_records(directory: Path) -> dict[str, list[dict[str, Any]]]:
    by_model: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(directory.glob("conn-*.npz")):
        with np.load(path) as data:
            record = {name: data[name] for name in data.files}
        by_model.setdefault(str(record["model"]), []).append(record)
    return by_model


def _joined(records: list[dict[str, Any]], count: str, time: str) -> tuple[Ints, Floats]:
    """One caller's recordings over several upstream connections (a provider reconnect),
    with the cumulative counts carried over."""
    counts: list[Ints] = []
    times: list[Floats] = []
    offset = 0
    for record in records:
        values = record[count].astype(np.int64) + offset
        counts.append(values)
        times.append(record[time].astype(np.float64))
        if values.size:
            offset = int(values[-1])
    return (
        np.concatenate(counts) if counts else np.zeros(0, np.int64),
        np.concatenate(times) if times else np.zeros(0, np.float64),
    )


def analyse(loadgen_file: Path, fake_dir: Path, window: tuple[float, float]) -> Latencies:
    """Match the load generator's and the fake's recordings; ``window`` (monotonic seconds)
    selects the chunks, by send time, whose latencies count."""
    fake = _fake_records(fake_dir)
    inbound, outbound = Direction(), Direction()
    unmatched = extra = 0
    late: list[Floats] = []
    with np.load(loadgen_file) as data:
        ids = [str(caller) for caller in data["ids"]]
        for caller in ids:
            send_time = data[f"send_time:{caller}"]
            late.append(data[f"send_late:{caller}"])
            records = fake.get(caller, [])
            if not records:
                unmatched += 1
                inbound.expected_samples += int(frame_released(send_time.size)[-1])
                continue
            extra += len(records) - 1
            append_count, append_time = _joined(records, "append_count", "append_time")
            inbound.add(
                frame_released(send_time.size), send_time, append_count, append_time, window
            )
            delta_count, delta_time = _joined(records, "delta_count", "delta_time")
            sizes = np.diff(delta_count, prepend=0)
            outbound.add(
                released_counts(sizes, PROVIDER_RATE, CALLER_RATE),
                delta_time,
                data[f"received_count:{caller}"],
                data[f"received_time:{caller}"],
                window,
            )
    lateness = np.concatenate(late) * 1000.0 if late else np.zeros(0)
    return Latencies(
        inbound=inbound,
        outbound=outbound,
        callers=len(ids),
        unmatched_callers=unmatched,
        extra_upstream_connections=extra,
        send_late_p99_ms=float(np.percentile(lateness, 99)) if lateness.size else float("nan"),
        send_late_max_ms=float(lateness.max()) if lateness.size else float("nan"),
    )


# --- tables ---------------------------------------------------------------------------------


@dataclass
class StepResult:
    target: str  # "floor" or the server's label
    mode: str
    sessions: int
    connected: int
    latencies: Latencies | None
    server_cores: float  # all of the target's processes
    busiest_process_cores: float
    rss_per_session_mb: float
    rss_idle_mb: float
    loadgen_cores: float
    fake_cores: float
    other_cores: float  # the rest of the machine: other people's processes, the kernel
    notes: list[str] = field(default_factory=list)

    @property
    def cores_per_session(self) -> float:
        return self.server_cores / self.connected if self.connected else float("nan")

    def p99(self) -> float:
        """The worse direction's p99, ms."""
        if self.latencies is None:
            return float("nan")
        return max(
            self.latencies.inbound.percentiles()[2], self.latencies.outbound.percentiles()[2]
        )

    def lost_frames(self) -> float:
        if self.latencies is None:
            return float("nan")
        inbound = self.latencies.inbound.lost_frames(PROVIDER_FRAME_SAMPLES)
        return inbound + self.latencies.outbound.lost_frames(FRAME_SAMPLES)


def _ms(value: float) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _ratio(server: float, floor: float) -> str:
    if floor != floor or server != server or floor <= 0:
        return "-"
    ratio = server / floor
    return f"{ratio:.1f}x" if ratio < 10 else f"{ratio:.0f}x"


RELAY_WIDTH = 15
HEADER = (
    f"{'N':>4} {'relay':<{RELAY_WIDTH}} "
    f"{'in p50/p95/p99/max ms':>24} {'out p50/p95/p99/max ms':>24} "
    f"{'lost in/out':>11} {'cores':>6} {'%core/sess':>10} {'MB/sess':>8} "
    f"{'loadgen':>7} {'fake':>5} {'others':>6} {'late p99':>8}"
)


def _quad(values: tuple[float, float, float, float]) -> str:
    return "/".join(_ms(value) for value in values)


def format_row(result: StepResult) -> str:
    latencies = result.latencies
    if latencies is None:
        notes = "; ".join(result.notes)
        return f"{result.sessions:>4} {result.target:<{RELAY_WIDTH}} no data ({notes})"
    inbound = latencies.inbound.percentiles()
    outbound = latencies.outbound.percentiles()
    lost = (
        f"{latencies.inbound.lost_frames(PROVIDER_FRAME_SAMPLES):.0f}/"
        f"{latencies.outbound.lost_frames(FRAME_SAMPLES):.0f}"
    )
    line = (
        f"{result.sessions:>4} {result.target:<{RELAY_WIDTH}} "
        f"{_quad(inbound):>24} {_quad(outbound):>24} "
        f"{lost:>11} {result.server_cores:>6.2f} {100 * result.cores_per_session:>10.2f} "
        f"{result.rss_per_session_mb:>8.2f} {result.loadgen_cores:>7.2f} "
        f"{result.fake_cores:>5.2f} {result.other_cores:>6.2f} "
        f"{_ms(latencies.send_late_p99_ms):>8}"
    )
    if result.notes:
        line += "  " + "; ".join(result.notes)
    return line


def format_ratio(server: StepResult, floor: StepResult) -> str:
    if server.latencies is None or floor.latencies is None:
        return f"{'':>4} {'ratio':<{RELAY_WIDTH}} -"
    server_in = server.latencies.inbound.percentiles()
    floor_in = floor.latencies.inbound.percentiles()
    server_out = server.latencies.outbound.percentiles()
    floor_out = floor.latencies.outbound.percentiles()
    quad_in = "/".join(_ratio(a, b) for a, b in zip(server_in, floor_in, strict=True))
    quad_out = "/".join(_ratio(a, b) for a, b in zip(server_out, floor_out, strict=True))
    return (
        f"{'':>4} {'ratio':<{RELAY_WIDTH}} {quad_in:>24} {quad_out:>24} {'':>11} "
        f"{_ratio(server.server_cores, floor.server_cores):>6} "
        f"{_ratio(server.cores_per_session, floor.cores_per_session):>10} "
        f"{_ratio(server.rss_per_session_mb, floor.rss_per_session_mb):>8}"
    )


def summary(results: list[tuple[StepResult, StepResult | None]], mode: str) -> str:
    """The largest N the server carried (p99 <= ``limit_ms`` both ways, nothing lost), and
    its CPU per session against the floor's there."""
    carried = [
        (server, floor)
        for server, floor in results
        if server.mode == mode
        and server.connected == server.sessions
        and server.p99() <= SUMMARY_P99_MS
        and server.lost_frames() == 0
    ]
    if not carried:
        return f"{mode}: the server carried no step with p99 <= {SUMMARY_P99_MS:.0f} ms"
    server, floor = carried[-1]
    line = (
        f"{mode}: {server.target} carried N={server.sessions} with p99 {server.p99():.1f} ms "
        f"(p99 <= {SUMMARY_P99_MS:.0f} ms, no loss), {100 * server.cores_per_session:.2f} % "
        "of a core per session"
    )
    if floor is not None:
        line += f" ({_ratio(server.cores_per_session, floor.cores_per_session)} the floor's)"
    return line


SUMMARY_P99_MS = 50.0
