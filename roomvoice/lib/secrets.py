"""Encryption of secrets at rest, key hashing and masking. No Django imports.

Secrets (provider API keys) are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from
``cryptography``). A :class:`SecretBox` holds one or more keys: the first encrypts, all of
them decrypt, so keys can be rotated by prepending a new one and re-encrypting rows at
leisure (``manage.py rotate_credentials``).

API keys are high-entropy random tokens, so a single SHA-256 is the right hash (no salt or
stretching needed: there is nothing to brute-force); comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "SecretBox",
    "SecretDecryptionError",
    "derive_fernet_key",
    "hash_token",
    "mask_secret",
    "new_token",
    "tokens_equal",
]


class SecretDecryptionError(Exception):
    """A stored secret could not be decrypted with any configured key."""


def derive_fernet_key(material: str, *, purpose: str) -> str:
    """A Fernet key derived from ``material`` (e.g. SECRET_KEY) with HKDF-SHA256."""
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"roomvoice",
        info=purpose.encode(),
    )
    return base64.urlsafe_b64encode(hkdf.derive(material.encode())).decode()


class SecretBox:
    """Encrypts and decrypts short secrets with a rotating list of Fernet keys."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("SecretBox needs at least one key")
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        except (ValueError, TypeError) as error:
            raise ValueError(
                "an encryption key is not a valid Fernet key (32 url-safe base64 bytes)"
            ) from error

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretDecryptionError(
                "stored secret cannot be decrypted with the configured keys"
            ) from None

    def rotate(self, token: str) -> str:
        """The token re-encrypted with the first (current) key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise SecretDecryptionError(
                "stored secret cannot be decrypted with the configured keys"
            ) from None


def new_token(nbytes: int = 32) -> str:
    """A url-safe random token with ``nbytes`` of entropy."""
    return secrets.token_urlsafe(nbytes)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(left: str, right: str) -> bool:
    return hmac.compare_digest(left.encode(), right.encode())


def mask_secret(secret: str, *, visible: int = 4) -> str:
    """``sk-…abcd``: enough to recognise a key, never enough to use it."""
    if visible <= 0:
        return "…"  # secret[-0:] would be the whole secret
    shown = 3 + visible
    if len(secret) < max(4 * visible, 2 * shown):
        return "…"  # too short to show any part of it safely (never more than half)
    return f"{secret[:3]}…{secret[-visible:]}"
