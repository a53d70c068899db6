from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from providers.services import credential_create
from rooms.models import ChannelBinding, Membership, MembershipRole, Room, Tenant, User
from voice.models import Agent


def _seed(**env: str) -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_seed_demo_creates_a_usable_demo_and_prints_the_password_once(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "DJANGO_SUPERUSER_USERNAME",
        "DJANGO_SUPERUSER_PASSWORD",
        "DJANGO_SUPERUSER_EMAIL",
    ):
        monkeypatch.delenv(name, raising=False)

    output = _seed()

    match = re.search(r"superuser admin password (\S+)", output)
    assert match is not None, output
    tenant = Tenant.objects.get(slug="demo")
    room = Room.objects.get(tenant=tenant, key="room-1")
    agent = Agent.objects.get(tenant=tenant, slug="assistant")
    assert room.default_agent == agent
    assert ChannelBinding.objects.filter(room=room, channel_id="voice").count() == 1
    admin = User.objects.get(username="admin")
    assert admin.is_superuser
    assert Membership.objects.get(user=admin, tenant=tenant).role == MembershipRole.OWNER
    assert client.login(username="admin", password=match.group(1))
    assert client.get("/admin/").status_code == 200

    second = _seed()

    assert "password" not in second.replace("changepassword", "")
    assert Tenant.objects.filter(slug="demo").count() == 1
    assert Room.objects.filter(tenant=tenant).count() == 1
    assert Agent.objects.filter(tenant=tenant).count() == 1
    assert User.objects.count() == 1


@pytest.mark.django_db
def test_seed_demo_takes_the_superuser_from_the_environment_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "ops")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-operator-password")

    output = _seed()

    assert "a-long-operator-password" not in output
    assert User.objects.get(username="ops").check_password("a-long-operator-password")


@pytest.mark.django_db
def test_seed_demo_agent_talks_back_with_no_key_and_its_page_opens(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "demo-password-123")

    output = _seed()
    room = Room.objects.get(tenant__slug="demo", key="room-1")
    client.force_login(User.objects.get(username="admin"))
    page = client.get(f"/rooms/{room.pk}/voice/")

    agent = Agent.objects.get(tenant__slug="demo", slug="assistant")
    assert (agent.provider_kind, agent.credential) == ("local", None)
    assert "agent    assistant: Offline" in output and "no cloud credential" in output
    assert f"/rooms/{room.pk}/voice/" in output
    assert page.status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("earlier", ["mock", "echo"])
def test_seed_demo_upgrades_an_earlier_demo_agent_to_offline_speech(earlier: str) -> None:
    _seed()
    Agent.objects.filter(tenant__slug="demo", slug="assistant").update(provider_kind=earlier)

    _seed()

    assert Agent.objects.get(tenant__slug="demo", slug="assistant").provider_kind == "local"


@pytest.mark.django_db
def test_seed_demo_uses_the_tenants_cloud_credential_when_there_is_one() -> None:
    _seed()
    tenant = Tenant.objects.get(slug="demo")
    credential = credential_create(
        tenant=tenant, name="team key", kind="openai", secret="sk-test-0123456789abcdef"
    )

    output = _seed()

    agent = Agent.objects.get(tenant=tenant, slug="assistant")
    assert (agent.provider_kind, agent.credential) == ("openai", credential)
    assert "'team key'" in output
    # An agent the operator moved to another vendor is theirs: a re-run leaves it alone.
    Agent.objects.filter(pk=agent.pk).update(provider_kind="gemini", credential=None)
    again = _seed()
    assert Agent.objects.get(pk=agent.pk).provider_kind == "gemini"
    assert "Google Gemini Live (chosen by an operator: left as it is)" in again


@pytest.mark.django_db
def test_without_espeak_or_the_model_the_demo_falls_back_to_the_echo_test(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        "rooms.management.commands.seed_demo.offline_speech_missing",
        lambda: "espeak-ng (Debian: apt install espeak-ng)",
    )

    output = _seed()

    assert Agent.objects.get(tenant__slug="demo", slug="assistant").provider_kind == "echo"
    assert "offline speech unavailable: espeak-ng" in output
