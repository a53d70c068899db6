"""``manage.py rotate_credentials``: re-encrypt every provider secret with the current key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from providers.services import credentials_reencrypt_all


class Command(BaseCommand):
    help = (
        "Re-encrypt all provider credentials with the first key of ROOMVOICE_ENCRYPTION_KEYS. "
        "Run after prepending a new key; remove the old keys afterwards."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        count = credentials_reencrypt_all()
        self.stdout.write(f"re-encrypted {count} credential(s) with the current key")
