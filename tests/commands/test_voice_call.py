"""``manage.py voice_call``: a whole session from a WAV file, end to end against the fake
OpenAI Realtime server (run in a thread of the test process, reached through the agent's
credential endpoint), recorded in the database like any other session."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from providers import services as provider_services
from rooms import services as room_services
from rooms.models import EventKind, RoomEvent
from tests.fakes.openai_realtime import ClientProtocolError, FakeOpenAIRealtime
from tests.fixtures.actors import TenantWorld
from voice import services as voice_services
from voice.management.commands.voice_call import CallState
from voice.models import EndReason, SessionState, ToolCall, VoiceSession

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-voice-call-test-0123456789"
HEARD = "what is the weather in Paris"
REPLY = "It is sunny in Paris today."

Server = TypeVar("Server")


@dataclass
class Served(Generic[Server]):
    server: Server
    loop: asyncio.AbstractEventLoop

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        """Run ``coroutine`` on the server's loop (e.g. the fake's ``wait_for``)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


@contextmanager
def serving(server: Server) -> Iterator[Served[Server]]:
    """Serve a fake vendor (an async context manager) from a thread with its own event loop,
    for the length of the block: the command under test runs its own loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-vendor", daemon=True)
    thread.start()
    served = Served(server, loop)
    manager: Any = server
    try:
        served.run(manager.__aenter__(), timeout=10)
        try:
            yield served
        finally:
            served.run(manager.__aexit__(None, None, None), timeout=10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def write_wav(
    path: Path, *, rate: int, channels: int = 1, tone_s: float = 1.0, silence_s: float = 1.0
) -> Path:
    """A loud 300 Hz tone (the fake's voice detection takes it for speech), then silence."""
    tone = (8000 * np.sin(2 * np.pi * 300 * np.arange(int(rate * tone_s)) / rate)).astype("<i2")
    mono = np.concatenate([tone, np.zeros(int(rate * silence_s), dtype="<i2")])
    samples = np.repeat(mono, channels) if channels > 1 else mono
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(samples.astype("<i2").tobytes())
    return path


def point_agent_at(world: TenantWorld, endpoint: str, *, secret: str = API_KEY) -> None:
    credential = provider_services.credential_create(
        tenant=world.tenant, name="openai-fake", kind="openai", secret=secret, base_url=endpoint
    )
    voice_services.agent_update(
        tenant=world.tenant, agent=world.agent, credential=credential, model="gpt-realtime"
    )


def voice_call(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("voice_call", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def said(out: str) -> list[str]:
    """stdout without the time stamps."""
    return [line.split("] ", 1)[1] for line in out.splitlines()]


@pytest.mark.django_db(transaction=True)
def test_voice_call_runs_a_whole_session_through_the_engine_and_records_it(
    world_a: TenantWorld, tmp_path: Path
) -> None:
    fake = FakeOpenAIRealtime(api_key=API_KEY, auto_vad=True, next_reply=REPLY, reply_audio_ms=600)
    fake.user_transcripts.append(HEARD)
    fake.next_tool_call = ("get_weather", {"city": "Paris"})
    # 44.1 kHz stereo in: mixed down, and resampled by the engine for the provider.
    wav = write_wav(tmp_path / "in.wav", rate=44100, channels=2)
    out_wav = tmp_path / "out.wav"
    with serving(fake):
        point_agent_at(world_a, fake.base_url)

        out, err = voice_call(
            "--room", "room-1", "--agent", "assistant", "--wav", str(wav),
            "--out", str(out_wav), "--speed", "0", "--wait", "30",
        )  # fmt: skip

    assert said(out) == [
        f"user: {HEARD}",
        'tool get_weather({"city": "Paris"})',
        'tool get_weather succeeded: {"city": "Paris", "temperature": 21}',
        f"assistant: {REPLY}",
    ]
    session = VoiceSession.objects.get(tenant=world_a.tenant)
    assert (session.state, session.end_reason) == (SessionState.ENDED, EndReason.ENDED_BY_CALLER)
    assert (session.transport, session.participant_id, session.agent_id) == (
        "cli",
        "cli",
        world_a.agent.pk,
    )
    assert session.host_channel_name  # the command hosted it on the channel layer
    assert session.provider_session_id.startswith("sess_")
    assert session.metadata == {"via": "voice_call", "wav": "in.wav", "speed": 0.0}
    timeline = list(
        RoomEvent.objects.filter(session=session)
        .order_by("index")
        .values_list("kind", "role", "text")
    )
    assert timeline == [
        (EventKind.TRANSCRIPT, "user", HEARD),
        (EventKind.TOOL_CALL, "tool", 'get_weather({"city": "Paris"})'),
        (EventKind.TRANSCRIPT, "assistant", REPLY),
    ]
    call = ToolCall.objects.get(session=session)
    assert (call.name, call.status, call.delivered_at is not None) == (
        "get_weather",
        "succeeded",
        True,
    )
    # What the fake heard was the tone; the reply audio it sent is in out.wav, at the
    # caller's rate (the engine resampled 24 kHz to 44.1 kHz).
    heard = np.frombuffer(fake.input_pcm16(), dtype="<i2").astype(np.float64)
    assert np.sqrt(np.mean(heard**2)) > 1000
    with wave.open(str(out_wav), "rb") as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (
            1,
            2,
            44100,
        )
        reply = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    assert 0.55 <= reply.size / 44100 <= 0.65  # the fake's 600 ms reply
    assert np.sqrt(np.mean(reply.astype(np.float64) ** 2)) > 300
    assert f"session {session.pk} started" in err
    assert f"wrote {reply.size / 44100:.2f} s of reply audio to {out_wav}" in err
    assert f"session {session.pk} recorded: ended, ended_by_caller" in err
    assert "not over" not in err  # the reply was over before --wait ran out


@pytest.mark.django_db(transaction=True)
def test_voice_call_streams_in_real_time_by_default(world_a: TenantWorld, tmp_path: Path) -> None:
    fake = FakeOpenAIRealtime(api_key=API_KEY, auto_vad=True, next_reply=REPLY)
    fake.user_transcripts.append(HEARD)
    wav = write_wav(tmp_path / "in.wav", rate=16000, tone_s=0.4, silence_s=0.6)
    with serving(fake):
        point_agent_at(world_a, fake.base_url)

        started = time.monotonic()
        out, err = voice_call(
            "--room", "room-1", "--agent", "assistant", "--wav", str(wav), "--wait", "30"
        )
        elapsed = time.monotonic() - started

    assert said(out) == [f"user: {HEARD}", f"assistant: {REPLY}"]
    assert elapsed >= 1.0  # one second of audio, streamed in real time
    assert "at speed 1" in err and "not over" not in err
    assert VoiceSession.objects.get(tenant=world_a.tenant).end_reason == EndReason.ENDED_BY_CALLER


class QuotaExhaustedFake(FakeOpenAIRealtime):
    """Answers the caller's first turn with the vendor's quota error (a fatal one)."""

    async def _user_turn_committed(self, conn: Any, *args: Any) -> None:
        await self._send_error(
            conn,
            ClientProtocolError(
                "insufficient_quota", "You exceeded your current quota.", type="insufficient_quota"
            ),
        )


@pytest.mark.django_db(transaction=True)
def test_a_provider_error_mid_call_fails_the_call_with_exit_code_1(
    world_a: TenantWorld, tmp_path: Path
) -> None:
    fake = QuotaExhaustedFake(api_key=API_KEY, auto_vad=True)
    wav = write_wav(tmp_path / "in.wav", rate=24000)
    with serving(fake):
        point_agent_at(world_a, fake.base_url)

        with pytest.raises(CommandError) as raised:
            voice_call(
                "--room", "room-1", "--agent", "assistant", "--wav", str(wav), "--speed", "0"
            )

    assert raised.value.returncode == 1
    assert str(raised.value) == (
        "the session ended early (provider_error): insufficient_quota: "
        "You exceeded your current quota."
    )
    session = VoiceSession.objects.get(tenant=world_a.tenant)
    assert (session.state, session.end_reason) == (SessionState.ENDED, EndReason.PROVIDER_ERROR)
    assert "insufficient_quota" in session.end_detail


@pytest.mark.django_db(transaction=True)
def test_a_refused_key_fails_the_start_with_exit_code_1_and_is_recorded(
    world_a: TenantWorld, tmp_path: Path
) -> None:
    fake = FakeOpenAIRealtime(api_key=API_KEY)
    wav = write_wav(tmp_path / "in.wav", rate=16000)
    out_wav = tmp_path / "out.wav"
    with serving(fake):
        point_agent_at(world_a, fake.base_url, secret="sk-wrong-key-0123456789")

        err = StringIO()
        with pytest.raises(CommandError) as raised:
            call_command(
                "voice_call", "--room", "room-1", "--agent", "assistant", "--wav", str(wav),
                "--out", str(out_wav), stdout=StringIO(), stderr=err,
            )  # fmt: skip

    assert raised.value.returncode == 1
    assert str(raised.value).startswith("the session did not start: invalid_api_key: ")
    assert "sk-wrong-key" not in str(raised.value)
    session = VoiceSession.objects.get(tenant=world_a.tenant)
    assert (session.state, session.end_reason) == (SessionState.ENDED, EndReason.CONNECT_FAILED)
    assert not RoomEvent.objects.filter(session=session).exists()
    assert f"session {session.pk} recorded: ended, connect_failed: ProviderError" in err.getvalue()
    with wave.open(str(out_wav), "rb") as reader:  # a valid WAV, with no reply in it
        assert reader.getnframes() == 0


def _usage_error(*args: str) -> CommandError:
    with pytest.raises(CommandError) as raised:
        voice_call(*args)
    assert raised.value.returncode == 2
    assert not VoiceSession.objects.exists()  # nothing was started
    return raised.value


@pytest.mark.django_db
def test_unknown_room_agent_or_tenant_is_a_usage_error(
    world_a: TenantWorld, world_b: TenantWorld, tmp_path: Path
) -> None:
    wav = str(write_wav(tmp_path / "in.wav", rate=16000))

    assert "no room 'nowhere'" in str(
        _usage_error("--room", "nowhere", "--agent", "assistant", "--wav", wav)
    )
    assert "no agent 'nobody' in tenant tenant-a" in str(
        _usage_error("--room", "room-1", "--tenant", "tenant-a", "--agent", "nobody", "--wav", wav)
    )
    assert "several tenants (tenant-a, tenant-b): add --tenant" in str(
        _usage_error("--room", "room-1", "--agent", "assistant", "--wav", wav)
    )
    assert "no tenant 'nope'" in str(
        _usage_error("--room", "room-1", "--tenant", "nope", "--agent", "assistant", "--wav", wav)
    )


@pytest.mark.django_db
def test_a_closed_room_or_a_revoked_caller_is_a_usage_error(
    world_a: TenantWorld, tmp_path: Path
) -> None:
    wav = str(write_wav(tmp_path / "in.wav", rate=16000))
    args = ["--room", "room-1", "--agent", "assistant", "--wav", wav]
    room_services.binding_set_access(tenant=world_a.tenant, binding=world_a.binding, access="none")

    assert "access to this room was revoked" in str(_usage_error(*args, "--participant", "caller"))

    room_services.room_set_status(tenant=world_a.tenant, room=world_a.room, status="closed")
    assert "the room is closed" in str(_usage_error(*args))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path: path, "no such file"),
        (lambda path: (path.write_bytes(b"not a wav at all"), path)[1], "is not a PCM WAV file"),
        (lambda path: _wav_of(path, width=1), "has 8-bit samples; use 16-bit PCM"),
        (lambda path: _wav_of(path, channels=3), "has 3 channels; use a mono or stereo file"),
        (lambda path: _wav_of(path, rate=4000), "is at 4000 Hz; use 8000-192000 Hz"),
        (lambda path: _wav_of(path, frames=0), "holds no audio"),
    ],
)
def test_a_missing_or_unsupported_wav_is_a_usage_error(
    world_a: TenantWorld, tmp_path: Path, make: Any, message: str
) -> None:
    wav = make(tmp_path / "in.wav")

    error = _usage_error("--room", "room-1", "--agent", "assistant", "--wav", str(wav))

    assert message in str(error)


