"""The tenant of every API request, and the one base every tenant resource builds on.

The tenant never comes from the request body: an API key belongs to one tenant; a
logged-in member uses theirs (naming it with ``X-Roomvoice-Tenant: <slug>`` when they belong
to several). Every queryset of a :class:`TenantScopedMixin` view is filtered by it, so an
object of another tenant is a 404, never a 403 (its existence is not revealed).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Model, QuerySet
from rest_framework import exceptions, permissions
from rest_framework.request import Request

from api.auth import api_key_of
from rooms.models import MANAGER_ROLES, ApiKeyScope, Membership, Tenant

TENANT_HEADER = "HTTP_X_ROOMVOICE_TENANT"


class TenantRequired(exceptions.APIException):
    status_code = 400
    default_code = "tenant_required"
    default_detail = "You belong to several tenants: name one with the X-Roomvoice-Tenant header."


def _resolve(request: Request) -> tuple[Tenant, bool]:
    """(tenant, may write) for the request's principal."""
    api_key = api_key_of(request)
    if api_key is not None:
        return api_key.tenant, api_key.scope == ApiKeyScope.WRITE
    user: Any = request.user
    memberships = Membership.objects.filter(user=user, tenant__is_active=True).select_related(
        "tenant"
    )
    wanted = request.META.get(TENANT_HEADER, "").strip()
    if wanted:
        memberships = memberships.filter(tenant__slug=wanted)
    found = list(memberships[:2])
    if not found:
        if wanted:
            raise exceptions.NotFound(f"No tenant {wanted!r} among yours.")
        raise exceptions.PermissionDenied("You are not a member of any tenant.")
    if len(found) > 1:
        raise TenantRequired()
    return found[0].tenant, found[0].role in MANAGER_ROLES


class TenantAccess(permissions.BasePermission):
    """Authenticated, with a tenant; reads for everyone in it, writes for write-scoped keys
    and for owners and admins (members read, as in the admin)."""

    message = (
        "This API key or account may only read: writes need a write-scoped key or the owner "
        "or admin role."
    )

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        tenant, may_write = _resolve(request)
        request.tenant = tenant  # type: ignore[attr-defined]
        if request.method in permissions.SAFE_METHODS:
            return True
        return may_write


def request_tenant(request: Request) -> Tenant:
    tenant: Tenant = request.tenant  # type: ignore[attr-defined]
    return tenant


class TenantScopedMixin:
    """Every object this view reaches belongs to the request's tenant."""

    tenant_field = "tenant"

    @property
    def tenant(self) -> Tenant:
        return request_tenant(self.request)  # type: ignore[attr-defined]

    def scope(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(**{self.tenant_field: self.tenant})

    def get_queryset(self) -> QuerySet[Any]:
        queryset: QuerySet[Any] = super().get_queryset()  # type: ignore[misc]
        return self.scope(queryset)

    def tenant_object(self, model: type[Model], **lookup: Any) -> Any:
        """An object of ``model`` in this tenant (a foreign key in a body or URL), or 404."""
        try:
            return model._default_manager.get(tenant=self.tenant, **lookup)
        except (model.DoesNotExist, ValueError, TypeError, DjangoValidationError):  # type: ignore[attr-defined]
            raise exceptions.NotFound(f"No such {model._meta.verbose_name}.") from None
