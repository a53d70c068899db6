"""Provider credentials: encrypted at rest, masked, never shown or logged, rotatable."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ValidationError
from django.db import connection
from pytest_django.fixtures import Settings

from providers import services as provider_services
from providers.models import ProviderCredential
from rooms.models import Tenant
from rooms.services import TenantMismatch
from roomvoice.lib.secrets import SecretBox, SecretDecryptionError
from tests.fixtures.actors import TenantWorld

SECRET = "sk-live-0123456789abcdefwxyz"


def _raw_encrypted_secret(credential: ProviderCredential) -> str:
    """The column as the database holds it, read without the ORM."""
    table = connection.ops.quote_name(ProviderCredential._meta.db_table)
    pk = ProviderCredential._meta.pk.get_db_prep_value(credential.pk, connection)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT encrypted_secret FROM {table} WHERE id = %s", [pk])  # noqa: S608
        (value,) = cursor.fetchone()
    return str(value)


def _create(
    tenant: Tenant, secret: str = SECRET, name: str = "openai-second"
) -> ProviderCredential:
    return provider_services.credential_create(
        tenant=tenant, name=name, kind="openai", secret=secret
    )


def test_credential_create_stores_only_ciphertext_that_the_configured_key_decrypts(
    tenant_a: Tenant, settings: Settings
) -> None:
    credential = _create(tenant_a)

    raw = _raw_encrypted_secret(credential)

    assert SECRET not in raw
    assert "0123456789" not in raw
    assert SecretBox(settings.ROOMVOICE_ENCRYPTION_KEYS).decrypt(raw) == SECRET
    assert provider_services.credential_reveal(tenant=tenant_a, credential=credential) == SECRET


def test_credential_create_encrypts_the_same_secret_differently_each_time(
    tenant_a: Tenant,
) -> None:
    first = _create(tenant_a, name="one")
    second = _create(tenant_a, name="two")

    assert _raw_encrypted_secret(first) != _raw_encrypted_secret(second)


def test_credential_secret_hint_shows_only_the_prefix_and_last_four(tenant_a: Tenant) -> None:
    credential = _create(tenant_a)

    assert ProviderCredential.objects.get(pk=credential.pk).secret_hint == "sk-…wxyz"


def test_credential_secret_hint_of_a_short_secret_shows_nothing(tenant_a: Tenant) -> None:
    credential = _create(tenant_a, secret="short-secret-15")

    assert ProviderCredential.objects.get(pk=credential.pk).secret_hint == "…"


def test_credential_str_and_repr_never_contain_the_secret_or_ciphertext(
    tenant_a: Tenant,
) -> None:
    credential = ProviderCredential.objects.get(pk=_create(tenant_a).pk)
    ciphertext = _raw_encrypted_secret(credential)

    rendered = [str(credential), repr(credential)]

    assert rendered == [
        "openai-second (OpenAI Realtime, sk-…wxyz)",
        f"<ProviderCredential {credential.pk} openai sk-…wxyz>",
    ]
    assert not any(SECRET in text or ciphertext in text for text in rendered)


def test_credential_create_strips_surrounding_whitespace_from_the_secret(
    tenant_a: Tenant,
) -> None:
    credential = _create(tenant_a, secret=f"  {SECRET}\n")

    assert provider_services.credential_reveal(tenant=tenant_a, credential=credential) == SECRET


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("", "The secret cannot be empty."),
        ("  \n\t", "The secret cannot be empty."),
        ("sk-abc def-0123456789", "The secret contains whitespace; paste the key alone."),
        ("sk-abc\ndef-0123456789", "The secret contains whitespace; paste the key alone."),
        ("x" * 4097, "The secret is longer than 4096 characters."),
    ],
)
def test_credential_create_refuses_a_bad_secret_and_creates_nothing(
    tenant_a: Tenant, secret: str, message: str
) -> None:
    before = list(ProviderCredential.objects.values_list("pk", flat=True))

    with pytest.raises(ValidationError) as caught:
        _create(tenant_a, secret=secret)

    assert caught.value.message_dict == {"secret": [message]}
    assert list(ProviderCredential.objects.values_list("pk", flat=True)) == before


def test_credential_create_accepts_a_secret_of_exactly_4096_characters(tenant_a: Tenant) -> None:
    credential = _create(tenant_a, secret="x" * 4096)

    assert provider_services.credential_reveal(tenant=tenant_a, credential=credential) == "x" * 4096


def test_credential_create_refuses_an_unknown_kind_and_creates_nothing(tenant_a: Tenant) -> None:
    before = ProviderCredential.objects.count()

    with pytest.raises(ValidationError) as caught:
        provider_services.credential_create(
            tenant=tenant_a, name="skype", kind="skype", secret=SECRET
        )

    assert caught.value.message_dict == {"kind": ["Unknown provider kind 'skype'."]}
    assert ProviderCredential.objects.count() == before


def test_credential_set_secret_replaces_ciphertext_hint_and_revealed_value(
    world_a: TenantWorld,
) -> None:
    credential = ProviderCredential.objects.get(pk=world_a.credential.pk)
    old_raw = _raw_encrypted_secret(credential)
    old_updated = credential.secret_updated_at
    assert old_updated is not None

    provider_services.credential_set_secret(
        tenant=world_a.tenant, credential=credential, secret="sk-new-9876543210zyxw"
    )

    stored = ProviderCredential.objects.get(pk=credential.pk)
    assert stored.secret_hint == "sk-…zyxw"
    assert _raw_encrypted_secret(stored) != old_raw
    assert stored.secret_updated_at is not None
    assert stored.secret_updated_at > old_updated
    assert (
        provider_services.credential_reveal(tenant=world_a.tenant, credential=stored)
        == "sk-new-9876543210zyxw"
    )


def test_credential_set_secret_refuses_another_tenant_and_changes_nothing(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    before = ProviderCredential.objects.filter(pk=world_a.credential.pk).values().get()

    with pytest.raises(TenantMismatch):
        provider_services.credential_set_secret(
            tenant=world_b.tenant, credential=world_a.credential, secret="sk-stolen-0123456789"
        )

    assert ProviderCredential.objects.filter(pk=world_a.credential.pk).values().get() == before


def test_credential_set_secret_refuses_an_empty_secret_and_changes_nothing(
    world_a: TenantWorld,
) -> None:
    before = ProviderCredential.objects.filter(pk=world_a.credential.pk).values().get()

    with pytest.raises(ValidationError):
        provider_services.credential_set_secret(
            tenant=world_a.tenant, credential=world_a.credential, secret="   "
        )

    assert ProviderCredential.objects.filter(pk=world_a.credential.pk).values().get() == before


def test_credential_reveal_refuses_another_tenant(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    with pytest.raises(TenantMismatch):
        provider_services.credential_reveal(tenant=world_b.tenant, credential=world_a.credential)


def test_key_rotation_keeps_credentials_readable_and_then_drops_the_old_key(
    world_a: TenantWorld, settings: Settings
) -> None:
    old_key = settings.ROOMVOICE_ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    secret = "sk-tenant-a-0123456789abcdefXYZ"
    old_raw = _raw_encrypted_secret(world_a.credential)

    settings.ROOMVOICE_ENCRYPTION_KEYS = [new_key, old_key]
    revealed_during_rotation = provider_services.credential_reveal(
        tenant=world_a.tenant, credential=world_a.credential
    )
    rotated = provider_services.credentials_reencrypt_all()
    new_raw = _raw_encrypted_secret(world_a.credential)

    settings.ROOMVOICE_ENCRYPTION_KEYS = [new_key]
    credential = ProviderCredential.objects.get(pk=world_a.credential.pk)
    revealed_after_rotation = provider_services.credential_reveal(
        tenant=world_a.tenant, credential=credential
    )

    assert revealed_during_rotation == secret
    assert rotated == 1
    assert new_raw != old_raw
    assert SecretBox([new_key]).decrypt(new_raw) == secret
    assert revealed_after_rotation == secret


def test_reveal_without_rotation_fails_once_the_old_key_is_dropped(
    world_a: TenantWorld, settings: Settings
) -> None:
    settings.ROOMVOICE_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    with pytest.raises(SecretDecryptionError):
        provider_services.credential_reveal(tenant=world_a.tenant, credential=world_a.credential)


def test_reencrypt_all_with_an_unrelated_key_fails_and_changes_nothing(
    world_a: TenantWorld, settings: Settings
) -> None:
    before = _raw_encrypted_secret(world_a.credential)
    settings.ROOMVOICE_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    with pytest.raises(SecretDecryptionError):
        provider_services.credentials_reencrypt_all()

    assert _raw_encrypted_secret(world_a.credential) == before


def test_creating_and_revealing_a_credential_never_logs_the_secret(
    tenant_a: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    credential = _create(tenant_a)
    provider_services.credential_set_secret(
        tenant=tenant_a, credential=credential, secret="sk-next-0123456789abcdefWXYZ"
    )
    provider_services.credential_reveal(tenant=tenant_a, credential=credential)

    logged = "\n".join([caplog.text, *(repr(record.args) for record in caplog.records)])
    assert f"provider credential {credential.pk} (openai) created" in caplog.text
    assert SECRET not in logged
    assert "sk-next-0123456789abcdefWXYZ" not in logged
    assert credential.encrypted_secret not in logged
