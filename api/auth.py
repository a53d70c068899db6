"""Who calls the API: a tenant API key (``Authorization: Bearer rv_…``) or a logged-in
member (the Django session, with CSRF). A key fixes the tenant; a member names it when they
belong to several (``X-Roomvoice-Tenant: <slug>``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from rooms.models import ApiKey
from rooms.services import api_key_authenticate


@dataclass(frozen=True)
class ApiKeyPrincipal:
    """``request.user`` for a call made with an API key (no Django user behind it)."""

    api_key: ApiKey
    is_authenticated: bool = True
    is_active: bool = True
    is_staff: bool = False
    is_superuser: bool = False
    is_anonymous: bool = False

    @property
    def pk(self) -> str:
        return f"key:{self.api_key.pk}"

    def __str__(self) -> str:
        return f"API key {self.api_key.masked}"


class ApiKeyAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: use 'Bearer rv_<key>'."
            )
        try:
            token = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("The API key has invalid characters.") from None
        api_key = api_key_authenticate(token=token)
        if api_key is None:
            # One answer for unknown, revoked and expired keys: nothing to probe.
            raise exceptions.AuthenticationFailed(
                "The API key is not valid, or was revoked or expired."
            )
        return ApiKeyPrincipal(api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="roomvoice"'


def api_key_of(request: Any) -> ApiKey | None:
    auth = getattr(request, "auth", None)
    return auth if isinstance(auth, ApiKey) else None
