"""The provider credential admin: the secret goes in encrypted and never comes back out (not in
the page, not as ciphertext). Tenant isolation and roles across every admin model are in
tests/test_admin_isolation.py."""

from __future__ import annotations

import pytest
from django.test import Client

from providers.models import ProviderCredential
from rooms.models import User
from tests.fixtures.actors import TenantWorld
from tests.fixtures.admin import (
    SECRET,
    add_url,
    admin_url,
    changelist_url,
    credential_form,
    form_errors,
    reveal,
    snapshot,
)

CREDENTIAL = "providercredential"


# --- The secret -----------------------------------------------------------------------------


def test_added_secret_is_stored_encrypted_and_never_shown(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    client.force_login(owner_a)
    response = client.post(add_url(CREDENTIAL), credential_form(world_a))
    assert response.status_code == 302
    credential = ProviderCredential.objects.get(tenant=world_a.tenant, name="new")
    row = snapshot(credential)
    assert [column for column, value in row.items() if SECRET in str(value)] == []
    assert reveal(credential) == SECRET
    assert credential.secret_hint == "sk-…CRET"
    page = client.get(admin_url(credential, "change")).content.decode()
    changelist = client.get(changelist_url(CREDENTIAL)).content.decode()
    assert SECRET not in page
    assert row["encrypted_secret"] not in page
    assert "sk-…CRET" in page
    assert SECRET not in changelist
    assert row["encrypted_secret"] not in changelist


def test_new_credential_without_secret_is_refused(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    before = ProviderCredential.objects.count()
    client.force_login(owner_a)
    response = client.post(add_url(CREDENTIAL), credential_form(world_a, secret=""))
    assert form_errors(response) == {"secret": ["A new credential needs its secret."]}
    assert ProviderCredential.objects.count() == before


@pytest.mark.parametrize(
    ("secret", "error"),
    [
        ("sk-two words", "The secret contains whitespace; paste the key alone."),
        ("k" * 4097, "The secret is longer than 4096 characters."),
    ],
)
def test_unusable_secret_is_a_form_error_on_add_and_edit(
    client: Client, world_a: TenantWorld, owner_a: User, secret: str, error: str
) -> None:
    credential = world_a.credential
    before, count = snapshot(credential), ProviderCredential.objects.count()
    client.force_login(owner_a)
    add = client.post(add_url(CREDENTIAL), credential_form(world_a, secret=secret))
    edit = client.post(admin_url(credential, "change"), {"name": "openai-main", "secret": secret})
    assert form_errors(add) == {"secret": [error]}
    assert form_errors(edit) == {"secret": [error]}
    assert (snapshot(credential), ProviderCredential.objects.count()) == (before, count)


def test_editing_with_blank_secret_keeps_the_old_one(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    credential = world_a.credential
    before = snapshot(credential)
    client.force_login(owner_a)
    response = client.post(admin_url(credential, "change"), {"name": "renamed", "secret": ""})
    assert response.status_code == 302
    after = snapshot(credential)
    assert after["name"] == "renamed"
    assert [after[key] for key in ("encrypted_secret", "secret_hint", "secret_updated_at")] == [
        before[key] for key in ("encrypted_secret", "secret_hint", "secret_updated_at")
    ]
    assert reveal(credential) == "sk-tenant-a-0123456789abcdefXYZ"


def test_editing_with_a_new_secret_replaces_it(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    credential = world_a.credential
    before = snapshot(credential)
    client.force_login(owner_a)
    response = client.post(
        admin_url(credential, "change"), {"name": "openai-main", "secret": SECRET}
    )
    assert response.status_code == 302
    after = snapshot(credential)
    assert reveal(credential) == SECRET
    assert after["secret_hint"] == "sk-…CRET"
    assert after["secret_updated_at"] > before["secret_updated_at"]


def test_kind_and_tenant_are_fixed_after_creation(
    client: Client, world_a: TenantWorld, world_b: TenantWorld, superuser: User
) -> None:
    credential = world_a.credential
    client.force_login(superuser)
    client.post(
        admin_url(credential, "change"),
        {"name": "openai-main", "kind": "xai", "tenant": world_b.tenant.pk, "secret": ""},
    )
    assert ProviderCredential.objects.values_list("kind", "tenant_id").get(pk=credential.pk) == (
        "openai",
        world_a.tenant.pk,
    )


# --- The endpoint (base_url) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "error"),
    [
        ("http://gateway.example.com/v1", "The endpoint must be a ws:// or wss:// URL"),
        ("ws://gateway.example.com/v1", "Unencrypted ws:// endpoints are allowed only on this"),
        ("wss://user:pw@gateway.example.com/v1", "The endpoint may not contain credentials"),
        ("wss://gateway.example.com/v1?key=1", "The endpoint may not contain credentials"),
        ("wss://gateway.example.com:99999/v1", "Enter a valid URL."),
    ],
)
def test_an_unsafe_or_malformed_endpoint_is_a_form_error(
    client: Client, world_a: TenantWorld, owner_a: User, base_url: str, error: str
) -> None:
    count = ProviderCredential.objects.count()
    client.force_login(owner_a)
    response = client.post(add_url(CREDENTIAL), credential_form(world_a, base_url=base_url))
    errors = form_errors(response)
    assert list(errors) == ["base_url"]
    assert errors["base_url"][0].startswith(error)
    assert ProviderCredential.objects.count() == count


@pytest.mark.parametrize(
    "base_url", ["wss://gateway.example.com/openai/v1", "ws://127.0.0.1:8765/v1", ""]
)
def test_a_credential_keeps_its_endpoint_and_an_edit_changes_it(
    client: Client, world_a: TenantWorld, owner_a: User, base_url: str
) -> None:
    client.force_login(owner_a)
    response = client.post(add_url(CREDENTIAL), credential_form(world_a, base_url=base_url))
    assert response.status_code == 302
    credential = ProviderCredential.objects.get(tenant=world_a.tenant, name="new")
    assert credential.base_url == base_url
    edit = client.post(
        admin_url(credential, "change"),
        {"name": "new", "secret": "", "base_url": "wss://other.example.com/v1"},
    )
    assert edit.status_code == 302
    credential.refresh_from_db()
    assert credential.base_url == "wss://other.example.com/v1"
    assert reveal(credential) == SECRET  # the secret is untouched


# --- Which provider an agent uses -----------------------------------------------------------


def test_the_agent_admin_says_which_provider_answers_and_where(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    from voice import services as voice_services

    offline = voice_services.agent_create(
        tenant=world_a.tenant, slug="offline", name="Offline", provider_kind="local"
    )
    keyless = voice_services.agent_create(
        tenant=world_a.tenant, slug="keyless", name="Keyless", provider_kind="gemini"
    )
    client.force_login(owner_a)

    changelist = client.get(changelist_url("agent")).content.decode()
    offline_page = client.get(admin_url(offline, "change")).content.decode()
    keyless_page = client.get(admin_url(keyless, "change")).content.decode()
    cloud_page = client.get(admin_url(world_a.agent, "change")).content.decode()

    runs_here = "Offline (speech on this server, no key): runs on this server, no key, no network"
    assert runs_here in changelist and runs_here in offline_page
    assert "Google Gemini Live: NO CREDENTIAL, sessions cannot start" in keyless_page
    assert f"OpenAI Realtime: cloud, key “{world_a.credential.name}”" in cloud_page
    assert "NO CREDENTIAL" in changelist and "cloud, key" in changelist
