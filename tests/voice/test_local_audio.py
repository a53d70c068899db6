"""Local audio (``voice.transports.local``, ``manage.py voice_local``).

The command runs as it runs on a developer's machine, in its own process, through PortAudio
and ALSA: its default device is a virtual sound card (tests/fixtures/alsa.py) that this
process feeds and listens to in real time. The backend's buffering, playback position and
barge-in are also tested directly, with the engine and a stand-in for PortAudio whose
callbacks the test calls from another thread, as PortAudio does.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from django.core.management import CommandError, call_command
from django.db import connection

from rooms import services as room_services
from rooms.models import EventKind, Room, RoomEvent
from tests.commands.test_voice_call import API_KEY, HEARD, REPLY, point_agent_at, said, serving
from tests.fakes.openai_realtime import FakeOpenAIRealtime
from tests.fixtures.actors import TenantWorld
from tests.fixtures.alsa import VirtualSoundCard, virtual_sound_card
from tests.fixtures.browser import SpeechClip
from tests.fixtures.services import test_database_url
from voice import services as voice_services
from voice.channels import RealtimeVoiceChannel
from voice.mock import MockRealtimeProvider
from voice.models import EndReason, SessionState, VoiceSession
from voice.session import LiveSession
from voice.transports import local
from voice.transports.local import (
    AudioDeviceError,
    CaptureBuffer,
    LocalAudioBackend,
    LoopWaker,
    Playout,
    PortAudioUnavailable,
)

ROOT = Path(__file__).resolve().parents[2]
RATE = 16000
FRAME = RATE * 2 // 50  # bytes in 20 ms
TIMEOUT = 30  # seconds, for anything the command or the engine is waited for


def tone(ms: int, *, rate: int = RATE, amplitude: int = 8000, hz: float = 300.0) -> bytes:
    samples = np.arange(rate * ms // 1000)
    return (amplitude * np.sin(2 * np.pi * hz * samples / rate)).astype("<i2").tobytes()


# --- the playout: what the output callback plays, and what has been heard -------------------


def drain(playout: Playout, blocks: int, *, start: float = 0.0, latency: float = 0.0) -> bytes:
    """``blocks`` output callbacks 20 ms apart, from ``start``, on a device with ``latency``."""
    played = b""
    for n in range(blocks):
        now = start + n * 0.02
        frame, _ = playout.pull(now, now + latency)
        played += frame
    return played


def test_reply_audio_counts_as_heard_once_it_has_left_the_dac() -> None:
    playout = Playout(RATE, prebuffer_ms=40)
    reply = tone(1000)
    playout.start_reply()
    playout.push(reply)

    # A device with 100 ms of latency: the block handed over at t plays from t + 0.1.
    played = drain(playout, 10, latency=0.1)

    assert played == reply[: 10 * FRAME]  # no prebuffer wait: 1 s is above it
    # At the last callback (t = 0.18) the blocks handed over until t = 0.06 have played.
    assert playout.played_ms() == 80
    frame, moved = playout.pull(0.2, 0.3)
    assert moved and playout.played_ms() == 100
    assert frame == reply[10 * FRAME : 11 * FRAME]


def test_a_device_without_timing_counts_a_block_once_it_has_had_time_to_play() -> None:
    playout = Playout(RATE, prebuffer_ms=20)
    playout.push(tone(200))

    times = SimpleNamespace(currentTime=5.0, outputBufferDacTime=0.0)
    assert local._stream_times(times, clock=lambda: 7.0) == (5.0, 5.0)
    frame, moved = playout.pull(5.0, 5.0)
    assert not moved and playout.played_ms() == 0
    frame, moved = playout.pull(5.02, 5.02)
    assert moved and playout.played_ms() == 20
    # A DAC time far ahead (a driver's broken clock) is believed only so far.
    times = SimpleNamespace(currentTime=1.0, outputBufferDacTime=99.0)
    assert local._stream_times(times, clock=lambda: 7.0) == (1.0, 1.0 + local.MAX_DAC_AHEAD_S)
    # No stream clock at all: the backend's own, and no latency.
    times = SimpleNamespace(currentTime=0.0, outputBufferDacTime=0.0)
    assert local._stream_times(times, clock=lambda: 7.0) == (7.0, 7.0)


def test_blocks_a_device_takes_at_once_are_heard_one_after_another() -> None:
    playout = Playout(RATE, prebuffer_ms=20)
    playout.push(tone(200))

    # Six callbacks in a row, all saying "now" (a device with a large buffer that reports
    # no latency): the blocks play back to back from now.
    for _ in range(6):
        playout.pull(1.0, 1.0)

    assert playout.played_ms() == 0
    assert playout.next_heard_at() == pytest.approx(1.02)
    assert playout.advance(1.05) and playout.played_ms() == 40
    assert not playout.advance(1.055)
    assert playout.advance(1.12) and playout.played_ms() == 120
    assert playout.next_heard_at() is None


def test_the_prebuffer_silence_and_underruns_do_not_count_as_played() -> None:
    playout = Playout(RATE, prebuffer_ms=80)
    playout.start_reply()
    playout.push(tone(40))  # below the prebuffer: silence until more comes or the reply ends

    assert drain(playout, 3) == bytes(3 * FRAME)
    assert playout.played_ms() == 0

    playout.push(tone(60))  # 100 ms: plays
    drain(playout, 6, start=0.06)  # 5 frames of audio, then an underrun (silence)
    assert playout.played_ms() == 100
    playout.push(tone(100))  # the rest of the same reply: the count goes on from 100
    playout.end_of_response()
    drain(playout, 7, start=0.18)
    assert playout.played_ms() == 200


def test_a_reply_counts_from_its_own_first_sample_not_the_previous_replys_tail() -> None:
    playout = Playout(RATE, prebuffer_ms=20)
    playout.start_reply()
    playout.push(tone(100, hz=200))
    playout.end_of_response()
    drain(playout, 2)  # 40 ms of the first reply played; 60 ms still queued

    playout.start_reply()  # the engine's "speaking" message for the next reply
    playout.push(tone(30, hz=500))  # not a whole number of frames: the last one is padded
    playout.end_of_response()
    drain(playout, 4, start=0.04)  # the first reply's tail plays (60 ms), then 20 ms of this

    assert playout.played_ms() == 0  # the tail is not this reply's (the last block not yet)
    drain(playout, 2, start=0.12)
    assert playout.played_ms() == 30  # all of it, the padding not counted
    assert playout.heard_ms == 130


def test_barge_in_drops_what_is_buffered_and_no_reply_is_current_until_the_next() -> None:
    playout = Playout(RATE, prebuffer_ms=20)
    playout.start_reply()
    playout.push(tone(1000))
    drain(playout, 10, latency=0.04)  # 200 ms handed over, 140 ms heard

    assert playout.played_ms() == 140
    assert playout.clear() == 800
    assert playout.played_ms() is None
    # The blocks the device already holds still play (and are heard), as silence follows.
    assert drain(playout, 3, start=0.2, latency=0.04) == bytes(3 * FRAME)
    assert playout.heard_ms == 200
    playout.start_reply()
    assert playout.played_ms() == 0


def test_at_most_60_s_of_reply_is_held_and_the_newest_audio_is_dropped_beyond() -> None:
    playout = Playout(RATE, max_buffer_ms=100)
    playout.push(tone(80))
    playout.push(tone(40))  # would be 120 ms: dropped

    assert playout.describe()["buffered_ms"] == 80
    assert playout.describe()["dropped_ms"] == 40


def test_capture_keeps_the_newest_two_seconds_when_the_loop_stalls() -> None:
    capture = CaptureBuffer(RATE, max_ms=100)
    blocks = [bytes([n]) * FRAME for n in range(8)]  # 160 ms
    for block in blocks:
        capture.put(block)

    assert capture.drain() == blocks[3:]  # the oldest 60 ms dropped
    assert capture.dropped_ms == 60
    assert capture.drain() == []


@pytest.mark.asyncio
async def test_a_device_thread_wakes_the_loop_once_however_often_it_asks() -> None:
    loop = asyncio.get_running_loop()
    runs: list[int] = []
    ran = asyncio.Event()

    def callback() -> None:
        runs.append(1)
        ran.set()

    waker = LoopWaker(loop, callback)
    # The loop is held (joined here) while the thread asks: its one run comes after.
    device = threading.Thread(target=lambda: [waker.wake() for _ in range(1000)])
    device.start()
    device.join()
    async with asyncio.timeout(5):
        await ran.wait()
    assert len(runs) == 1

    ran.clear()
    await asyncio.to_thread(waker.wake)  # asked again after the run: runs again
    async with asyncio.timeout(5):
        await ran.wait()
    assert len(runs) == 2


# --- the backend with the engine, PortAudio stood in for ----------------------------------------


class FakePortAudioError(Exception):
    pass


@dataclass
class FakeStream:
    kind: str
    options: dict[str, Any]
    started: bool = False
    closed: bool = False

    def start(self) -> None:
        self.started = True

    def abort(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


@dataclass
class FakePortAudio:
    """What the backend uses of ``sounddevice``, with one device of each kind (or none)."""

    inputs: list[str] = field(default_factory=lambda: ["Built-in Microphone"])
    outputs: list[str] = field(default_factory=lambda: ["Built-in Output"])
    refuse_rate: bool = False
    streams: list[FakeStream] = field(default_factory=list)
    PortAudioError = FakePortAudioError

    def query_devices(self, device: Any = None, kind: str | None = None) -> dict[str, Any]:
        names = self.inputs if kind == "input" else self.outputs
        if device is None:
            if not names:
                raise FakePortAudioError("Error querying device -1")
            return {"name": names[0]}
        matches = [name for name in names if str(device).lower() in name.lower()]
        if not matches:
            raise ValueError(f"No {kind} device matching {device!r}")
        return {"name": matches[0]}

    def _check(self, **settings: Any) -> None:
        if self.refuse_rate:
            raise FakePortAudioError("Invalid sample rate [PaErrorCode -9997]")

    check_input_settings = _check
    check_output_settings = _check

    def InputStream(self, **options: Any) -> FakeStream:
        self.streams.append(FakeStream("input", options))
        return self.streams[-1]

    def OutputStream(self, **options: Any) -> FakeStream:
        self.streams.append(FakeStream("output", options))
        return self.streams[-1]

    def callback(self, kind: str) -> Callable[..., None]:
        stream = next(stream for stream in self.streams if stream.kind == kind)
        assert stream.started
        callback: Callable[..., None] = stream.options["callback"]
        return callback


@pytest.fixture
def portaudio(monkeypatch: pytest.MonkeyPatch) -> FakePortAudio:
    fake = FakePortAudio()
    monkeypatch.setattr(local, "_portaudio", lambda: fake)
    return fake


class DeviceThread:
    """Calls the backend's stream callbacks from a thread other than the loop's."""

    def __init__(self, portaudio: FakePortAudio) -> None:
        self.portaudio = portaudio

    async def capture(self, pcm: bytes) -> None:
        callback = self.portaudio.callback("input")

        def run() -> None:
            for offset in range(0, len(pcm), FRAME):
                block = np.frombuffer(pcm[offset : offset + FRAME], dtype="<i2").reshape(-1, 1)
                callback(block, block.shape[0], SimpleNamespace(), None)

        await asyncio.to_thread(run)

    async def play(self, blocks: int, *, start: float, latency: float) -> bytes:
        """``blocks`` output callbacks 20 ms apart on the stream clock; what was played."""
        callback = self.portaudio.callback("output")

        def run() -> bytes:
            played = b""
            for n in range(blocks):
                now = start + n * 0.02
                times = SimpleNamespace(currentTime=now, outputBufferDacTime=now + latency)
                outdata = np.ones((FRAME // 2, 1), dtype="<i2")
                callback(outdata, FRAME // 2, times, None)
                played += outdata.tobytes()
            return played

        result: bytes = await asyncio.to_thread(run)
        return result


@dataclass
class LocalEngine:
    channel: RealtimeVoiceChannel
    provider: MockRealtimeProvider
    backend: LocalAudioBackend
    device: DeviceThread
    clock: Clock
    messages: list[dict[str, Any]]
    reports: list[int]
    reported: asyncio.Event


@dataclass
class Clock:
    """A monotonic clock that moves only when the test moves it."""

    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def local_engine(portaudio: FakePortAudio) -> Any:
    messages: list[dict[str, Any]] = []
    clock = Clock()
    backend = LocalAudioBackend(RATE, on_message=messages.append, prebuffer_ms=20, clock=clock)
    provider = MockRealtimeProvider()
    # The provider's rates are the device's: what is played is exactly what it sent.
    channel = RealtimeVoiceChannel(
        "voice",
        provider=provider,
        transport=backend,
        input_sample_rate=RATE,
        output_sample_rate=RATE,
    )
    reports: list[int] = []
    reported = asyncio.Event()

    def on_playback(session: LiveSession, played_ms: int) -> None:
        reports.append(played_ms)
        reported.set()

    backend.on_playback(on_playback)
    await backend.open()
    try:
        yield LocalEngine(
            channel, provider, backend, DeviceThread(portaudio), clock, messages, reports, reported
        )
    finally:
        await channel.close()


@pytest.mark.asyncio
async def test_captured_audio_reaches_the_provider(local_engine: LocalEngine) -> None:
    engine = local_engine
    session = await engine.channel.start_session("room", "local")
    speech = tone(300)

    await engine.device.capture(speech)
    await engine.provider.wait_until(
        lambda: sum(len(audio) for _, audio in engine.provider.sent_audio) >= len(speech)
    )

    assert b"".join(audio for _, audio in engine.provider.sent_audio) == speech
    assert engine.backend.describe()["captured_ms"] == 300
    assert {"type": "session_started"}.items() <= engine.messages[0].items()
    await engine.channel.end_session(session, reason=EndReason.ENDED_BY_CALLER)


@pytest.mark.asyncio
async def test_barge_in_truncates_the_reply_to_what_left_the_speakers(
    local_engine: LocalEngine,
) -> None:
    engine = local_engine
    session = await engine.channel.start_session("room", "local")
    reply = tone(1000, hz=440)
    await engine.provider.simulate_response_start(session)
    await engine.provider.simulate_audio(session, reply)

    # 600 ms handed to a device with 60 ms of latency: at the last callback (t = 10.58) the
    # blocks handed over until t = 10.50 have played, 26 of them.
    played = await engine.device.play(30, start=10.0, latency=0.06)
    assert played == reply[: 30 * FRAME]
    await reported(engine, 520)
    # 40 ms later, with no callback in between, two more blocks have played.
    engine.clock.now += 0.04
    await reported(engine, 560)
    await engine.provider.simulate_speech_start(session)  # the caller speaks over it

    assert engine.provider.truncations == [(session.id, 560)]
    assert engine.reports == sorted(engine.reports) and engine.reports[-1] == 560
    assert {"type": "clear_audio"} in engine.messages
    # The rest of the reply is dropped: the device plays silence from now on.
    assert await engine.device.play(5, start=10.6, latency=0.06) == bytes(5 * FRAME)
    assert engine.backend.describe()["playout"]["cleared_ms"] == 400
    await engine.channel.end_session(session, reason=EndReason.ENDED_BY_CALLER)


async def reported(engine: LocalEngine, played_ms: int) -> None:
    """Until the backend has told the engine that ``played_ms`` of the reply were heard."""
    async with asyncio.timeout(5):
        while not engine.reports or engine.reports[-1] < played_ms:
            engine.reported.clear()
            await engine.reported.wait()
    assert engine.reports[-1] == played_ms


@pytest.mark.asyncio
async def test_audio_is_dropped_while_no_session_is_bound(local_engine: LocalEngine) -> None:
    engine = local_engine
    await engine.device.capture(tone(100))  # the devices are open, no session yet
    session = await engine.channel.start_session("room", "local")
    await engine.device.capture(tone(40, amplitude=100))
    await engine.provider.wait_until(lambda: engine.provider.sent_audio)

    assert b"".join(audio for _, audio in engine.provider.sent_audio) == tone(40, amplitude=100)
    await engine.channel.end_session(session, reason=EndReason.ENDED_BY_CALLER)
    assert await engine.device.play(3, start=10.0, latency=0.0) == bytes(3 * FRAME)


@pytest.mark.asyncio
async def test_closing_stops_both_devices(portaudio: FakePortAudio) -> None:
    backend = LocalAudioBackend(48000, 2, input_device="built-in")
    await backend.open()
    assert (backend.input_name, backend.output_name) == ("Built-in Microphone", "Built-in Output")
    assert [
        (s.kind, s.options["samplerate"], s.options["blocksize"]) for s in portaudio.streams
    ] == [
        ("input", 48000, 960),
        ("output", 48000, 960),
    ]

    await backend.close()

    assert all(stream.closed and not stream.started for stream in portaudio.streams)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("change", "options", "message"),
    [
        (
            {"inputs": []},
            {},
            "no input device: PortAudio found no default input (is a sound card or sound "
            "server available? see --list-devices)",
        ),
        (
            {},
            {"output_device": "hdmi"},
            "No output device matching 'hdmi' (see --list-devices)",
        ),
        (
            {"refuse_rate": True},
            {},
            "the default input device (Built-in Microphone) cannot capture 1 channel(s) of "
            "16-bit audio at 16000 Hz: Invalid sample rate [PaErrorCode -9997]",
        ),
    ],
)
async def test_a_device_that_cannot_be_used_is_named_with_the_reason(
    portaudio: FakePortAudio, change: dict[str, Any], options: dict[str, Any], message: str
) -> None:
    for name, value in change.items():
        setattr(portaudio, name, value)
    backend = LocalAudioBackend(RATE, **options)

    with pytest.raises(AudioDeviceError) as raised:
        await backend.open()

    assert str(raised.value) == message
    assert not backend.is_open and not portaudio.streams


@pytest.mark.asyncio
async def test_without_portaudio_the_backend_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(name: str) -> Any:
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(local.importlib, "import_module", missing)

    with pytest.raises(PortAudioUnavailable, match="install libportaudio2"):
        await LocalAudioBackend().open()


def test_rates_without_a_whole_20_ms_frame_are_refused() -> None:
    with pytest.raises(ValueError, match="44110 Hz has no whole 20 ms frame"):
        LocalAudioBackend(44110)
    with pytest.raises(ValueError, match="8000-192000 Hz"):
        LocalAudioBackend(4000)


# --- the command, through PortAudio and ALSA ---------------------------------------------------


def subprocess_database_url() -> str:
    """The test database, for the command's process (rows the test commits are seen)."""
    settings = connection.settings_dict
    if settings["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings['NAME']}"
    return test_database_url()


@dataclass
class Running:
    """``manage.py voice_local`` in its own process, its output collected as it comes."""

    process: subprocess.Popen[str]
    card: VirtualSoundCard
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)

    def said(self) -> list[str]:
        """stdout without the time stamps."""
        return said("\n".join(self.out))

    def wait_for_output(self, text: str) -> None:
        self.card.wait_for(
            lambda: any(text in line for line in self.out + self.err),
            timeout=TIMEOUT,
            describe=lambda: f"{text!r} in\n" + "\n".join(self.out + self.err),
        )

    def interrupt(self) -> int:
        """Ctrl-C; the exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=TIMEOUT)


def _collect(stream: Any, lines: list[str]) -> None:
    for line in stream:
        lines.append(line.rstrip("\n"))


@pytest.fixture
def card(tmp_path: Path) -> Iterator[VirtualSoundCard]:
    home = tmp_path / "home"
    home.mkdir()
    with virtual_sound_card(home, rate=RATE) as card:
        yield card


@pytest.fixture
def voice_local(card: VirtualSoundCard) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(*args: str) -> Running:
        env = {
            **os.environ,
            **card.env(),
            "DJANGO_SETTINGS_MODULE": "roomvoice.settings_test",
            "DATABASE_URL": subprocess_database_url(),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("ALSA_CONFIG_PATH", None)  # ALSA reads $HOME/.asoundrc
        process = subprocess.Popen(
            [sys.executable, "manage.py", "voice_local", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        running = Running(process, card)
        for stream, lines in ((process.stdout, running.out), (process.stderr, running.err)):
            threading.Thread(target=_collect, args=(stream, lines), daemon=True).start()
        started.append(running)
        return running

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
        running.process.wait()


@pytest.fixture
def speech_16k(speech_wav: SpeechClip, tmp_path: Path) -> bytes:
    """The spoken sentence (with its trailing silence) as raw 16 kHz mono PCM16."""
    raw = tmp_path / "speech.raw"
    convert = ["-r", str(RATE), "-c", "1", "-b", "16", "-t", "raw"]
    subprocess.run(["sox", str(speech_wav.path), *convert, str(raw)], check=True)
    return raw.read_bytes()


def best_match(played: np.ndarray, reference: np.ndarray) -> tuple[int, float]:
    """Where ``reference`` best lines up in ``played`` (samples), and the normalised
    correlation there (1.0: the same waveform)."""
    size = 2 * (played.size + reference.size)
    spectrum = np.fft.rfft(played, size) * np.conj(np.fft.rfft(reference, size))
    lag = int(np.argmax(np.fft.irfft(spectrum, size)[: played.size]))
    segment = played[lag : lag + reference.size]
    reference = reference[: segment.size]
    norm = float(np.sqrt(np.dot(segment, segment) * np.dot(reference, reference)))
    return lag, float(np.dot(segment, reference)) / norm if norm else 0.0


@pytest.mark.django_db(transaction=True)
def test_talking_to_the_echo_agent_through_the_microphone_and_speakers(
    world_a: TenantWorld,
    voice_local: Callable[..., Running],
    speech_wav: SpeechClip,
    speech_16k: bytes,
) -> None:
    voice_services.agent_create(
        tenant=world_a.tenant, slug="echo", name="Echo", provider_kind="echo"
    )
    command = voice_local("--agent", "echo")
    command.wait_for_output("listening")
    speech_ms = round(speech_wav.speech_seconds * 1000)

    command.card.speak(speech_16k)
    command.wait_for_output("assistant: I heard")
    # The echo follows the transcript, in real time: wait until that much more has played.
    replied_at = command.card.played_samples().size
    command.card.wait_for(
        lambda: command.card.played_samples().size >= replied_at + RATE * (speech_ms + 500) // 1000,
        timeout=TIMEOUT,
        describe=lambda: f"{command.card.played_samples().size / RATE:.1f} s played",
    )

    assert command.interrupt() == 0
    # What the microphone heard reached the provider; its reply came out of the speakers:
    # the same sentence, in real time.
    heard_s = command.said()[0].removeprefix("user: (").removesuffix(" s of speech)")
    assert abs(float(heard_s) * 1000 - speech_ms) <= 300  # the speech, not its silence
    assert command.said() == [
        f"user: ({heard_s} s of speech)",
        f"assistant: I heard {heard_s} seconds. Here it is back.",
    ]
    spoken = speech_16k[: 2 * RATE * speech_ms // 1000]  # without the trailing silence
    assert _echo_played(command.card, spoken)
    session = VoiceSession.objects.get(tenant=world_a.tenant)
    room = Room.objects.get(tenant=world_a.tenant, key="local")  # no --room: created
    assert (session.state, session.end_reason, session.transport, session.room_id) == (
        SessionState.ENDED,
        EndReason.ENDED_BY_CALLER,
        "local",
        room.pk,
    )
    assert session.metadata["via"] == "voice_local"
    assert session.metadata["sample_rate"] == RATE
    transcripts = list(
        RoomEvent.objects.filter(session=session, kind=EventKind.TRANSCRIPT)
        .order_by("index")
        .values_list("role", "text")
    )
    assert transcripts == [
        ("user", f"({heard_s} s of speech)"),
        ("assistant", f"I heard {heard_s} seconds. Here it is back."),
    ]
    err = "\n".join(command.err)
    assert "no --room: created room local in tenant tenant-a for local sessions" in err
    assert "talking to agent echo (echo) in room local (tenant tenant-a)" in err
    assert "microphone: default; speakers: default; 16000 Hz, 1 channel(s)" in err
    assert f"session {session.pk} recorded: ended, ended_by_caller" in err


def _echo_played(card: VirtualSoundCard, speech: bytes) -> bool:
    """The card has played ``speech`` back (the same waveform, whole)."""
    reference = np.frombuffer(speech, dtype="<i2").astype(np.float64)
    played = card.played_samples().astype(np.float64)
    lag, correlation = best_match(played, reference)
    return correlation > 0.95 and lag + reference.size <= played.size


class TimedFake(FakeOpenAIRealtime):
    """Notes when each ``conversation.item.truncate`` arrives (``time.monotonic()``, which
    is one clock for every process of the machine)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.truncated_at: list[float] = []

    async def _truncate(self, conn: Any, event: dict[str, Any]) -> None:
        self.truncated_at.append(time.monotonic())
        await super()._truncate(conn, event)


