"""Phone numbers, SIP trunks and Twilio accounts: which calls we answer, and for whom.

A :class:`PhoneNumber` routes a dialled number (the user part of a SIP request URI, or a
Twilio number) to a room and an agent. A :class:`SipTrunk` says where a tenant's SIP calls
may come from (source addresses) and, when it has credentials, that they must authenticate
(digest). A :class:`TwilioAccount` holds the auth token that signs Twilio's webhooks.
Secrets are encrypted at rest (``roomvoice.lib.secrets``) and only a masked hint is shown.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from rooms.models import Room, Tenant

NUMBER_RE = re.compile(r"^\+?[A-Za-z0-9_.!~*'-]{1,64}$")
#: Characters people write in numbers that the network never sends.
NUMBER_SEPARATORS = re.compile(r"[\s().-]")
ACCOUNT_SID_RE = re.compile(r"^AC[0-9a-f]{32}$")


def normalize_number(value: str) -> str:
    """``+1 (555) 010-0000`` → ``+15550100000``; a SIP user part stays as it is."""
    value = value.strip()
    for prefix in ("tel:", "sip:", "sips:"):
        if value.lower().startswith(prefix):
            value = value[len(prefix) :].split("@", 1)[0]
    if re.fullmatch(r"\+?[\d\s().-]+", value):
        value = NUMBER_SEPARATORS.sub("", value)
    return value


def validate_number(value: str) -> None:
    if not NUMBER_RE.fullmatch(value):
        raise ValidationError(
            "Enter an E.164 number (+15550100000) or a SIP user name (letters, digits, "
            "'-', '_', '.'; at most 64).",
            code="invalid",
        )


def parse_sources(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """One address or network (CIDR) per line or comma; '#' starts a comment."""
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for line in text.splitlines():
        for item in line.split("#", 1)[0].split(","):
            item = item.strip()
            if item:
                networks.append(ipaddress.ip_network(item, strict=False))
    return networks


def validate_sources(text: str) -> None:
    try:
        parse_sources(text)
    except ValueError as error:
        raise ValidationError(
            f"Not an address or network: {error}. Write one per line, e.g. 203.0.113.0/24.",
            code="invalid",
        ) from None


def validate_registrar(value: str) -> None:
    host, _, port = value.rpartition(":")
    if not host:
        host, port = value, "5060"
    if (
        not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", host)
        or not port.isdigit()
        or not 1 <= int(port) <= 65535
    ):
        raise ValidationError(
            "Enter a host name or address, with an optional :port (sip.carrier.example:5060).",
            code="invalid",
        )


class SipTrunk(models.Model):
    """Where a tenant's SIP calls come from, and how they prove it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="sip_trunks")
    name = models.CharField(max_length=100)
    allowed_sources = models.TextField(
        blank=True,
        validators=[validate_sources],
        help_text="Addresses or networks (CIDR) calls may come from, one per line, e.g. "
        "your carrier's signalling IPs. Blank: any address (then set credentials).",
    )
    username = models.CharField(
        max_length=100,
        blank=True,
        help_text="With a password: callers must authenticate (SIP digest) as this user.",
    )
    # Fernet token (roomvoice.lib.secrets); never rendered, never logged.
    encrypted_password = models.TextField(blank=True, editable=False)
    password_hint = models.CharField(max_length=16, blank=True, editable=False)
    registrar = models.CharField(
        max_length=255,
        blank=True,
        validators=[validate_registrar],
        help_text="host or host:port of the carrier's registrar, for carriers that send calls "
        "only to a registered contact: runsip registers there with the user name and "
        "password. Blank: no registration.",
    )
    register_expires = models.PositiveIntegerField(
        default=300, help_text="Seconds asked for each registration (the registrar decides)."
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="siptrunk_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<SipTrunk {self.pk} {self.name}>"

    @property
    def requires_auth(self) -> bool:
        return bool(self.username and self.encrypted_password)

    def clean(self) -> None:
        if self.username and not self.encrypted_password:
            raise ValidationError({"username": "A user name needs a password."})
        if self.registrar and not self.requires_auth:
            raise ValidationError(
                {"registrar": "Registering needs the user name and password to register with."}
            )
        if self.registrar and not 60 <= self.register_expires <= 86_400:
            raise ValidationError({"register_expires": "Between 60 and 86400 seconds."})
        if not self.allowed_sources.strip() and not self.requires_auth:
            raise ValidationError(
                {
                    "allowed_sources": "Name the addresses calls come from, or set a user "
                    "name and password: a trunk open to anyone is refused."
                }
            )


class PhoneNumber(models.Model):
    """A number (or SIP user) we answer, and the room and agent its calls go to."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="phone_numbers")
    number = models.CharField(
        max_length=65,
        unique=True,
        validators=[validate_number],
        help_text="E.164 (+15550100000) or a SIP user name; what callers dial.",
    )
    label = models.CharField(max_length=100, blank=True)
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="phone_numbers")
    agent = models.ForeignKey(
        "voice.Agent",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="phone_numbers",
        help_text="Blank: the room's default agent.",
    )
    trunk = models.ForeignKey(
        SipTrunk,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="numbers",
        help_text="SIP calls to this number must come through this trunk. Blank: only from "
        "the addresses in the ROOMVOICE_SIP_ALLOWED_SOURCES setting.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["number"]
        constraints = [
            models.CheckConstraint(condition=~Q(number=""), name="phonenumber_number_present"),
        ]

    def __str__(self) -> str:
        return f"{self.number} ({self.label})" if self.label else self.number

    def clean_fields(self, exclude: Any = None) -> None:
        # Normalised before the field's validator sees it: "+1 (555) 010-0000" is fine.
        self.number = normalize_number(self.number or "")
        super().clean_fields(exclude=exclude)

    def clean(self) -> None:
        self.number = normalize_number(self.number or "")
        problems: dict[str, str] = {}
        # The same number spelled with or without "+" is one number: a carrier may send
        # either, so two rows (perhaps of two tenants) must not split its calls.
        from telephony.selectors import number_candidates

        other_spellings = [c for c in number_candidates(self.number) if c != self.number]
        taken = PhoneNumber.objects.filter(number__in=other_spellings).exclude(pk=self.pk).exists()
        if self.number and taken:
            problems["number"] = (
                "This number is already configured (perhaps written with or without '+')."
            )
        tenant_id = self.tenant_id
        if self.room_id is not None and self.room.tenant_id != tenant_id:
            problems["room"] = "The room belongs to another tenant."
        if self.agent is not None and self.agent.tenant_id != tenant_id:
            problems["agent"] = "The agent belongs to another tenant."
        if self.trunk is not None and self.trunk.tenant_id != tenant_id:
            problems["trunk"] = "The trunk belongs to another tenant."
        if (
            self.room_id is not None
            and self.agent_id is None
            and not problems
            and self.room.default_agent_id is None
        ):
            problems["agent"] = "The room has no default agent: choose one."
        if problems:
            raise ValidationError(problems)


class TwilioAccount(models.Model):
    """A Twilio account whose numbers' calls stream to us (Media Streams)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="twilio_accounts")
    account_sid = models.CharField(
        "account SID",
        max_length=34,
        unique=True,
        help_text="AC followed by 32 hex digits (Twilio console, Account Info).",
    )
    # Fernet token of the auth token (it signs every webhook Twilio sends us).
    encrypted_auth_token = models.TextField(editable=False)
    auth_token_hint = models.CharField(max_length=16, blank=True, editable=False)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["account_sid"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(encrypted_auth_token=""), name="twilioaccount_token_present"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.account_sid} ({self.auth_token_hint})"

    def __repr__(self) -> str:
        return f"<TwilioAccount {self.account_sid}>"

    def clean(self) -> None:
        if not ACCOUNT_SID_RE.fullmatch(self.account_sid or ""):
            raise ValidationError({"account_sid": "An account SID is AC and 32 hex digits."})
