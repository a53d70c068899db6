"""The load generator: N simulated callers streaming 20 ms PCM16 frames in real time.

Run: ``python -m loadlib.loadgen --plan PLAN.json --duration D --mode binary --out OUT.npz``
(``bench/`` on the path). The plan is a JSON list of callers, each ``{"id", "url",
"origin"}``. Every caller:

1. connects (at most ``--connect-concurrency`` handshakes at a time) and waits for
   ``session_started``;
2. once every caller is connected (or has failed), streams 20 ms frames of 16 kHz PCM16 for
   ``D`` seconds on absolute deadlines: frame k is due at ``t0 + phase + k × 20 ms``, where
   ``t0`` is common and ``phase`` spreads the callers evenly over one 20 ms period, as real
   callers are. A late frame is sent at once and the next keeps its own deadline, so
   lateness never accumulates (sleep drift); how late frames went out is recorded;
3. records the send time of every frame, and for every audio message received the
   cumulative count of 16 kHz samples and its arrival time;
4. after its last frame, listens ``--grace`` seconds more for audio still on its way, then
   closes the socket.

``binary`` sends and asks for binary frames; ``base64_json`` sends and asks for
``{"type": "audio", "data": "<base64>"}``. The audio is noise at about -20 dBFS (one
second of it, prepared and encoded once, then repeated). Progress goes to stdout as JSON
lines: ``{"event": "streaming", "t0": ..., "end": ..., "connected": ..., "failed": ...}``
when streaming starts, then ``{"event": "done", ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

RATE = 16000
FRAME_S = 0.020
FRAME_SAMPLES = int(RATE * FRAME_S)
SESSION_START_TIMEOUT_S = 60.0
START_MARGIN_S = 0.3  # between announcing t0 and the first frame


def frames_of_noise(seconds: float = 1.0, seed: int = 1) -> list[bytes]:
    generator = np.random.default_rng(seed)
    samples = generator.normal(0.0, 3300.0, int(RATE * seconds))
    pcm = np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()
    size = FRAME_SAMPLES * 2
    return [pcm[start : start + size] for start in range(0, len(pcm), size)]


@dataclass
class Caller:
    id: str
    url: str
    origin: str
    socket: ClientConnection | None = None
    error: str = ""
    send_time: list[float] = field(default_factory=list)
    send_late: list[float] = field(default_factory=list)
    received_count: list[int] = field(default_factory=list)
    received_time: list[float] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    closed_by_server: str = ""


async def open_session(caller: Caller, limit: asyncio.Semaphore) -> None:
    async with limit:
        try:
            async with asyncio.timeout(SESSION_START_TIMEOUT_S):
                socket = await connect(
                    caller.url,
                    origin=Origin(caller.origin) if caller.origin else None,
                    compression=None,
                    max_size=None,
                    ping_interval=None,
                    open_timeout=SESSION_START_TIMEOUT_S,
                )
                caller.socket = socket
                while True:
                    message = await socket.recv()
                    if isinstance(message, str):
                        event = json.loads(message)
                        if event.get("type") == "session_started":
                            return
                        if event.get("type") == "error":
                            raise RuntimeError(f"{event.get('code')}: {event.get('message')}")
        except (OSError, TimeoutError, RuntimeError, ConnectionClosed) as error:
            caller.error = f"{type(error).__name__}: {error}"
            if caller.socket is not None:
                await caller.socket.close()
                caller.socket = None


async def send_frames(
    caller: Caller, payloads: list[bytes] | list[str], start: float, frames: int
) -> None:
    socket = caller.socket
    assert socket is not None
    count = len(payloads)
    for index in range(frames):
        deadline = start + index * FRAME_S
        delay = deadline - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic()
        caller.send_time.append(now)
        caller.send_late.append(now - deadline)
        try:
            await socket.send(payloads[index % count])
        except ConnectionClosed:
            caller.send_time.pop()
            caller.send_late.pop()
            return


async def receive_audio(caller: Caller) -> None:
    socket = caller.socket
    assert socket is not None
    total = 0
    try:
        async for message in socket:
            arrived = time.monotonic()
            if isinstance(message, bytes):
                total += len(message) // 2
            else:
                event = json.loads(message)
                kind = event.get("type")
                if kind != "audio":
                    if kind in ("error", "session_ended"):
                        caller.server_errors.append(str(event.get("code") or event.get("reason")))
                    continue
                data = event["data"]
                padding = 2 if data.endswith("==") else 1 if data.endswith("=") else 0
                total += (len(data) // 4 * 3 - padding) // 2
            caller.received_count.append(total)
            caller.received_time.append(arrived)
    except ConnectionClosed as closed:
        if closed.rcvd is not None and closed.rcvd.code != 1000:
            caller.closed_by_server = f"{closed.rcvd.code} {closed.rcvd.reason}"


async def run_caller(
    caller: Caller, payloads: list[bytes] | list[str], start: float, frames: int, grace_s: float
) -> None:
    socket = caller.socket
    assert socket is not None
    receiver = asyncio.create_task(receive_audio(caller))
    try:
        await send_frames(caller, payloads, start, frames)
        await asyncio.sleep(max(0.0, start + frames * FRAME_S + grace_s - time.monotonic()))
    finally:
        await socket.close()
        await receiver


def _emit(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


async def run(
    plan: list[dict[str, str]],
    *,
    duration_s: float,
    mode: str,
    grace_s: float,
    concurrency: int,
    out: Path,
) -> None:
    callers = [Caller(entry["id"], entry["url"], entry.get("origin", "")) for entry in plan]
    limit = asyncio.Semaphore(concurrency)
    connect_started = time.monotonic()
    await asyncio.gather(*(open_session(caller, limit) for caller in callers))
    connect_s = time.monotonic() - connect_started
    live = [caller for caller in callers if caller.socket is not None]
    frames_pcm = frames_of_noise()
    payloads: list[bytes] | list[str]
    if mode == "binary":
        payloads = frames_pcm
    else:
        payloads = [
            json.dumps({"type": "audio", "data": base64.b64encode(pcm).decode("ascii")})
            for pcm in frames_pcm
        ]
    frames = round(duration_s / FRAME_S)
    t0 = time.monotonic() + START_MARGIN_S
    _emit(
        {
            "event": "streaming",
            "t0": t0,
            "end": t0 + frames * FRAME_S + FRAME_S,
            "connected": len(live),
            "failed": len(callers) - len(live),
            "connect_s": connect_s,
            "errors": sorted({caller.error for caller in callers if caller.error})[:5],
        }
    )
    await asyncio.gather(
        *(
            run_caller(caller, payloads, t0 + FRAME_S * index / max(1, len(live)), frames, grace_s)
            for index, caller in enumerate(live)
        )
    )
    arrays: dict[str, Any] = {"ids": np.array([caller.id for caller in live])}
    for caller in live:
        arrays[f"send_time:{caller.id}"] = np.array(caller.send_time, dtype=np.float64)
        arrays[f"send_late:{caller.id}"] = np.array(caller.send_late, dtype=np.float64)
        arrays[f"received_count:{caller.id}"] = np.array(caller.received_count, dtype=np.int64)
        arrays[f"received_time:{caller.id}"] = np.array(caller.received_time, dtype=np.float64)
    np.savez(out, **arrays)
    problems = sorted(
        {
            f"{caller.id}: {caller.closed_by_server or ', '.join(caller.server_errors)}"
            for caller in live
            if caller.closed_by_server or caller.server_errors
        }
    )
    _emit({"event": "done", "problems": problems[:5], "problem_count": len(problems)})


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--duration", type=float, required=True, help="seconds of streaming")
    parser.add_argument("--mode", choices=("binary", "base64_json"), required=True)
    parser.add_argument("--grace", type=float, default=1.0)
    parser.add_argument("--connect-concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    plan = json.loads(args.plan.read_text())
    asyncio.run(
        run(
            plan,
            duration_s=args.duration,
            mode=args.mode,
            grace_s=args.grace,
            concurrency=args.connect_concurrency,
            out=args.out,
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
