"""The WebRTC media path under load: N callers at once, each looped back by the server.

Each caller is an aiortc peer that plays a 440 Hz tone burst every second on its microphone
track; the server (``voice.transports.webrtc``, the real gateway and transport) hands every
frame it decodes straight back through ``send_audio`` (no provider, no engine), so the path
measured is: caller Opus encode → server ICE/DTLS/SRTP → Opus decode → 48 kHz mono →
pacer → Opus encode → caller decode. Both ends run in this one process, so the CPU figure
is for the two ends together (the server's share is about half).

    .venv/bin/python bench/bench_webrtc.py [--callers 10] [--seconds 10]

Prints, per run: CPU seconds per call-second (process time / (callers × seconds)), the
reply frames' inter-arrival time at the callers (p50 / p99 / max, ms), and the loop-back
delay of each tone burst (onset heard − onset played, p50 / max, ms).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.webrtc import RATE, WebRTCCaller, tone
from voice.session import LiveSession
from voice.transports.webrtc import WebRTCGateway, WebRTCRealtimeTransport

BURST_MS = 200


async def _serve(transport: WebRTCRealtimeTransport, sdp: str) -> tuple[str, LiveSession]:
    peer = await transport.gateway.answer(sdp)
    session = LiveSession(room_id="bench", participant_id=peer.id, channel_id="bench")
    await transport.accept(session, peer)
    return peer.answer_sdp, session


async def run(callers: int, seconds: float) -> None:
    from aiortc import RTCSessionDescription

    transport = WebRTCRealtimeTransport(gateway=WebRTCGateway(max_peers=callers))
    sessions: dict[str, LiveSession] = {}

    def loop_back(session: LiveSession, pcm: bytes) -> None:
        peer = transport.peer(session)
        if peer is not None:
            peer.outbound.pacer.push(pcm)
            peer.outbound.pacer.end_of_response()

    transport.on_audio_received(loop_back)
    clients = [WebRTCCaller(data_channel=False) for _ in range(callers)]
    for client in clients:
        offer = await client.offer_body()
        answer, session = await _serve(transport, offer["sdp"])
        sessions[session.id] = session
        await client.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    for client in clients:
        await client.until(lambda c=client: c.pc.connectionState == "connected", what="ICE")

    played: list[list[float]] = [[] for _ in clients]
    start_cpu, start = time.process_time(), time.monotonic()
    burst = tone(BURST_MS, amplitude=12000)
    while time.monotonic() - start < seconds:
        for index, client in enumerate(clients):
            client.mic.play(burst)
            played[index].append(time.monotonic())
        await asyncio.sleep(1.0)
    elapsed = time.monotonic() - start
    cpu = time.process_time() - start_cpu

    gaps: list[float] = []
    delays: list[float] = []
    for index, client in enumerate(clients):
        times = [at for at, _ in client.heard if at >= start]
        gaps += [(b - a) * 1000 for a, b in zip(times, times[1:], strict=False)]
        onsets = _onsets(client.heard, start)
        for sent in played[index]:
            later = [at for at in onsets if at >= sent]
            if later and later[0] - sent < 0.9:
                delays.append((later[0] - sent) * 1000)
    for client in clients:
        await client.close()
    await transport.close()

    gaps.sort()
    print(f"callers={callers} seconds={elapsed:.1f}")
    print(f"  CPU (both ends): {cpu / (callers * elapsed):.3f} s per call-second")
    if gaps:
        p99 = gaps[int(len(gaps) * 0.99)]
        print(
            f"  reply frames: {len(gaps) + callers} received; inter-arrival p50 "
            f"{statistics.median(gaps):.1f} ms, p99 {p99:.1f} ms, max {gaps[-1]:.1f} ms"
        )
    if delays:
        print(
            f"  loop-back delay: p50 {statistics.median(delays):.0f} ms, max {max(delays):.0f} ms "
            f"({len(delays)} bursts of {sum(len(p) for p in played)})"
        )


def _onsets(heard: list[tuple[float, bytes]], since: float) -> list[float]:
    """Arrival times of frames where a burst starts (loud after quiet)."""
    onsets: list[float] = []
    quiet = True
    for at, pcm in heard:
        if at < since:
            continue
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
        loud = samples.size > 0 and float(np.sqrt(np.mean(samples**2))) > 2000
        if loud and quiet:
            onsets.append(at)
        quiet = not loud
    return onsets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    options = parser.parse_args()
    assert RATE == 48000
    asyncio.run(run(options.callers, options.seconds))


if __name__ == "__main__":
    main()
