"""Writes for telephony rows: secrets go in encrypted, through these functions only."""

from __future__ import annotations

from django.core.exceptions import ValidationError

from providers.services import secret_box
from roomvoice.lib.secrets import mask_secret
from telephony.models import SipTrunk, TwilioAccount

MAX_SECRET_LENGTH = 256


def _clean_secret(value: str, field: str) -> str:
    value = value.strip()
    if not value:
        raise ValidationError({field: "Enter a value."})
    if len(value) > MAX_SECRET_LENGTH or any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise ValidationError(
            {field: f"At most {MAX_SECRET_LENGTH} characters, no spaces or control characters."}
        )
    return value


def trunk_clean_password(password: str) -> str:
    return _clean_secret(password, "password")


def trunk_put_password(trunk: SipTrunk, password: str) -> None:
    """Set ``trunk``'s digest password, encrypted (not saved). Blank clears it."""
    if not password:
        trunk.encrypted_password, trunk.password_hint = "", ""
        return
    password = trunk_clean_password(password)
    trunk.encrypted_password = secret_box().encrypt(password)
    trunk.password_hint = mask_secret(password, visible=2)


def trunk_reveal_password(trunk: SipTrunk) -> str:
    """For the one digest check that needs it. Never log it."""
    return secret_box().decrypt(trunk.encrypted_password) if trunk.encrypted_password else ""


def twilio_clean_auth_token(token: str) -> str:
    return _clean_secret(token, "auth_token")


def twilio_put_auth_token(account: TwilioAccount, token: str) -> None:
    token = twilio_clean_auth_token(token)
    account.encrypted_auth_token = secret_box().encrypt(token)
    account.auth_token_hint = mask_secret(token)


def twilio_reveal_auth_token(account: TwilioAccount) -> str:
    """For the one signature check that needs it. Never log it."""
    return secret_box().decrypt(account.encrypted_auth_token)
