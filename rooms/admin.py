from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from rooms import services
from rooms.admin_base import ReadOnlyAdmin, TenantScopedAdmin, _is_superuser
from rooms.models import (
    Access,
    ApiKey,
    ChannelBinding,
    Membership,
    Room,
    RoomEvent,
    RoomStatus,
    Tenant,
    User,
)
from rooms.selectors import tenant_ids_for_user


@admin.register(User)
class UserAdmin(DjangoUserAdmin):  # type: ignore[type-arg]
    """Users are managed by superusers; staff see the users of tenants they manage."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        if _is_superuser(request):
            return queryset
        manageable = tenant_ids_for_user(request.user, manage=True)
        return queryset.filter(memberships__tenant_id__in=manageable).distinct()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return _is_superuser(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_superuser(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_superuser(request)


@admin.register(Tenant)
class TenantAdmin(TenantScopedAdmin):
    tenant_lookup = "pk"
    list_display = ["slug", "name", "is_active", "created_at"]
    search_fields = ["slug", "name"]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return _is_superuser(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_superuser(request)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return () if _is_superuser(request) else ("slug", "is_active")


@admin.register(Membership)
class MembershipAdmin(TenantScopedAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role", "tenant"]
    list_select_related = ["user", "tenant"]
    search_fields = ["user__username", "user__email", "tenant__slug"]
    autocomplete_fields = ["user"]


class ApiKeyForm(forms.ModelForm):  # type: ignore[type-arg]
    def clean_expires_at(self) -> Any:
        # The service's rule, as a form error rather than a 500 from save_model.
        expires_at = self.cleaned_data.get("expires_at")
        try:
            services.api_key_check_expiry(expires_at)
        except ValidationError as error:
            raise forms.ValidationError(error.message_dict["expires_at"]) from None
        return expires_at


@admin.register(ApiKey)
class ApiKeyAdmin(TenantScopedAdmin):
    form = ApiKeyForm
    list_display = ["name", "tenant", "masked", "scope", "status", "created_at", "last_used_at"]
    list_filter = ["scope", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["name", "prefix"]
    actions = ["revoke_selected"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["tenant", "name", "scope", "expires_at"]
        return [
            "tenant",
            "name",
            "masked",
            "scope",
            "expires_at",
            "created_by",
            "created_at",
            "last_used_at",
            "revoked_at",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ()
        # A key's tenant, scope and expiry are fixed at creation: issue a new key instead.
        return [
            "tenant",
            "masked",
            "scope",
            "expires_at",
            "created_by",
            "created_at",
            "last_used_at",
            "revoked_at",
        ]

    @admin.display(description="status")
    def status(self, obj: ApiKey) -> str:
        return "revoked" if obj.is_revoked else "active"

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            obj.save(update_fields=["name"])
            return
        created, plaintext = services.api_key_create(
            tenant=obj.tenant,
            name=obj.name,
            scope=obj.scope,
            created_by=request.user if isinstance(request.user, User) else None,
            expires_at=obj.expires_at,
        )
        obj.__dict__.update({k: v for k, v in created.__dict__.items() if k != "_state"})
        obj._state.adding = False
        obj._state.db = created._state.db
        messages.warning(request, f"Copy this API key now, it will not be shown again: {plaintext}")

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = sum(
            services.api_key_revoke(tenant=key.tenant, api_key=key)
            for key in queryset.select_related("tenant")
            if self.has_change_permission(request, key)
        )
        self.message_user(request, f"Revoked {revoked} API key(s).")


@admin.register(Room)
class RoomAdmin(TenantScopedAdmin):
    list_display = [
        "key",
        "name",
        "tenant",
        "status",
        "default_agent",
        "last_event_index",
        "created_at",
    ]
    list_filter = ["status", "tenant"]
    list_select_related = ["tenant", "default_agent"]
    search_fields = ["key", "name"]
    readonly_fields = ["status", "last_event_index", "created_at", "updated_at", "closed_at"]
    actions = ["close_selected", "pause_selected", "reopen_selected"]

    def _set_status(self, request: HttpRequest, queryset: QuerySet[Room], status: str) -> None:
        changed = 0
        for room in queryset.select_related("tenant"):
            if self.has_change_permission(request, room):
                services.room_set_status(tenant=room.tenant, room=room, status=status)
                changed += 1
        self.message_user(request, f"{changed} room(s) now {status}.")

    @admin.action(description="Close selected rooms", permissions=["change"])
    def close_selected(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        self._set_status(request, queryset, RoomStatus.CLOSED)

    @admin.action(description="Pause selected rooms", permissions=["change"])
    def pause_selected(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        self._set_status(request, queryset, RoomStatus.PAUSED)

    @admin.action(description="Reopen selected rooms", permissions=["change"])
    def reopen_selected(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        self._set_status(request, queryset, RoomStatus.ACTIVE)


@admin.register(ChannelBinding)
class ChannelBindingAdmin(TenantScopedAdmin):
    list_display = [
        "room",
        "channel_id",
        "participant_id",
        "access",
        "muted",
        "output_muted",
        "visibility",
        "updated_at",
    ]
    list_filter = ["access", "muted", "output_muted", "tenant"]
    list_select_related = ["room"]
    search_fields = ["room__key", "channel_id", "participant_id"]
    autocomplete_fields = ["room"]
    actions = ["mute_selected", "unmute_selected", "revoke_selected"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # Identity is fixed once attached; detach and attach again to move a binding.
        return () if obj is None else ("tenant", "room", "channel_id", "participant_id")

    def save_model(
        self, request: HttpRequest, obj: ChannelBinding, form: Any, change: bool
    ) -> None:
        if change:
            services.binding_update(
                tenant=obj.tenant,
                binding=ChannelBinding.objects.get(pk=obj.pk),
                access=obj.access,
                muted=obj.muted,
                output_muted=obj.output_muted,
                visibility=obj.visibility,
            )
            obj.metadata = form.cleaned_data.get("metadata", obj.metadata)
            ChannelBinding.objects.filter(pk=obj.pk).update(metadata=obj.metadata)
            return
        created, _ = services.binding_attach(
            tenant=obj.tenant,
            room=obj.room,
            channel_id=obj.channel_id,
            participant_id=obj.participant_id,
            access=obj.access,
            visibility=obj.visibility,
            metadata=obj.metadata,
        )
        if obj.muted or obj.output_muted:
            services.binding_update(
                tenant=obj.tenant, binding=created, muted=obj.muted, output_muted=obj.output_muted
            )
        obj.pk = created.pk
        obj._state.adding = False

    def delete_model(self, request: HttpRequest, obj: ChannelBinding) -> None:
        services.binding_detach(tenant=obj.tenant, binding=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ChannelBinding]) -> None:
        for binding in queryset.select_related("tenant", "room"):
            services.binding_detach(tenant=binding.tenant, binding=binding)

    def _update(
        self, request: HttpRequest, queryset: QuerySet[ChannelBinding], **changes: Any
    ) -> None:
        count = 0
        for binding in queryset.select_related("tenant", "room"):
            if self.has_change_permission(request, binding):
                services.binding_update(tenant=binding.tenant, binding=binding, **changes)
                count += 1
        self.message_user(request, f"Updated {count} binding(s).")

    @admin.action(description="Mute selected bindings", permissions=["change"])
    def mute_selected(self, request: HttpRequest, queryset: QuerySet[ChannelBinding]) -> None:
        self._update(request, queryset, muted=True)

    @admin.action(description="Unmute selected bindings", permissions=["change"])
    def unmute_selected(self, request: HttpRequest, queryset: QuerySet[ChannelBinding]) -> None:
        self._update(request, queryset, muted=False)

    @admin.action(description="Revoke access of selected bindings", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ChannelBinding]) -> None:
        self._update(request, queryset, access=Access.NONE)


@admin.register(RoomEvent)
class RoomEventAdmin(ReadOnlyAdmin):
    list_display = ["room", "index", "kind", "role", "status", "excerpt", "occurred_at"]
    list_filter = ["kind", "role", "status"]
    list_select_related = ["room"]
    search_fields = ["text", "room__key", "participant_id"]
    ordering = ["-occurred_at", "-index"]

    @admin.display(description="text")
    def excerpt(self, obj: RoomEvent) -> str:
        return obj.text if len(obj.text) <= 80 else obj.text[:79] + "…"
