"""The offline provider under load: N callers speak to ``LocalRealtimeProvider`` at once.

Each caller is one session of one provider instance (so one recogniser thread, as in a server
process), fed real speech (espeak-ng, ``tests/fixtures/speech.py``) in 20 ms chunks of 16 kHz
PCM16 on absolute deadlines, silence between utterances, as a microphone would. A caller says
``--turns`` different sentences, each after the previous reply has ended (plus ``--pause``).
No Django, no engine, no network: the provider is driven directly.

    .venv/bin/python bench/bench_local.py [--callers 4] [--turns 3] [--json] [--verbose]

Per turn, from the end of speech (when the chunk holding the clip's last voiced 20 ms, RMS
at or above the VAD's -45 dBFS, was sent): the ``speech_end`` callback (the VAD's hangover),
the caller's final transcript (recognition, queueing on the one recogniser thread included)
and the first reply audio; p50 / p90 / max over every turn. Heard: the share of turns whose
transcript has all the sentence's key words. Cost: ``send_audio`` wall and thread-CPU time
per chunk (voiced and silent chunks apart; paced, and back to back on a probe session for
reference), process CPU per call-second (Whisper's threads included; espeak-ng's processes
apart), peak RSS, the recogniser's load and first transcriptions, and per-session connect
time and memory (Silero VAD).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from providers.base import CALLBACKS
from providers.local import LocalRealtimeProvider
from providers.local.asr import Recognizer, shared_recognizer
from providers.local.config import DEFAULT_ASR_PROMPT
from tests.fixtures.speech import spoken
from voice.session import LiveSession
from voice.vad import DEFAULT_THRESHOLD_DBFS

RATE = 16000
OUT_RATE = 24000
FRAME_MS = 20
FRAME_BYTES = 2 * RATE * FRAME_MS // 1000
SILENT_FRAME = bytes(FRAME_BYTES)
PROMPT = "You are Ada, a helpful assistant."

#: What the callers say (caller i's turn j is sentence i + j), with the words the transcript
#: must have. The replies come from the brain's built-in rules or its "I heard" fallback.
#: Whisper tiny.en gets the key words of each right at 7 or 8 of 8 VAD cut alignments (4 ms
#: apart); some sentences it mostly gets wrong ("The orange cat sleeps on the warm sofa": 2).
SENTENCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("I like the green garden.", ("green", "garden")),
    ("What is your name?", ("name",)),
    ("The little dog is sleeping on the sofa.", ("dog", "sleeping", "sofa")),
    ("Can you tell me a joke?", ("tell", "joke")),
    ("My brother plays the piano every evening.", ("brother", "piano", "evening")),
    ("Please open the kitchen window.", ("open", "kitchen", "window")),
    ("What time is it now?", ("time",)),
    ("We walked along the river to the old bridge.", ("walked", "river", "bridge")),
)


@dataclass
class Clip:
    pcm: bytes
    chunks: list[bytes]
    last_voiced: int  # index of the chunk holding the last voiced 20 ms
    voiced: list[bool]  # per chunk: at or above the VAD's threshold

    @classmethod
    def of(cls, text: str) -> Clip:
        pcm = spoken(text, rate=RATE)
        chunks = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
        voiced = [_dbfs(chunk) >= DEFAULT_THRESHOLD_DBFS for chunk in chunks]
        last = max(i for i, loud in enumerate(voiced) if loud)
        return cls(pcm, chunks, last, voiced)

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / RATE


def _dbfs(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    mean_square = float(np.mean(samples**2)) if samples.size else 0.0
    return 10 * math.log10(mean_square / 32768.0**2) if mean_square > 0 else -96.0


@dataclass
class Turn:
    caller: int
    index: int
    text: str
    keywords: tuple[str, ...]
    speech_ended: float | None = None  # loop time: the last voiced chunk was sent
    vad_end: float | None = None
    transcript_at: float | None = None
    first_audio: float | None = None
    response_end: float | None = None
    heard: list[str] = field(default_factory=list)
    starts: int = 0  # speech_start callbacks during the turn (1 unless the VAD split it)
    errors: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def after_end(self, at: float | None) -> float | None:
        """Milliseconds from the end of speech to ``at``."""
        if at is None or self.speech_ended is None:
            return None
        return (at - self.speech_ended) * 1000

    @property
    def words_ok(self) -> bool:
        words = set(re.findall(r"[a-z']+", " ".join(self.heard).lower()))
        return all(word in words or f"{word}s" in words for word in self.keywords)


@dataclass
class Caller:
    number: int
    session: LiveSession
    turns: list[Turn]
    phase: float
    current: Turn | None = None
    frames: int = 0
    #: send_audio's cost per chunk, ns, keyed by "voiced" (the chunk is at or above -45 dBFS).
    wall_ns: dict[bool, list[int]] = field(default_factory=lambda: {True: [], False: []})
    cpu_ns: dict[bool, list[int]] = field(default_factory=lambda: {True: [], False: []})
    late_ms: list[float] = field(default_factory=list)


class Bench:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.provider = LocalRealtimeProvider()
        self.callers: dict[str, Caller] = {}
        self.loop = asyncio.get_running_loop()
        for event in CALLBACKS:
            handler = getattr(self, f"_on_{event}", None)
            if handler is not None:
                getattr(self.provider, f"on_{event}")(handler)

    # --- callbacks: timestamps only --------------------------------------------------------

    def _turn(self, session: LiveSession) -> Turn | None:
        caller = self.callers.get(session.id)
        return caller.current if caller is not None else None

    def _on_speech_start(self, session: LiveSession) -> None:
        turn = self._turn(session)
        if turn is not None:
            turn.starts += 1

    def _on_speech_end(self, session: LiveSession) -> None:
        turn = self._turn(session)
        # An end before the last voiced chunk was sent is a pause inside the sentence.
        if turn is not None and turn.speech_ended is not None and turn.vad_end is None:
            turn.vad_end = self.loop.time()

    def _on_transcription(self, session: LiveSession, text: str, role: str, final: bool) -> None:
        turn = self._turn(session)
        if turn is None or role != "user" or not final:
            return
        turn.heard.append(text)
        if turn.vad_end is not None and turn.transcript_at is None:
            turn.transcript_at = self.loop.time()

    def _on_audio(self, session: LiveSession, pcm: bytes) -> None:
        turn = self._turn(session)
        if turn is not None and turn.transcript_at is not None and turn.first_audio is None:
            turn.first_audio = self.loop.time()

    def _on_response_end(self, session: LiveSession) -> None:
        turn = self._turn(session)
        if turn is not None and turn.first_audio is not None and turn.response_end is None:
            turn.response_end = self.loop.time()
            turn.done.set()

    def _on_error(self, session: LiveSession, code: str, message: str, fatal: bool) -> None:
        turn = self._turn(session)
        if turn is not None:
            turn.errors.append(code)

    # --- the run ---------------------------------------------------------------------------

    async def connect(self, name: str) -> tuple[LiveSession, float]:
        session = LiveSession(room_id="bench", participant_id=name, channel_id="voice")
        start = time.perf_counter()
        await self.provider.connect(
            session,
            system_prompt=PROMPT,
            voice=None,
            tools=None,
            temperature=None,
            input_sample_rate=RATE,
            output_sample_rate=OUT_RATE,
        )
        return session, (time.perf_counter() - start) * 1000

    async def feed(self, caller: Caller, clips: dict[str, Clip], t0: float) -> None:
        """The caller's microphone: one chunk every 20 ms on absolute deadlines (a late
        chunk never moves the next one's), speech or silence."""
        provider, session, loop = self.provider, caller.session, self.loop
        clock, thread_clock = time.perf_counter_ns, time.thread_time_ns

        async def send(chunk: bytes, voiced: bool, last_voiced: Turn | None = None) -> None:
            deadline = t0 + caller.phase + caller.frames * FRAME_MS / 1000
            wait = deadline - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            now = loop.time()
            caller.late_ms.append(max(0.0, now - deadline) * 1000)
            if last_voiced is not None:
                last_voiced.speech_ended = now
            start, start_cpu = clock(), thread_clock()
            await provider.send_audio(session, chunk)
            caller.cpu_ns[voiced].append(thread_clock() - start_cpu)
            caller.wall_ns[voiced].append(clock() - start)
            caller.frames += 1

        for turn in caller.turns:
            caller.current = turn
            clip = clips[turn.text]
            for index, chunk in enumerate(clip.chunks):
                mark = turn if index == clip.last_voiced else None
                await send(chunk, clip.voiced[index], mark)
            give_up = loop.time() + self.options.timeout
            while not turn.done.is_set() and loop.time() < give_up:
                await send(SILENT_FRAME, False)
            for _ in range(round(self.options.pause * 1000 / FRAME_MS)):
                await send(SILENT_FRAME, False)
        caller.current = None


