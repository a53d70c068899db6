"""``manage.py voice_call`` hosts its session on the channel layer like a WebSocket
consumer: a Celery tool's result and an operator's end request reach it there."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest
from django.core.management import CommandError
from django.db import connections

from tests.commands.test_voice_call import (
    API_KEY,
    HEARD,
    REPLY,
    point_agent_at,
    said,
    serving,
    voice_call,
    write_wav,
)
from tests.fakes.openai_realtime import FakeOpenAIRealtime
from tests.fixtures.actors import TenantWorld
from voice import services as voice_services
from voice.models import EndReason, SessionState, ToolCall, ToolExecution, VoiceSession


def _call_with_a_celery_tool(world: TenantWorld, tmp_path: Path) -> tuple[str, str]:
    voice_services.tool_update(tenant=world.tenant, tool=world.tool, execution=ToolExecution.CELERY)
    fake = FakeOpenAIRealtime(api_key=API_KEY, auto_vad=True, next_reply=REPLY)
    fake.user_transcripts.append(HEARD)
    fake.next_tool_call = ("get_weather", {"city": "Paris"})
    wav = write_wav(tmp_path / "in.wav", rate=16000)
    with serving(fake):
        point_agent_at(world, fake.base_url)
        return voice_call(
            "--room", "room-1", "--agent", "assistant", "--wav", str(wav),
            "--speed", "0", "--wait", "60",
        )  # fmt: skip


def _assert_the_celery_result_arrived(world: TenantWorld, out: str, err: str) -> None:
    assert said(out) == [
        f"user: {HEARD}",
        'tool get_weather({"city": "Paris"})',
        'tool get_weather succeeded: {"city": "Paris", "temperature": 21}',
        f"assistant: {REPLY}",
    ]
    call = ToolCall.objects.get(session__tenant=world.tenant)
    assert (call.execution, call.status) == (ToolExecution.CELERY, "succeeded")
    assert call.delivered_at is not None and call.late_at is None
    assert "not over" not in err


@pytest.mark.embedded
@pytest.mark.django_db(transaction=True)
def test_an_eager_celery_tool_answers_through_the_commands_host_channel(
    world_a: TenantWorld, tmp_path: Path
) -> None:
    out, err = _call_with_a_celery_tool(world_a, tmp_path)

    _assert_the_celery_result_arrived(world_a, out, err)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_answers_through_the_commands_host_channel(
    world_a: TenantWorld, tmp_path: Path, tool_worker: subprocess.Popen[bytes]
) -> None:
    out, err = _call_with_a_celery_tool(world_a, tmp_path)

    _assert_the_celery_result_arrived(world_a, out, err)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_an_operator_ends_a_voice_call_through_its_host_channel(
    world_a: TenantWorld, tmp_path: Path, redis_layer: None
) -> None:
    fake = FakeOpenAIRealtime(api_key=API_KEY)  # no voice detection: the caller just streams
    wav = write_wav(tmp_path / "in.wav", rate=16000, tone_s=0.0, silence_s=60.0)
    failures: list[CommandError] = []

    def call() -> None:
        try:
            voice_call("--room", "room-1", "--agent", "assistant", "--wav", str(wav))
        except CommandError as error:
            failures.append(error)
        finally:
            connections.close_all()

    with serving(fake) as served:
        point_agent_at(world_a, fake.base_url)
        caller = threading.Thread(target=call, name="voice-call")
        caller.start()
        try:
            # Audio flows once the session is live and its host listens.
            served.run(fake.wait_for("input_audio_buffer.append", timeout=30), timeout=40)
            session = VoiceSession.objects.get(tenant=world_a.tenant)
            assert session.state == SessionState.ACTIVE
            assert session.host_channel_name.startswith("specific.")

            assert voice_services.voice_session_request_end(
                tenant=world_a.tenant, session_id=session.pk
            )
        finally:
            caller.join(timeout=60)
    assert not caller.is_alive()

    assert [(error.returncode, str(error)) for error in failures] == [
        (1, "the session was ended from outside (ended_by_operator)")
    ]
    session.refresh_from_db()
    assert (session.state, session.end_reason) == (
        SessionState.ENDED,
        EndReason.ENDED_BY_OPERATOR,
    )
