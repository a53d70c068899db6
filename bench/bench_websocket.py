"""Benchmark the WebSocket receive path: what one client frame costs the event loop.

Run: .venv/bin/python bench/bench_websocket.py   (a few seconds; no Django, no network)

A consumer's ``receive`` hands each frame to ``ClientLink.receive``, which runs on the event
loop without awaiting: the flood guard, parsing (base64 + JSON for text frames), the PCM16
check and the hand-off to the engine's bounded queue. Every microsecond here is spent on the
loop every caller's audio shares, so it is measured per frame for 20 ms frames at the rates
browsers and phones use, binary and base64 JSON, and for a control message and a rejected
(bad JSON) frame.
"""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voice.protocol import FloodGuard
from voice.session import LiveSession
from voice.transports.websocket import ClientLink, WebSocketRealtimeTransport

FRAMES = 20000
REPEATS = 5


class _NullSender:
    async def send_text(self, text: str) -> None:
        return None

    async def send_bytes(self, data: bytes) -> None:
        return None

    async def close(self, code: int) -> None:
        return None


def _link(rate: int) -> tuple[ClientLink, list[int]]:
    transport = WebSocketRealtimeTransport()
    delivered: list[int] = []
    transport.on_audio_received(lambda session, pcm: delivered.append(len(pcm)))
    link = transport.link(_NullSender(), sample_rate=rate)
    link.attach(LiveSession(room_id="r", participant_id="p", channel_id="voice"))
    # A guard that never limits: the benchmark measures the work, not the rate limit.
    link.guard = FloodGuard(frames_per_s=1e12, bytes_per_s=1e15)
    return link, delivered


async def _per_frame_us(rate: int, *, text: str | None = None, data: bytes | None = None) -> float:
    runs = []
    for _ in range(REPEATS):
        link, _ = _link(rate)
        started = time.perf_counter()
        for _ in range(FRAMES):
            link.receive(text=text, data=data)
        runs.append((time.perf_counter() - started) / FRAMES * 1e6)
        await link.shutdown()
    return statistics.median(runs)


async def main() -> None:
    print(f"{'frame':<44} {'µs/frame':>9} {'frames/s/core':>14}")
    worst = 0.0
    for rate in (8000, 16000, 24000, 48000):
        pcm = b"\x01\x02" * (rate // 50)  # 20 ms
        b64 = json.dumps({"type": "audio", "data": base64.b64encode(pcm).decode()})
        for label, kwargs in (
            (f"audio {rate} Hz, 20 ms, binary ({len(pcm)} B)", {"data": pcm}),
            (f"audio {rate} Hz, 20 ms, base64 JSON ({len(b64)} B)", {"text": b64}),
        ):
            micros = await _per_frame_us(rate, **kwargs)  # type: ignore[arg-type]
            worst = max(worst, micros)
            print(f"{label:<44} {micros:>9.2f} {1e6 / micros:>14,.0f}")
    playback = json.dumps({"type": "playback", "played_ms": 1234})
    micros = await _per_frame_us(16000, text=playback)
    print(f"{'control: playback':<44} {micros:>9.2f} {1e6 / micros:>14,.0f}")
    link, _ = _link(16000)
    started = time.perf_counter()
    for _ in range(2000):
        link.receive(text="{not json")
        await asyncio.sleep(0)  # let the error replies go out (they are tasks)
    micros = (time.perf_counter() - started) / 2000 * 1e6
    await link.shutdown()
    print(f"{'bad JSON (parse, error reply task)':<44} {micros:>9.2f} {1e6 / micros:>14,.0f}")
    print(
        f"\nA caller sends 50 frames/s: at the worst case (48 kHz base64 JSON) one core's "
        f"receive path serves about {1e6 / worst / 50:,.0f} callers before anything else runs."
    )


if __name__ == "__main__":
    asyncio.run(main())
