from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from api.auth import api_key_of


class PerPrincipalThrottle(SimpleRateThrottle):
    """One budget per API key (``ROOMVOICE_API_KEY_RATE``) or per logged-in user
    (``ROOMVOICE_API_USER_RATE``): a busy key cannot starve another key of the tenant."""

    scope = "principal"

    def get_rate(self) -> str | None:
        from django.conf import settings

        return str(settings.ROOMVOICE_API_RATE)

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        api_key = api_key_of(request)
        if api_key is not None:
            ident = f"key:{api_key.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return f"throttle:{self.scope}:{ident}"