@pytest.mark.django_db(transaction=True)
def test_speaking_over_the_reply_truncates_it_to_what_the_speakers_played(
    world_a: TenantWorld, voice_local: Callable[..., Running]
) -> None:
    fake = TimedFake(api_key=API_KEY, auto_vad=True, next_reply=REPLY, reply_audio_ms=4000)
    fake.user_transcripts.append(HEARD)
    with serving(fake) as served:
        point_agent_at(world_a, fake.base_url)
        command = voice_local("--agent", "assistant", "--room", "room-1")
        command.wait_for_output("listening")
        card = command.card
        card.speak(tone(800) + bytes(FRAME * 5))
        # The reply (a quiet 440 Hz tone) plays; a second into it, the caller speaks again.
        card.wait_for(
            lambda: _reply_run_ms(card.played_samples()) >= 1000,
            timeout=TIMEOUT,
            describe=lambda: "\n".join(command.out + command.err),
        )
        card.speak(tone(800))
        [truncate] = served.run(
            fake.wait_for("conversation.item.truncate", timeout=TIMEOUT), timeout=TIMEOUT + 5
        )
        command.wait_for_output("barge-in")
        # What the device still held has played out; nothing of the reply follows.
        played_at_truncation = card.played_samples().size
        card.wait_for(
            lambda: card.played_samples().size >= played_at_truncation + RATE // 2,
            timeout=TIMEOUT,
            describe=lambda: f"{card.played_samples().size / RATE:.1f} s played",
        )
        assert command.interrupt() == 0

    # The model is told the reply was heard as far as the card had played it when the
    # caller spoke over it (measured: 1160 ms told, 1139 ms played by the time the truncate
    # arrived, the card's and the backend's 20 ms blocks apart). The device reports no
    # latency: the backend schedules the blocks it takes at once one after another. Counting
    # from when the reply was sent, as without the backend's reports, would be ~150 ms off.
    told_ms = truncate["audio_end_ms"]
    heard_ms = _reply_run_ms(card.played_samples(by=fake.truncated_at[0]))
    assert abs(told_ms - heard_ms) <= 60, (told_ms, heard_ms)
    # What the device held then (its FIFO and ALSA buffer) still played; then nothing more.
    reply_ms = _reply_run_ms(card.played_samples())
    assert 0 <= reply_ms - told_ms <= 250, (reply_ms, told_ms)
    assert command.said()[:2] == [f"user: {HEARD}", f"assistant: {REPLY}"]
    session = VoiceSession.objects.get(tenant=world_a.tenant)
    assert (session.room_id, session.end_reason) == (world_a.room.pk, EndReason.ENDED_BY_CALLER)


