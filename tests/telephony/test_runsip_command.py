"""``manage.py runsip`` as it runs in production: its own process, on the test's PostgreSQL
database and Redis layer, answering a ``sipp`` call for an agent whose provider is the fake
OpenAI Realtime server (reached through the agent's credential endpoint). The call's
transcripts land on the room's timeline; SIGTERM stops the process cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from rooms.models import EventKind, RoomEvent
from telephony.models import PhoneNumber
from tests.commands.test_voice_call import API_KEY, HEARD, REPLY, point_agent_at, serving
from tests.fakes.openai_realtime import FakeOpenAIRealtime
from tests.fixtures import sip as tools
from tests.fixtures.actors import TenantWorld
from tests.fixtures.services import test_database_url
from tests.telephony.sip_harness import NUMBER, free_port, rtp_range
from voice.models import EndReason, SessionState, VoiceSession

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def runsip(
    transactional_db: None, redis_layer: None
) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    port = free_port()
    first, last = rtp_range()
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "runsip",
            "--bind",
            f"127.0.0.1:{port}",
            "--rtp-ports",
            f"{first + 100}-{last}",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "roomvoice.settings_test",
            "DATABASE_URL": test_database_url(),
        },
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 60
        for line in process.stderr:  # the first line says it listens
            if "runsip: listening" in line:
                break
            assert time.monotonic() < deadline, "runsip did not start"
        else:
            raise AssertionError(f"runsip exited with {process.wait()}")
        yield port, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.mark.integration
def test_runsip_answers_a_call_for_an_agent_on_a_fake_provider(
    world_a: TenantWorld, runsip: tuple[int, subprocess.Popen[str]], tmp_path: Path
) -> None:
    port, process = runsip
    number = PhoneNumber(tenant=world_a.tenant, number=NUMBER, room=world_a.room)
    number.agent = world_a.agent
    number.full_clean()
    number.save()
    media = tools.make_call_media("What is the weather in Paris?", "PCMU", tmp_path)
    fake = FakeOpenAIRealtime(api_key=API_KEY, auto_vad=True, next_reply=REPLY)
    fake.user_transcripts.append(HEARD)
    with serving(fake):
        point_agent_at(world_a, fake.base_url)
        result = asyncio.run(
            tools.run_sipp(
                "call.xml",
                target=f"127.0.0.1:{port}",
                number=NUMBER,
                media_port=tools.free_port_pair(),
                sip_port=free_port(),
                keys=media.keys(),
                variables=media.variables(pause_ms=3000),
            )
        )
    assert result.ok, result.report()

    deadline = time.monotonic() + 15
    session = VoiceSession.objects.get(tenant=world_a.tenant)
    while session.state != SessionState.ENDED and time.monotonic() < deadline:
        time.sleep(0.1)
        session.refresh_from_db()
    assert (session.state, session.end_reason, session.transport) == (
        SessionState.ENDED,
        EndReason.CLIENT_HANGUP,
        "sip",
    )
    transcripts = list(
        RoomEvent.objects.filter(room=world_a.room, kind=EventKind.TRANSCRIPT)
        .order_by("index")
        .values_list("role", "text")
    )
    assert transcripts == [("user", HEARD), ("assistant", REPLY)]

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--bind", "localhost", "use ADDRESS:PORT"),
        ("--bind", "127.0.0.1:99999", "use ADDRESS:PORT"),
        ("--advertise", "pbx.example.com", "is not an IP address"),
        ("--rtp-ports", "30000", "is not a port range"),
        ("--max-calls", "0", "at least 1"),
    ],
)
def test_bad_options_are_usage_errors(option: str, value: str, message: str) -> None:
    with pytest.raises(CommandError, match=message) as raised:
        call_command("runsip", option, value)
    assert raised.value.returncode == 2
