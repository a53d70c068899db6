"""Local audio: a session through this machine's microphone and speakers, for development.
Pure asyncio + sounddevice (PortAudio) + numpy; no Django.

``LocalAudioBackend(sample_rate=16000, channels=1)`` opens two PortAudio streams (input and
output, each on its own device: the defaults, or ``input_device``/``output_device``) at
``sample_rate``, in blocks of 20 ms, and carries one session at a time
(``manage.py voice_local`` is its command). The engine resamples to and from the
provider's rates, as for any transport that declares its rate.

**Threads.** PortAudio calls each stream's callback on a thread of its own, on the device's
clock. The callbacks never wait for the event loop and never call into asyncio except
``loop.call_soon_threadsafe``, through a :class:`LoopWaker` that keeps at most one call
pending however fast the device runs (a device without a real clock runs as fast as the
CPU allows: it must not flood the loop). Everything they share with the loop is behind a
lock held for a copy of one block.

**In.** Each captured block (mixed down to mono) goes into a :class:`CaptureBuffer` of at
most ``CAPTURE_MAX_MS`` (2 s); the loop takes the blocks out and hands them to the engine's
audio callback (a non-blocking queue put). Overflow policy (the loop stalled for 2 s): the
oldest block is dropped and counted (``stats["capture_dropped_ms"]``): what the caller says
now matters more than what they said before the stall, as in the engine's inbound queue.
Blocks captured while no session is bound are dropped.

**Out.** Reply audio goes into a :class:`Playout`: the
:class:`~voice.transports.pacer.OutboundAudioPacer`'s buffer (prebuffer, silence between
replies and in underruns, ``clear`` on barge-in, at most 60 s held with the newest audio
dropped beyond that) without its clock: the output callback pulls one 20 ms frame per
block, so the device's clock paces playback.

**Playback position.** The engine truncates an interrupted reply to what the caller heard
(``_deliver_playback``). Here that is known, not estimated: each block the output callback
hands over is scheduled on PortAudio's stream clock, from the callback's
``outputBufferDacTime`` (when the block leaves the DAC), and counts as heard once that
time plus the block's length has passed. Blocks play back to back: one never starts
before the one before it has ended, so a device that takes several blocks at once and
reports no latency (PortAudio gives a DAC time of 0, or the callback's own time, as the
null ALSA device does) still has them heard one after another, 20 ms apart. A DAC time in
the past counts as now; one more than ``MAX_DAC_AHEAD_S`` ahead (a broken driver clock) as
that much. The loop reports at each callback and, in between, when the next block will have
been heard (``call_later``, with the stream clock related to ``clock()`` at each
callback), so the engine's figure is never more than one block behind. Positions are byte
offsets in the stream of reply audio, padding excluded, so a reply's played milliseconds
are exact to the block (20 ms). A reply starts at the engine's ``speaking``/``assistant``
message: the previous reply's tail still queued then is never counted for the new one. On
barge-in the buffered audio is dropped; what the device already holds (its latency,
~20-60 ms with ``latency="low"``) still plays.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from voice.transports.base import RealtimeTransport
from voice.transports.pacer import FRAME_MS, OutboundAudioPacer

if TYPE_CHECKING:
    from voice.session import LiveSession

logger = logging.getLogger(__name__)

__all__ = [
    "AudioDeviceError",
    "CaptureBuffer",
    "LocalAudioBackend",
    "LoopWaker",
    "Playout",
    "PortAudioUnavailable",
    "list_devices",
]

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 32
#: Captured audio held for the loop at most (then the oldest is dropped).
CAPTURE_MAX_MS = 2000
#: The furthest ahead a device's DAC time is believed (a broken driver's clock is not).
MAX_DAC_AHEAD_S = 2.0
#: A device delivering this much more audio than wall-clock time allows has no real clock.
FAST_CLOCK_RATIO = 1.5
FAST_CLOCK_GRACE_MS = 1000

#: A callback with a client message (``transcription``, ``speaking``, ``error``, ...).
MessageCallback = Callable[[dict[str, Any]], None]


class AudioDeviceError(RuntimeError):
    """A device cannot be used: none found, no such name, refused the rate or channels."""


class PortAudioUnavailable(AudioDeviceError):
    """The PortAudio library (or the sounddevice module) is not installed."""


def _portaudio() -> Any:
    """The ``sounddevice`` module, imported on first use: importing this module needs no
    PortAudio, only opening a device does."""
    try:
        return importlib.import_module("sounddevice")
    except ImportError:
        raise PortAudioUnavailable(
            "local audio needs the sounddevice package: pip install sounddevice"
        ) from None
    except OSError as error:  # sounddevice found no libportaudio
        raise PortAudioUnavailable(
            f"local audio needs the PortAudio library ({error}): install libportaudio2 "
            "(Debian, Ubuntu) or portaudio (Homebrew, Fedora)"
        ) from None


def list_devices() -> str:
    """PortAudio's device list, as ``python -m sounddevice`` prints it (``>``: the default
    input, ``<``: the default output)."""
    return str(_portaudio().query_devices())


def device_rate_ok(sample_rate: int) -> str | None:
    """Why ``sample_rate`` cannot be used (None: it can): the buffers work in 20 ms frames."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        return f"the sample rate must be {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
    if sample_rate % (1000 // FRAME_MS):
        return f"{sample_rate} Hz has no whole {FRAME_MS} ms frame (use a multiple of 50 Hz)"
    return None


class LoopWaker:
    """Runs ``callback`` on ``loop``, asked from any thread, with at most one run pending:
    a thread asking a thousand times before the loop gets to it costs one run. A request
    after the run started schedules another (nothing asked for is missed)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._lock = threading.Lock()
        self._pending = False

    def wake(self) -> None:
        with self._lock:
            if self._pending:
                return
            self._pending = True
        try:
            self._loop.call_soon_threadsafe(self._run)
        except RuntimeError:  # the loop is closed: the process is shutting down
            with self._lock:
                self._pending = False

    def _run(self) -> None:
        with self._lock:
            self._pending = False
        self._callback()


class CaptureBuffer:
    """Captured blocks between the device's thread (:meth:`put`) and the loop
    (:meth:`drain`): at most ``max_ms`` of audio; beyond it the oldest block is dropped and
    counted in ``dropped_ms``."""

    def __init__(self, sample_rate: int, *, max_ms: int = CAPTURE_MAX_MS) -> None:
        self._bytes_per_ms = sample_rate * 2 / 1000
        self._max_bytes = int(max_ms * self._bytes_per_ms)
        self._blocks: deque[bytes] = deque()
        self._size = 0
        self._lock = threading.Lock()
        self.dropped_ms = 0
        self.captured_ms = 0.0

    def put(self, pcm: bytes) -> None:
        with self._lock:
            self._blocks.append(pcm)
            self._size += len(pcm)
            self.captured_ms += len(pcm) / self._bytes_per_ms
            while self._size > self._max_bytes and len(self._blocks) > 1:
                dropped = self._blocks.popleft()
                self._size -= len(dropped)
                self.dropped_ms += round(len(dropped) / self._bytes_per_ms)

    def drain(self) -> list[bytes]:
        with self._lock:
            blocks = list(self._blocks)
            self._blocks.clear()
            self._size = 0
        return blocks


class _CountingPacer(OutboundAudioPacer):
    """The pacer's buffer, counting the reply audio it has handed out (``taken``, bytes;
    the silence that pads a reply's last frame is not reply audio). ``_take`` is where the
    pacer takes audio out of its buffer, ``_buffered - _head`` what it still holds."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.taken = 0

    def _take(self, size: int) -> bytes:
        piece = super()._take(size)
        self.taken += len(piece)
        return piece

    @property
    def queued_end(self) -> int:
        """The position the next reply audio pushed will have."""
        return self.taken + self._buffered - self._head


class Playout:
    """Reply audio between the loop (:meth:`push`, :meth:`clear`, :meth:`start_reply`...)
    and the device's output callback (:meth:`pull`), with what of it has been heard.

    Positions are bytes of reply audio since the start, over all replies: ``taken`` is
    what was handed to the device, ``heard`` what has left its DAC. Each block is scheduled
    on the stream clock: it starts at the device's DAC time, but never before the block
    before it has ended (blocks play back to back; a device that buffers several blocks and
    reports no latency, as the null ALSA device does, would otherwise have them all heard
    at once), nor more than ``MAX_DAC_AHEAD_S`` ahead. The pending list of (time heard,
    position) holds one entry per block of reply audio not yet heard: at most
    ``MAX_DAC_AHEAD_S`` of blocks, the oldest dropped beyond that (a later entry carries a
    later position, so only an intermediate report is lost)."""

    def __init__(
        self, sample_rate: int, *, prebuffer_ms: int = 80, max_buffer_ms: int = 60_000
    ) -> None:
        self.sample_rate = sample_rate
        self._pacer = _CountingPacer(
            sample_rate=sample_rate,
            send_frame=self._hand,
            prebuffer_ms=prebuffer_ms,
            max_buffer_ms=max_buffer_ms,
        )
        self.frame_s = FRAME_MS / 1000
        self._lock = threading.Lock()
        self._frame = self._pacer.silence
        limit = int(MAX_DAC_AHEAD_S / self.frame_s) + 2
        self._pending: deque[tuple[float, int]] = deque(maxlen=limit)
        self._heard = 0
        self._next_start = 0.0  # when the last block handed over ends, on the stream clock
        self._reply_start: int | None = None  # None: no reply to report on

    # --- the loop's side ----------------------------------------------------------------------

    def push(self, pcm: bytes) -> None:
        with self._lock:
            if self._reply_start is None:  # audio with no reply announced: it starts one
                self._reply_start = self._pacer.queued_end
            self._pacer.push(pcm)

    def end_of_response(self) -> None:
        with self._lock:
            self._pacer.end_of_response()

    def start_reply(self) -> None:
        """A new reply begins with the next audio pushed: its played time counts from
        there (the previous reply's queued tail is not part of it)."""
        with self._lock:
            self._reply_start = self._pacer.queued_end

    def clear(self) -> int:
        """Barge-in: drop the buffered audio; no reply is current until the next one.
        Returns the milliseconds dropped."""
        with self._lock:
            self._reply_start = None
            return self._pacer.clear()

    def played_ms(self) -> int | None:
        """How much of the current reply has been heard (None: no reply is current)."""
        with self._lock:
            if self._reply_start is None:
                return None
            played = max(0, self._heard - self._reply_start)
        return played * 1000 // (2 * self.sample_rate)

    @property
    def heard_ms(self) -> int:
        """All reply audio heard so far."""
        return self._heard * 1000 // (2 * self.sample_rate)

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {**self._pacer.describe(), "heard_ms": self.heard_ms}

    # --- the device's side (any thread) -------------------------------------------------------

    def pull(self, now: float, dac_time: float) -> tuple[bytes, bool]:
        """The next 20 ms frame, for a block the device says it will start playing at
        ``dac_time`` (``now``: the callback's time on the same clock); and whether more reply
        audio has been heard since the last :meth:`pull` or :meth:`advance`."""
        with self._lock:
            before = self._pacer.taken
            self._pacer.tick()
            frame = self._frame
            start = min(max(dac_time, self._next_start), now + MAX_DAC_AHEAD_S)
            self._next_start = start + self.frame_s
            if self._pacer.taken != before:
                self._pending.append((self._next_start, self._pacer.taken))
            return frame, self._advance(now)

    def advance(self, now: float) -> bool:
        """Count what has been heard by ``now`` (on the stream clock): between two
        callbacks, blocks end too. True when more reply audio has been heard."""
        with self._lock:
            return self._advance(now)

    def next_heard_at(self) -> float | None:
        """When the next block of reply audio will have been heard (stream clock)."""
        with self._lock:
            return self._pending[0][0] if self._pending else None

    def _advance(self, now: float) -> bool:
        heard = self._heard
        while self._pending and self._pending[0][0] <= now + 1e-9:
            heard = max(heard, self._pending.popleft()[1])
        moved = heard != self._heard
        self._heard = heard
        return moved

    def _hand(self, frame: bytes, skipped: int) -> None:
        self._frame = frame


def _stream_times(time_info: Any, clock: Callable[[], float]) -> tuple[float, float]:
    """(now, DAC time) of an output callback, on one clock (see the module docstring)."""
    now = float(getattr(time_info, "currentTime", 0.0) or 0.0)
    dac = float(getattr(time_info, "outputBufferDacTime", 0.0) or 0.0)
    if now <= 0:  # no stream clock at all: ours, and no latency
        now = clock()
        return now, now
    return now, min(max(dac, now), now + MAX_DAC_AHEAD_S)


class LocalAudioBackend(RealtimeTransport):
    """The machine's microphone and speakers as a transport (see the module docstring).

    :meth:`open` opens and starts the devices (``accept`` does if it was not called: call it
    first to report a device problem before a session starts); :meth:`close` stops them.
    ``on_message`` receives what a client would be told (transcripts, ``speaking``,
    errors): the command prints it. ``device`` arguments are PortAudio's: an index, a
    substring of the name, or None for the default. ``clock`` (seconds, monotonic) relates
    the stream's clock to the loop's between callbacks; tests stop it.
    """

    name = "local"

    def __init__(
        self,
        sample_rate: int = 16000,
        channels: int = 1,
        *,
        input_device: int | str | None = None,
        output_device: int | str | None = None,
        latency: float | str = "low",
        prebuffer_ms: int = 80,
        on_message: MessageCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        problem = device_rate_ok(sample_rate)
        if problem is not None:
            raise ValueError(problem)
        if not 1 <= channels <= MAX_CHANNELS:
            raise ValueError(f"channels must be 1-{MAX_CHANNELS}")
        self.sample_rate = sample_rate
        self.channels = channels
        self.input_device = input_device
        self.output_device = output_device
        self.latency = latency
        self.block_frames = sample_rate * FRAME_MS // 1000
        self.on_message = on_message
        self.clock = clock
        self.playout = Playout(sample_rate, prebuffer_ms=prebuffer_ms)
        self.capture = CaptureBuffer(sample_rate)
        self.input_name = ""
        self.output_name = ""
        self.stats: dict[str, int] = {
            "input_overflows": 0,
            "output_underflows": 0,
            "callback_errors": 0,
        }
        self._session: LiveSession | None = None
        self._reported_ms = 0  # of the current reply, last told to the engine
        self._streams: list[Any] = []
        self._capture_waker: LoopWaker | None = None
        self._playback_waker: LoopWaker | None = None
        self._opened_at = 0.0
        self._fast_clock_warned = False
        #: ``clock()`` minus the output stream's clock, as of the last callback.
        self._clock_offset = 0.0
        self._report_timer: asyncio.TimerHandle | None = None

    # --- devices --------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return bool(self._streams)

    async def open(self) -> None:
        """Open and start both devices (idempotent). Raises :class:`AudioDeviceError` with
        a message for people: which device, and what it refused."""
        if self._streams:
            return
        loop = asyncio.get_running_loop()
        self._capture_waker = LoopWaker(loop, self._deliver_captured)
        self._playback_waker = LoopWaker(loop, self._report_played)
        self._streams = await asyncio.to_thread(self._open_streams)
        self._opened_at = self.clock()

    def _open_streams(self) -> list[Any]:
        sd = _portaudio()
        self.input_name = self._check_device(sd, self.input_device, "input")
        self.output_name = self._check_device(sd, self.output_device, "output")
        options = {
            "samplerate": self.sample_rate,
            "channels": self.channels,
            "dtype": "int16",
            "blocksize": self.block_frames,
            "latency": self.latency,
        }
        streams: list[Any] = []
        try:
            streams.append(
                sd.InputStream(device=self.input_device, callback=self._on_input, **options)
            )
            streams.append(
                sd.OutputStream(device=self.output_device, callback=self._on_output, **options)
            )
            for stream in streams:
                stream.start()
        except (sd.PortAudioError, ValueError) as error:
            for stream in streams:
                _close_stream(stream)
            raise AudioDeviceError(f"the audio devices could not be started: {error}") from None
        return streams

    def _check_device(self, sd: Any, device: int | str | None, kind: str) -> str:
        """The device's name, once PortAudio has confirmed it takes our format."""
        which = f"the default {kind} device" if device is None else f"{kind} device {device!r}"
        try:
            info = sd.query_devices(device, kind=kind)
        except ValueError as error:  # no device of that name, or several
            raise AudioDeviceError(f"{error} (see --list-devices)") from None
        except sd.PortAudioError:
            raise AudioDeviceError(
                f"no {kind} device: PortAudio found no default {kind} "
                "(is a sound card or sound server available? see --list-devices)"
                if device is None
                else f"no {which} (see --list-devices)"
            ) from None
        check = sd.check_input_settings if kind == "input" else sd.check_output_settings
        try:
            check(device=device, channels=self.channels, dtype="int16", samplerate=self.sample_rate)
        except (sd.PortAudioError, ValueError) as error:
            raise AudioDeviceError(
                f"{which} ({info['name']}) cannot {'capture' if kind == 'input' else 'play'} "
                f"{self.channels} channel(s) of 16-bit audio at {self.sample_rate} Hz: {error}"
            ) from None
        return str(info["name"])

    async def close(self) -> None:
        """Stop and close both devices (what they hold is dropped: the session is over)."""
        streams, self._streams = self._streams, []
        self._session = None
        self._cancel_report_timer()
        for stream in streams:
            await asyncio.to_thread(_close_stream, stream)
        if streams:
            logger.info("local audio devices closed: %s", self.describe())

    def describe(self) -> dict[str, Any]:
        return {
            **self.stats,
            "captured_ms": round(self.capture.captured_ms),
            "capture_dropped_ms": self.capture.dropped_ms,
            "playout": self.playout.describe(),
        }

    # --- the transport interface ----------------------------------------------------------------

    def transport_sample_rate(self, session: LiveSession) -> int | None:
        return self.sample_rate

    async def accept(self, session: LiveSession, connection: Any) -> None:
        if self._session is not None and self._session.id != session.id:
            raise RuntimeError("the local audio devices carry one session at a time")
        await self.open()
        self.capture.drain()  # what was captured before the session is not the caller's turn
        self._session = session

    async def send_audio(self, session: LiveSession, audio: bytes) -> None:
        if self._is_current(session):
            self.playout.push(audio)

    async def send_message(self, session: LiveSession, message: dict[str, Any]) -> None:
        if not self._is_current(session):
            return
        if message.get("type") == "speaking" and message.get("who") == "assistant":
            if message.get("speaking"):
                self.playout.start_reply()
                self._reported_ms = 0
        if self.on_message is not None:
            self.on_message(message)

    async def interrupt(self, session: LiveSession) -> None:
        if self._is_current(session):
            self.playout.clear()
            self._reported_ms = 0

    async def end_of_response(self, session: LiveSession) -> None:
        if self._is_current(session):
            self.playout.end_of_response()

    async def disconnect(self, session: LiveSession) -> None:
        if self._is_current(session):
            self._session = None
            self.playout.clear()

    def _is_current(self, session: LiveSession) -> bool:
        return self._session is not None and self._session.id == session.id

    # --- on the loop, woken by the callbacks -----------------------------------------------------

    def _deliver_captured(self) -> None:
        blocks = self.capture.drain()
        session = self._session
        if session is None:
            return
        for block in blocks:
            self._deliver_audio(session, block)
        self._check_clock()

    def _check_clock(self) -> None:
        """A device that captures much faster than real time has no clock (a file or null
        ALSA device, say): playback is not real either. Said once."""
        if self._fast_clock_warned:
            return
        wall_ms = (self.clock() - self._opened_at) * 1000
        if self.capture.captured_ms > wall_ms * FAST_CLOCK_RATIO + FAST_CLOCK_GRACE_MS:
            self._fast_clock_warned = True
            logger.warning(
                "the input device delivered %.0f ms of audio in %.0f ms: it runs faster than "
                "real time (no device clock?)",
                self.capture.captured_ms,
                wall_ms,
            )

    def _report_played(self) -> None:
        """Tell the engine how much of the current reply has been heard: woken by the
        output callback, and again when the next block will have been heard (blocks end
        between callbacks too: a device may call back for several blocks at once)."""
        self._cancel_report_timer()
        now = self.clock() - self._clock_offset
        self.playout.advance(now)
        session = self._session
        played = self.playout.played_ms()
        if session is not None and played is not None and played > self._reported_ms:
            self._reported_ms = played
            self._deliver_playback(session, played)
        heard_at = self.playout.next_heard_at()
        if heard_at is not None and self._streams:
            self._report_timer = asyncio.get_running_loop().call_later(
                max(0.0, heard_at - now), self._report_played
            )

    def _cancel_report_timer(self) -> None:
        timer, self._report_timer = self._report_timer, None
        if timer is not None:
            timer.cancel()

    # --- on PortAudio's threads -----------------------------------------------------------------

    def _on_input(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        try:
            if status and status.input_overflow:
                self.stats["input_overflows"] += 1
            if self.channels == 1:
                pcm = indata.tobytes()
            else:
                pcm = indata.mean(axis=1).astype("<i2").tobytes()
            self.capture.put(pcm)
            if self._capture_waker is not None:
                self._capture_waker.wake()
        except Exception:
            self._callback_failed("input")

    def _on_output(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        try:
            if status and status.output_underflow:
                self.stats["output_underflows"] += 1
            now, dac_time = _stream_times(time_info, self.clock)
            self._clock_offset = self.clock() - now
            frame, moved = self.playout.pull(now, dac_time)
            samples = np.frombuffer(frame, dtype="<i2")
            if samples.size != frames:  # PortAudio keeps the blocksize asked for; never rely
                fitted = np.zeros(frames, dtype="<i2")
                fitted[: min(frames, samples.size)] = samples[:frames]
                samples = fitted
            outdata[:] = samples.reshape(-1, 1)
            if moved and self._playback_waker is not None:
                self._playback_waker.wake()
        except Exception:
            outdata.fill(0)
            self._callback_failed("output")

    def _callback_failed(self, kind: str) -> None:
        self.stats["callback_errors"] += 1
        if self.stats["callback_errors"] == 1:
            logger.exception("the %s audio callback failed", kind)


def _close_stream(stream: Any) -> None:
    try:
        stream.abort()
    except Exception:
        logger.debug("aborting an audio stream failed", exc_info=True)
    try:
        stream.close()
    except Exception:
        logger.debug("closing an audio stream failed", exc_info=True)
