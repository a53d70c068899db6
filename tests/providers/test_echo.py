"""providers.echo: the echo test provider, driven directly and through the engine."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest

from providers.base import CALLBACKS, ProviderError
from providers.config import ProviderConfigError
from providers.echo import EchoRealtimeProvider, EchoStats
from providers.echo.config import EchoProviderConfig
from voice.audio import StreamResampler
from voice.channels import RealtimeVoiceChannel
from voice.mock import MockRealtimeTransport
from voice.session import LiveSession
from voice.store import MemoryStore

pytestmark = pytest.mark.timeout(20)

WAIT_S = 5.0
IN_RATE = 16000
OUT_RATE = 24000


# -- synthetic audio ----------------------------------------------------------------------


def silence(ms: int, rate: int = IN_RATE) -> bytes:
    return bytes(2 * (rate * ms // 1000))


def speech(ms: int, dbfs: float = -20.0, rate: int = IN_RATE) -> bytes:
    """A voiced sound: 200 Hz and its harmonics at an RMS of ``dbfs``."""
    t = np.arange(rate * ms // 1000) / rate
    wave = np.zeros(t.size)
    for k in range(1, 6):
        wave += np.sin(2 * math.pi * 200 * k * t + k) / k
    wave *= 10 ** (dbfs / 20) * 32768 / float(np.sqrt(np.mean(wave**2)))
    data: bytes = np.rint(wave).astype("<i2").tobytes()
    return data


def resampled(pcm: bytes, in_rate: int = IN_RATE, out_rate: int = OUT_RATE) -> bytes:
    resampler = StreamResampler(in_rate, out_rate)
    return resampler.process(pcm) + resampler.flush()


def samples(pcm: bytes) -> int:
    return len(pcm) // 2


# -- a listener that records every callback -----------------------------------------------


class Recorder:
    """Every callback the provider fires, in order, as (event, session id, args)."""

    def __init__(self, provider: EchoRealtimeProvider) -> None:
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

    async def wait_count(self, event: str, count: int) -> None:
        await self.wait_for(lambda: self.count(event) >= count)

    def count(self, event: str) -> int:
        return sum(1 for kind, _, _ in self.log if kind == event)

    def events(self, session: LiveSession | None = None) -> list[str]:
        return [kind for kind, sid, _ in self.log if session is None or sid == session.id]

    def audio(self, after: int = 0) -> bytes:
        return b"".join(args[0] for kind, _, args in self.log[after:] if kind == "audio")

    def summary(self) -> list[str]:
        """The log in words, runs of audio chunks as one "audio"."""
        lines: list[str] = []
        for kind, _, args in self.log:
            if kind == "transcription":
                text, role, is_final = args
                lines.append(f"{role} {'final' if is_final else 'partial'}: {text}")
            elif kind != "audio" or lines[-1:] != ["audio"]:
                lines.append(kind)
        return lines


def new_session(name: str = "user-1") -> LiveSession:
    return LiveSession(room_id="room-1", participant_id=name, channel_id="voice")


async def connect(
    provider: EchoRealtimeProvider,
    session: LiveSession,
    config: dict[str, Any] | None = None,
    *,
    input_rate: int = IN_RATE,
    output_rate: int = OUT_RATE,
) -> None:
    await provider.connect(
        session,
        system_prompt=None,
        voice=None,
        tools=None,
        temperature=None,
        input_sample_rate=input_rate,
        output_sample_rate=output_rate,
        provider_config=config,
    )


async def feed(provider: EchoRealtimeProvider, session: LiveSession, *parts: bytes) -> None:
    """Send audio as the engine does: 20 ms chunks, one at a time."""
    audio = b"".join(parts)
    for start in range(0, len(audio), 640):
        await provider.send_audio(session, audio[start : start + 640])


def stamp(times: dict[str, float], name: str) -> Callable[..., None]:
    """A callback that notes when ``name`` first happened (loop time)."""
    loop = asyncio.get_running_loop()

    def note(*_args: Any) -> None:
        times.setdefault(name, loop.time())

    return note


def only_current_task() -> bool:
    return asyncio.all_tasks() == {asyncio.current_task()}


# -- one utterance ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_utterance_is_announced_then_played_back_resampled_in_order() -> None:
    provider = EchoRealtimeProvider()
    recorder = Recorder(provider)
    session = new_session()
    await connect(provider, session)
    utterance = speech(1000)

    await feed(provider, session, silence(300), utterance, silence(700))
    await recorder.wait_count("response_end", 1)

    assert recorder.summary() == [
        "speech_start",
        "speech_end",
        "user final: (1.0 s of speech)",
        "response_start",
        "assistant partial: I",
        "assistant partial: I heard",
        "assistant partial: I heard 1.0",
        "assistant partial: I heard 1.0 seconds.",
        "assistant partial: I heard 1.0 seconds. Here",
        "assistant partial: I heard 1.0 seconds. Here it",
        "assistant partial: I heard 1.0 seconds. Here it is",
        "assistant final: I heard 1.0 seconds. Here it is back.",
        "audio",
        "response_end",
    ]
    # Exactly the utterance (no silence either side), at the output rate, in 40 ms chunks.
    assert recorder.audio() == resampled(utterance)
    assert samples(recorder.audio()) == 24000
    chunk_sizes = {samples(args[0]) for kind, _, args in recorder.log if kind == "audio"}
    assert chunk_sizes == {960}
    assert provider.stats(session) == EchoStats(
        received_ms=2000,
        echoed_ms=1000,
        utterances=1,
        dropped_ms=0,
        replies_cancelled=0,
        truncations=0,
        last_truncated_ms=None,
    )
    await provider.disconnect(session)


@pytest.mark.asyncio
async def test_the_echo_is_paced_not_sent_all_at_once() -> None:
    provider = EchoRealtimeProvider()
    times: dict[str, float] = {}
    provider.on_response_start(stamp(times, "start"))
    provider.on_response_end(stamp(times, "end"))
    recorder = Recorder(provider)
    session = new_session()
    await connect(provider, session, {"reply_delay_ms": 0})

    await feed(provider, session, silence(100), speech(1200), silence(700))
    await recorder.wait_count("response_end", 1)

    # 30 chunks of 40 ms at 3x real time: the last is due 29 * 40 / 3 ms after the first.
    # (Only the lower bound: how much faster than real time is a benchmark's business, and a
    # loaded machine may be slower.)
    elapsed = times["end"] - times["start"]
    assert elapsed >= 0.38
    await provider.disconnect(session)


@pytest.mark.asyncio
async def test_the_reply_waits_reply_delay_ms_after_the_end_of_speech() -> None:
    provider = EchoRealtimeProvider()
    times: dict[str, float] = {}
    provider.on_speech_end(stamp(times, "end"))
    provider.on_response_start(stamp(times, "reply"))
    recorder = Recorder(provider)
    session = new_session()
    await connect(provider, session, {"reply_delay_ms": 300})

    await feed(provider, session, silence(100), speech(200), silence(700))
    await recorder.wait_count("response_start", 1)

    assert times["reply"] - times["end"] >= 0.29
    await provider.disconnect(session)


@pytest.mark.asyncio
async def test_a_long_utterance_plays_back_only_its_first_max_utterance_s() -> None:
    provider = EchoRealtimeProvider()
    recorder = Recorder(provider)
    session = new_session()
    await connect(provider, session, {"max_utterance_s": 0.5})
    utterance = speech(1000)

    await feed(provider, session, silence(200), utterance, silence(700))
    await recorder.wait_count("response_end", 1)

    assert [line for line in recorder.summary() if "final" in line] == [
        "user final: (1.0 s of speech)",
        "assistant final: I heard 1.0 seconds. Here are the first 0.5.",
    ]
    assert recorder.audio() == resampled(utterance[: 2 * 8000])
    stats = provider.stats(session)
    assert (stats.echoed_ms, stats.dropped_ms, stats.utterances) == (500, 500, 1)
    await provider.disconnect(session)


@pytest.mark.asyncio
async def test_speech_from_the_very_first_frame_is_heard_and_played_back() -> None:
    provider = EchoRealtimeProvider()
    recorder = Recorder(provider)
    session = new_session()
    await connect(provider, session)
    utterance = speech(600)

    await feed(provider, session, utterance, silence(700))
    await recorder.wait_count("response_end", 1)

    assert recorder.audio() == resampled(utterance)
    await provider.disconnect(session)


@pytest.mark.asyncio
async def test_odd_sized_chunks_are_put_back_together() -> None:
    provider = EchoRealtimeProvider()
    recorder = Recorder(provider)
    session = new_session()
    await connect(provider, session)
    utterance = speech(500)
    audio = silence(200) + utterance + silence(700)

    for start in range(0, len(audio), 333):
        await provider.send_audio(session, audio[start : start + 333])
    await recorder.wait_count("response_end", 1)

    assert recorder.audio() == resampled(utterance)
    assert provider.stats(session).received_ms == 1400
    await provider.disconnect(session)


@pytest.mark.asyncio
async def test_equal_input_and_output_rates_play_back_the_very_samples() -> None:
    provider = EchoRealtimeProvider()
    recorder = Recorder(provider)
    session = new_session()
    await connect(provider, session, output_rate=IN_RATE)
    utterance = speech(400)

    await feed(provider, session, silence(200), utterance, silence(700))
    await recorder.wait_count("response_end", 1)

    assert recorder.audio() == utterance
    await provider.disconnect(session)


@pytest.mark.asyncio
async def test_a_click_is_not_speech_and_gets_no_reply() -> None:
    provider = EchoRealtimeProvider()
    recorder = Recorder(provider)
    session = new_session()
    await connect(provider, session)

    await feed(provider, session, silence(200), speech(40, -6.0), silence(1500))

    assert recorder.log == []
    assert only_current_task()
    await provider.disconnect(session)


# -- barge-in, interrupt, text ------------------------------------------------------------


@pytest.mark.asyncio
async def test_speech_during_a_reply_cancels_it_and_the_new_utterance_is_echoed() -> None:
    provider = EchoRealtimeProvider()
    recorder = Recorder(provider)
    session = new_session()
    await connect(provider, session, {"reply_delay_ms": 0})
    second = speech(300, -25.0)

    await feed(provider, session, silence(200), speech(1000), silence(700))
    await recorder.wait_count("audio", 1)
    await feed(provider, session, second[: 2 * 1600])  # 100 ms: past start_ms

    events = recorder.events()
    barge_in = len(events) - 1 - events[::-1].index("speech_start")
    assert events[barge_in:] == ["speech_start", "response_end"]
    assert events.count("response_start") == events.count("response_end") == 1
    interrupted = recorder.audio()
    assert 0 < samples(interrupted) < 24000

    mark = len(recorder.log)
    await feed(provider, session, second[2 * 1600 :], silence(700))
    await recorder.wait_count("response_end", 2)

    assert recorder.events()[mark : mark + 2] == ["speech_end", "transcription"]
    assert recorder.audio(after=mark) == resampled(second)
    stats = provider.stats(session)
    assert (stats.utterances, stats.replies_cancelled) == (2, 1)
    assert stats.echoed_ms == (samples(interrupted) + 7200) * 1000 // OUT_RATE
    await provider.disconnect(session)


@pytest.mark.asyncio
async def test_speech_before_a_delayed_reply_starts_cancels_it_without_a_response() -> None:
    provider = EchoRealtimeProvider()
    recorder = Recorder(provider)
    session = new_session()
    await connect(provider, session, {"reply_delay_ms": 5000})

    await feed(provider, session, silence(200), speech(300), silence(700), speech(200))

    assert recorder.events() == [
        "speech_start",
        "speech_end",
        "transcription",
        "speech_start",
    ]
    assert provider.stats(session).replies_cancelled == 0
    await provider.disconnect(session)
    assert only_current_task()


@pytest.mark.asyncio
async def test_interrupt_ends_the_reply_once_and_no_audio_follows() -> None:
    provider = EchoRealtimeProvider()
    recorder = Recorder(provider)
    session = new_session()
    await connect(provider, session, {"reply_delay_ms": 0})
    await feed(provider, session, silence(200), speech(1000), silence(700))
    await recorder.wait_count("audio", 1)

    await provider.interrupt(session)
    mark = len(recorder.log)
    await provider.interrupt(session)  # nothing left to interrupt

    assert recorder.events()[-1] == "response_end"
    assert recorder.count("response_end") == 1
    assert only_current_task()
    assert len(recorder.log) == mark
    assert provider.stats(session).replies_cancelled == 1
    await provider.disconnect(session)


@pytest.mark.asyncio
async def test_truncate_audio_is_recorded() -> None:
    provider = EchoRealtimeProvider()
    session = new_session()
    await connect(provider, session)

    await provider.truncate_audio(session, 420)
    await provider.truncate_audio(session, 1300)

    stats = provider.stats(session)
    assert (stats.truncations, stats.last_truncated_ms) == (2, 1300)
    await provider.disconnect(session)


@pytest.mark.asyncio
async def test_typed_text_gets_a_spoken_style_reply_and_a_beep() -> None:
    provider = EchoRealtimeProvider()
    recorder = Recorder(provider)
    session = new_session()
    await connect(provider, session)

    await provider.inject_text(session, "  hello there ")
    await recorder.wait_count("response_end", 1)

    assert recorder.summary() == [
        "response_start",
        "assistant partial: You",
        "assistant partial: You typed:",
        "assistant partial: You typed: hello",
        "assistant final: You typed: hello there",
        "audio",
        "response_end",
    ]
    beep = np.frombuffer(recorder.audio(), dtype="<i2")
    assert beep.size == 7200  # 300 ms at 24 kHz
    assert (beep[0], beep[-1]) == (0, 0)  # faded in and out: no clicks
    assert int(np.abs(beep).max()) == round(0.2 * 32767)
    assert provider.stats(session).echoed_ms == 0
    await provider.disconnect(session)


@pytest.mark.asyncio
async def test_silent_text_adds_nothing_audible() -> None:
    provider = EchoRealtimeProvider()
    recorder = Recorder(provider)
    session = new_session()
    await connect(provider, session)

    await provider.inject_text(session, "context only", role="system", silent=True)

    assert recorder.log == []
    assert only_current_task()
    await provider.disconnect(session)


@pytest.mark.asyncio
async def test_new_text_replaces_a_reply_in_progress() -> None:
    provider = EchoRealtimeProvider()
    recorder = Recorder(provider)
    session = new_session()
    await connect(provider, session)

    await provider.inject_text(session, "one")
    await recorder.wait_count("audio", 1)
    await provider.inject_text(session, "two")
    await recorder.wait_count("response_end", 2)

    assert [line for line in recorder.summary() if "final" in line or "response" in line] == [
        "response_start",
        "assistant final: You typed: one",
        "response_end",
        "response_start",
        "assistant final: You typed: two",
        "response_end",
    ]
    await provider.disconnect(session)


@pytest.mark.asyncio
async def test_tool_results_are_accepted_and_change_nothing() -> None:
    provider = EchoRealtimeProvider()
    recorder = Recorder(provider)
    session = new_session()
    await connect(provider, session)

    await provider.submit_tool_result(session, "call-1", '{"ok": true}')

    assert recorder.log == []
    await provider.disconnect(session)


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"silence_ms": 50}, "silence_ms: must be >= 100"),
        ({"threshold_dbfs": -5}, "threshold_dbfs: must be <= -10"),
        ({"max_utterance_s": 0}, "max_utterance_s: must be > 0"),
        ({"reply_delay_ms": "100"}, "reply_delay_ms: must be an integer"),
        ({"colour": "blue"}, "colour: unknown option 'colour'"),
    ],
)
@pytest.mark.asyncio
async def test_a_bad_provider_config_fails_the_connect_and_connects_nothing(
    config: dict[str, Any], message: str
) -> None:
    provider = EchoRealtimeProvider()
    session = new_session()

    with pytest.raises(ProviderConfigError) as caught:
        await connect(provider, session, config)

    assert str(caught.value) == message
    assert session.provider_session_id == ""
    with pytest.raises(KeyError):
        provider.stats(session)


def test_the_empty_config_is_complete() -> None:
    assert EchoProviderConfig() == EchoProviderConfig.model_validate(
        {
            "threshold_dbfs": -45.0,
            "start_ms": 80,
            "silence_ms": 600,
            "max_utterance_s": 15.0,
            "reply_delay_ms": 100,
        }
    )


@pytest.mark.asyncio
async def test_connect_names_the_provider_session_and_needs_no_network() -> None:
    provider = EchoRealtimeProvider()
    session = new_session()

    await connect(provider, session, {"silence_ms": 400})

    assert session.provider_session_id.startswith("echo-")
    assert len(session.provider_session_id) == len("echo-") + 12
    assert (provider.name, provider.model_name) == ("echo", "echo")
    await provider.disconnect(session)


@pytest.mark.asyncio
async def test_connecting_a_session_twice_is_refused() -> None:
    provider = EchoRealtimeProvider()
    session = new_session()
    await connect(provider, session)

    with pytest.raises(ProviderError) as caught:
        await connect(provider, session)

    assert caught.value.code == "already_connected"
    await provider.disconnect(session)


@pytest.mark.asyncio
async def test_without_server_vad_the_connect_is_refused() -> None:
    provider = EchoRealtimeProvider()
    session = new_session()

    with pytest.raises(ValueError) as caught:
        await provider.connect(
            session,
            system_prompt=None,
            voice=None,
            tools=None,
            temperature=None,
            input_sample_rate=IN_RATE,
            output_sample_rate=OUT_RATE,
            server_vad=False,
        )

    assert str(caught.value) == "the echo provider detects turns itself: server_vad must be true"


@pytest.mark.asyncio
async def test_reconfigure_changes_the_pause_that_ends_speech() -> None:
    provider = EchoRealtimeProvider()
    recorder = Recorder(provider)
    session = new_session()
    await connect(provider, session, {"silence_ms": 2000})

    await provider.reconfigure(
        session, system_prompt="ignored", provider_config={"silence_ms": 300}
    )
    await feed(provider, session, silence(200), speech(300), silence(320))

    assert recorder.events() == ["speech_start", "speech_end", "transcription"]
    with pytest.raises(ProviderConfigError):
        await provider.reconfigure(session, provider_config={"silence_ms": 1})
    await provider.disconnect(session)


# -- sessions -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_sessions_are_independent() -> None:
    provider = EchoRealtimeProvider()
    recorder = Recorder(provider)
    talker, listener = new_session("talker"), new_session("listener")
    await connect(provider, talker)
    await connect(provider, listener)

    for _ in range(100):  # 2 s, interleaved frame by frame
        await feed(provider, listener, silence(20))
    await feed(provider, talker, silence(200), speech(500), silence(700))
    await recorder.wait_count("response_end", 1)

    assert recorder.events(listener) == []
    assert recorder.events(talker)[:3] == ["speech_start", "speech_end", "transcription"]
    assert provider.stats(listener).received_ms == 2000
    assert provider.stats(listener).utterances == 0
    await provider.close()
    assert only_current_task()


@pytest.mark.asyncio
async def test_disconnect_mid_reply_ends_it_once_leaves_no_task_and_is_idempotent() -> None:
    provider = EchoRealtimeProvider()
    recorder = Recorder(provider)
    session = new_session()
    await connect(provider, session, {"reply_delay_ms": 0})
    await feed(provider, session, silence(200), speech(1000), silence(700))
    await recorder.wait_count("audio", 1)

    await provider.disconnect(session)
    mark = len(recorder.log)
    await provider.disconnect(session)
    await feed(provider, session, speech(500), silence(700))
    await provider.interrupt(session)
    await provider.truncate_audio(session, 10)

    assert recorder.events()[-1] == "response_end"
    assert recorder.count("response_end") == 1
    assert len(recorder.log) == mark
    assert only_current_task()
    with pytest.raises(KeyError):
        provider.stats(session)
    with pytest.raises(ProviderError):
        await provider.inject_text(session, "too late")


@pytest.mark.asyncio
async def test_close_disconnects_every_session() -> None:
    provider = EchoRealtimeProvider()
    sessions = [new_session(f"user-{n}") for n in range(3)]
    for session in sessions:
        await connect(provider, session)
        await provider.inject_text(session, "hi")

    await provider.close()

    assert only_current_task()
    for session in sessions:
        with pytest.raises(KeyError):
            provider.stats(session)


@pytest.mark.asyncio
async def test_a_failing_listener_is_logged_and_the_reply_still_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = EchoRealtimeProvider()

    def broken(_session: LiveSession, *_args: Any) -> None:
        raise RuntimeError("listener bug")

    provider.on_transcription(broken)
    recorder = Recorder(provider)
    session = new_session()
    await connect(provider, session)

    await provider.inject_text(session, "hello")
    await recorder.wait_count("response_end", 1)

    assert recorder.count("audio") == 8  # 7200 samples in 960-sample chunks
    assert "transcription callback for echo failed" in caplog.text
    await provider.disconnect(session)


# -- through the engine -------------------------------------------------------------------


async def run_engine_echo(
    transport_rate: int | None, utterance: bytes, rate: int
) -> tuple[RealtimeVoiceChannel, MockRealtimeTransport, LiveSession, EchoRealtimeProvider]:
    provider = EchoRealtimeProvider()
    transport = MockRealtimeTransport(sample_rate=transport_rate)
    channel = RealtimeVoiceChannel(
        "voice",
        provider=provider,
        transport=transport,
        store=MemoryStore(),
        provider_config={"reply_delay_ms": 0},
    )
    replied = asyncio.Event()
    provider.on_response_end(lambda _session: replied.set())  # after the engine's own
    session = await channel.start_session("room-1", "user-1")
    audio = silence(300, rate) + utterance + silence(800, rate)
    frame = 2 * rate // 50
    for start in range(0, len(audio), frame):
        await transport.simulate_client_audio(session, audio[start : start + frame])
    async with asyncio.timeout(WAIT_S):
        await replied.wait()
    await channel.settle(session)
    return channel, transport, session, provider


@pytest.mark.asyncio
async def test_through_the_engine_transcripts_and_the_echo_reach_the_caller() -> None:
    utterance = speech(1000)

    channel, transport, session, provider = await run_engine_echo(None, utterance, IN_RATE)

    assert [
        (m["role"], m["text"])
        for m in transport.messages_of(session, "transcription")
        if m["is_final"]
    ] == [("user", "(1.0 s of speech)"), ("assistant", "I heard 1.0 seconds. Here it is back.")]
    assert [(m["who"], m["speaking"]) for m in transport.messages_of(session, "speaking")] == [
        ("user", True),
        ("user", False),
        ("assistant", True),
        ("assistant", False),
    ]
    assert b"".join(audio for _, audio in transport.sent_audio) == resampled(utterance)
    assert [call.method for call in transport.calls].count("end_of_response") == 1
    assert session.provider_session_id.startswith("echo-")
    await channel.close()
    assert only_current_task()


@pytest.mark.asyncio
async def test_through_the_engine_a_48_khz_caller_hears_the_echo_at_48_khz() -> None:
    utterance = speech(1000, rate=48000)

    channel, transport, session, provider = await run_engine_echo(48000, utterance, 48000)

    echoed = b"".join(audio for _, audio in transport.sent_audio)
    # 48k -> 16k -> VAD -> 24k -> 48k: the length of the utterance within one 20 ms frame.
    assert abs(samples(echoed) - 48000) <= 960
    level = float(np.sqrt(np.mean(np.frombuffer(echoed, dtype="<i2").astype(float) ** 2)))
    assert 20 * math.log10(level / 32768) == pytest.approx(-20.0, abs=1.0)
    assert provider.stats(session).utterances == 1
    await channel.close()


@pytest.mark.asyncio
async def test_through_the_engine_speech_during_the_echo_barges_in() -> None:
    provider = EchoRealtimeProvider()
    transport = MockRealtimeTransport()
    channel = RealtimeVoiceChannel(
        "voice",
        provider=provider,
        transport=transport,
        store=MemoryStore(),
        provider_config={"reply_delay_ms": 0},
    )
    first_audio = asyncio.Event()
    provider.on_audio(lambda _session, _audio: first_audio.set())
    session = await channel.start_session("room-1", "user-1")

    for chunk in (silence(200), speech(1000), silence(700)):
        for start in range(0, len(chunk), 640):
            await transport.simulate_client_audio(session, chunk[start : start + 640])
    async with asyncio.timeout(WAIT_S):
        await first_audio.wait()
    await channel.settle(session)
    interrupting = speech(200, -25.0)
    for start in range(0, len(interrupting), 640):
        await transport.simulate_client_audio(session, interrupting[start : start + 640])

    assert len(transport.messages_of(session, "clear_audio")) == 1
    stats = provider.stats(session)
    assert (stats.truncations, stats.replies_cancelled) == (1, 1)
    assert stats.last_truncated_ms is not None
    await channel.close()
    assert only_current_task()
