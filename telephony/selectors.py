"""Reads for telephony: which number a call dialled. Synchronous ORM: off the event loop."""

from __future__ import annotations

import uuid

from telephony.models import PhoneNumber, TwilioAccount, normalize_number


def number_candidates(dialled: str) -> list[str]:
    """The ways a number may be written: as dialled, and with or without a leading '+'
    (carriers differ on whether E.164 numbers carry it in the request URI)."""
    number = normalize_number(dialled)
    if not number:
        return []
    if number.startswith("+"):
        return [number, number[1:]]
    return [number, f"+{number}"] if number.isdigit() else [number]


def number_for(dialled: str, *, tenant_id: uuid.UUID | None = None) -> PhoneNumber | None:
    """The enabled number a call dialled (in ``tenant_id`` when given), with its tenant,
    room, agent and trunk; None when there is none or its tenant is inactive."""
    candidates = number_candidates(dialled)
    if not candidates:
        return None
    numbers = PhoneNumber.objects.select_related(
        "tenant", "room", "room__tenant", "agent", "trunk"
    ).filter(number__in=candidates, enabled=True, tenant__is_active=True)
    if tenant_id is not None:
        numbers = numbers.filter(tenant_id=tenant_id)
    found = {row.number: row for row in numbers}
    return next((found[c] for c in candidates if c in found), None)


def twilio_account_for(account_sid: str) -> TwilioAccount | None:
    return (
        TwilioAccount.objects.select_related("tenant")
        .filter(account_sid=account_sid, enabled=True, tenant__is_active=True)
        .first()
    )
