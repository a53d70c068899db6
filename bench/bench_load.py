"""End-to-end load benchmark: N callers through the real server, against a floor relay.

Run: .venv/bin/python bench/bench_load.py      (or: make bench; about 3.5 minutes today, 12 s
     a step: each N runs the floor and the server, in each mode, until the server collapses)

For each number of concurrent callers N (``--sessions``) and each audio mode (``--modes``):

1. an echo fake of OpenAI Realtime starts (``loadlib.echo_fake``, its own process);
2. the relay under test starts: the **floor** (``loadlib.floor``, a minimal asyncio relay
   doing only JSON, base64 and soxr resampling), then the **server** (daphne, or uvicorn
   with ``--server uvicorn``, serving ``roomvoice.asgi:application`` on the embedded default:
   SQLite in a temporary directory, the in-memory channel layer, ``LOG_LEVEL=WARNING``). The
   server's agents use the OpenAI provider, whose credential endpoint is the echo fake;
3. one warm-up call, then the idle RSS is read;
4. the load generator (``loadlib.loadgen``, its own process) connects N callers, each
   streaming 20 ms frames of 16 kHz PCM16 on absolute deadlines for ``--duration`` seconds;
5. CPU (utime + stime from /proc of every process of the relay, of the load generator and
   of the fake) is read at both ends of the steady window (streaming start + ``--warmup``
   to the last frame), RSS every half second within it;
6. latency per direction is matched by sample position (``loadlib.analysis``).

The sweep stops after the first N at which the server collapses: its busiest process uses
a saturated core (>= 0.9) and the p99 latency in either direction exceeds 50 ms (also: p99
over 50 ms with frames lost, p99 over 1 s, or callers that could not connect).
``--long SECONDS`` instead runs one session on the server for that long, RSS sampled every
``--rss-interval`` seconds. Method, options and results: bench/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(ROOT)]

from loadlib import analysis, procs  # noqa: E402
from loadlib.procs import Child, Children  # noqa: E402
from loadlib.setup_data import WARMUP_SLOTS, caller_id, warmup_id  # noqa: E402

PYTHON = sys.executable
SERVICE_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CELERY_TASK_ALWAYS_EAGER",
    "DJANGO_SETTINGS_MODULE",
)
DEFAULT_SESSIONS = "1,10,25,50,75,100,150,200,300"
COLLAPSE_P99_MS = 50.0
COLLAPSE_P99_UNUSABLE_MS = 1000.0
SATURATED_CORES = 0.9
WARMUP_CALL_S = 0.5
RSS_INTERVAL_S = 0.5


@dataclass(frozen=True)
class Options:
    sessions: list[int]
    duration_s: float
    warmup_s: float
    modes: list[str]
    server: str
    workers: int
    long_s: float | None
    rss_interval_s: float
    redis_url: str
    relays: list[str]
    keep: bool
    verbose: bool


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        description="End-to-end load benchmark of the voice WebSocket (bench/README.md)."
    )
    parser.add_argument(
        "--sessions",
        default=DEFAULT_SESSIONS,
        help=f"comma-separated concurrent caller counts, ascending (default {DEFAULT_SESSIONS})",
    )
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds each caller streams (default 5)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds at the start of streaming left out of latency and CPU (default 1)",
    )
    parser.add_argument(
        "--modes",
        default="binary,base64_json",
        help="audio modes, comma-separated: binary, base64_json (default both)",
    )
    parser.add_argument("--server", choices=("daphne", "uvicorn"), default="daphne")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes sharing one socket (default 1)",
    )
    parser.add_argument(
        "--long", type=float, metavar="SECONDS", help="one session on the server for this long"
    )
    parser.add_argument(
        "--rss-interval", type=float, default=30.0, help="--long: seconds between RSS samples"
    )
    parser.add_argument(
        "--redis-url",
        default="",
        help="serve with the channels-redis layer at this URL (the control plane across "
        "worker processes) instead of the in-memory layer",
    )
    parser.add_argument(
        "--relays",
        default="floor,server",
        help="what to measure at each N: floor, server or both (default floor,server)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--verbose", action="store_true", help="print each phase's timing")
    args = parser.parse_args(argv)
    sessions = sorted({int(value) for value in args.sessions.split(",") if value.strip()})
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    for mode in modes:
        if mode not in ("binary", "base64_json"):
            parser.error(f"unknown mode {mode!r}")
    if not sessions or sessions[0] < 1:
        parser.error("--sessions needs positive counts")
    if args.server == "uvicorn" and importlib.util.find_spec("uvicorn") is None:
        parser.error("uvicorn is not installed (pip install -r requirements-dev.txt)")
    if args.workers < 1 or (args.workers > 1 and args.server != "uvicorn"):
        parser.error("--workers > 1 needs --server uvicorn")
    relays = [relay.strip() for relay in args.relays.split(",") if relay.strip()]
    if not relays or not set(relays) <= {"floor", "server"}:
        parser.error("--relays takes floor, server or floor,server")
    if args.long and "server" not in relays:
        parser.error("--long runs the server")
    if args.duration <= args.warmup:
        parser.error("--duration must be longer than --warmup")
    return Options(
        sessions=sessions,
        duration_s=args.duration,
        warmup_s=args.warmup,
        modes=modes,
        server=args.server,
        workers=args.workers,
        long_s=args.long,
        rss_interval_s=args.rss_interval,
        redis_url=args.redis_url,
        relays=relays,
        keep=args.keep,
        verbose=args.verbose,
    )


class Bench:
    """One benchmark run: its temporary directory, its ports, its child processes."""

    def __init__(self, options: Options, scratch: Path, children: Children) -> None:
        self.options = options
        self.scratch = scratch
        self.children = children
        self.fake_port = procs.free_port()
        self.fake_url = f"ws://127.0.0.1:{self.fake_port}/v1"
        self.env = {key: value for key, value in os.environ.items() if key not in SERVICE_VARIABLES}
        self.env.update(
            {
                "ROOMVOICE_DATA_DIR": str(scratch / "data"),
                "LOG_LEVEL": "WARNING",
                "PYTHONPATH": os.pathsep.join([str(BENCH), str(ROOT)]),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if options.redis_url:
            self.env.update(
                {
                    "REDIS_URL": options.redis_url,
                    "CHANNELS_PREFIX": f"roomvoice-bench-{os.getpid()}",
                    "CELERY_TASK_ALWAYS_EAGER": "true",  # no worker runs here
                }
            )
        self.plan: dict[str, dict[str, str]] = {}
        self.step_count = 0
        self._last_trace = time.monotonic()

    def trace(self, what: str) -> None:
        if self.options.verbose:
            now = time.monotonic()
            print(f"  [{now - self._last_trace:6.2f} s] {what}", file=sys.stderr, flush=True)
            self._last_trace = now

    @property
    def server_label(self) -> str:
        label = self.options.server
        if self.options.workers > 1:
            label += f"×{self.options.workers}"
        return label + ("+redis" if self.options.redis_url else "")

    # --- setup -------------------------------------------------------------------------------

    def prepare(self, callers: int) -> None:
        """Migrate the temporary database and create the callers' rooms, agents and tokens."""
        for name, command in (
            ("migrate", [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"]),
            (
                "setup",
                [
                    PYTHON,
                    "-m",
                    "loadlib.setup_data",
                    "--callers",
                    str(callers),
                    "--fake-url",
                    self.fake_url,
                    "--out",
                    str(self.scratch / "plan.json"),
                ],
            ),
        ):
            child = self.children.start(name, command, env=self.env, cwd=ROOT)
            code = child.process.wait(timeout=600)
            if code != 0:
                raise procs.ChildFailed(f"{name} failed ({code}):\n{child.tail()}")
        entries = json.loads((self.scratch / "plan.json").read_text())
        self.plan = {entry["id"]: entry for entry in entries}
        (self.scratch / "data" / "static").mkdir(exist_ok=True)  # whitenoise wants it
        self.trace(f"database ready, {callers} callers")

    # --- processes ---------------------------------------------------------------------------

    def start_fake(self, out: Path) -> Child:
        fake = self.children.start(
            "fake",
            [PYTHON, "-m", "loadlib.echo_fake", "--port", str(self.fake_port), "--out", str(out)],
            env=self.env,
            cwd=ROOT,
            stdout_lines=True,
        )
        if fake.read_line(30) != "ready":
            raise procs.ChildFailed(f"the fake did not start:\n{fake.tail()}")
        return fake

    def start_relay(self, target: str) -> tuple[Child, int]:
        port = procs.free_port()
        if target == "floor":
            floor = self.children.start(
                "floor",
                [
                    PYTHON,
                    "-m",
                    "loadlib.floor",
                    "--port",
                    str(port),
                    "--upstream",
                    self.fake_url,
                ],
                env=self.env,
                cwd=ROOT,
                stdout_lines=True,
            )
            if floor.read_line(30) != "ready":
                raise procs.ChildFailed(f"the floor did not start:\n{floor.tail()}")
            return floor, port
        if self.options.server == "daphne":
            command = [
                PYTHON,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "-v",
                "0",
                "roomvoice.asgi:application",
            ]
        else:
            command = [
                PYTHON,
                "-m",
                "uvicorn",
                "roomvoice.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
                "--lifespan",
                "off",
            ]
            if self.options.workers > 1:
                command += ["--workers", str(self.options.workers)]
        server = self.children.start("server", command, env=self.env, cwd=ROOT)
        procs.wait_for_http(server, f"http://127.0.0.1:{port}/healthz")
        return server, port

    def caller_plan(self, target: str, port: int, ids: Sequence[str], mode: str) -> Path:
        entries = []
        for caller in ids:
            query = f"sample_rate=16000&audio_format={mode}"
            if target == "floor":
                url = f"ws://127.0.0.1:{port}/ws/rooms/{caller}/voice/?{query}"
            else:
                slot = self.plan[caller]
                url = (
                    f"ws://127.0.0.1:{port}/ws/rooms/{slot['room']}/voice/"
                    f"?token={slot['token']}&{query}"
                )
            entries.append({"id": caller, "url": url, "origin": f"http://127.0.0.1:{port}"})
        self.step_count += 1
        path = self.scratch / f"plan-{self.step_count}.json"
        path.write_text(json.dumps(entries))
        return path

    def start_loadgen(
        self,
        plan: Path,
        *,
        duration_s: float,
        mode: str,
        out: Path,
        name: str = "loadgen",
        grace_s: float = 1.0,
    ) -> Child:
        return self.children.start(
            name,
            [
                PYTHON,
                "-m",
                "loadlib.loadgen",
                "--plan",
                str(plan),
                "--duration",
                str(duration_s),
                "--mode",
                mode,
                "--grace",
                str(grace_s),
                "--out",
                str(out),
            ],
            env=self.env,
            cwd=ROOT,
            stdout_lines=True,
        )

    def warm_up(self, target: str, port: int, mode: str) -> None:
        """A short call (a few with several workers, so that each is likely to get one), so
        that lazy imports and first-use caches are not counted."""
        count = min(WARMUP_SLOTS, 2 * self.options.workers) if target == "server" else 1
        plan = self.caller_plan(target, port, [warmup_id(index) for index in range(count)], mode)
        warm = self.start_loadgen(
            plan,
            duration_s=WARMUP_CALL_S,
            mode=mode,
            out=self.scratch / "warmup.npz",
            name="warmup",
            grace_s=0.2,
        )
        started = json.loads(warm.read_line(60))
        if started["failed"]:
            raise procs.ChildFailed(f"the warm-up call failed: {started['errors']}")
        json.loads(warm.read_line(30))
        warm.process.wait(timeout=30)
        self.children.stop(warm)

    # --- one step ----------------------------------------------------------------------------

    def run_step(self, target: str, mode: str, sessions: int) -> analysis.StepResult:
        step_dir = self.scratch / f"{mode}-{sessions}-{target}"
        step_dir.mkdir()
        self.trace(f"step {mode} N={sessions} {target}")
        fake = self.start_fake(step_dir / "fake")
        self.trace("fake started")
        relay, port = self.start_relay(target)
        self.trace(f"{target} started")
        label = "floor" if target == "floor" else self.server_label
        try:
            self.warm_up(target, port, mode)
            self.trace("warm-up call done")
            time.sleep(0.5)
            relay_pids = procs.process_tree(relay.pid)
            rss_idle = procs.rss_bytes(relay_pids)
            ids = [caller_id(index) for index in range(sessions)]
            plan = self.caller_plan(target, port, ids, mode)
            loadgen_out = step_dir / "loadgen.npz"
            loadgen = self.start_loadgen(
                plan, duration_s=self.options.duration_s, mode=mode, out=loadgen_out
            )
            started = json.loads(loadgen.read_line(120 + sessions))
            self.trace(f"{started['connected']} callers connected in {started['connect_s']:.2f} s")
            window = (started["t0"] + self.options.warmup_s, started["end"])
            procs.sleep_until(window[0])
            groups = [[pid] for pid in relay_pids] + [[loadgen.pid], [fake.pid]]
            first = procs.sample_cpu(groups)
            rss = [
                procs.rss_bytes(relay_pids)
                for _ in procs.iterate_until(window[1] - 0.1, RSS_INTERVAL_S)
            ]
            last = procs.sample_cpu(groups)
            machine_cores = procs.machine_cores_between(first, last)
            done = json.loads(loadgen.read_line(60 + self.options.duration_s))
            loadgen.process.wait(timeout=60)
            self.trace("streaming done")
            self.children.stop(loadgen)
            time.sleep(0.5)  # the relay ends its upstream sessions
        finally:
            # Newest first: the callers hang up before the relay goes, the fake goes last
            # (its recordings are written as it stops).
            self.children.stop_all()
            self.trace(f"{target} and fake stopped")
        cores = procs.cores_between(first, last)
        relay_cores = cores[: len(relay_pids)]
        connected = int(started["connected"])
        notes = []
        if started["failed"]:
            notes.append(f"{started['failed']} callers failed: {'; '.join(started['errors'])}")
        if done["problem_count"]:
            notes.append(f"{done['problem_count']} callers saw errors: {done['problems'][:2]}")
        latencies = None
        if connected:
            latencies = analysis.analyse(loadgen_out, step_dir / "fake", window)
            self.trace("analysed")
            if latencies.unmatched_callers:
                notes.append(f"{latencies.unmatched_callers} callers never reached the fake")
            if latencies.extra_upstream_connections:
                notes.append(f"{latencies.extra_upstream_connections} upstream reconnections")
            if latencies.exact_fraction < 0.999:
                notes.append(f"positions matched exactly: {100 * latencies.exact_fraction:.1f}%")
        rss_steady = statistics.median(rss) if rss else float(rss_idle)
        return analysis.StepResult(
            target=label,
            mode=mode,
            sessions=sessions,
            connected=connected,
            latencies=latencies,
            server_cores=sum(relay_cores),
            busiest_process_cores=max(relay_cores),
            rss_per_session_mb=(rss_steady - rss_idle) / max(1, connected) / 2**20,
            rss_idle_mb=rss_idle / 2**20,
            loadgen_cores=cores[-2],
            fake_cores=cores[-1],
            other_cores=max(0.0, machine_cores - sum(cores)),
            notes=notes,
        )

    # --- the sweep ---------------------------------------------------------------------------

    def sweep(self) -> list[tuple[analysis.StepResult, analysis.StepResult | None]]:
        """Each mode, each N: the floor, then the server, until the server (or, alone, the
        floor) collapses."""
        results: list[tuple[analysis.StepResult, analysis.StepResult | None]] = []
        relays = self.options.relays
        for mode in self.options.modes:
            print(f"\nmode {mode}, server {self.server_label}", flush=True)
            print(analysis.HEADER, flush=True)
            for sessions in self.options.sessions:
                floor = self.run_step("floor", mode, sessions) if "floor" in relays else None
                if floor is not None:
                    print(analysis.format_row(floor), flush=True)
                server = self.run_step("server", mode, sessions) if "server" in relays else None
                if server is not None:
                    print(analysis.format_row(server), flush=True)
                    if floor is not None:
                        print(analysis.format_ratio(server, floor), flush=True)
                    results.append((server, floor))
                watched = server or floor
                if watched is not None and collapsed(watched):
                    print(f"     {watched.target} collapsed at N={sessions}: stopping", flush=True)
                    break
        return results

    # --- the long run ------------------------------------------------------------------------

    def long_run(self, seconds: float) -> None:
        mode = self.options.modes[0]
        step_dir = self.scratch / "long"
        step_dir.mkdir()
        fake = self.start_fake(step_dir / "fake")
        server, port = self.start_relay("server")
        samples: list[tuple[float, int]] = []
        try:
            self.warm_up("server", port, mode)
            time.sleep(0.5)
            pids = procs.process_tree(server.pid)
            rss_idle = procs.rss_bytes(pids)
            plan = self.caller_plan("server", port, [caller_id(0)], mode)
            loadgen_out = step_dir / "loadgen.npz"
            loadgen = self.start_loadgen(plan, duration_s=seconds, mode=mode, out=loadgen_out)
            started = json.loads(loadgen.read_line(120))
            if started["failed"]:
                raise procs.ChildFailed(f"the session did not start: {started['errors']}")
            window = (started["t0"] + self.options.warmup_s, started["end"])
            print(
                f"\none {mode} session on {self.server_label} for {seconds:.0f} s; "
                f"idle RSS {rss_idle / 2**20:.1f} MB",
                flush=True,
            )
            print(f"{'t (s)':>8} {'RSS MB':>8} {'+idle MB':>9}", flush=True)
            procs.sleep_until(window[0])
            groups = [pids, [loadgen.pid], [fake.pid]]
            first = procs.sample_cpu(groups)
            for now in procs.iterate_until(window[1], self.options.rss_interval_s):
                rss = procs.rss_bytes(pids)
                samples.append((now - started["t0"], rss))
                print(
                    f"{now - started['t0']:>8.0f} {rss / 2**20:>8.2f} "
                    f"{(rss - rss_idle) / 2**20:>9.2f}",
                    flush=True,
                )
            last = procs.sample_cpu(groups)
            json.loads(loadgen.read_line(60 + seconds))
            loadgen.process.wait(timeout=60)
            self.children.stop(loadgen)
            time.sleep(0.5)
        finally:
            self.children.stop_all()
        latencies = analysis.analyse(loadgen_out, step_dir / "fake", window)
        cores = procs.cores_between(first, last)
        others = max(0.0, procs.machine_cores_between(first, last) - sum(cores))
        inbound = latencies.inbound.percentiles()
        outbound = latencies.outbound.percentiles()
        print(
            f"latency in p50/p95/p99/max {'/'.join(f'{v:.1f}' for v in inbound)} ms, "
            f"out {'/'.join(f'{v:.1f}' for v in outbound)} ms; lost frames "
            f"{latencies.inbound.lost_frames(analysis.PROVIDER_FRAME_SAMPLES):.0f}/"
            f"{latencies.outbound.lost_frames(analysis.FRAME_SAMPLES):.0f}; server "
            f"{100 * cores[0]:.2f} % of a core, loadgen {100 * cores[1]:.2f} %, "
            f"fake {100 * cores[2]:.2f} %, other processes on the machine {others:.2f} cores"
        )
        if len(samples) >= 4:
            half = samples[len(samples) // 2 :]
            times = [t for t, _ in half]
            values = [rss / 2**20 for _, rss in half]
            slope = statistics.linear_regression(times, values).slope * 3600
            print(
                f"RSS over the second half: {min(values):.2f} to {max(values):.2f} MB, "
                f"trend {slope:+.2f} MB/hour"
            )


def collapsed(result: analysis.StepResult) -> bool:
    """Callers could not connect, or p99 > 50 ms with a saturated core; also p99 > 50 ms
    with lost frames, or p99 > 1 s: overloaded without a saturated core (a bottleneck
    elsewhere, or several worker processes), there is nothing more to learn above this N."""
    if result.connected < result.sessions:
        return True
    p99 = result.p99()
    if p99 != p99 or p99 > COLLAPSE_P99_UNUSABLE_MS:  # NaN: nothing came back
        return True
    if p99 <= COLLAPSE_P99_MS:
        return False
    return result.busiest_process_cores >= SATURATED_CORES or result.lost_frames() > 0


def describe_machine() -> str:
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
        f"load average {load[0]:.2f} at start"
    )


def _interrupt(number: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str]) -> None:
    options = parse_options(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # clean up as for Ctrl-C
    command = shlex.join([".venv/bin/python", "bench/bench_load.py", *argv])
    print(f"command: {command}")
    print(f"machine: {describe_machine()}")
    what = (
        f"one session for {options.long_s:g} s"
        if options.long_s
        else f"sessions {options.sessions}, {options.duration_s:g} s per step"
    )
    print(
        f"options: {what} ({options.warmup_s:g} s warm-up), modes {options.modes}, "
        f"relays {options.relays}, server {options.server}"
        + (f" ×{options.workers}" if options.workers > 1 else "")
        + (f", channel layer {options.redis_url}" if options.redis_url else "")
    )
    holdback = analysis.holdback_ms()
    print(
        "latency: server-added, matched by sample position; the resampler's hold-back "
        f"(in {holdback['in'][1]:.0f} ms, out {holdback['out'][1]:.0f} ms at most, the floor's "
        "too) is left out. %core/sess: CPU per session in % of one core. late p99: how late "
        "the load generator sent its frames.",
        flush=True,
    )
    started = time.monotonic()
    scratch_dir = tempfile.mkdtemp(prefix="roomvoice-bench-load-")
    scratch = Path(scratch_dir)
    try:
        with Children(scratch) as children:
            bench = Bench(options, scratch, children)
            bench.prepare(1 if options.long_s else max(options.sessions))
            if options.long_s:
                bench.long_run(options.long_s)
            else:
                results = bench.sweep()
                if results:
                    print()
                for mode in options.modes if results else ():
                    print(analysis.summary(results, mode))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if options.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"\ndone in {time.monotonic() - started:.0f} s; command: {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
