"""Provider credentials: the vendor secret is encrypted at rest and never shown back."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from rooms.models import Tenant


class ProviderKind(models.TextChoices):
    """Mirrors ``providers.registry.PROVIDERS`` (a test keeps the two equal)."""

    OPENAI = "openai", "OpenAI Realtime"
    XAI = "xai", "xAI Grok Realtime"
    GEMINI = "gemini", "Google Gemini Live"
    ELEVENLABS = "elevenlabs", "ElevenLabs Conversational AI"
    LOCAL = "local", "Offline (speech on this server, no key)"
    MOCK = "mock", "Mock (testing)"
    ECHO = "echo", "Echo test (no AI)"


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def validate_base_url(value: str) -> None:
    """A vendor endpoint override: ``wss://`` anywhere, plain ``ws://`` only on this machine
    (the key travels in the handshake), no credentials, query or fragment in the URL."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        raise ValidationError("Enter a valid URL.", code="invalid") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValidationError(
            "The endpoint must be a ws:// or wss:// URL, e.g. wss://gateway.example.com/v1.",
            code="invalid",
        )
    if parts.scheme == "ws" and parts.hostname not in LOOPBACK_HOSTS:
        raise ValidationError(
            "Unencrypted ws:// endpoints are allowed only on this machine (localhost); "
            "use wss:// so the API key is not sent in the clear.",
            code="insecure",
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValidationError(
            "The endpoint may not contain credentials, a query or a fragment.", code="invalid"
        )


class ProviderCredential(models.Model):
    """A tenant's key for one vendor. Read the secret only through ``credential_reveal``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="credentials")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=ProviderKind.choices)
    # Fernet token (see roomvoice.lib.secrets); never rendered, never logged.
    encrypted_secret = models.TextField(editable=False)
    secret_hint = models.CharField(max_length=16, editable=False, help_text="Masked form.")
    base_url = models.CharField(
        "endpoint",
        max_length=500,
        blank=True,
        validators=[validate_base_url],
        help_text="A custom endpoint for this key (a proxy or gateway), e.g. "
        "wss://gateway.example.com/v1. Leave blank for the vendor's own.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    secret_updated_at = models.DateTimeField(null=True, editable=False)

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="credential_unique_name"),
            models.CheckConstraint(
                condition=Q(kind__in=ProviderKind.values), name="credential_kind_valid"
            ),
            models.CheckConstraint(
                condition=~Q(encrypted_secret=""), name="credential_secret_present"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()}, {self.secret_hint})"

    def __repr__(self) -> str:  # never the ciphertext either
        return f"<ProviderCredential {self.pk} {self.kind} {self.secret_hint}>"
