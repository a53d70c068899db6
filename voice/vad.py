"""An energy voice-activity detector for PCM16 mono: where speech starts and ends.

Framework-free (numpy only; never Django). One :class:`EnergyVad` per session and
direction; like everything in ``voice.audio`` it is not thread-safe and needs not be.

The algorithm, per ``frame_ms`` frame (default 20 ms), vectorised over the frames of a push:

1. **Level**: the frame's RMS in dBFS (full scale 32768), clamped to [-96, 0].
2. **Noise floor**: the lowest frame level of about the last ``floor_window_ms`` (default 5 s),
   tracked as the minimum of ten block minimums, so it follows a quieter room at once and a
   louder one within the window. Until the first window has passed, the floor is at most
   ``threshold_dbfs - margin_db``, so at the start ``threshold_dbfs`` alone decides: a caller
   who speaks in the very first frames is heard, and the floor is learned meanwhile.
3. **Voiced**: the level is above ``max(threshold_dbfs, floor + margin_db)``, the floor as it
   was before the frame. The fixed threshold keeps a quiet room's breathing and hiss out; the
   margin keeps a steady louder background (a fan, a car) out once the floor has learned it.
4. **Start**: ``start_ms`` of consecutive voiced frames (clicks and knocks are shorter).
   **End** (hangover): ``silence_ms`` of consecutive unvoiced frames during speech.

Events carry the boundary itself, not the moment it was detected: a start is dated at the
first frame of the voiced run (detected ``start_ms`` later), an end at the end of the last
voiced frame (detected ``silence_ms`` later). Durations are rounded up to whole frames.

Defaults suit browser microphone speech (getUserMedia with its noise suppression and gain
control): speech at -35..-15 dBFS, rooms below -55 dBFS. A steady tone or a continuous sound
longer than the floor window is eventually taken for background: speech has pauses.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Final, Literal, NamedTuple

import numpy as np

__all__ = [
    "DEFAULT_FLOOR_WINDOW_MS",
    "DEFAULT_FRAME_MS",
    "DEFAULT_MARGIN_DB",
    "DEFAULT_SILENCE_MS",
    "DEFAULT_START_MS",
    "DEFAULT_THRESHOLD_DBFS",
    "EnergyVad",
    "SpeechCheck",
    "VadEvent",
]

DEFAULT_FRAME_MS: Final = 20
DEFAULT_THRESHOLD_DBFS: Final = -45.0
DEFAULT_MARGIN_DB: Final = 10.0
DEFAULT_START_MS: Final = 80
DEFAULT_SILENCE_MS: Final = 600
DEFAULT_FLOOR_WINDOW_MS: Final = 5000

FLOOR_BLOCKS: Final = 10
SILENCE_DBFS: Final = -96.0
_FULL_SCALE_SQUARED: Final = 32768.0 * 32768.0
_MIN_MEAN_SQUARE: Final = _FULL_SCALE_SQUARED * 10.0 ** (SILENCE_DBFS / 10.0)
_PCM16: Final = np.dtype("<i2")

VadEventKind = Literal["start", "end"]
#: A second opinion on a frame loud enough to be speech: its PCM16 bytes → is it speech?
SpeechCheck = Callable[[bytes], bool]


class VadEvent(NamedTuple):
    """A speech boundary. Times are milliseconds from the first sample pushed."""

    kind: VadEventKind
    #: Where speech started (the first voiced frame) or ended (after the last voiced frame).
    at_ms: float
    #: When the VAD knew: ``start_ms`` after a start, ``silence_ms`` after an end.
    detected_ms: float
    #: ``at_ms`` as a sample index, for slicing the audio that was pushed.
    at_sample: int


def _positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _finite(name: str, value: object, *, low: float, high: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise ValueError(f"{name} must be a number in {low:g}..{high:g}, got {value!r}")
    return float(value)


class EnergyVad:
    """Energy VAD over PCM16 mono at ``sample_rate``, fed with :meth:`push` in any chunk sizes.

    Parameters:

    - ``threshold_dbfs``: a frame quieter than this is never speech (default -45 dBFS).
    - ``margin_db``: a frame must also be this much louder than the noise floor (default 10).
    - ``start_ms``: voiced time needed to declare a start (default 80 ms).
    - ``silence_ms``: unvoiced time that ends speech, the hangover (default 600 ms).
    - ``frame_ms``: analysis frame (default 20 ms; 10 for finer boundaries).
    - ``floor_window_ms``: how far back the noise floor looks (default 5000 ms).
    - ``speech_check``: called with each frame (PCM16 bytes) that passes the level test;
      the frame is voiced only if it returns true. A classifier such as WebRTC's VAD goes
      here: the level test keeps out what is too quiet, the check what is loud but not
      speech (music, a tone, a slammed door). Called for loud frames only, in order.

    ``threshold_dbfs``, ``margin_db``, ``start_ms`` and ``silence_ms`` may be changed with
    :meth:`tune` between pushes. Chunks need not be whole frames or even whole samples: what
    does not fill a frame waits for the next push (at most one frame is held).
    """

    __slots__ = (
        "_block_count",
        "_block_min",
        "_blocks",
        "_blocks_min",
        "_frames",
        "_pending",
        "_silence_frames",
        "_silent_run",
        "_speech_check",
        "_start_frames",
        "_voiced_run",
        "floor_window_ms",
        "frame_ms",
        "frame_samples",
        "in_speech",
        "level_dbfs",
        "margin_db",
        "sample_rate",
        "silence_ms",
        "start_ms",
        "threshold_dbfs",
        "utterance_end_sample",
        "utterance_start_sample",
    )

    def __init__(
        self,
        sample_rate: int,
        *,
        threshold_dbfs: float = DEFAULT_THRESHOLD_DBFS,
        margin_db: float = DEFAULT_MARGIN_DB,
        start_ms: int = DEFAULT_START_MS,
        silence_ms: int = DEFAULT_SILENCE_MS,
        frame_ms: int = DEFAULT_FRAME_MS,
        floor_window_ms: int = DEFAULT_FLOOR_WINDOW_MS,
        speech_check: SpeechCheck | None = None,
    ) -> None:
        self._speech_check = speech_check
        self.sample_rate = _positive_int("sample_rate", sample_rate)
        self.frame_ms = _positive_int("frame_ms", frame_ms)
        if self.frame_ms > 100:
            raise ValueError(f"frame_ms must be at most 100, got {frame_ms!r}")
        self.frame_samples = max(1, round(self.sample_rate * self.frame_ms / 1000))
        self.floor_window_ms = _positive_int("floor_window_ms", floor_window_ms)
        # Placeholders: tune() sets and checks them.
        self.threshold_dbfs = DEFAULT_THRESHOLD_DBFS
        self.margin_db = DEFAULT_MARGIN_DB
        self.start_ms = DEFAULT_START_MS
        self.silence_ms = DEFAULT_SILENCE_MS
        self._start_frames = 1
        self._silence_frames = 1
        self.tune(
            threshold_dbfs=threshold_dbfs,
            margin_db=margin_db,
            start_ms=start_ms,
            silence_ms=silence_ms,
        )
        self._pending = bytearray()
        self._frames = 0  # frames analysed so far
        # The noise floor: minimums of the last FLOOR_BLOCKS complete blocks, and of the
        # block being filled. The window starts full of the seed (see the module docstring).
        block_frames = self.floor_window_ms / self.frame_ms / FLOOR_BLOCKS
        self._block_count = max(1, round(block_frames))
        seed = self.threshold_dbfs - self.margin_db
        self._blocks: deque[float] = deque([seed] * FLOOR_BLOCKS, maxlen=FLOOR_BLOCKS)
        self._blocks_min = seed
        self._block_min = math.inf
        self._voiced_run = 0
        self._silent_run = 0
        #: Whether the caller is speaking (a start was reported and no end yet).
        self.in_speech = False
        #: The level of the last frame analysed.
        self.level_dbfs = SILENCE_DBFS
        #: The current or last utterance: first sample of speech, and the sample after its
        #: last voiced frame (None while the utterance goes on, or before the first one).
        self.utterance_start_sample: int | None = None
        self.utterance_end_sample: int | None = None

    def __repr__(self) -> str:
        return (
            f"EnergyVad({self.sample_rate}, threshold_dbfs={self.threshold_dbfs:g}, "
            f"margin_db={self.margin_db:g}, start_ms={self.start_ms}, "
            f"silence_ms={self.silence_ms}, frame_ms={self.frame_ms})"
        )

    def tune(
        self,
        *,
        threshold_dbfs: float | None = None,
        margin_db: float | None = None,
        start_ms: int | None = None,
        silence_ms: int | None = None,
    ) -> None:
        """Change detection parameters (None keeps one); they apply from the next frame."""
        if threshold_dbfs is not None:
            self.threshold_dbfs = _finite(
                "threshold_dbfs", threshold_dbfs, low=SILENCE_DBFS, high=0.0
            )
        if margin_db is not None:
            self.margin_db = _finite("margin_db", margin_db, low=0.0, high=60.0)
        if start_ms is not None:
            self.start_ms = _positive_int("start_ms", start_ms)
            self._start_frames = max(1, math.ceil(self.start_ms / self.frame_ms))
        if silence_ms is not None:
            self.silence_ms = _positive_int("silence_ms", silence_ms)
            self._silence_frames = max(1, math.ceil(self.silence_ms / self.frame_ms))

    # --- state --------------------------------------------------------------------------------

    @property
    def samples_analysed(self) -> int:
        """Samples in whole frames analysed so far (a partial frame waits for more audio)."""
        return self._frames * self.frame_samples

    @property
    def position_ms(self) -> float:
        return self._ms(self.samples_analysed)

    @property
    def noise_floor_dbfs(self) -> float:
        return min(self._blocks_min, self._block_min)

    @property
    def speech_threshold_dbfs(self) -> float:
        """The level a frame must exceed now to count as voiced."""
        return max(self.threshold_dbfs, self.noise_floor_dbfs + self.margin_db)

    @property
    def utterance_start_ms(self) -> float | None:
        sample = self.utterance_start_sample
        return None if sample is None else self._ms(sample)

    @property
    def utterance_end_ms(self) -> float | None:
        sample = self.utterance_end_sample
        return None if sample is None else self._ms(sample)

    def _ms(self, samples: int) -> float:
        return samples * 1000.0 / self.sample_rate

    # --- analysis -----------------------------------------------------------------------------

    def push(self, pcm: bytes | bytearray | memoryview) -> list[VadEvent]:
        """Analyse the whole frames now available; the speech boundaries they reveal, in order."""
        self._pending += pcm
        frame_bytes = 2 * self.frame_samples
        count = len(self._pending) // frame_bytes
        if count == 0:
            return []
        used = count * frame_bytes
        whole = self._pending[:used]  # a copy: the pending buffer can then shrink
        del self._pending[:used]
        frames = np.frombuffer(whole, dtype=_PCM16).reshape(count, self.frame_samples)
        as_float = frames.astype(np.float64)
        mean_square = np.einsum("ij,ij->i", as_float, as_float) / self.frame_samples
        levels = 10.0 * np.log10(np.maximum(mean_square, _MIN_MEAN_SQUARE) / _FULL_SCALE_SQUARED)
        np.clip(levels, SILENCE_DBFS, 0.0, out=levels)
        events: list[VadEvent] = []
        check = self._speech_check
        for index, level in enumerate(levels.tolist()):
            voiced = level > self.speech_threshold_dbfs
            if voiced and check is not None:
                voiced = bool(check(frames[index].tobytes()))
            event = self._frame(level, voiced)
            if event is not None:
                events.append(event)
        return events

    def _frame(self, level: float, voiced: bool) -> VadEvent | None:
        self._update_floor(level)
        self.level_dbfs = level
        start = self._frames * self.frame_samples
        self._frames += 1
        end = start + self.frame_samples
        if not self.in_speech:
            if not voiced:
                self._voiced_run = 0
                return None
            self._voiced_run += 1
            if self._voiced_run < self._start_frames:
                return None
            onset = end - self._voiced_run * self.frame_samples
            self.in_speech = True
            self._silent_run = 0
            self.utterance_start_sample = onset
            self.utterance_end_sample = None
            return VadEvent("start", self._ms(onset), self._ms(end), onset)
        if voiced:
            self._silent_run = 0
            return None
        self._silent_run += 1
        if self._silent_run < self._silence_frames:
            return None
        offset = end - self._silent_run * self.frame_samples
        self.in_speech = False
        self._voiced_run = 0
        self.utterance_end_sample = offset
        return VadEvent("end", self._ms(offset), self._ms(end), offset)

    def _update_floor(self, level: float) -> None:
        if level < self._block_min:
            self._block_min = level
        if (self._frames + 1) % self._block_count == 0:  # this frame completes a block
            self._blocks.append(self._block_min)
            self._blocks_min = min(self._blocks)
            self._block_min = math.inf