async def run(options: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(options)
    provider = bench.provider
    plan = [
        [SENTENCES[(number + j) % len(SENTENCES)] for j in range(options.turns)]
        for number in range(options.callers)
    ]
    clips = {text: Clip.of(text) for said in plan for text, _ in said}
    rss = {"start": _rss_mb()}

    recognizer: Recognizer = shared_recognizer()
    start = time.perf_counter()
    await recognizer.load()
    load_ms = (time.perf_counter() - start) * 1000
    rss["recogniser"] = _rss_mb()
    alone_clip = clips[plan[0][0][0]]
    alone_ms: list[float] = []
    for _ in range(2):  # cold, then warm: one utterance, nothing else running
        start = time.perf_counter()
        await recognizer.transcribe(alone_clip.pcm, prompt=DEFAULT_ASR_PROMPT)
        alone_ms.append((time.perf_counter() - start) * 1000)
    rss["transcribed"] = _rss_mb()

    # The first connect lists espeak-ng's voices and starts Silero's runtime: timed apart.
    probe, first_connect_ms = await bench.connect("probe")
    back_to_back = await _back_to_back(provider, probe, alone_clip)
    await provider.disconnect(probe)
    rss["first session"] = _rss_mb()
    connect_ms: list[float] = []
    callers: list[Caller] = []
    for number, said in enumerate(plan):
        session, elapsed = await bench.connect(f"caller-{number}")
        connect_ms.append(elapsed)
        turns = [Turn(number, j, text, words) for j, (text, words) in enumerate(said)]
        # Callers' chunks are spread over the 20 ms period, plus --stagger between them.
        phase = number * (options.stagger + FRAME_MS / 1000 / options.callers)
        caller = Caller(number, session, turns, phase)
        callers.append(caller)
        bench.callers[session.id] = caller
    rss["sessions"] = _rss_mb()

    transcribed_before = recognizer.transcribed
    usage_self = resource.getrusage(resource.RUSAGE_SELF)
    usage_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    t0 = bench.loop.time() + 0.05
    await asyncio.gather(*(bench.feed(caller, clips, t0) for caller in callers))
    elapsed_s = time.perf_counter() - started
    cpu_self = _cpu(resource.getrusage(resource.RUSAGE_SELF)) - _cpu(usage_self)
    cpu_children = _cpu(resource.getrusage(resource.RUSAGE_CHILDREN)) - _cpu(usage_children)
    stats = [provider.stats(caller.session) for caller in callers]
    for caller in callers:
        await provider.disconnect(caller.session)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    turns = [turn for caller in callers for turn in caller.turns]
    call_seconds = sum(caller.frames for caller in callers) * FRAME_MS / 1000
    late = sorted(ms for caller in callers for ms in caller.late_ms)
    return {
        "bench": "local",
        "callers": options.callers,
        "turns": options.turns,
        "stagger_s": options.stagger,
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, "
        f"Python {platform.python_version()}",
        "wall_s": round(elapsed_s, 1),
        "call_seconds": round(call_seconds, 1),
        "latency_ms": {
            "speech_end": _spread([turn.after_end(turn.vad_end) for turn in turns]),
            "transcript": _spread([turn.after_end(turn.transcript_at) for turn in turns]),
            "first_audio": _spread([turn.after_end(turn.first_audio) for turn in turns]),
            "asr": _spread([_gap(turn.vad_end, turn.transcript_at) for turn in turns]),
            "reply": _spread([_gap(turn.transcript_at, turn.first_audio) for turn in turns]),
        },
        "turns_answered": sum(turn.first_audio is not None for turn in turns),
        "turns_total": len(turns),
        "heard_pct": round(100 * sum(turn.words_ok for turn in turns) / len(turns), 1),
        "split_turns": sum(turn.starts > 1 for turn in turns),
        "errors": sorted({code for turn in turns for code in turn.errors}),
        "busy_refusals": sum(stat.busy_refusals for stat in stats),
        "transcriptions": recognizer.transcribed - transcribed_before,
        "send_audio_us": {
            "wall": _costs([caller.wall_ns for caller in callers], call_seconds),
            "cpu": _costs([caller.cpu_ns for caller in callers], call_seconds),
            "cpu_back_to_back": back_to_back,
        },
        "late_ms": {
            "p50": round(_pick(late, 0.5), 1),
            "p99": round(_pick(late, 0.99), 1),
            "max": round(late[-1], 1),
        },
        "cpu_per_call_second": round(cpu_self / call_seconds, 3),
        "espeak_cpu_per_call_second": round(cpu_children / call_seconds, 4),
        "peak_rss_mb": round(peak_rss, 1),
        "rss_mb": {stage: round(mb, 1) for stage, mb in rss.items()},
        "rss_per_session_mb": round((rss["sessions"] - rss["first session"]) / len(callers), 2),
        "recogniser_load_ms": round(load_ms),
        "transcribe_alone_ms": {
            "cold": round(alone_ms[0]),
            "warm": round(alone_ms[1]),
            "clip_s": round(alone_clip.seconds, 2),
        },
        "first_connect_ms": round(first_connect_ms, 1),
        "connect_ms": _spread(connect_ms),
        "turn_log": [
            {
                "caller": turn.caller,
                "turn": turn.index,
                "said": turn.text,
                "heard": " / ".join(turn.heard),
                "ok": turn.words_ok,
                "speech_end": _round(turn.after_end(turn.vad_end)),
                "transcript": _round(turn.after_end(turn.transcript_at)),
                "first_audio": _round(turn.after_end(turn.first_audio)),
            }
            for turn in turns
        ],
    }


async def _back_to_back(
    provider: LocalRealtimeProvider, session: LiveSession, clip: Clip
) -> dict[str, Any]:
    """send_audio's CPU per chunk with no pause between calls (warm caches, as in a busy
    process): 3 s of silence, then the clip up to its last voiced chunk (no end of speech, so
    nothing is transcribed)."""
    costs: dict[bool, list[int]] = {True: [], False: []}
    chunks = [(SILENT_FRAME, False)] * 150
    chunks += list(zip(clip.chunks, clip.voiced, strict=True))[: clip.last_voiced + 1]
    for chunk, voiced in chunks:
        start = time.thread_time_ns()
        await provider.send_audio(session, chunk)
        costs[voiced].append(time.thread_time_ns() - start)
    return {
        "voiced": _per_chunk(sorted(costs[True])),
        "silent": _per_chunk(sorted(costs[False])),
    }


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


def _gap(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else (end - start) * 1000


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _pick(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted values."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _spread(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """p50 / p90 / max of the values there are (ms), and how many are missing."""
    present = sorted(value for value in values if value is not None)
    if not present:
        return {"p50": None, "p90": None, "max": None, "n": 0, "missing": len(values)}
    return {
        "p50": round(statistics.median(present), 1),
        "p90": round(_pick(present, 0.9), 1),
        "max": round(present[-1], 1),
        "n": len(present),
        "missing": len(values) - len(present),
    }


def _costs(per_caller: Sequence[dict[bool, list[int]]], call_seconds: float) -> dict[str, Any]:
    """send_audio per chunk (µs) for voiced, silent and all chunks, and per audio second."""
    voiced = sorted(ns for costs in per_caller for ns in costs[True])
    silent = sorted(ns for costs in per_caller for ns in costs[False])
    every = sorted(voiced + silent)
    return {
        "all": _per_chunk(every),
        "voiced": _per_chunk(voiced),
        "silent": _per_chunk(silent),
        "per_audio_second": round(sum(every) / 1000 / call_seconds),
    }


def _per_chunk(ordered_ns: Sequence[int]) -> dict[str, float | int | None]:
    if not ordered_ns:
        return {"p50": None, "p99": None, "mean": None, "n": 0}
    return {
        "p50": round(statistics.median(ordered_ns) / 1000, 1),
        "p99": round(_pick(ordered_ns, 0.99) / 1000, 1),
        "mean": round(statistics.fmean(ordered_ns) / 1000, 1),
        "n": len(ordered_ns),
    }


def _fmt(spread: dict[str, Any]) -> str:
    if not spread["n"]:
        return "-"
    text = " / ".join(f"{spread[key]:.0f}" for key in ("p50", "p90", "max"))
    return text + (f"  ({spread['missing']} missing)" if spread.get("missing") else "")


def _fmt_us(wall: dict[str, Any], cpu: dict[str, Any]) -> str:
    if not wall["n"]:
        return "-"
    return (
        f"{wall['p50']:>5.0f} / {wall['p99']:>5.0f} / {wall['mean']:>5.0f}   "
        f"{cpu['p50']:>5.0f} / {cpu['p99']:>5.0f} / {cpu['mean']:>5.0f}   {wall['n']:>6}"
    )


def report(result: dict[str, Any], verbose: bool) -> None:
    latency, hot = result["latency_ms"], result["send_audio_us"]
    wall, cpu = hot["wall"], hot["cpu"]
    alone, late, rss = result["transcribe_alone_ms"], result["late_ms"], result["rss_mb"]
    print(
        f"bench_local: {result['callers']} callers x {result['turns']} turns, "
        f"{result['call_seconds']:.0f} call-seconds in {result['wall_s']:.0f} s "
        f"({result['machine']})"
    )
    print("from the end of speech, ms            p50 / p90 / max")
    print(f"  speech_end (VAD hangover)           {_fmt(latency['speech_end'])}")
    print(f"  user transcript                     {_fmt(latency['transcript'])}")
    print(f"  first reply audio                   {_fmt(latency['first_audio'])}")
    print(f"  (speech_end -> transcript)          {_fmt(latency['asr'])}")
    print(f"  (transcript -> first audio)         {_fmt(latency['reply'])}")
    print(
        f"heard: {result['heard_pct']:.0f} % of turns with all key words; answered "
        f"{result['turns_answered']}/{result['turns_total']}; split by the VAD "
        f"{result['split_turns']}; busy refusals {result['busy_refusals']}"
        + (f"; errors: {', '.join(result['errors'])}" if result["errors"] else "")
    )
    print("send_audio per 20 ms chunk, us   wall p50 / p99 / mean   CPU p50 / p99 / mean   chunks")
    for kind in ("voiced", "silent", "all"):
        print(f"  {kind:<31}{_fmt_us(wall[kind], cpu[kind])}")
    print(
        f"  per second of audio: {wall['per_audio_second']} us wall, {cpu['per_audio_second']} us"
        f" CPU ({cpu['per_audio_second'] / 1e4:.2f} % of a core per caller)"
    )
    tight = hot["cpu_back_to_back"]
    print(
        f"  back to back (no 20 ms pause), CPU p50 / p99 / mean: voiced "
        f"{tight['voiced']['p50']:.0f} / {tight['voiced']['p99']:.0f} / "
        f"{tight['voiced']['mean']:.0f}, silent {tight['silent']['p50']:.0f} / "
        f"{tight['silent']['p99']:.0f} / {tight['silent']['mean']:.0f}"
    )
    print(
        f"chunks late against their deadlines: p50 {late['p50']:.1f} / p99 {late['p99']:.1f} / "
        f"max {late['max']:.1f} ms"
    )
    print(
        f"CPU per call-second: {result['cpu_per_call_second']:.3f} s in the process (Whisper "
        f"included), {result['espeak_cpu_per_call_second']:.4f} s in espeak-ng"
    )
    print(
        f"memory: peak RSS {result['peak_rss_mb']:.0f} MB; RSS {rss['start']:.0f} MB at start, "
        f"{rss['recogniser']:.0f} loaded, {rss['transcribed']:.0f} after a transcription, "
        f"{rss['first session']:.0f} after a first session; then "
        f"+{result['rss_per_session_mb']:.2f} MB per session"
    )
    print(
        f"recogniser: load {result['recogniser_load_ms']} ms; a {alone['clip_s']:.2f} s clip "
        f"alone: {alone['cold']} ms cold, {alone['warm']} ms warm; "
        f"{result['transcriptions']} transcriptions in the run"
    )
    print(
        f"connect: first {result['first_connect_ms']:.0f} ms, then per session "
        f"{_fmt(result['connect_ms'])} ms (p50 / p90 / max)"
    )
    if verbose:
        for turn in result["turn_log"]:
            print(
                f"  caller {turn['caller']} turn {turn['turn']}: end {turn['speech_end']} / "
                f"text {turn['transcript']} / audio {turn['first_audio']} ms  "
                f"{'ok  ' if turn['ok'] else 'MISS'} {turn['said']!r} -> {turn['heard']!r}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=4, help="concurrent sessions (4)")
    parser.add_argument("--turns", type=int, default=3, help="sentences per caller (3)")
    parser.add_argument(
        "--stagger", type=float, default=0.0, help="seconds between callers' starts (0)"
    )
    parser.add_argument(
        "--pause", type=float, default=0.3, help="silence after a reply ends, s (0.3)"
    )
    parser.add_argument(
        "--timeout", type=float, default=15.0, help="give up on a reply after, s (15)"
    )
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--verbose", action="store_true", help="print every turn")
    options = parser.parse_args()
    if options.callers < 1 or options.turns < 1:
        parser.error("--callers and --turns must be at least 1")
    result = asyncio.run(run(options))
    report(result, options.verbose)
    if options.json:
        if not options.verbose:
            result.pop("turn_log")
        print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
