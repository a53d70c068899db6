"""Audio helpers for the hot path: framing, levels and streaming resampling.

Framework-free (numpy and soxr only; never Django). The only audio format is PCM16 mono,
little-endian. Every object here is per session and per direction; none is thread-safe,
and none needs to be: one session task owns each of them.

Resampling quality, measured by ``bench/bench_audio.py`` (soxr 1.1, libsoxr 0.1.3; 20 ms
chunks; see bench/README.md for the method). Delay is a click in, a click out: worst case
over 32 click positions (mean in brackets), i.e. the buffering a constant-rate player needs::

    delay ms  16k>24k  24k>16k  8k>24k     24k>8k      48k>24k     44.1k>24k
    VHQ       76 (67)  76 (67)  153 (144)  153 (144)   37 (27)     36 (27)
    HQ        37 (27)  37 (27)  73 (64)    73 (64)     38 (27)     38 (29)
    MQ        37 (28)  37 (28)  75 (66)    75 (66)     39 (30)     39 (29)
    LQ        20 (12)  20 (12)  40 (31)    40 (31)     20 (10)     20 (11)
    QQ        0.1      0.1      0.2        21/32 lost  16/32 lost  0.1

    quality   1 kHz -6 dBFS tone: level, largest spur  passband (within 0.5 dB)  alias
    VHQ-MQ    +-0.000 dB, int16 floor (-92..-102 dBc)  0.47 x lower rate         -103 dB
    LQ        +-0.000 dB, int16 floor (-92..-102 dBc)  0.38 x (-3 dB at 0.41 x)  -103 dB
    QQ        -0.04 dB, -51 dBc (8k>24k images)        0.30 x                    0 dB

``LQ`` is the default: the lowest delay of the settings that filter (the 1 kHz tone's level
is exact and its spurs are those of the int16 input itself; a tone between the two Nyquist
frequencies is 103 dB down). Its price is a narrower passband: flat to 6.1 kHz at 16 kHz
and 3.0 kHz at 8 kHz (3.4 kHz is 8 dB down), which speech can spare. ``QQ`` is cubic
interpolation with no anti-alias filter: resampling 24 kHz -> 8 kHz, a 5.6 kHz tone comes
out at full level folded to 2.4 kHz (TTS sibilants would land in the telephone band), and
clicks between output samples vanish. ``MQ`` is no faster than ``HQ`` on 20 ms chunks.

soxr emits output in blocks, not per call: ``StreamResampler.process`` may return b"" for
one chunk and a double-length burst for the next (LQ at 16k -> 24k returns 0, 900, then
450 samples per 20 ms chunk with a 900 every 15th; 480 would be one chunk's worth).
Consumers that need fixed frames must re-frame.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import soxr

__all__ = [
    "DEFAULT_QUALITY",
    "MAX_SAMPLE_RATE",
    "SILENCE_DBFS",
    "AudioFormatError",
    "LevelThrottle",
    "Pcm16Framer",
    "QUALITIES",
    "Quality",
    "StreamResampler",
    "measure_click_delays_ms",
    "rms_dbfs",
]

Quality = Literal["VHQ", "HQ", "MQ", "LQ", "QQ"]
QUALITIES: Final[tuple[Quality, ...]] = ("VHQ", "HQ", "MQ", "LQ", "QQ")
DEFAULT_QUALITY: Final[Quality] = "LQ"

MAX_SAMPLE_RATE: Final = 192_000
DEFAULT_MAX_FRAME_BYTES: Final = 256 * 1024
SILENCE_DBFS: Final = -96.0
FULL_SCALE: Final = 32768.0

_PCM16: Final = np.dtype("<i2")
_TO_FLOAT: Final = np.float32(1.0 / FULL_SCALE)
_TO_PCM: Final = np.float32(FULL_SCALE)
_EMPTY_FLOAT: Final = np.zeros(0, dtype=np.float32)
_LOST_CLICK: Final = 32767 // 10  # an output peak below a tenth of the click: the click is lost


class AudioFormatError(ValueError):
    """Audio that is not PCM16 mono little-endian whole samples, or a frame that is too big."""


def _check_rate(name: str, rate: object) -> int:
    if isinstance(rate, bool) or not isinstance(rate, int) or not 0 < rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"{name} must be an int in 1..{MAX_SAMPLE_RATE}, got {rate!r}")
    return rate


def _samples(pcm: bytes | bytearray | memoryview) -> npt.NDArray[np.int16]:
    """View PCM16 little-endian bytes as int16 samples (no copy on little-endian hosts)."""
    if len(pcm) % 2:
        raise AudioFormatError(f"PCM16 needs whole 2-byte samples, got {len(pcm)} bytes")
    return np.frombuffer(pcm, dtype=_PCM16).astype(np.int16, copy=False)


class Pcm16Framer:
    """Turns transport frames into whole PCM16 samples, one per session and direction.

    Transports may split a sample across frames: an odd trailing byte is carried over to
    the next push. A frame larger than ``max_frame_bytes`` is rejected with
    :class:`AudioFormatError` and leaves the framer unchanged, so the session can answer
    with an error and carry on.
    """

    __slots__ = ("_carry", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if (
            isinstance(max_frame_bytes, bool)
            or not isinstance(max_frame_bytes, int)
            or max_frame_bytes < 1
        ):
            raise ValueError(f"max_frame_bytes must be a positive int, got {max_frame_bytes!r}")
        self.max_frame_bytes = max_frame_bytes
        self._carry = b""

    def push(self, data: bytes | bytearray | memoryview) -> bytes:
        """Return the whole samples available after ``data`` (possibly b"")."""
        if isinstance(data, memoryview):
            size = data.nbytes
        elif isinstance(data, bytes | bytearray):
            size = len(data)
        else:
            raise AudioFormatError(f"audio frames must be bytes, got {type(data).__name__}")
        if size > self.max_frame_bytes:
            raise AudioFormatError(
                f"audio frame of {size} bytes exceeds the limit of {self.max_frame_bytes} bytes"
            )
        if size == 0:
            return b""
        buffer = self._carry + bytes(data) if self._carry else bytes(data)
        if len(buffer) % 2:
            self._carry = buffer[-1:]
            return buffer[:-1]
        self._carry = b""
        return buffer

    def reset(self) -> None:
        """Drop a carried byte (the stream restarted)."""
        self._carry = b""


def rms_dbfs(pcm: bytes | bytearray | memoryview) -> float:
    """RMS level of PCM16 audio in dBFS (full scale 32768), clamped to [-96, 0].

    Empty input and digital silence give -96.0.
    """
    samples = _samples(pcm)
    if samples.size == 0:
        return SILENCE_DBFS
    as_float = samples.astype(np.float64)
    mean_square = float(np.dot(as_float, as_float)) / samples.size
    if mean_square <= 0.0:
        return SILENCE_DBFS
    level = 10.0 * math.log10(mean_square / (FULL_SCALE * FULL_SCALE))
    return min(0.0, max(SILENCE_DBFS, level))


class LevelThrottle:
    """True at most once per ``interval_s``; one instance per session and direction.

    Times are seconds from a monotonic clock (``loop.time()``); the caller passes them in.
    """

    __slots__ = ("_next_due", "interval_s")

    # Frame times are float sums (ten 0.02 steps give 0.19999999999999998): 1 ns of slack.
    _SLACK_S: Final = 1e-9

    def __init__(self, interval_s: float = 0.1) -> None:
        if not interval_s >= 0.0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s!r}")
        self.interval_s = interval_s
        self._next_due = -math.inf

    def due(self, now: float) -> bool:
        if now + self._SLACK_S < self._next_due:
            return False
        self._next_due = now + self.interval_s
        return True


class StreamResampler:
    """Stateful streaming PCM16 resampler (soxr), one per session and direction.

    ``process`` keeps filter state between calls, so a signal fed in 20 ms chunks comes out
    the same as one fed in a single call (only the flushed tail differs in where it is
    returned). ``flush`` returns the held-back tail and readies the stream for a new
    utterance; ``reset`` drops everything held back (barge-in: stale assistant audio must
    not leak into the next reply). Equal rates pass audio through without soxr.

    soxr runs with float32 I/O and the conversion to and from int16 happens here: soxr's
    int16 output is dithered with a per-stream random seed, so the same input gave different
    bytes on every run and digital silence came out as +-1 LSB noise. This way output is
    deterministic and silence stays silence.
    """

    __slots__ = ("_stream", "in_rate", "out_rate", "quality")

    def __init__(self, in_rate: int, out_rate: int, *, quality: Quality = DEFAULT_QUALITY) -> None:
        self.in_rate = _check_rate("in_rate", in_rate)
        self.out_rate = _check_rate("out_rate", out_rate)
        if quality not in QUALITIES:
            raise ValueError(f"quality must be one of {', '.join(QUALITIES)}, got {quality!r}")
        self.quality: Quality = quality
        self._stream: soxr.ResampleStream | None = None
        if in_rate != out_rate:
            self._stream = soxr.ResampleStream(
                in_rate, out_rate, 1, dtype="float32", quality=quality
            )

    def __repr__(self) -> str:
        return f"StreamResampler({self.in_rate}, {self.out_rate}, quality={self.quality!r})"

    @property
    def is_passthrough(self) -> bool:
        return self._stream is None

    @property
    def delay_ms(self) -> float:
        """Worst-case delay this configuration adds on 20 ms chunks (a click in, a click out).

        Measured with :func:`measure_click_delays_ms` on first use per (rates, quality),
        which takes a millisecond or two, then cached; 0.0 for passthrough. For logs and
        metrics at session start, not for the per-frame path.
        """
        if self._stream is None:
            return 0.0
        return _worst_click_delay_ms(self.in_rate, self.out_rate, self.quality)

    def process(self, pcm: bytes | bytearray | memoryview) -> bytes:
        """Resample a chunk of whole samples; may return b"" while soxr fills a block."""
        samples = _samples(pcm)
        if self._stream is None:
            return pcm if isinstance(pcm, bytes) else bytes(pcm)
        if samples.size == 0:
            return b""
        # int16 array times a float32 scalar is float32 (NEP 50): one conversion, no copy.
        return _to_pcm16(self._stream.resample_chunk(samples * _TO_FLOAT))

    def flush(self) -> bytes:
        """Return the held-back tail (end of utterance); the stream is then ready for new audio."""
        if self._stream is None:
            return b""
        tail = self._stream.resample_chunk(_EMPTY_FLOAT, last=True)
        self._stream.clear()
        return _to_pcm16(tail)

    def reset(self) -> None:
        """Drop everything held back without returning it."""
        if self._stream is not None:
            self._stream.clear()


def _to_pcm16(resampled: npt.NDArray[np.float32]) -> bytes:
    if resampled.size == 0:
        return b""
    scaled = np.multiply(resampled, _TO_PCM)
    np.rint(scaled, out=scaled)
    np.clip(scaled, -FULL_SCALE, FULL_SCALE - 1.0, out=scaled)
    return scaled.astype(_PCM16).tobytes()


def measure_click_delays_ms(
    in_rate: int,
    out_rate: int,
    *,
    quality: Quality = DEFAULT_QUALITY,
    chunk_ms: int = 20,
    clicks: int = 32,
) -> list[float]:
    """Delay a listener hears through a ``StreamResampler``, one value per click.

    Single full-scale samples, about 47 ms of silence apart (so they land at every phase of
    the 20 ms chunks and of soxr's block output), are fed in ``chunk_ms`` chunks after 200 ms
    of silence; each chunk's output is taken to start playing as soon as the chunk has been
    fed. A click's delay is how much later its output peak plays than it would through a
    zero-delay resampler, in milliseconds. A click that is lost (no output peak of at least
    a tenth of full scale within 1 ms of where it belongs) is left out. Empty for equal
    rates.
    """
    _check_rate("in_rate", in_rate)
    _check_rate("out_rate", out_rate)
    if in_rate == out_rate:
        return []
    chunk = max(1, in_rate * chunk_ms // 1000)
    chunk_s = chunk / in_rate
    spacing = round(0.047 * in_rate) + 1  # +1: clicks also fall between output samples
    first = math.ceil(0.2 / chunk_s) * chunk
    click_at = [first + n * spacing for n in range(clicks)]
    search = max(2, out_rate // 1000)  # +-1 ms around where a click belongs
    expected_at = [round(i * out_rate / in_rate) for i in click_at]
    total = (click_at[-1] // chunk + 1) * chunk + 2 * in_rate  # 2 s for the slowest setting
    signal = np.zeros(total, dtype=_PCM16)
    signal[click_at] = 32767

    resampler = StreamResampler(in_rate, out_rate, quality=quality)
    emitted = [0]  # emitted[k]: output samples returned before chunk k was fed
    outputs: list[npt.NDArray[np.int16]] = []
    for start in range(0, total, chunk):
        out = np.frombuffer(resampler.process(signal[start : start + chunk].tobytes()), _PCM16)
        outputs.append(out)
        emitted.append(emitted[-1] + out.size)
        if emitted[-1] > expected_at[-1] + search:
            break
    output = np.abs(np.concatenate(outputs).astype(np.int32))

    delays: list[float] = []
    for click, expected in zip(click_at, expected_at, strict=True):
        low = max(0, expected - search)
        window = output[low : expected + search + 1]
        if window.size == 0 or window.max() < _LOST_CLICK:
            continue
        peak = low + int(np.argmax(window))
        emerged_in = next(k for k in range(len(outputs)) if emitted[k + 1] > peak)
        click_chunk = click // chunk
        delay_s = (
            (emerged_in - click_chunk) * chunk_s
            + (peak - emitted[emerged_in]) / out_rate
            - (click - click_chunk * chunk) / in_rate
        )
        delays.append(delay_s * 1000.0)
    return delays


@lru_cache(maxsize=64)
def _worst_click_delay_ms(in_rate: int, out_rate: int, quality: Quality) -> float:
    delays = measure_click_delays_ms(in_rate, out_rate, quality=quality)
    return max(delays) if delays else math.nan
