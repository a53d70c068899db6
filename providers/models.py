"""Provider credentials: the vendor secret is encrypted at rest and never shown back."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q

from rooms.models import Tenant


class ProviderKind(models.TextChoices):
    """Mirrors ``providers.registry.PROVIDERS`` (a test keeps the two equal)."""

    OPENAI = "openai", "OpenAI Realtime"
    XAI = "xai", "xAI Grok Realtime"
    GEMINI = "gemini", "Google Gemini Live"
    ELEVENLABS = "elevenlabs", "ElevenLabs Conversational AI"
    MOCK = "mock", "Mock (testing)"
    ECHO = "echo", "Echo test (no AI)"


class ProviderCredential(models.Model):
    """A tenant's key for one vendor. Read the secret only through ``credential_reveal``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="credentials")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=ProviderKind.choices)
    # Fernet token (see roomvoice.lib.secrets); never rendered, never logged.
    encrypted_secret = models.TextField(editable=False)
    secret_hint = models.CharField(max_length=16, editable=False, help_text="Masked form.")
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
