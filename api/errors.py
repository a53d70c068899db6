"""One error body for every failure of the API::

    {"error": {"code": "validation_error", "message": "…", "fields": {"name": ["…"]}}}

``fields`` appears for validation errors and names each field (``non_field_errors`` for the
rest). Service-layer ``django.core.exceptions.ValidationError`` becomes a 400 the same way, an
oversized body a 413, and anything unexpected a 500 whose body says nothing internal.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"
    default_detail = "The request body is too large."


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "The request conflicts with the current state."


def _fields(detail: Any) -> dict[str, Any]:
    if isinstance(detail, dict):
        return {str(key): _flatten(value) for key, value in detail.items()}
    return {"non_field_errors": _flatten(detail)}


def _flatten(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _flatten(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [_flatten(item) if isinstance(item, dict | list) else str(item) for item in value]
    return [str(value)]


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        detail = (
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        logger.exception("API error", exc_info=exc)
        return Response(
            {
                "error": {
                    "code": "server_error",
                    "message": "The server could not complete the request.",
                }
            },
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    if isinstance(exc, exceptions.ValidationError):
        body: dict[str, Any] = {
            "code": "validation_error",
            "message": "The request is not valid: see fields.",
            "fields": _fields(exc.detail),
        }
    else:
        message: Any = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        body = {"code": codes if isinstance(codes, str) else "error", "message": str(message)}
        wait = getattr(exc, "wait", None) if isinstance(exc, exceptions.Throttled) else None
        if wait is not None:
            body["retry_after_s"] = int(wait + 0.999)
    response.data = {"error": body}
    return response
