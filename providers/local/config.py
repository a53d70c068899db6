"""``provider_config`` schema for the offline provider (no key, no network).

Every option has a default, so ``{}`` is a complete config. The VAD options are those of
``voice.vad.EnergyVad`` plus Silero VAD's speech probability threshold; ``rules`` is the
brain's table (``providers.local.brain.compile_rules`` checks it, so a bad pattern is
refused when the agent is saved, not when a caller speaks).
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from providers.config import ProviderConfig
from voice.vad import DEFAULT_THRESHOLD_DBFS

__all__ = ["DEFAULT_ASR_PROMPT", "LocalProviderConfig", "LocalRule"]

#: Whisper's context: a neutral description of the conversation, not the expected words.
DEFAULT_ASR_PROMPT: Final = "A caller talks to a voice assistant."
#: espeak-ng voice names: a language ("en-us", "fr") and an optional variant ("+f3"); the
#: provider checks at connect that this espeak-ng has it.
_VOICE = r"^[a-z]{2,3}(-[a-z0-9]{1,8})*(\+[a-z0-9_-]{1,20})?$"


class LocalRule(BaseModel):
    """One row of the rules table: when ``match`` (a regular expression, searched in the
    normalised utterance: lower case, no punctuation, numbers as digits) is found, say
    ``reply`` (``{agent}``, ``{time}``, ``{date}``, ``{heard}`` and the pattern's named
    groups are filled in)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, strict=True)

    match: str = Field(min_length=1, max_length=500)
    reply: str = Field(min_length=1, max_length=1000)


class LocalProviderConfig(ProviderConfig):
    """Offline provider ``provider_config``.

    - ``espeak_voice``: the espeak-ng voice (``espeak-ng --voices`` lists them), e.g.
      ``en-us``, ``en-gb``, ``en-us+f3``. The agent's ``voice`` is used when it is one.
    - ``speech_rate_wpm`` / ``pitch``: espeak-ng's speed (words per minute) and pitch.
    - ``threshold_dbfs``, ``start_ms``, ``silence_ms``: the caller's turn detection (see
      ``voice.vad``); ``vad_threshold``: the speech probability (Silero VAD) a loud frame
      needs to count as speech (raise it if noise starts turns, lower it if words are missed).
    - ``max_utterance_s``: longer speech is cut into turns of this length.
    - ``asr_prompt``: context for the recogniser (a sentence, not a word list).
    - ``rules``: the operator's answers, tried before tools and the built-in answers.
    - ``builtin_rules``: greeting, time, date, name, thanks, goodbye, help, a joke, repeat.
    - ``greet``: say the greeting as soon as the session starts.
    """

    espeak_voice: str = Field(default="en-us", pattern=_VOICE)
    speech_rate_wpm: int = Field(default=165, ge=80, le=450)
    pitch: int = Field(default=50, ge=0, le=99)
    threshold_dbfs: float = Field(default=DEFAULT_THRESHOLD_DBFS, ge=-90.0, le=-10.0)
    start_ms: int = Field(default=100, ge=20, le=1000)
    silence_ms: int = Field(default=500, ge=200, le=5000)
    vad_threshold: float = Field(default=0.5, ge=0.05, le=0.95)
    max_utterance_s: float = Field(default=15.0, ge=1.0, le=30.0)
    asr_prompt: str = Field(default=DEFAULT_ASR_PROMPT, max_length=500)
    rules: list[LocalRule] = Field(default_factory=list, max_length=200)
    builtin_rules: bool = True
    greet: bool = False

    @field_validator("rules")
    @classmethod
    def _rules_compile(cls, rules: list[LocalRule]) -> list[LocalRule]:
        from providers.local.brain import compile_rules

        compile_rules([{"match": rule.match, "reply": rule.reply} for rule in rules])
        return rules
