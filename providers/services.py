"""Writes for provider credentials. The plaintext secret exists only in the arguments of
``credential_create`` / ``credential_set_secret`` and the return value of
``credential_reveal`` (used by the engine when it connects); it is never logged."""

from __future__ import annotations

import logging
from functools import cache

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from providers.models import ProviderCredential, ProviderKind
from rooms.models import Tenant
from rooms.services import _require_tenant
from roomvoice.lib.secrets import SecretBox, mask_secret

logger = logging.getLogger(__name__)

MAX_SECRET_LENGTH = 4096


@cache
def _box(keys: tuple[str, ...]) -> SecretBox:
    return SecretBox(keys)


def secret_box() -> SecretBox:
    """The box for the configured keys (cached per key list, so settings overrides apply)."""
    return _box(tuple(settings.ROOMVOICE_ENCRYPTION_KEYS))


def credential_clean_secret(secret: str) -> str:
    """The secret as it will be stored, or a ValidationError on ``secret``."""
    secret = secret.strip()
    if not secret:
        raise ValidationError({"secret": "The secret cannot be empty."})
    if len(secret) > MAX_SECRET_LENGTH:
        raise ValidationError(
            {"secret": f"The secret is longer than {MAX_SECRET_LENGTH} characters."}
        )
    if any(character.isspace() for character in secret):
        raise ValidationError({"secret": "The secret contains whitespace; paste the key alone."})
    return secret


def credential_create(
    *, tenant: Tenant, name: str, kind: str, secret: str, base_url: str = ""
) -> ProviderCredential:
    if kind not in ProviderKind.values:
        raise ValidationError({"kind": f"Unknown provider kind {kind!r}."})
    secret = credential_clean_secret(secret)
    credential = ProviderCredential(
        tenant=tenant,
        name=name.strip(),
        kind=kind,
        encrypted_secret=secret_box().encrypt(secret),
        secret_hint=mask_secret(secret),
        secret_updated_at=timezone.now(),
        base_url=base_url.strip(),
    )
    credential.full_clean()
    credential.save()
    logger.info(
        "provider credential %s (%s) created for tenant %s", credential.pk, kind, tenant.slug
    )
    return credential


def credential_set_secret(
    *, tenant: Tenant, credential: ProviderCredential, secret: str
) -> ProviderCredential:
    _require_tenant(tenant, credential)
    secret = credential_clean_secret(secret)
    credential.encrypted_secret = secret_box().encrypt(secret)
    credential.secret_hint = mask_secret(secret)
    credential.secret_updated_at = timezone.now()
    credential.save(
        update_fields=["encrypted_secret", "secret_hint", "secret_updated_at", "updated_at"]
    )
    logger.info("provider credential %s secret replaced", credential.pk)
    return credential


def credential_reveal(*, tenant: Tenant, credential: ProviderCredential) -> str:
    """The plaintext secret, for connecting to the vendor. Never log or return it to a client."""
    _require_tenant(tenant, credential)
    return secret_box().decrypt(credential.encrypted_secret)


def credentials_reencrypt_all() -> int:
    """Re-encrypts every credential with the current (first) key; returns how many it rewrote
    (Fernet makes new ciphertext each time, so that is every credential).

    Rotation: put the new key first in ROOMVOICE_ENCRYPTION_KEYS, keep the old ones after it,
    run ``manage.py rotate_credentials``, then drop the old keys.
    """
    box = secret_box()
    changed = 0
    with transaction.atomic():
        for credential in ProviderCredential.objects.select_for_update().only(
            "pk", "encrypted_secret"
        ):
            rotated = box.rotate(credential.encrypted_secret)
            if rotated != credential.encrypted_secret:
                ProviderCredential.objects.filter(pk=credential.pk).update(encrypted_secret=rotated)
                changed += 1
    return changed
