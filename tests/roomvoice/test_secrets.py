"""roomvoice.lib.secrets: SecretBox, token hashing and comparison, masking. No database."""

from __future__ import annotations

import hashlib
import string

import pytest
from cryptography.fernet import Fernet

from roomvoice.lib.secrets import (
    SecretBox,
    SecretDecryptionError,
    derive_fernet_key,
    hash_token,
    mask_secret,
    new_token,
    tokens_equal,
)

KEY_OLD = Fernet.generate_key().decode()
KEY_NEW = Fernet.generate_key().decode()
KEY_OTHER = Fernet.generate_key().decode()
URL_SAFE_ALPHABET = set(string.ascii_letters + string.digits + "-_")


def test_secret_box_round_trips_unicode_text() -> None:
    box = SecretBox([KEY_NEW])

    token = box.encrypt("sk-ünïcødé-🔑")

    assert "ünïcødé" not in token
    assert box.decrypt(token) == "sk-ünïcødé-🔑"


def test_secret_box_token_is_a_fernet_token_of_the_first_key() -> None:
    token = SecretBox([KEY_NEW, KEY_OLD]).encrypt("sk-secret")

    assert Fernet(KEY_NEW.encode()).decrypt(token.encode()) == b"sk-secret"


def test_secret_box_decrypts_tokens_of_every_configured_key() -> None:
    old_token = SecretBox([KEY_OLD]).encrypt("sk-old")
    new_token_ = SecretBox([KEY_NEW]).encrypt("sk-new")

    box = SecretBox([KEY_NEW, KEY_OLD])

    assert (box.decrypt(old_token), box.decrypt(new_token_)) == ("sk-old", "sk-new")


def test_secret_box_rotate_re_encrypts_with_the_first_key() -> None:
    old_token = SecretBox([KEY_OLD]).encrypt("sk-rotated")

    rotated = SecretBox([KEY_NEW, KEY_OLD]).rotate(old_token)

    assert rotated != old_token
    assert SecretBox([KEY_NEW]).decrypt(rotated) == "sk-rotated"
    with pytest.raises(SecretDecryptionError):
        SecretBox([KEY_OLD]).decrypt(rotated)


def test_secret_box_rotate_of_a_token_no_key_opens_raises_secret_decryption_error() -> None:
    token = SecretBox([KEY_OTHER]).encrypt("sk-x")

    with pytest.raises(SecretDecryptionError):
        SecretBox([KEY_NEW, KEY_OLD]).rotate(token)


def test_secret_box_decrypt_with_the_wrong_key_raises_secret_decryption_error() -> None:
    token = SecretBox([KEY_OLD]).encrypt("sk-secret")

    with pytest.raises(SecretDecryptionError) as caught:
        SecretBox([KEY_OTHER]).decrypt(token)

    assert str(caught.value) == "stored secret cannot be decrypted with the configured keys"
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ is True


@pytest.mark.parametrize("token", ["", "not-a-token", "gAAAAAB" + "A" * 80])
def test_secret_box_decrypt_of_garbage_raises_secret_decryption_error(token: str) -> None:
    with pytest.raises(SecretDecryptionError):
        SecretBox([KEY_NEW]).decrypt(token)


def test_secret_box_decrypt_of_a_tampered_token_raises_secret_decryption_error() -> None:
    box = SecretBox([KEY_NEW])
    token = box.encrypt("sk-secret")
    tampered = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]

    with pytest.raises(SecretDecryptionError):
        box.decrypt(tampered)


@pytest.mark.parametrize("keys", [["not-a-key"], [KEY_NEW, "short"], [KEY_NEW[:-4]]])
def test_secret_box_with_an_invalid_key_raises_value_error(keys: list[str]) -> None:
    with pytest.raises(ValueError, match="not a valid Fernet key"):
        SecretBox(keys)


def test_secret_box_without_keys_raises_value_error() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        SecretBox([])


def test_derive_fernet_key_is_deterministic_per_material_and_purpose() -> None:
    key = derive_fernet_key("django-secret", purpose="credentials")

    assert key == derive_fernet_key("django-secret", purpose="credentials")
    assert key != derive_fernet_key("django-secret", purpose="other")
    assert key != derive_fernet_key("other-secret", purpose="credentials")
    assert SecretBox([key]).decrypt(SecretBox([key]).encrypt("ok")) == "ok"


def test_hash_token_is_the_sha256_hex_digest() -> None:
    assert hash_token("rv_abc") == hashlib.sha256(b"rv_abc").hexdigest()
    assert hash_token("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_tokens_equal_compares_exactly() -> None:
    assert tokens_equal("abc", "abc") is True
    assert tokens_equal("abc", "abd") is False
    assert tokens_equal("abc", "abcd") is False
    assert tokens_equal("ключ", "ключ") is True
    assert tokens_equal("", "") is True


def test_new_token_is_url_safe_and_unique() -> None:
    tokens = {new_token() for _ in range(50)}

    assert len(tokens) == 50
    assert all(len(token) == 43 for token in tokens)  # 32 bytes, base64 without padding
    assert all(set(token) <= URL_SAFE_ALPHABET for token in tokens)


def test_mask_secret_of_a_long_secret_shows_three_leading_and_four_trailing_characters() -> None:
    assert mask_secret("sk-proj-0123456789abcdwxyz") == "sk-…wxyz"


def test_mask_secret_shows_parts_from_sixteen_characters() -> None:
    assert mask_secret("sk-0123456789wxy") == "sk-…9wxy"
    assert mask_secret("sk-0123456789wx") == "…"


@pytest.mark.parametrize("secret", ["", "a", "sk-short", "sk-fifteen-char"])
def test_mask_secret_of_a_short_secret_shows_nothing(secret: str) -> None:
    assert mask_secret(secret) == "…"


@pytest.mark.parametrize("visible", [0, -1, -4])
def test_mask_secret_with_no_visible_characters_shows_nothing(visible: int) -> None:
    assert mask_secret("sk-proj-0123456789abcdwxyz", visible=visible) == "…"


@pytest.mark.parametrize(
    ("secret", "visible", "expected"),
    [
        ("abcd", 1, "…"),
        ("abcdefg", 1, "…"),
        ("abcdefgh", 1, "abc…h"),
        ("abcdefghi", 2, "…"),
        ("abcdefghij", 2, "abc…ij"),
        ("0123456789abcdefghij", 5, "012…fghij"),
    ],
)
def test_mask_secret_never_shows_more_than_half_of_the_secret(
    secret: str, visible: int, expected: str
) -> None:
    assert mask_secret(secret, visible=visible) == expected
