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
