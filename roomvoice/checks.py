"""System checks for roomvoice's own settings (shown by ``manage.py check [--deploy]``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register


@register(Tags.security, deploy=True)
def check_encryption_keys(**kwargs: Any) -> list[CheckMessage]:
    if settings.ROOMVOICE_ENCRYPTION_KEYS_DERIVED:
        return [
            Warning(
                "Provider credentials are encrypted with a key derived from SECRET_KEY.",
                hint=(
                    "Set ROOMVOICE_ENCRYPTION_KEYS to one or more Fernet keys so that SECRET_KEY "
                    "can be rotated without making stored credentials unreadable."
                ),
                id="roomvoice.W001",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_embedded_services(**kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    if not settings.REDIS_URL:
        messages.append(
            Warning(
                "No REDIS_URL: in-memory channel layer and eager Celery (one process only).",
                hint="Set REDIS_URL to run more than one web process or a Celery worker.",
                id="roomvoice.W002",
            )
        )
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        messages.append(
            Warning(
                "SQLite database: fine on one machine, not for several web processes.",
                hint="Set DATABASE_URL=postgres://… for production.",
                id="roomvoice.W003",
            )
        )
    return messages
