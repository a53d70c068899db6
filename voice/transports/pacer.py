"""Outbound audio pacing for phone calls: 20 ms frames on a steady clock.

A phone network plays what arrives when it arrives: a burst of reply audio overflows the far
end's jitter buffer, a gap is heard as a click. :class:`OutboundAudioPacer` takes the
engine's reply audio (PCM16 mono at the call's codec rate, in chunks of any size) and hands
exactly one 20 ms frame to ``send_frame`` every 20 ms of wall-clock time:

- **Prebuffer**: a reply starts playing once ~80 ms of it is buffered (or the reply ended,
  for a shorter one), so the first frames are not followed by an underrun.
- **Silence fill**: between replies, and in an underrun, a frame of silence goes out, so
  the far end never starves (PSTN gateways and NATs expect a steady 50 packets a second).
- **Barge-in**: :meth:`clear` drops everything buffered at once; the next tick sends
  silence.
- **Bounded**: at most ``max_buffer_ms`` is held (default 60 s, a very long reply).
  Overflow policy: the newest audio is dropped and counted (``stats["dropped_ms"]``) — the
  engine's own outbound queue is bounded too, so this only trips if a provider streams far
  faster than real time for a minute.
- **Playback**: ``on_played(ms)`` reports how much of the current reply has gone out on the
  wire (the caller hears it one jitter buffer later), so the engine truncates the model's
  memory of an interrupted reply to what was really sent, not to wall-clock guesses.

The clock (:class:`FrameClock`, shared with the WebRTC track) is ``loop.time()``-based with
absolute deadlines: a late tick does not shift the ones after it. If the loop stalls for more
than ``MAX_CATCH_UP_FRAMES`` frames, the clock resynchronises instead of sending a burst (the
RTP timestamp still advances by the gap, so the far end's jitter buffer sees a clean jump).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

FRAME_MS = 20
FRAME_S = FRAME_MS / 1000
MAX_CATCH_UP_FRAMES = 5  # a stall longer than 100 ms is skipped, not replayed as a burst

#: ``send_frame(pcm, skipped_frames)``: one 20 ms frame; ``skipped_frames`` frames of time
#: were skipped before it (a stalled loop), for the RTP timestamp.
SendFrame = Callable[[bytes, int], None]


class FrameClock:
    """Absolute 20 ms deadlines on the loop's clock, from ``start`` (the first frame's): a late
    frame does not shift the ones after it, and a stall is skipped rather than caught up."""

    def __init__(self, start: float) -> None:
        self.deadline = start

    def next_deadline(self) -> float:
        """The next frame's deadline (the one after the current)."""
        self.deadline += FRAME_S
        return self.deadline

    def skip_stall(self, now: float) -> int:
        """At ``now``, more than ``MAX_CATCH_UP_FRAMES`` frames past the deadline (a stalled
        loop): the whole frames of lost time are skipped (the deadline moves past them) and
        their count returned. Otherwise 0."""
        late = now - self.deadline
        if late <= MAX_CATCH_UP_FRAMES * FRAME_S:
            return 0
        skipped = int(late / FRAME_S)
        self.deadline += skipped * FRAME_S
        return skipped


