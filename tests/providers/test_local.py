"""providers.local: the offline provider, driven with real speech (espeak-ng) and the real
recogniser (Whisper tiny.en) and synthesiser (espeak-ng)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from providers.base import CALLBACKS, ProviderError
from providers.config import ProviderConfigError
from providers.local import LocalRealtimeProvider
from providers.local import asr as asr_module
from providers.local import tts as tts_module
from providers.local.asr import Recognizer, RecognizerUnavailable, shared_recognizer
from tests.fixtures.speech import spoken
from voice.session import LiveSession

pytestmark = pytest.mark.timeout(60)

WAIT_S = 20.0  # recognition runs on one thread shared by every test's sessions
IN_RATE = 16000
OUT_RATE = 24000
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def silence(ms: int, rate: int = IN_RATE) -> bytes:
    return bytes(2 * (rate * ms // 1000))


def tone(ms: int, hz: float = 1000.0, dbfs: float = -12.0, rate: int = IN_RATE) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    wave = np.sin(2 * math.pi * hz * t) * (10 ** (dbfs / 20) * 32768 * math.sqrt(2))
    return bytes(np.clip(np.rint(wave), -32768, 32767).astype("<i2").tobytes())


class Recorder:
    """Every callback the provider fires, in order, as (event, session id, args)."""

    def __init__(self, provider: LocalRealtimeProvider) -> None:
        self.log: list[tuple[str, str, tuple[Any, ...]]] = []
        self.changed = asyncio.Event()
        for event in CALLBACKS:
            getattr(provider, f"on_{event}")(partial(self._record, event))

    def _record(self, event: str, session: LiveSession, *args: Any) -> None:
        self.log.append((event, session.id, args))
        self.changed.set()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def events(self, name: str) -> list[tuple[Any, ...]]:
        return [args for event, _, args in self.log if event == name]

    def names(self) -> list[str]:
        return [event for event, _, _ in self.log if event != "audio"]

    def transcripts(self, role: str, *, final: bool = True) -> list[str]:
        return [
            args[0] for args in self.events("transcription") if args[1] == role and args[2] == final
        ]

    def audio_bytes(self) -> int:
        return sum(len(args[0]) for args in self.events("audio"))


async def connect(
    provider: LocalRealtimeProvider,
    name: str = "caller-1",
    *,
    tools: list[dict[str, Any]] | None = None,
    config: dict[str, Any] | None = None,
    voice: str | None = None,
    prompt: str | None = "You are Ada, a helpful assistant.",
    out_rate: int = OUT_RATE,
    in_rate: int = IN_RATE,
) -> LiveSession:
    session = LiveSession(room_id="room-1", participant_id=name, channel_id="voice")
    await provider.connect(
        session,
        system_prompt=prompt,
        voice=voice,
        tools=tools,
        temperature=None,
        input_sample_rate=in_rate,
        output_sample_rate=out_rate,
        provider_config=config,
    )
    return session


async def feed(
    provider: LocalRealtimeProvider, session: LiveSession, pcm: bytes, chunk_ms: int = 20
) -> None:
    step = 2 * IN_RATE * chunk_ms // 1000
    for offset in range(0, len(pcm), step):
        await provider.send_audio(session, pcm[offset : offset + step])


@pytest_asyncio.fixture
async def provider() -> AsyncIterator[LocalRealtimeProvider]:
    instance = LocalRealtimeProvider()
    yield instance
    await instance.close()


def test_the_registry_builds_it_without_a_credential() -> None:
    from providers.registry import get_spec, validate_provider_config

    spec = get_spec("local")
    assert spec.needs_credential is False
    assert spec.client_class() is LocalRealtimeProvider
    assert validate_provider_config("local", {}) == {}


@pytest.mark.asyncio
async def test_a_spoken_question_is_heard_transcribed_and_answered_aloud(
    provider: LocalRealtimeProvider,
) -> None:
    recorder = Recorder(provider)
    session = await connect(provider)
    await feed(provider, session, spoken("I like the green garden."))
    await recorder.wait_for(lambda: "response_end" in recorder.names())
    names = recorder.names()
    assert names.index("speech_start") < names.index("speech_end") < names.index("response_start")
    [heard] = recorder.transcripts("user")
    assert "green" in heard.lower() and "garden" in heard.lower()
    [said] = recorder.transcripts("assistant")
    assert "green garden" in said.lower()  # the fallback says what it heard
    # The reply is spoken: about as long as espeak-ng needs for it, at the output rate.
    seconds = recorder.audio_bytes() / 2 / OUT_RATE
    assert 1.0 < seconds < 10.0
    assert names.count("response_start") == names.count("response_end") == 1
    stats = provider.stats(session)
    assert (stats.utterances, stats.transcribed, stats.replies) == (1, 1, 1)


@pytest.mark.asyncio
async def test_the_reply_is_streamed_sentence_by_sentence(provider: LocalRealtimeProvider) -> None:
    """Audio for the first sentence goes out before the last one is even started."""
    recorder = Recorder(provider)
    session = await connect(provider)
    await provider.inject_text(session, "tell me a joke")  # builtin: several sentences
    await recorder.wait_for(lambda: "response_end" in recorder.names())
    kinds = [
        "audio" if event == "audio" else f"partial:{args[0]}"
        for event, _, args in recorder.log
        if event == "audio" or (event == "transcription" and args[2] is False)
    ]
    partials = [kind for kind in kinds if kind.startswith("partial:")]
    assert len(partials) >= 2, kinds
    assert kinds.index("audio") < kinds.index(partials[-1])


@pytest.mark.asyncio
async def test_a_tool_named_in_speech_is_called_and_its_result_said(
    provider: LocalRealtimeProvider,
) -> None:
    recorder = Recorder(provider)
    session = await connect(provider, tools=[WEATHER_TOOL])
    await feed(provider, session, spoken("What is the weather in Paris?"))
    await recorder.wait_for(lambda: bool(recorder.events("tool_call")))
    [(call_id, name, arguments)] = recorder.events("tool_call")
    assert name == "get_weather"
    assert arguments == {"city": "Paris"}
    assert "response_start" not in recorder.names()  # nothing said until the result
    await provider.submit_tool_result(
        session, call_id, json.dumps({"forecast": "sunny", "temperature_c": 22})
    )
    await recorder.wait_for(lambda: "response_end" in recorder.names())
    [said] = recorder.transcripts("assistant")
    assert "sunny" in said and "22" in said
    assert recorder.audio_bytes() > 0
    with pytest.raises(ProviderError) as refused:  # each call is answered once
        await provider.submit_tool_result(session, call_id, "{}")
    assert refused.value.code == "unknown_call"


@pytest.mark.asyncio
async def test_speech_during_a_reply_barges_in(provider: LocalRealtimeProvider) -> None:
    recorder = Recorder(provider)
    session = await connect(provider)
    long_answer = "One. Two. Three. Four. Five. Six. Seven. Eight. Nine. Ten. " * 3
    await provider.inject_text(session, f'say "{long_answer}"', role="system")
    await recorder.wait_for(lambda: recorder.audio_bytes() > 0)
    await feed(provider, session, spoken("Stop please."))
    await recorder.wait_for(lambda: "response_end" in recorder.names())
    names = recorder.names()
    assert names.index("speech_start") < names.index("response_end")
    # The cancelled reply's transcript holds only the sentences that were started.
    cut = recorder.transcripts("assistant")[0]
    assert cut and len(cut) < len(long_answer.strip())
    assert provider.stats(session).replies_cancelled == 1
    # ... and the new utterance is answered in turn.
    await recorder.wait_for(lambda: recorder.names().count("response_end") == 2)
    assert "stop" in recorder.transcripts("user")[0].lower()
    assert recorder.names().count("response_start") == 2


@pytest.mark.asyncio
async def test_silence_clicks_tones_chords_and_noise_are_not_speech(
    provider: LocalRealtimeProvider,
) -> None:
    recorder = Recorder(provider)
    session = await connect(provider)
    click = tone(20, dbfs=-6.0)
    hiss = np.random.default_rng(7).normal(0.0, 0.03 * 32768, IN_RATE * 3 // 2)
    noise = np.clip(hiss, -32768, 32767).astype("<i2").tobytes()  # white, about -30 dBFS
    chord = (
        np.frombuffer(tone(1500, 262.0, -20.0), "<i2") // 2
        + np.frombuffer(tone(1500, 392.0, -20.0), "<i2") // 2
    )
    sounds = [click, tone(1500), tone(1500, 440.0), noise, chord.astype("<i2").tobytes()]
    await feed(provider, session, b"".join(silence(500) + sound for sound in sounds))
    await feed(provider, session, silence(800))
    assert recorder.names() == []
    assert provider.stats(session).utterances == 0


@pytest.mark.asyncio
async def test_a_second_utterance_before_the_first_is_answered_supersedes_it(
    provider: LocalRealtimeProvider,
) -> None:
    recorder = Recorder(provider)
    session = await connect(provider)
    first = spoken("Red apples.", tail_ms=600)
    second = spoken("Green bananas.", lead_ms=0)
    await feed(provider, session, first + second)  # faster than real time: no gap to answer
    await recorder.wait_for(lambda: "response_end" in recorder.names())
    heard = [text.lower() for text in recorder.transcripts("user")]
    assert len(heard) == 2 and "apple" in heard[0] and "banana" in heard[1]
    await asyncio.sleep(0)  # let any (wrong) second reply task start
    assert recorder.names().count("response_start") == 1
    assert "banana" in recorder.transcripts("assistant")[0].lower()


@pytest.mark.asyncio
async def test_a_long_turn_is_transcribed_in_pieces_and_answered_once(
    provider: LocalRealtimeProvider,
) -> None:
    recorder = Recorder(provider)
    session = await connect(provider, config={"max_utterance_s": 4.0})
    words = (
        "Seven green frogs jumped over the bridge, then they swam down the river, "
        "and then they all went home"
    )
    await feed(provider, session, spoken(words, wpm=130))
    await recorder.wait_for(lambda: "response_end" in recorder.names())
    pieces = recorder.transcripts("user")
    assert len(pieces) >= 2
    assert recorder.names().count("response_start") == 1
    said = recorder.transcripts("assistant")[0].lower()
    assert "frogs" in said and "river" in said  # one answer for the whole turn


@pytest.mark.asyncio
async def test_a_48_khz_caller_is_resampled_for_recognition(
    provider: LocalRealtimeProvider,
) -> None:
    recorder = Recorder(provider)
    session = await connect(provider, in_rate=48000, out_rate=48000)
    pcm = spoken("I like the green garden.", rate=48000)
    step = 2 * 48000 * 20 // 1000
    for offset in range(0, len(pcm), step):
        await provider.send_audio(session, pcm[offset : offset + step])
    await recorder.wait_for(lambda: "response_end" in recorder.names())
    assert "garden" in recorder.transcripts("user")[0].lower()


@pytest.mark.asyncio
async def test_typed_text_is_answered_and_silent_text_is_not(
    provider: LocalRealtimeProvider,
) -> None:
    recorder = Recorder(provider)
    session = await connect(provider)
    await provider.inject_text(session, "background only", silent=True)
    await provider.inject_text(session, "what is your name")
    await recorder.wait_for(lambda: "response_end" in recorder.names())
    assert "Ada" in recorder.transcripts("assistant")[0]
    assert recorder.names().count("response_start") == 1


@pytest.mark.asyncio
async def test_a_tool_progress_message_is_said(provider: LocalRealtimeProvider) -> None:
    recorder = Recorder(provider)
    session = await connect(provider)
    instruction = (
        "The tool 'slow' is still working. Without waiting for its result, tell the caller "
        'briefly, in their language: "Still looking that up."'
    )
    await provider.inject_text(session, instruction, role="system")
    await recorder.wait_for(lambda: "response_end" in recorder.names())
    assert recorder.transcripts("assistant") == ["Still looking that up."]
    await provider.inject_text(session, "You are now in a good mood.", role="system")
    assert recorder.names().count("response_start") == 1  # context only: nothing said


@pytest.mark.asyncio
async def test_operator_rules_answer_first(provider: LocalRealtimeProvider) -> None:
    recorder = Recorder(provider)
    rules = [{"match": r"opening hours", "reply": "We open at nine."}]
    session = await connect(provider, config={"rules": rules})
    await provider.inject_text(session, "What are your opening hours?")
    await recorder.wait_for(lambda: "response_end" in recorder.names())
    assert recorder.transcripts("assistant") == ["We open at nine."]


@pytest.mark.asyncio
async def test_greet_speaks_first(provider: LocalRealtimeProvider) -> None:
    recorder = Recorder(provider)
    await connect(provider, config={"greet": True})
    await recorder.wait_for(lambda: "response_end" in recorder.names())
    assert "Ada" in recorder.transcripts("assistant")[0]


@pytest.mark.asyncio
async def test_a_bad_rule_is_refused_with_its_reason(provider: LocalRealtimeProvider) -> None:
    with pytest.raises(ProviderConfigError) as refused:
        await connect(provider, config={"rules": [{"match": "(unclosed", "reply": "x"}]})
    assert "rules" in str(refused.value)
    with pytest.raises(ProviderConfigError):
        await connect(provider, config={"speech_rate_wpm": 5})


@pytest.mark.asyncio
async def test_voices(provider: LocalRealtimeProvider) -> None:
    """An espeak-ng voice in the agent's voice is used; a cloud voice name is not; an
    espeak_voice this espeak-ng lacks is refused at connect."""
    recorder = Recorder(provider)
    session = await connect(provider, voice="en-gb")
    assert provider._sessions[session.id].espeak.voice == "en-gb"
    other = await connect(provider, "caller-2", voice="alloy")
    assert provider._sessions[other.id].espeak.voice == "en-us"
    with pytest.raises(ProviderError) as refused:
        await connect(provider, "caller-3", config={"espeak_voice": "zz-nope"})
    assert refused.value.code == "tts_voice" and refused.value.fatal
    assert recorder.log == []


@pytest.mark.asyncio
async def test_without_espeak_the_connect_fails_clearly(
    provider: LocalRealtimeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tts_module, "_installed", None)
    session = LiveSession(room_id="room-1", participant_id="no-espeak", channel_id="voice")
    monkeypatch.setattr(
        "providers.local.provider.installed_voices", lambda: tts_module.installed_voices("nope")
    )
    with pytest.raises(ProviderError) as refused:
        await provider.connect(
            session,
            system_prompt=None,
            voice=None,
            tools=None,
            temperature=None,
            input_sample_rate=IN_RATE,
            output_sample_rate=OUT_RATE,
        )
    assert refused.value.code == "tts_unavailable" and "espeak-ng" in refused.value.message


@pytest.mark.asyncio
async def test_a_model_that_does_not_load_fails_the_connect(tmp_path: Path) -> None:
    provider = LocalRealtimeProvider(recognizer=Recognizer(tmp_path))
    with pytest.raises(ProviderError) as refused:
        await connect(provider)
    assert refused.value.code == "asr_unavailable" and refused.value.fatal
    assert str(tmp_path) in refused.value.message


def test_a_tampered_bundled_model_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    sums = dict(asr_module.BUNDLED_MODEL_SHA256, **{"config.json": "0" * 64})
    monkeypatch.setattr(asr_module, "BUNDLED_MODEL_SHA256", sums)
    with pytest.raises(RecognizerUnavailable, match="config.json"):
        asr_module._bundled_model()


@pytest.mark.asyncio
async def test_when_the_recogniser_is_full_the_caller_is_told(
    provider: LocalRealtimeProvider,
) -> None:
    full = Recognizer(max_pending=0)
    full._model = shared_recognizer()._model  # loaded: only the queue bound is under test
    provider = LocalRealtimeProvider(recognizer=full)
    if full._model is None:
        await full.load()
    recorder = Recorder(provider)
    session = await connect(provider)
    await feed(provider, session, spoken("Hello there."))
    await recorder.wait_for(lambda: "response_end" in recorder.names())
    [(code, message, fatal)] = recorder.events("error")
    assert code == "asr_busy" and fatal is False
    assert "say it again" in recorder.transcripts("assistant")[0]
    assert provider.stats(session).busy_refusals == 1
    await provider.close()


@pytest.mark.asyncio
async def test_disconnect_mid_reply_ends_it_once_and_is_idempotent(
    provider: LocalRealtimeProvider,
) -> None:
    recorder = Recorder(provider)
    session = await connect(provider)
    await provider.inject_text(session, "tell me a joke")
    await recorder.wait_for(lambda: recorder.audio_bytes() > 0)
    await provider.disconnect(session)
    await provider.disconnect(session)
    names = recorder.names()
    assert names.count("response_start") == names.count("response_end") == 1
    with pytest.raises(KeyError):
        provider.stats(session)


@pytest.mark.asyncio
async def test_a_result_the_caller_interrupted_is_not_said(provider: LocalRealtimeProvider) -> None:
    """The engine answers a call cancelled by a barge-in with an error: said after the
    caller moved on, it would talk over the new turn."""
    recorder = Recorder(provider)
    session = await connect(provider, tools=[WEATHER_TOOL])
    await provider.inject_text(session, "What is the weather in Oslo?")
    [(call_id, _, arguments)] = recorder.events("tool_call")
    assert arguments == {"city": "Oslo"}
    await feed(provider, session, spoken("Never mind."))
    await recorder.wait_for(lambda: "response_end" in recorder.names())  # "never mind" answered
    cancelled = json.dumps({"error": "Tool 'get_weather' was cancelled: the caller interrupted"})
    await provider.submit_tool_result(session, call_id, cancelled)
    assert recorder.names().count("response_start") == 1
    assert not any("failed" in text for text in recorder.transcripts("assistant"))
