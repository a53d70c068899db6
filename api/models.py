"""Idempotency records: a POST that creates something, sent again with the same
``Idempotency-Key``, gets the first answer back instead of creating it twice."""

from __future__ import annotations

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from rooms.models import Tenant


class IdempotencyRecord(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    #: "key:<api key id>" or "user:<user id>": keys are per caller, not shared by a tenant.
    principal = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=500)
    request_hash = models.CharField(max_length=64)
    #: 0 while the first request is still being handled.
    status_code = models.PositiveSmallIntegerField(default=0)
    response_body = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "principal", "key"], name="idempotency_unique_key"
            )
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created_idx")]

    def __str__(self) -> str:
        return f"{self.method} {self.path} [{self.key}]"
