"""Speech synthesis for the offline provider: espeak-ng, one short process per sentence.

espeak-ng (a Debian package; GPL, so it runs as its own process, never linked in) writes a
WAV stream to stdout as it synthesises. :meth:`Espeak.sentences` splits a reply into
sentences and :meth:`Espeak.stream` yields each one's PCM16 as the pipe delivers it, so the
caller hears the first sentence while the next is not yet synthesised: the time to first
audio is one short sentence's synthesis (~10 ms), whatever the length of the answer.

Text goes in on stdin (never on the command line, where a leading "-" would be an option),
as UTF-8 (``-b 1``), plain (no SSML: markup is read out, not obeyed).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import struct
import subprocess
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Final

__all__ = ["Espeak", "SynthesisError", "has_voice", "installed_voices", "split_sentences"]

#: A sentence ends at . ! ? or ; followed by a space (not "3.5", not "e.g." mid-word).
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+(?=\S)")
#: A sentence longer than this is cut at a comma or space, so first audio stays quick.
MAX_SENTENCE_CHARS: Final = 240
_READ_BYTES: Final = 4096
_HEADER_LIMIT: Final = 4096  # bytes of RIFF chunks before "data"


class SynthesisError(RuntimeError):
    """espeak-ng is missing, refused the voice, or wrote something that is not WAV."""


_installed: frozenset[str] | None = None


def installed_voices(binary: str = "espeak-ng") -> frozenset[str]:
    """The languages ("en-us") and variants ("+f3") this espeak-ng has. Runs ``espeak-ng
    --voices`` twice on the first call (~30 ms: call it off the event loop), then cached.
    Empty when espeak-ng cannot be run."""
    global _installed
    if _installed is None:
        try:
            languages = _voice_column(binary, "--voices", 1)
            variants = _voice_column(binary, "--voices=variant", 4)
        except (OSError, subprocess.SubprocessError):
            return frozenset()
        _installed = frozenset(languages | {"+" + name.rsplit("/", 1)[-1] for name in variants})
    return _installed


def has_voice(name: str, binary: str = "espeak-ng") -> bool:
    """Whether ``name`` ("en-us", "en-gb+f3") is a voice of this espeak-ng."""
    language, plus, variant = name.lower().partition("+")
    voices = installed_voices(binary)
    return language in voices and (not plus or f"+{variant}" in voices)


def _voice_column(binary: str, option: str, column: int) -> set[str]:
    listing = subprocess.run(  # noqa: S603 -- a fixed argument list, no shell
        [binary, option], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    rows = (line.split() for line in listing.splitlines()[1:])
    return {row[column].lower() for row in rows if len(row) > column}


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, none longer than MAX_SENTENCE_CHARS, none empty."""
    sentences: list[str] = []
    for sentence in _SENTENCE_END.split(" ".join(text.split())):
        while len(sentence) > MAX_SENTENCE_CHARS:
            cut = sentence.rfind(", ", 0, MAX_SENTENCE_CHARS)
            cut = cut + 1 if cut > 0 else sentence.rfind(" ", 0, MAX_SENTENCE_CHARS)
            if cut <= 0:
                cut = MAX_SENTENCE_CHARS
            sentences.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            sentences.append(sentence)
    return sentences


@dataclass(frozen=True, slots=True)
class Espeak:
    """espeak-ng with a voice (``en-us``, ``en-gb+f3``, …), speed and pitch."""

    voice: str = "en-us"
    rate_wpm: int = 165
    pitch: int = 50
    binary: str = "espeak-ng"

    def available(self) -> bool:
        return shutil.which(self.binary) is not None

    def command(self) -> list[str]:
        return [
            self.binary,
            "--stdout",
            "-b",
            "1",
            "-v",
            self.voice,
            "-s",
            str(self.rate_wpm),
            "-p",
            str(self.pitch),
        ]

    async def stream(self, text: str) -> AsyncGenerator[tuple[int, bytes]]:
        """(sample_rate, PCM16 mono bytes) pieces of ``text`` spoken, as they are made.

        Closing the generator early (a barge-in) kills the process. SynthesisError if
        espeak-ng is missing, fails, or does not write mono 16-bit WAV."""
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise SynthesisError(f"cannot run {self.binary}: {exc}") from None
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(text.encode())
            with contextlib.suppress(ConnectionError):
                await process.stdin.drain()
            process.stdin.close()
            rate, carry = await _read_header(process.stdout)
            while True:
                chunk = await process.stdout.read(_READ_BYTES)
                if not chunk:
                    break
                data = carry + chunk
                whole = len(data) - len(data) % 2
                carry = data[whole:]
                if whole:
                    yield rate, data[:whole]
            code = await process.wait()
            if code != 0:
                assert process.stderr is not None
                error = (await process.stderr.read(500)).decode(errors="replace").strip()
                raise SynthesisError(f"{self.binary} exited with {code}: {error or 'no message'}")
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()


async def _read_header(stdout: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read RIFF chunks up to "data": (sample rate, any audio bytes read past it)."""
    buffer = b""
    while len(buffer) < 12:
        chunk = await stdout.read(_READ_BYTES)
        if not chunk:
            raise SynthesisError("espeak-ng wrote no audio (is the voice installed?)")
        buffer += chunk
    if buffer[:4] != b"RIFF" or buffer[8:12] != b"WAVE":
        raise SynthesisError("espeak-ng did not write WAV")
    offset, rate = 12, 0
    while True:
        while len(buffer) < offset + 8:
            chunk = await stdout.read(_READ_BYTES)
            if not chunk or len(buffer) > _HEADER_LIMIT:
                raise SynthesisError("espeak-ng's WAV has no data chunk")
            buffer += chunk
        kind, size = buffer[offset : offset + 4], struct.unpack_from("<I", buffer, offset + 4)[0]
        if kind == b"data":
            if not rate:
                raise SynthesisError("espeak-ng's WAV has no format chunk")
            return rate, buffer[offset + 8 :]
        while len(buffer) < offset + 8 + size:
            chunk = await stdout.read(_READ_BYTES)
            if not chunk or len(buffer) > _HEADER_LIMIT:
                raise SynthesisError("espeak-ng's WAV header is cut short")
            buffer += chunk
        if kind == b"fmt ":
            audio_format, channels, rate = struct.unpack_from("<HHI", buffer, offset + 8)
            bits = struct.unpack_from("<H", buffer, offset + 22)[0]
            if audio_format != 1 or channels != 1 or bits != 16:
                raise SynthesisError(
                    f"espeak-ng wrote format {audio_format}, {channels} channels, {bits} bits; "
                    "expected PCM mono 16-bit"
                )
        offset += 8 + size + size % 2
