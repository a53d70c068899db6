"""Small database helpers shared by the apps' models."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


def choices_check(
    field: str, choices: type[models.TextChoices], name: str
) -> models.CheckConstraint:
    """A CHECK constraint keeping ``field`` within ``choices`` (the database enforces enums)."""
    return models.CheckConstraint(condition=Q(**{f"{field}__in": choices.values}), name=name)
