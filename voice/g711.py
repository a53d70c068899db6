"""G.711 µ-law and A-law codecs (ITU-T G.711) for the telephony path.

What speaks G.711 here: the OpenAI Realtime and xAI Grok Voice Agent ``audio/pcmu`` and
``audio/pcma`` formats, SIP/RTP trunks (payload types 0 PCMU and 8 PCMA), and Twilio Media
Streams (``audio/x-mulaw``). All of them are 8 kHz mono, one byte per sample; resample
with ``voice.audio.StreamResampler`` before encoding and after decoding.

This replaces the stdlib ``audioop`` (deprecated in Python 3.11, removed in 3.13) and is
bit-exact with ``audioop.lin2ulaw``, ``ulaw2lin``, ``lin2alaw`` and ``alaw2lin`` at width 2
(tests/voice/test_g711.py checks every one of the 65536 samples and 256 codes). As there:

* the encoders truncate to 14 bits (µ-law) or 13 bits (A-law) before quantising, rounding
  towards minus infinity; µ-law saturates at ±32124 and A-law at ±32256 (the outermost
  levels), and round trips stay within 3.6 % (µ-law) and 3.2 % (A-law) from 1024 up;
* µ-law has two zero codes (0xFF; 0x7F, which the encoder never emits, decodes to 0 too);
  A-law has no zero level (silence decodes to ±8).

Each call is one table lookup with numpy (``take`` on a table built at import: 256 int16
values to decode, 65536 codes to encode, indexed by the sample's 16 raw bits), so cost is
linear in the frame and there is no per-sample Python work. PCM16 is mono little-endian,
as everywhere in ``voice/``. Functions are pure and thread-safe.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]

_SEGMENT_COUNT: Final = 8
_QUANT_MASK: Final = 0x0F
# Upper magnitude bound of each segment, on the 14-bit (µ-law, biased) and 13-bit (A-law)
# scale: the tables of the ITU-T / Sun reference code that audioop is based on.
_ULAW_SEGMENT_ENDS: Final = np.array(
    [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32
)
_ALAW_SEGMENT_ENDS: Final = np.array(
    [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32
)
# dtype objects made once: np.frombuffer spends more time resolving ``dtype=np.uint8`` on
# each call than the 160-sample lookup itself takes.
_CODE: Final = np.dtype(np.uint8)
_PCM16_BITS: Final = np.dtype("<u2")  # a sample's raw 16 bits, the encode tables' index
_ULAW_BIAS: Final = 0x84  # 132, on the 16-bit scale
_ULAW_CLIP: Final = 8159  # largest magnitude on the 14-bit scale


def _every_sample() -> npt.NDArray[np.int32]:
    """All 65536 PCM16 values, in the order of their raw 16 bits (0, 1, ..., -1)."""
    return np.arange(1 << 16, dtype=np.uint16).view(np.int16).astype(np.int32)


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    pcm = _every_sample() >> 2  # 14-bit, floor
    negative = pcm < 0
    magnitude = np.minimum(np.where(negative, -pcm, pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    segment = np.searchsorted(_ULAW_SEGMENT_ENDS, magnitude, side="left")
    code = np.where(
        segment >= _SEGMENT_COUNT,
        0x7F,
        (segment << 4) | ((magnitude >> (segment + 1)) & _QUANT_MASK),
    )
    mask = np.where(negative, 0x7F, 0xFF)
    return (code ^ mask).astype(np.uint8)


def _ulaw_decode_table() -> npt.NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((code & _QUANT_MASK) << 3) + _ULAW_BIAS) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, _ULAW_BIAS - magnitude, magnitude - _ULAW_BIAS).astype("<i2")


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    pcm = _every_sample() >> 3  # 13-bit, floor
    negative = pcm < 0
    magnitude = np.where(negative, -pcm - 1, pcm)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, magnitude, side="left")
    shift = np.maximum(segment, 1)  # segments 0 and 1 share a step size
    code = np.where(
        segment >= _SEGMENT_COUNT,
        0x7F,
        (np.minimum(segment, _SEGMENT_COUNT - 1) << 4) | ((magnitude >> shift) & _QUANT_MASK),
    )
    mask = np.where(negative, 0x55, 0xD5)
    return (code ^ mask).astype(np.uint8)


def _alaw_decode_table() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    segment = (code & 0x70) >> 4
    step = ((code & _QUANT_MASK) << 4) + np.where(segment == 0, 8, 0x108)
    magnitude = np.where(segment > 1, step << np.maximum(segment - 1, 0), step)
    return np.where(code & 0x80, magnitude, -magnitude).astype("<i2")


_ULAW_ENCODE: Final = _ulaw_encode_table()
_ULAW_DECODE: Final = _ulaw_decode_table()
_ALAW_ENCODE: Final = _alaw_encode_table()
_ALAW_DECODE: Final = _alaw_decode_table()


def _samples(pcm16: bytes) -> npt.NDArray[np.uint16]:
    if len(pcm16) % 2:
        raise ValueError(f"PCM16 needs an even number of bytes (2 per sample), got {len(pcm16)}")
    return np.frombuffer(pcm16, dtype=_PCM16_BITS)


def ulaw_encode(pcm16: bytes) -> bytes:
    """PCM16 mono little-endian -> G.711 µ-law, one byte per sample."""
    return _ULAW_ENCODE.take(_samples(pcm16)).tobytes()


def ulaw_decode(data: bytes) -> bytes:
    """G.711 µ-law -> PCM16 mono little-endian, two bytes per code."""
    return _ULAW_DECODE.take(np.frombuffer(data, dtype=_CODE)).tobytes()


def alaw_encode(pcm16: bytes) -> bytes:
    """PCM16 mono little-endian -> G.711 A-law, one byte per sample."""
    return _ALAW_ENCODE.take(_samples(pcm16)).tobytes()


def alaw_decode(data: bytes) -> bytes:
    """G.711 A-law -> PCM16 mono little-endian, two bytes per code."""
    return _ALAW_DECODE.take(np.frombuffer(data, dtype=_CODE)).tobytes()
