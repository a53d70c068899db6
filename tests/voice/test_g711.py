"""voice/g711.py: bit-exact with the stdlib audioop (width 2) over every input it can get."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from types import ModuleType

import numpy as np
import numpy.typing as npt
import pytest

from voice.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

Codec = Callable[[bytes], bytes]

EVERY_SAMPLE = np.arange(-32768, 32768, dtype="<i2").tobytes()
EVERY_CODE = bytes(range(256))
# sha256 over lin2ulaw(EVERY_SAMPLE), lin2alaw(EVERY_SAMPLE), ulaw2lin(EVERY_CODE) and
# alaw2lin(EVERY_CODE) at width 2, from audioop on Python 3.11.
RECORDED_DIGEST = "6fbb88439e2a27c2147efc4dcbebc6025818c442ea5316cfb74b304ac144fdf7"


def _audioop() -> ModuleType:
    """The reference implementation. Deprecated since 3.11 (pyproject's filterwarnings
    does not make DeprecationWarning an error, but keep the run clean) and gone in 3.13,
    where the recorded digest below still pins the tables."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module: ModuleType = pytest.importorskip(
            "audioop", reason="audioop was removed in Python 3.13"
        )
    return module


def _pcm(data: bytes) -> npt.NDArray[np.int64]:
    return np.frombuffer(data, dtype="<i2").astype(np.int64)


@pytest.mark.parametrize(
    ("ours", "reference_name"),
    [(ulaw_encode, "lin2ulaw"), (alaw_encode, "lin2alaw")],
)
def test_encoders_match_audioop_for_every_pcm16_sample(ours: Codec, reference_name: str) -> None:
    reference = getattr(_audioop(), reference_name)
    expected = reference(EVERY_SAMPLE, 2)
    assert len(expected) == 65536
    assert ours(EVERY_SAMPLE) == expected


@pytest.mark.parametrize(
    ("ours", "reference_name"),
    [(ulaw_decode, "ulaw2lin"), (alaw_decode, "alaw2lin")],
)
def test_decoders_match_audioop_for_every_code(ours: Codec, reference_name: str) -> None:
    reference = getattr(_audioop(), reference_name)
    expected = reference(EVERY_CODE, 2)
    assert len(expected) == 512
    assert ours(EVERY_CODE) == expected


def test_tables_match_the_digest_recorded_against_audioop() -> None:
    """The same check without audioop (Python 3.13+): the four full mappings, hashed."""
    digest = hashlib.sha256()
    for output in (
        ulaw_encode(EVERY_SAMPLE),
        alaw_encode(EVERY_SAMPLE),
        ulaw_decode(EVERY_CODE),
        alaw_decode(EVERY_CODE),
    ):
        digest.update(output)
    assert digest.hexdigest() == RECORDED_DIGEST


def test_known_values() -> None:
    assert ulaw_encode(b"\x00\x00") == b"\xff"
    assert alaw_encode(b"\x00\x00") == b"\xd5"
    assert _pcm(ulaw_decode(b"\x00\x80\xff\x7f")).tolist() == [-32124, 32124, 0, 0]
    assert _pcm(alaw_decode(b"\x55\xd5\x2a\xaa")).tolist() == [-8, 8, -32256, 32256]


@pytest.mark.parametrize(
    ("encode", "decode", "worst_error", "worst_relative_from_1024", "worst_below_64"),
    [
        (ulaw_encode, ulaw_decode, 644, 0.0351, 7),
        (alaw_encode, alaw_decode, 512, 0.0313, 8),
    ],
)
def test_round_trip_error_bounds(
    encode: Codec,
    decode: Codec,
    worst_error: int,
    worst_relative_from_1024: float,
    worst_below_64: int,
) -> None:
    original = _pcm(EVERY_SAMPLE)
    error = np.abs(_pcm(decode(encode(EVERY_SAMPLE))) - original)
    assert error.max() == worst_error
    loud = np.abs(original) >= 1024
    assert (error[loud] / np.abs(original[loud])).max() < worst_relative_from_1024
    assert error[np.abs(original) < 64].max() == worst_below_64


@pytest.mark.parametrize(
    ("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)]
)
def test_decoded_levels_are_symmetric_and_survive_re_encoding(encode: Codec, decode: Codec) -> None:
    levels = _pcm(decode(EVERY_CODE))
    flipped = _pcm(decode(bytes(code ^ 0x80 for code in EVERY_CODE)))
    assert (levels == -flipped).all()
    again = encode(decode(EVERY_CODE))
    changed = [hex(code) for code, other in zip(EVERY_CODE, again, strict=True) if code != other]
    # µ-law's "negative zero" 0x7F decodes to 0, which encodes as 0xFF.
    assert changed == (["0x7f"] if encode is ulaw_encode else [])


@pytest.mark.parametrize("codec", [ulaw_encode, ulaw_decode, alaw_encode, alaw_decode])
def test_empty_input_gives_empty_output(codec: Codec) -> None:
    assert codec(b"") == b""


@pytest.mark.parametrize("encode", [ulaw_encode, alaw_encode])
def test_odd_length_pcm16_is_rejected(encode: Codec) -> None:
    with pytest.raises(ValueError, match=r"^PCM16 needs an even number of bytes .*, got 3$"):
        encode(b"\x00\x01\x02")


@pytest.mark.parametrize(
    ("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)]
)
def test_a_20_ms_frame_is_160_bytes_each_way(encode: Codec, decode: Codec) -> None:
    frame = (np.sin(np.arange(160) / 3) * 12000).astype("<i2").tobytes()
    encoded = encode(frame)
    assert len(encoded) == 160
    assert len(decode(encoded)) == 320
