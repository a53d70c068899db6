"""``Idempotency-Key`` on POSTs that create things (rooms, bindings, tokens, agents, tools,
credentials). The first request's answer (status and body) is kept for ``IDEMPOTENCY_TTL``,
and a retry with the same key and the same request gets it back with
``Idempotent-Replayed: true``; a first request that failed keeps nothing (a retry is checked
again). The same key with a different request is a 422; a retry
while the first is still running, a 409. Keys belong to the caller (API key or user)."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response

from api.auth import api_key_of
from api.errors import Conflict
from api.models import IdempotencyRecord
from api.tenancy import request_tenant

HEADER = "HTTP_IDEMPOTENCY_KEY"
IDEMPOTENCY_TTL = timedelta(hours=24)
MAX_KEY_LENGTH = 255


class KeyReused(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "idempotency_key_reused"
    default_detail = "This Idempotency-Key was used for a different request."


def _principal(request: Request) -> str:
    api_key = api_key_of(request)
    return f"key:{api_key.pk}" if api_key is not None else f"user:{request.user.pk}"


def _request_hash(request: Request) -> str:
    body = json.dumps(request.data, sort_keys=True, default=str, separators=(",", ":"))
    raw = f"{request.method} {request.path}\n{body}".encode()
    return hashlib.sha256(raw).hexdigest()


def idempotent(handler: Any) -> Any:
    """Wrap a view method (``create`` or an action) that creates something."""

    def wrapper(self: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.META.get(HEADER, "").strip()
        if not key:
            return handler(self, request, *args, **kwargs)  # type: ignore[no-any-return]
        if len(key) > MAX_KEY_LENGTH:
            raise exceptions.ValidationError(
                {"Idempotency-Key": [f"At most {MAX_KEY_LENGTH} characters."]}
            )
        tenant = request_tenant(request)
        principal = _principal(request)
        digest = _request_hash(request)
        IdempotencyRecord.objects.filter(created_at__lt=timezone.now() - IDEMPOTENCY_TTL).delete()
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    tenant=tenant,
                    principal=principal,
                    key=key,
                    method=request.method or "",
                    path=request.path[:500],
                    request_hash=digest,
                )
        except IntegrityError:
            existing = IdempotencyRecord.objects.get(tenant=tenant, principal=principal, key=key)
            if existing.request_hash != digest:
                raise KeyReused() from None
            if existing.status_code == 0:
                raise Conflict(
                    "The first request with this Idempotency-Key is still running."
                ) from None
            replay = Response(existing.response_body, status=existing.status_code)
            replay["Idempotent-Replayed"] = "true"
            return replay
        try:
            response: Response = handler(self, request, *args, **kwargs)
        except Exception:
            record.delete()  # nothing to replay: a retry runs again
            raise
        if response.status_code >= 500:
            record.delete()
        else:
            IdempotencyRecord.objects.filter(pk=record.pk).update(
                status_code=response.status_code, response_body=response.data
            )
        return response

    wrapper.__name__ = handler.__name__
    wrapper.__doc__ = handler.__doc__
    return wrapper