def _wav_of(
    path: Path, *, width: int = 2, channels: int = 1, rate: int = 16000, frames: int = 1600
) -> Path:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(b"\x01" * width * channels * frames)
    return path


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--speed", "-1"], "--speed must be between 0 and"),
        (["--wait", "-1"], "--wait must be between 0 and"),
        (["--participant", "user:7"], "--participant must be 1-128 characters"),
    ],
)
def test_bad_options_are_usage_errors(
    world_a: TenantWorld, tmp_path: Path, option: list[str], message: str
) -> None:
    wav = str(write_wav(tmp_path / "in.wav", rate=16000))

    error = _usage_error("--room", "room-1", "--agent", "assistant", "--wav", wav, *option)

    assert message in str(error)


def test_from_the_shell_bad_usage_exits_2_with_a_message_and_no_traceback(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "voice_call", "--room", "room-1", "--agent", "a",
         "--wav", str(tmp_path / "missing.wav")],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "roomvoice.settings_test"},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"CommandError: no such file: {tmp_path / 'missing.wav'}\n"


def _speaking(who: str, speaking: bool) -> dict[str, Any]:
    return {"type": "speaking", "who": who, "speaking": speaking}


def _tool(call_id: str, status: str) -> dict[str, Any]:
    return {"type": "tool_call", "call_id": call_id, "name": "get_weather", "status": status}


def test_the_reply_is_over_only_once_every_tool_result_has_its_answer() -> None:
    state = CallState()
    for message in (
        _speaking("user", True),
        _speaking("user", False),
        _speaking("assistant", True),  # the response that calls the tool
        _speaking("assistant", False),
        _tool("call-1", "running"),
    ):
        state.handle(message)
    assert not state.idle()

    # The answer started before the call's outcome reached us (the store wrote it first).
    state.handle(_speaking("assistant", True))
    state.handle(_tool("call-1", "succeeded"))
    state.handle(_speaking("assistant", False))
    assert state.idle()

    # The outcome came first: the model's answer to it is awaited.
    state.handle(_tool("call-2", "running"))
    state.handle(_tool("call-2", "failed"))
    assert not state.idle()
    state.handle(_speaking("assistant", True))
    state.handle(_speaking("assistant", False))
    assert state.idle()

    # A new turn of the caller wants a new answer.
    state.handle(_speaking("user", True))
    state.handle(_speaking("user", False))
    assert not state.idle()
