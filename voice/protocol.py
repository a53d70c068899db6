"""The voice client protocol (docs/protocol.md), framework-free: parsing client frames,
the limits on them, and the flood guard. Shared by every WebSocket server we run (the
Channels consumer, a plain ``websockets`` connection handed to the transport)."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AUDIO_FORMATS",
    "MAX_BINARY_FRAME_BYTES",
    "MAX_TEXT_CHARS",
    "MAX_TEXT_FRAME_BYTES",
    "Audio",
    "Control",
    "FloodGuard",
    "ProtocolError",
    "Verdict",
    "parse_binary",
    "parse_sample_rate",
    "parse_text",
]

AUDIO_FORMATS = ("base64_json", "binary")
MAX_BINARY_FRAME_BYTES = 64 * 1024  # ≈ 0.7 s at 48 kHz: ample for 20–100 ms frames
MAX_TEXT_FRAME_BYTES = 96 * 1024  # the binary limit after base64, plus the JSON around it
MAX_TEXT_CHARS = 4000
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 48000

# Close codes (4xxx: permanent, the client must not reconnect).
CLOSE_NORMAL = 1000
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_UNAVAILABLE = 4409
CLOSE_FLOODED = 4429

CONTROL_TYPES = frozenset({"playback", "text", "interrupt", "end_turn", "end", "hello"})


class ProtocolError(ValueError):
    """A client frame we cannot use: answered with an ``error`` of this code, then dropped."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def as_message(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class Audio:
    pcm: bytes


@dataclass(frozen=True, slots=True)
class Control:
    type: str
    fields: dict[str, Any]


def parse_binary(data: bytes) -> Audio:
    if len(data) > MAX_BINARY_FRAME_BYTES:
        raise ProtocolError(
            "frame_too_large",
            f"binary frames are limited to {MAX_BINARY_FRAME_BYTES} bytes, got {len(data)}",
        )
    return Audio(_check_pcm(data))


def parse_text(text: str) -> Audio | Control:
    # The size check comes first: nothing big is ever decoded.
    if len(text) > MAX_TEXT_FRAME_BYTES:
        raise ProtocolError(
            "frame_too_large", f"text frames are limited to {MAX_TEXT_FRAME_BYTES} bytes"
        )
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("bad_json", "the frame is not valid JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("bad_json", "a JSON object with a 'type' was expected")
    kind = message.get("type")
    if kind == "audio":
        data = message.get("data")
        if not isinstance(data, str):
            raise ProtocolError("bad_message", "audio needs 'data': base64 PCM16")
        try:
            pcm = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("bad_audio", "audio 'data' is not valid base64") from None
        return Audio(_check_pcm(pcm))
    if not isinstance(kind, str) or kind not in CONTROL_TYPES:
        shown = kind if isinstance(kind, str) else type(kind).__name__
        raise ProtocolError("unknown_type", f"unknown message type {shown[:40]!r}")
    return Control(kind, _check_control(kind, message))


def _check_pcm(pcm: bytes) -> bytes:
    if len(pcm) % 2:
        raise ProtocolError(
            "bad_audio", f"PCM16 audio has 2 bytes per sample; got an odd {len(pcm)} bytes"
        )
    return pcm


def _check_control(kind: str, message: dict[str, Any]) -> dict[str, Any]:
    if kind == "playback":
        played = message.get("played_ms")
        if isinstance(played, float) and played.is_integer():
            played = int(played)
        if isinstance(played, bool) or not isinstance(played, int) or played < 0:
            raise ProtocolError("bad_message", "'played_ms' must be a non-negative integer")
        return {"played_ms": played}
    if kind == "text":
        text = message.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ProtocolError("bad_message", "'text' must be a non-empty string")
        if len(text) > MAX_TEXT_CHARS:
            raise ProtocolError("bad_message", f"'text' is limited to {MAX_TEXT_CHARS} characters")
        return {"text": text}
    if kind == "hello":
        fields: dict[str, Any] = {}
        if "sample_rate" in message:
            fields["sample_rate"] = parse_sample_rate(message["sample_rate"])
        if "audio_format" in message:
            fields["audio_format"] = parse_audio_format(message["audio_format"])
        return fields
    return {}


def parse_sample_rate(value: Any) -> int:
    """A client rate from a query string or a hello message."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError("bad_message", "'sample_rate' must be an integer number of Hz")
    if not MIN_SAMPLE_RATE <= value <= MAX_SAMPLE_RATE:
        raise ProtocolError(
            "bad_message",
            f"'sample_rate' must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz",
        )
    return int(value)


def parse_audio_format(value: Any) -> str:
    if value not in AUDIO_FORMATS:
        raise ProtocolError("bad_message", f"'audio_format' must be one of {AUDIO_FORMATS}")
    return str(value)


class Verdict:
    ADMIT = "admit"
    DROP = "drop"  # over the rate: drop this frame (and say so, at most once a second)
    CLOSE = "close"  # a flood: close the connection


class FloodGuard:
    """Two token buckets per connection: frames per second and audio bytes per second.

    Sustained traffic above the rates is dropped (bursts up to ``burst_s`` of the rate are
    fine: a client catching up after a stall). A client that keeps flooding — more than
    ``flood_drops`` frames dropped within ``flood_window_s`` — is closed.
    """

    def __init__(
        self,
        *,
        frames_per_s: float = 100.0,
        bytes_per_s: float,
        burst_s: float = 2.0,
        flood_drops: int = 500,
        flood_window_s: float = 5.0,
        clock: Any = time.monotonic,
    ) -> None:
        self.frames_per_s = frames_per_s
        self.bytes_per_s = bytes_per_s
        self.frame_capacity = frames_per_s * burst_s
        self.byte_capacity = bytes_per_s * burst_s
        self.flood_drops = flood_drops
        self.flood_window_s = flood_window_s
        self._clock = clock
        self._frames = self.frame_capacity
        self._bytes = self.byte_capacity
        self._last = clock()
        self._drops: deque[float] = deque()
        self._last_warning = -1e9
        self.dropped = 0

    def set_byte_rate(self, bytes_per_s: float, *, burst_s: float = 2.0) -> None:
        """Change the audio byte rate (once the connection's sample rate is known)."""
        self.bytes_per_s = bytes_per_s
        self.byte_capacity = bytes_per_s * burst_s
        self._bytes = min(self._bytes, self.byte_capacity)

    def admit(self, nbytes: int) -> str:
        now = self._clock()
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._frames = min(self.frame_capacity, self._frames + elapsed * self.frames_per_s)
        self._bytes = min(self.byte_capacity, self._bytes + elapsed * self.bytes_per_s)
        if self._frames >= 1 and self._bytes >= nbytes:
            self._frames -= 1
            self._bytes -= nbytes
            return Verdict.ADMIT
        self.dropped += 1
        cutoff = now - self.flood_window_s
        while self._drops and self._drops[0] <= cutoff:
            self._drops.popleft()
        self._drops.append(now)
        if len(self._drops) > self.flood_drops:
            return Verdict.CLOSE
        return Verdict.DROP

    def should_warn(self) -> bool:
        """True at most once a second: whether to tell the client about drops."""
        now = self._clock()
        if now - self._last_warning >= 1.0:
            self._last_warning = now
            return True
        return False
