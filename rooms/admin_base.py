"""Tenant-aware admin: superusers see everything; staff see their tenants' objects only.

Staff still need Django's model permissions (the "Tenant operators" group made by
``seed_demo`` / ``rooms.services.operator_group_sync`` holds them). On top of those, every
member of a tenant may view its objects, and owners and admins may add, change and delete
them. Foreign-key and many-to-many choices are limited to the same tenants, so a form
cannot point at another tenant's room, agent, tool or credential.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest

from rooms.models import Tenant, User
from rooms.selectors import tenant_ids_for_user


def _is_superuser(request: HttpRequest) -> bool:
    return bool(getattr(request.user, "is_superuser", False))


class ScopedRelatedFilter(admin.RelatedFieldListFilter):
    """A sidebar filter on a relation (tenant, room, agent...) offering only the viewer's
    tenants' objects: Django's default lists every row of the related model, which would
    show staff the names of other tenants and their rooms."""

    def field_choices(self, field: Any, request: HttpRequest, model_admin: Any) -> Any:
        ordering = self.field_admin_ordering(field, request, model_admin)
        limit: dict[str, Any] = {}
        if not _is_superuser(request):
            tenant_ids = model_admin.visible_tenant_ids(request)
            related = field.related_model
            if related is Tenant:
                limit = {"pk__in": tenant_ids}
            elif any(f.name == "tenant" for f in related._meta.get_fields()):
                limit = {"tenant_id__in": tenant_ids}
        return field.get_choices(include_blank=False, ordering=ordering, limit_choices_to=limit)


class TenantScopedAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    #: The lookup from this model to its tenant's primary key.
    tenant_lookup = "tenant_id"

    def tenant_id_of(self, obj: Any) -> uuid.UUID:
        return getattr(obj, self.tenant_lookup)  # type: ignore[no-any-return]

    def visible_tenant_ids(self, request: HttpRequest) -> frozenset[uuid.UUID]:
        return tenant_ids_for_user(request.user)

    def manageable_tenant_ids(self, request: HttpRequest) -> frozenset[uuid.UUID]:
        return tenant_ids_for_user(request.user, manage=True)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        if _is_superuser(request):
            return queryset
        return queryset.filter(**{f"{self.tenant_lookup}__in": self.visible_tenant_ids(request)})

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if not super().has_view_permission(request, obj):
            return False
        if _is_superuser(request) or obj is None:
            return True
        return self.tenant_id_of(obj) in self.visible_tenant_ids(request)

    def _may_manage(self, request: HttpRequest, obj: Any) -> bool:
        if _is_superuser(request):
            return True
        manageable = self.manageable_tenant_ids(request)
        if obj is None:
            return bool(manageable)
        return self.tenant_id_of(obj) in manageable

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return super().has_add_permission(request, *args) and self._may_manage(request, None)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and self._may_manage(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and self._may_manage(request, obj)

    def get_list_filter(self, request: HttpRequest) -> Any:
        """Relation filters scoped to the viewer's tenants (see ScopedRelatedFilter)."""
        scoped: list[Any] = []
        for entry in super().get_list_filter(request):
            if isinstance(entry, str) and "__" not in entry:
                field = self.model._meta.get_field(entry)
                if field.is_relation and field.related_model is not None:
                    entry = (entry, ScopedRelatedFilter)
            scoped.append(entry)
        return scoped

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        # An object never moves between tenants: its bindings, events, agents' tools and
        # sessions would stay behind in the old one. Detach and recreate instead.
        if obj is not None and self.tenant_lookup == "tenant_id" and "tenant" not in fields:
            fields.append("tenant")
        return fields

    def _scope_choices(
        self, request: HttpRequest, model: type[models.Model]
    ) -> QuerySet[Any] | None:
        if _is_superuser(request):
            return None
        manageable = self.manageable_tenant_ids(request)
        if model is Tenant:
            return Tenant.objects.filter(pk__in=manageable)
        if model is User:
            # Only people already in a tenant the user manages: choosing anyone else would
            # reveal other tenants' usernames. New people are added by a superuser.
            return User.objects.filter(memberships__tenant_id__in=manageable).distinct()
        if any(field.name == "tenant" for field in model._meta.get_fields()):
            return model._default_manager.filter(tenant_id__in=manageable)
        return None

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        queryset = self._scope_choices(request, db_field.related_model)
        if queryset is not None:
            kwargs["queryset"] = queryset
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        queryset = self._scope_choices(request, db_field.related_model)
        if queryset is not None:
            kwargs["queryset"] = queryset
        return super().formfield_for_manytomany(db_field, request, **kwargs)


class ReadOnlyAdmin(TenantScopedAdmin):
    """For records written only by the engine (timeline, sessions, tool calls)."""

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # History is kept; only a superuser may delete it (e.g. on a data-removal request).
        return _is_superuser(request) and super(TenantScopedAdmin, self).has_delete_permission(
            request, obj
        )
