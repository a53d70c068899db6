"""The echo test provider: hears you, says how long you spoke, and plays your words back.

Like a telephone echo test, it needs no API key and no network, so a voice page can be
tried on a fresh machine and a browser test can drive the real audio path end to end. There
is no speech recognition: transcripts state durations, never words.

Per session (keyed by ``session.id``; one instance serves many), caller audio goes through
an :class:`~voice.vad.EnergyVad` and, while the caller speaks, into a bounded buffer:

- VAD start: ``speech_start`` (the engine barges in), and any reply in progress is
  cancelled, as a real provider's server VAD interrupts its response.
- VAD end: ``speech_end``, a final user transcript "(1.4 s of speech)", then a reply task:
  ``response_start``, assistant partials and final "I heard 1.4 seconds. Here it is back.",
  the utterance resampled to ``output_sample_rate`` in 40 ms ``audio`` chunks at
  ``STREAM_SPEEDUP`` times real time (vendors stream faster than real time; the engine and
  the client buffer), then ``response_end``.
- ``inject_text``: "You typed: …" and a short two-tone beep.

A reply that is cancelled (new speech, ``interrupt``, a newer reply, disconnect) still
ends: ``response_end`` fires exactly once for every ``response_start``. ``audio`` fires only
from reply tasks, so ``send_audio`` stays cheap: it analyses 20 ms frames, slices a buffer
and never waits for playback.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from providers.config import validate_config
from providers.echo.config import EchoProviderConfig
from providers.inprocess import InProcessProvider, InProcessSession, ReplyRun
from voice.audio import StreamResampler
from voice.vad import EnergyVad, VadEvent

if TYPE_CHECKING:
    from voice.session import LiveSession

logger = logging.getLogger(__name__)

__all__ = ["BEEP_MS", "CHUNK_MS", "STREAM_SPEEDUP", "EchoRealtimeProvider", "EchoStats"]

#: Reply audio is sent in chunks of this length, at this many times real time.
CHUNK_MS: Final = 40
STREAM_SPEEDUP: Final = 3.0
#: The answer to typed text: two soft tones (E5 then A5), each half of it.
BEEP_MS: Final = 300
_BEEP_TONES_HZ: Final = (659.25, 880.0)
_BEEP_PEAK: Final = 0.2  # -14 dBFS peak: audible, never startling
_BEEP_FADE_MS: Final = 10
#: Audio kept before a VAD start, beyond the VAD's own start_ms: the onset lies there.
_PREROLL_SLACK_FRAMES: Final = 2


@dataclass(frozen=True, slots=True)
class EchoStats:
    """What one session did, for tests and diagnostics (milliseconds of audio)."""

    received_ms: int  # caller audio given to send_audio
    echoed_ms: int  # utterance audio played back (an interrupted reply counts what was sent)
    utterances: int  # VAD ends
    dropped_ms: int  # speech beyond max_utterance_s, never played back
    replies_cancelled: int
    truncations: int  # truncate_audio calls
    last_truncated_ms: int | None  # the last played_ms the engine reported


@dataclass(frozen=True, slots=True)
class _Reply:
    text: str
    audio: bytes  # PCM16 at the rate given by ``rate``
    rate: int
    resample_to: int  # the rate to send at (audio is resampled in the reply task)
    is_echo: bool  # counts toward echoed_ms


@dataclass(eq=False)
class _EchoSession(InProcessSession):
    settings: EchoProviderConfig
    config: dict[str, Any]  # as the operator set it (reconfigure merges into it)
    input_rate: int
    output_rate: int
    vad: EnergyVad
    # Caller audio as sample positions in the caller's stream: ``recent`` holds
    # [recent_start, received) (while idle only the pre-roll a start may reach back into);
    # ``utterance`` holds the utterance being heard from ``utterance_origin``, capped.
    recent: bytearray = field(default_factory=bytearray)
    recent_start: int = 0
    received: int = 0  # whole samples (a carried odd byte is not one yet)
    carry: bytes = b""
    utterance_origin: int | None = None
    utterance: bytearray = field(default_factory=bytearray)
    echoed_samples: int = 0  # at output_rate
    utterances: int = 0
    dropped_samples: int = 0  # at input_rate
    replies_cancelled: int = 0
    truncations: int = 0
    last_truncated_ms: int | None = None


def _seconds(samples: int, rate: int) -> str:
    return f"{samples / rate:.1f}"


def _beep(rate: int) -> bytes:
    """Two soft tones, ``BEEP_MS`` in all, each faded in and out (no clicks)."""
    half = rate * BEEP_MS // 2000
    fade = min(half // 2, rate * _BEEP_FADE_MS // 1000)
    envelope = np.ones(half)
    if fade:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, fade))
        envelope[:fade] = ramp
        envelope[-fade:] = ramp[::-1]
    t = np.arange(half) / rate
    tones = [np.sin(2.0 * math.pi * hz * t) * envelope for hz in _BEEP_TONES_HZ]
    samples = np.rint(np.concatenate(tones) * (_BEEP_PEAK * 32767.0))
    return samples.astype("<i2").tobytes()


def _partials(text: str) -> list[str]:
    """The growing prefixes of ``text``, word by word, as a vendor streams a transcript."""
    words = text.split(" ")
    return [" ".join(words[:count]) for count in range(1, len(words))]


class EchoRealtimeProvider(InProcessProvider[_EchoSession]):
    """Echo test (no AI): see the module docstring."""

    name = "echo"

    def __init__(self, model: str | None = None) -> None:
        super().__init__()
        self.model = model or "echo"

    @property
    def model_name(self) -> str:
        return self.model

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
        """Validate and set up; no network. Raises ProviderConfigError (a ValueError) for a
        bad ``provider_config``, ValueError for bad rates or ``server_vad=False``."""
        self._check_new(session)
        if not server_vad:
            raise ValueError("the echo provider detects turns itself: server_vad must be true")
        config = dict(provider_config or {})
        settings = validate_config(EchoProviderConfig, config)
        # Both rates are checked by StreamResampler here rather than at the first reply.
        StreamResampler(input_sample_rate, output_sample_rate)
        vad = EnergyVad(
            input_sample_rate,
            threshold_dbfs=settings.threshold_dbfs,
            start_ms=settings.start_ms,
            silence_ms=settings.silence_ms,
        )
        self._sessions[session.id] = _EchoSession(
            session=session,
            settings=settings,
            config=config,
            input_rate=input_sample_rate,
            output_rate=output_sample_rate,
            vad=vad,
        )
        session.provider_session_id = f"echo-{uuid.uuid4().hex[:12]}"
        logger.info(
            "echo session connected: %s (in %d Hz, out %d Hz)",
            session.provider_session_id,
            input_sample_rate,
            output_sample_rate,
        )

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
        """Apply ``provider_config`` changes (merged into the current config) from the next
        frame; prompt, voice, tools and temperature mean nothing here and are accepted."""
        state = self._require(session)
        if provider_config is None:
            return
        config = {**state.config, **provider_config}
        settings = validate_config(EchoProviderConfig, config)
        state.config, state.settings = config, settings
        state.vad.tune(
            threshold_dbfs=settings.threshold_dbfs,
            start_ms=settings.start_ms,
            silence_ms=settings.silence_ms,
        )

    def stats(self, session: LiveSession) -> EchoStats:
        """Counters of a connected session; KeyError once it is disconnected."""
        return self._describe(self._connected(session))

    def _describe(self, state: _EchoSession) -> EchoStats:
        return EchoStats(
            received_ms=state.received * 1000 // state.input_rate,
            echoed_ms=state.echoed_samples * 1000 // state.output_rate,
            utterances=state.utterances,
            dropped_ms=state.dropped_samples * 1000 // state.input_rate,
            replies_cancelled=state.replies_cancelled,
            truncations=state.truncations,
            last_truncated_ms=state.last_truncated_ms,
        )

    # --- caller audio (the hot path) ----------------------------------------------------------

    async def send_audio(self, session: LiveSession, audio: bytes) -> None:
        """Analyse and keep caller audio. Calls for one session must not overlap (the engine's
        input loop makes them one at a time)."""
        state = self._live(session)
        if state is None:
            logger.debug("echo: audio for a session that is not connected: dropped")
            return
        data = state.carry + bytes(audio) if state.carry else bytes(audio)
        if len(data) % 2:
            data, state.carry = data[:-1], data[-1:]
        else:
            state.carry = b""
        if not data:
            return
        state.recent += data
        state.received += len(data) // 2
        for event in state.vad.push(data):
            if event.kind == "start":
                await self._on_start(state, event)
            else:
                await self._on_end(state, event)
            if state.closed:
                return
        if state.utterance_origin is not None:
            self._collect(state, state.received)
        else:
            keep = state.vad.start_ms * state.input_rate // 1000
            keep += _PREROLL_SLACK_FRAMES * state.vad.frame_samples
            self._drop_recent_before(state, state.received - keep)

    @staticmethod
    def _drop_recent_before(state: _EchoSession, sample: int) -> None:
        if sample > state.recent_start:
            del state.recent[: 2 * (sample - state.recent_start)]
            state.recent_start = sample

    def _collect(self, state: _EchoSession, until: int) -> None:
        """Move the utterance's audio before ``until`` from ``recent`` to ``utterance``,
        keeping at most ``max_utterance_s`` of it."""
        count = until - state.recent_start
        if count <= 0:  # an end is dated before the audio already moved (by silence_ms)
            return
        room = self._max_samples(state) - len(state.utterance) // 2
        if room > 0:
            state.utterance += state.recent[: 2 * min(count, room)]
        self._drop_recent_before(state, until)

    @staticmethod
    def _max_samples(state: _EchoSession) -> int:
        return round(state.settings.max_utterance_s * state.input_rate)

    async def _on_start(self, state: _EchoSession, event: VadEvent) -> None:
        # The onset is in the pre-roll that ``recent`` keeps (clamped, should a reconfigured
        # start_ms reach further back than was kept).
        origin = max(event.at_sample, state.recent_start)
        self._drop_recent_before(state, origin)
        state.utterance_origin = origin
        state.utterance = bytearray()
        await self._fire("speech_start", state.session)
        await self._cancel_reply(state)

    async def _on_end(self, state: _EchoSession, event: VadEvent) -> None:
        origin = state.utterance_origin
        if origin is None:  # cannot happen: the VAD ends only what it started
            return
        self._collect(state, event.at_sample)
        spoken = max(0, event.at_sample - origin)
        kept = min(spoken, len(state.utterance) // 2)
        audio = bytes(state.utterance[: 2 * kept])
        state.utterance_origin, state.utterance = None, bytearray()
        state.utterances += 1
        state.dropped_samples += spoken - kept
        session, rate = state.session, state.input_rate
        await self._fire("speech_end", session)
        await self._fire(
            "transcription", session, f"({_seconds(spoken, rate)} s of speech)", "user", True
        )
        text = f"I heard {_seconds(spoken, rate)} seconds. Here it is back."
        if kept < spoken:
            text = (
                f"I heard {_seconds(spoken, rate)} seconds. "
                f"Here are the first {_seconds(kept, rate)}."
            )
        delay = state.settings.reply_delay_ms / 1000
        reply = _Reply(text, audio, rate, state.output_rate, is_echo=True)
        await self._start_reply(state, reply, delay)

    # --- text, interruptions, tools -----------------------------------------------------------

    async def inject_text(
        self, session: LiveSession, text: str, *, role: str = "user", silent: bool = False
    ) -> None:
        """Unless ``silent``, answer "You typed: …" with a short two-tone beep."""
        state = self._require(session)
        if silent:
            return
        rate = state.output_rate
        reply = _Reply(f"You typed: {text.strip()}", _beep(rate), rate, rate, is_echo=False)
        await self._start_reply(state, reply, 0.0)

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
        logger.debug("echo: ignoring a result for tool call %s (it never calls tools)", call_id)

    # --- replies ------------------------------------------------------------------------------

    async def _start_reply(self, state: _EchoSession, reply: _Reply, delay_s: float) -> None:
        await self._cancel_reply(state)
        if state.closed:  # disconnected while a callback ran
            return
        run = ReplyRun()
        run.task = self._spawn(
            state, self._run_reply(state, run, reply, delay_s), f"echo-reply-{state.session.id}"
        )
        state.reply = run

    async def _run_reply(
        self, state: _EchoSession, run: ReplyRun, reply: _Reply, delay_s: float
    ) -> None:
        session = state.session
        started = False
        try:
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            started = True
            await self._fire("response_start", session)
            for partial in _partials(reply.text):
                await self._fire("transcription", session, partial, "assistant", False)
            await self._fire("transcription", session, reply.text, "assistant", True)
            await self._stream(state, reply)
        except asyncio.CancelledError:
            if started:
                state.replies_cancelled += 1
            raise
        except Exception:
            logger.exception("echo reply failed")
        finally:
            if started:
                run.ending = True
                await self._fire("response_end", session)

    async def _stream(self, state: _EchoSession, reply: _Reply) -> None:
        audio = reply.audio
        if audio and reply.rate != reply.resample_to:
            resampler = StreamResampler(reply.rate, reply.resample_to)
            audio = resampler.process(audio) + resampler.flush()
        rate = reply.resample_to
        chunk_bytes = 2 * max(1, rate * CHUNK_MS // 1000)
        loop = asyncio.get_running_loop()
        started_at = loop.time()
        sent = 0  # samples
        for offset in range(0, len(audio), chunk_bytes):
            due = started_at + sent / rate / STREAM_SPEEDUP
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            chunk = audio[offset : offset + chunk_bytes]
            await self._fire("audio", state.session, chunk)
            sent += len(chunk) // 2
            if reply.is_echo:
                state.echoed_samples += len(chunk) // 2