def _reply_run_ms(played: np.ndarray) -> int:
    """The length of the first run of reply audio (loud samples with no 100 ms gap)."""
    loud = np.flatnonzero(np.abs(played) > 400)
    if loud.size == 0:
        return 0
    gaps = np.flatnonzero(np.diff(loud) > RATE // 10)
    end = loud[gaps[0]] if gaps.size else loud[-1]
    return int((end - loud[0] + 1) * 1000 // RATE)


def test_listing_the_devices(voice_local: Callable[..., Running]) -> None:
    command = voice_local("--list-devices")

    assert command.process.wait(timeout=TIMEOUT) == 0
    command.card.wait_for(
        lambda: command.out, timeout=TIMEOUT, describe=lambda: "\n".join(command.err)
    )
    assert any("default, ALSA" in line for line in command.out)


@pytest.mark.django_db(transaction=True)
def test_a_device_that_does_not_exist_is_a_usage_error(
    world_a: TenantWorld, voice_local: Callable[..., Running]
) -> None:
    command = voice_local("--agent", "assistant", "--room", "room-1", "--input-device", "nosuch")

    assert command.process.wait(timeout=TIMEOUT) == 2
    command.wait_for_output("CommandError")
    assert "CommandError: No input device matching 'nosuch' (see --list-devices)" in command.err
    assert not VoiceSession.objects.exists()


# --- usage errors, before any device is opened ----------------------------------------------------


def _usage_error(*args: str) -> str:
    with pytest.raises(CommandError) as raised:
        call_command("voice_local", *args, stdout=StringIO(), stderr=StringIO())
    assert raised.value.returncode == 2
    assert not VoiceSession.objects.exists()
    return str(raised.value)


@pytest.mark.django_db
def test_unknown_agent_room_or_tenant_is_a_usage_error(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    assert _usage_error() == "--agent is required"
    assert _usage_error("--agent", "nobody") == "no agent 'nobody'"
    assert _usage_error("--agent", "nobody", "--tenant", "tenant-a") == (
        "no agent 'nobody' in tenant tenant-a"
    )
    assert _usage_error("--agent", "assistant") == (
        "agent 'assistant' is in several tenants (tenant-a, tenant-b): add --tenant SLUG"
    )
    assert _usage_error("--agent", "assistant", "--tenant", "nope") == "no tenant 'nope'"
    assert "no room 'nowhere'" in _usage_error("--agent", "assistant", "--room", "nowhere")
    assert _usage_error("--agent", "nobody", "--room", "room-1", "--tenant", "tenant-a") == (
        "no agent 'nobody' in tenant tenant-a"
    )
    assert not Room.objects.filter(key="local").exists()


@pytest.mark.django_db
def test_a_closed_local_room_is_a_usage_error(world_a: TenantWorld) -> None:
    room = room_services.room_create(tenant=world_a.tenant, key="local", name="Local audio")
    room_services.room_set_status(tenant=world_a.tenant, room=room, status="closed")

    assert _usage_error("--agent", "assistant") == "the room is closed"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--sample-rate", "44110"], "--sample-rate: 44110 Hz has no whole 20 ms frame"),
        (["--sample-rate", "4000"], "--sample-rate: the sample rate must be 8000-192000 Hz"),
        (["--channels", "0"], "--channels must be 1-32"),
        (["--participant", "user:7"], "--participant must be 1-128 characters"),
    ],
)
def test_bad_options_are_usage_errors(
    world_a: TenantWorld, option: list[str], message: str
) -> None:
    assert message in _usage_error("--agent", "assistant", *option)


def test_importing_the_backend_needs_no_portaudio_and_no_django() -> None:
    script = (
        "import sys\n"
        "sys.modules['sounddevice'] = None\n"  # as if not installed
        "import voice.transports.local as local\n"
        "assert 'django' not in sys.modules, sorted(m for m in sys.modules if 'django' in m)\n"
        "local.LocalAudioBackend()\n"
        "import asyncio\n"
        "try:\n"
        "    asyncio.run(local.LocalAudioBackend().open())\n"
        "except local.PortAudioUnavailable as error:\n"
        "    print(error)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == "local audio needs the sounddevice package: pip install sounddevice\n"
