"""Child processes of the benchmark: start, wait until ready, measure from /proc, stop.

Every child is started with ``PR_SET_PDEATHSIG`` (SIGTERM), so it ends even when the
benchmark itself is killed without a chance to clean up; :class:`Children` stops the rest
(SIGTERM, then SIGKILL after a grace period) on any exit, including Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM it when the parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ChildFailed(RuntimeError):
    """A child process exited early or never became ready."""


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _pending: bytes = b""  # stdout read but not yet returned as lines

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, characters: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-characters:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise ChildFailed(f"{self.name} exited with {code}:\n{self.tail()}")

    def read_line(self, timeout_s: float) -> str:
        """The next stdout line (children started with ``stdout_lines=True``)."""
        stream = self.process.stdout
        assert stream is not None
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChildFailed(f"{self.name} said nothing for {timeout_s:.0f} s:\n{self.tail()}")
            ready, _, _ = select.select([stream], [], [], min(remaining, 0.5))
            if not ready:
                self.check_alive()
                continue
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                self.check_alive()
                raise ChildFailed(f"{self.name} closed its output:\n{self.tail()}")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode()


class Children:
    """Owns the child processes of one run; stops every one of them on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._children: list[Child] = []
        self._started = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_all()

    def stop_all(self) -> None:
        """Stop every child still running, the most recently started first."""
        for child in reversed(self._children):
            self.stop(child)

    def start(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: dict[str, str],
        cwd: Path,
        stdout_lines: bool = False,
    ) -> Child:
        """Start ``command``; stderr (and stdout unless ``stdout_lines``) go to a log file."""
        self._started += 1
        log_path = self.log_dir / f"{self._started:03d}-{name}.log"
        log = log_path.open("w")
        try:
            process = subprocess.Popen(  # noqa: S603 -- our own interpreter and modules
                list(command),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_lines else log,
                stderr=log,
                bufsize=0,
                preexec_fn=_die_with_parent,  # the benchmark starts no threads
            )
        finally:
            log.close()
        child = Child(name, process, log_path)
        self._children.append(child)
        return child

    def stop(self, child: Child, *, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait, SIGKILL if it must; the exit code (None if it had to be killed)."""
        if child in self._children:
            self._children.remove(child)
        process = child.process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                return None
        if process.stdout is not None:
            process.stdout.close()
        return process.returncode


def wait_for_port(child: Child, port: int, *, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        child.check_alive()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if time.monotonic() > deadline:
            raise ChildFailed(f"{child.name} did not listen on {port} within {timeout_s:.0f} s")
        time.sleep(0.05)


def wait_for_http(child: Child, url: str, *, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        child.check_alive()
        with contextlib.suppress(OSError, urllib.error.URLError):
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 -- loopback
                if response.status == 200:
                    return
        if time.monotonic() > deadline:
            raise ChildFailed(f"{child.name} did not answer {url} within {timeout_s:.0f} s")
        time.sleep(0.1)


# --- /proc ----------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (uvicorn's workers, for instance)."""
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with contextlib.suppress(OSError):
                    children = Path(f"/proc/{current}/task/{task}/children").read_text()
                    found.extend(int(child) for child in children.split())
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of ``pids`` (all their threads), in seconds."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            # Fields after the command name, which may itself hold spaces and parentheses.
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLOCK_TICKS


def rss_bytes(pids: Sequence[int]) -> int:
    """Resident set size (VmRSS) of ``pids``, added up."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all processes, the kernel, steal), seconds."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


@dataclass(frozen=True)
class CpuSample:
    at: float  # time.monotonic()
    seconds: tuple[float, ...]  # per watched group
    machine: float  # machine_busy_seconds()


def sample_cpu(groups: Sequence[Sequence[int]]) -> CpuSample:
    return CpuSample(
        time.monotonic(), tuple(cpu_seconds(group) for group in groups), machine_busy_seconds()
    )


def cores_between(first: CpuSample, last: CpuSample) -> tuple[float, ...]:
    """CPU cores used by each group between two samples (1.0 = one core saturated)."""
    wall = last.at - first.at
    return tuple(
        (after - before) / wall if wall > 0 else 0.0
        for before, after in zip(first.seconds, last.seconds, strict=True)
    )


def machine_cores_between(first: CpuSample, last: CpuSample) -> float:
    wall = last.at - first.at
    return (last.machine - first.machine) / wall if wall > 0 else 0.0


def sleep_until(deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


def iterate_until(deadline: float, interval_s: float) -> Iterator[float]:
    """Yield at ``interval_s`` steps (absolute) until ``deadline``."""
    next_at = time.monotonic()
    while next_at < deadline:
        sleep_until(next_at)
        yield time.monotonic()
        next_at += interval_s
