"""``manage.py check_providers``: a session opened and closed per credential, a table of the
outcomes, exit code 1 when any failed, and never a secret in the output."""

from __future__ import annotations

import asyncio
import socket
from io import StringIO
from types import TracebackType
from typing import Self

import pytest
from django.core.management import CommandError, call_command

from providers import services as provider_services
from rooms import services as room_services
from rooms.models import Tenant
from tests.commands.test_voice_call import serving
from tests.fakes.openai_realtime import FakeOpenAIRealtime
from voice import services as voice_services

FAKE_KEY = "sk-check-fake-0123456789abcdef"
DOWN_KEY = "sk-check-down-0123456789abcdef"


def _run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("check_providers", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SilentServer:
    """Accepts TCP connections and never answers (a vendor that hangs)."""

    def __init__(self) -> None:
        self.url = ""
        self._server: asyncio.Server | None = None
        self._held: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Self:
        async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._held.append(writer)

        self._server = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        for writer in self._held:
            writer.close()
        self._server.close()
        await self._server.wait_closed()


@pytest.mark.django_db
def test_one_credential_ok_and_one_unreachable_gives_a_table_and_exit_code_1() -> None:
    tenant = room_services.tenant_create(slug="checks", name="Checks")
    fake = FakeOpenAIRealtime(api_key=FAKE_KEY)
    with serving(fake):
        good = provider_services.credential_create(
            tenant=tenant, name="good", kind="openai", secret=FAKE_KEY, base_url=fake.base_url
        )
        voice_services.agent_create(
            tenant=tenant,
            slug="helper",
            name="Helper",
            provider_kind="openai",
            credential=good,
            model="gpt-realtime",
            system_prompt="Be brief.",
        )
        down_url = f"ws://127.0.0.1:{closed_port()}/v1"
        provider_services.credential_create(
            tenant=tenant, name="down", kind="openai", secret=DOWN_KEY, base_url=down_url
        )
        out = StringIO()

        with pytest.raises(CommandError) as raised:
            call_command("check_providers", "--tenant", "checks", stdout=out, stderr=StringIO())

    assert raised.value.returncode == 1
    assert str(raised.value) == "1 of 2 credential(s) failed"
    lines = out.getvalue().splitlines()
    assert lines[0].split() == [
        "TENANT", "CREDENTIAL", "KIND", "ENDPOINT", "AGENT", "RESULT", "DETAIL"
    ]  # fmt: skip
    down, good_line = lines[1].split(), lines[2].split()  # by credential name
    assert down[:6] == ["checks", "down", "openai", down_url, "-", "FAILED"]
    assert " ".join(down[6:]) == "connect_failed: cannot reach OpenAI: ConnectionRefusedError"
    assert good_line[:6] == ["checks", "good", "openai", fake.base_url, "helper", "ok"]
    assert " ".join(good_line[6:]).startswith("connected in ")
    assert "vendor session sess_" in lines[2]
    assert lines[3] == "2 credential(s) checked: 1 ok, 1 failed"
    # The check connected with the agent's settings, then closed the session.
    assert fake.connections == 1
    assert fake.received[0]["session"]["instructions"] == "Be brief."
    assert FAKE_KEY not in out.getvalue() and DOWN_KEY not in out.getvalue()


@pytest.mark.django_db
def test_all_ok_exits_0_and_a_refused_key_is_reported_without_the_key() -> None:
    tenant = room_services.tenant_create(slug="checks", name="Checks")
    fake = FakeOpenAIRealtime(api_key=FAKE_KEY)
    with serving(fake):
        provider_services.credential_create(
            tenant=tenant, name="good", kind="openai", secret=FAKE_KEY, base_url=fake.base_url
        )
        out, _ = _run("--tenant", "checks")
        assert out.splitlines()[-1] == "1 credential(s) checked: 1 ok, 0 failed"

        provider_services.credential_create(
            tenant=tenant, name="stale", kind="openai", secret=DOWN_KEY, base_url=fake.base_url
        )
        out = StringIO()
        with pytest.raises(CommandError) as raised:
            call_command("check_providers", "--tenant", "checks", stdout=out)

    assert raised.value.returncode == 1
    stale = out.getvalue().splitlines()[2]
    assert stale.split()[:6] == ["checks", "stale", "openai", fake.base_url, "-", "FAILED"]
    assert "invalid_api_key: OpenAI refused the session: Incorrect API key provided." in stale
    assert DOWN_KEY not in out.getvalue() and FAKE_KEY not in out.getvalue()


@pytest.mark.django_db
def test_a_vendor_that_does_not_answer_fails_within_the_timeout() -> None:
    tenant = room_services.tenant_create(slug="checks", name="Checks")
    with serving(SilentServer()) as silent:
        provider_services.credential_create(
            tenant=tenant, name="hung", kind="openai", secret=FAKE_KEY, base_url=silent.server.url
        )
        out = StringIO()

        with pytest.raises(CommandError) as raised:
            call_command("check_providers", "--tenant", "checks", "--timeout", "0.5", stdout=out)

    assert raised.value.returncode == 1
    assert out.getvalue().splitlines()[1].endswith("FAILED  no session within 0.5 s")


@pytest.mark.django_db
def test_only_the_named_tenants_credentials_are_checked(tenant_b: Tenant) -> None:
    room_services.tenant_create(slug="empty", name="Empty")

    out, _ = _run("--tenant", "empty")  # tenant B's credential is never contacted

    assert out == "no provider credentials to check\n"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tenant", "nope"], "no tenant 'nope'"),
        (["--timeout", "0"], "--timeout must be more than 0"),
    ],
)
def test_bad_input_is_a_usage_error(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message) as raised:
        _run(*args)

    assert raised.value.returncode == 2