class OutboundAudioPacer:
    def __init__(
        self,
        *,
        sample_rate: int,
        send_frame: SendFrame,
        prebuffer_ms: int = 80,
        max_buffer_ms: int = 60_000,
        fill_with_silence: bool = True,
        on_played: Callable[[int], None] | None = None,
    ) -> None:
        if sample_rate % (1000 // FRAME_MS):
            raise ValueError(f"sample rate {sample_rate} has no whole 20 ms frame")
        self.sample_rate = sample_rate
        self.frame_bytes = sample_rate * FRAME_MS // 1000 * 2
        self.silence = bytes(self.frame_bytes)
        self.prebuffer_bytes = max(1, prebuffer_ms // FRAME_MS) * self.frame_bytes
        self.max_buffer_bytes = max_buffer_ms * sample_rate // 1000 * 2
        self.fill_with_silence = fill_with_silence
        self._send_frame = send_frame
        self._on_played = on_played
        self._chunks: deque[bytes] = deque()
        self._buffered = 0  # bytes in _chunks
        self._head = 0  # bytes of _chunks[0] already sent
        self._playing = False  # past the prebuffer of the current reply
        self._reply_ended = False  # end_of_response seen for the buffered reply
        self._played_bytes = 0  # of the current reply
        self._paused = False  # on hold: nothing is sent at all
        self._task: asyncio.Task[None] | None = None
        self.stats: dict[str, int] = {
            "frames_sent": 0,
            "audio_frames": 0,
            "silence_frames": 0,
            "underruns": 0,
            "dropped_ms": 0,
            "cleared_ms": 0,
            "stalls": 0,
        }

    # --- called by the transport (never block) -----------------------------------------------

    def push(self, pcm: bytes) -> None:
        """Reply audio, PCM16 mono at ``sample_rate``. Never blocks."""
        if not pcm:
            return
        if self._buffered + len(pcm) > self.max_buffer_bytes:
            self.stats["dropped_ms"] += len(pcm) * 1000 // (2 * self.sample_rate)
            return
        if self._buffered == 0 and not self._playing:
            self._reply_ended = False
        self._chunks.append(pcm)
        self._buffered += len(pcm)

    def end_of_response(self) -> None:
        """The reply is complete: play what is buffered even if below the prebuffer."""
        self._reply_ended = True

    def clear(self) -> int:
        """Barge-in: drop everything buffered. Returns the milliseconds dropped."""
        dropped = self._buffered - self._head
        self._chunks.clear()
        self._buffered = self._head = 0
        self._playing = False
        self._reply_ended = False
        self._played_bytes = 0
        dropped_ms = dropped * 1000 // (2 * self.sample_rate)
        self.stats["cleared_ms"] += dropped_ms
        return dropped_ms

    def pause(self, paused: bool) -> None:
        """On hold (the caller's side said sendonly/inactive): send nothing; reply audio
        that arrives meanwhile is dropped, as the caller cannot hear it."""
        self._paused = paused
        if paused:
            self.clear()

    @property
    def buffered_ms(self) -> int:
        return (self._buffered - self._head) * 1000 // (2 * self.sample_rate)

    # --- the clock -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rtp-pacer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        clock = FrameClock(loop.time())
        while True:
            skipped = clock.skip_stall(loop.time())
            if skipped:
                self.stats["stalls"] += 1
            try:
                self.tick(skipped)
            except Exception:
                # A send that fails (the socket closed under us) must not stop the clock of a
                # call that is being torn down anyway; logged once per kind.
                logger.warning("sending an RTP frame failed", exc_info=True)
            await asyncio.sleep(max(0.0, clock.next_deadline() - loop.time()))

    def tick(self, skipped: int = 0) -> None:
        """One 20 ms frame out (public for tests: drives the pacer without a clock)."""
        if self._paused:
            return
        frame = self._next_frame()
        if frame is None:
            if not self.fill_with_silence:
                return
            frame = self.silence
            self.stats["silence_frames"] += 1
        else:
            self.stats["audio_frames"] += 1
        self.stats["frames_sent"] += 1
        self._send_frame(frame, skipped)
        if frame is not self.silence and self._on_played is not None:
            self._on_played(self._played_bytes * 1000 // (2 * self.sample_rate))

    def _next_frame(self) -> bytes | None:
        available = self._buffered - self._head
        if not self._playing:
            if available == 0 or (available < self.prebuffer_bytes and not self._reply_ended):
                return None
            self._playing = True
            self._played_bytes = 0
        if available == 0:
            # Drained: the reply is over, or an underrun (the provider is slower than real
            # time); either way the next audio is prebuffered again.
            if not self._reply_ended:
                self.stats["underruns"] += 1
            self._playing = False
            self._reply_ended = False
            return None
        frame = self._take(self.frame_bytes)
        if len(frame) < self.frame_bytes:
            frame += bytes(self.frame_bytes - len(frame))  # the reply's last partial frame
        self._played_bytes += self.frame_bytes
        return frame

    def _take(self, size: int) -> bytes:
        parts: list[bytes] = []
        while size > 0 and self._chunks:
            chunk = self._chunks[0]
            piece = chunk[self._head : self._head + size]
            parts.append(piece)
            size -= len(piece)
            self._head += len(piece)
            if self._head >= len(chunk):
                self._chunks.popleft()
                self._buffered -= len(chunk)
                self._head = 0
        return b"".join(parts)

    def describe(self) -> dict[str, Any]:
        return {**self.stats, "buffered_ms": self.buffered_ms}
