from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from rooms.admin_base import ReadOnlyAdmin, TenantScopedAdmin
from voice.models import Agent, Tool, ToolCall, VoiceSession


class AgentForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = Agent
        exclude: list[str] = []

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        # On change the tenant is read-only (not in the form): check against the saved one.
        tenant_id = cleaned["tenant"].pk if cleaned.get("tenant") else self.instance.tenant_id
        tools = cleaned.get("tools")
        if tenant_id is not None and tools is not None:
            foreign = [tool.name for tool in tools if tool.tenant_id != tenant_id]
            if foreign:
                self.add_error(
                    "tools", f"These tools belong to another tenant: {', '.join(foreign)}"
                )
        return cleaned


@admin.register(Agent)
class AgentAdmin(TenantScopedAdmin):
    form = AgentForm
    list_display = ["name", "slug", "tenant", "provider_kind", "model", "voice", "is_active"]
    list_filter = ["provider_kind", "is_active", "tenant"]
    list_select_related = ["tenant", "credential"]
    search_fields = ["name", "slug"]
    filter_horizontal = ["tools"]
    fieldsets = [
        (None, {"fields": ["tenant", "slug", "name", "is_active"]}),
        (
            "Provider",
            {
                "fields": [
                    "provider_kind",
                    "credential",
                    "model",
                    "voice",
                    "temperature",
                    "provider_config",
                ]
            },
        ),
        (
            "Behaviour",
            {
                "fields": [
                    "system_prompt",
                    "tools",
                    "mute_on_tool_call",
                    "tool_result_max_length",
                    "emit_transcription_events",
                ]
            },
        ),
        ("Audio", {"fields": ["input_sample_rate", "output_sample_rate", "transport_sample_rate"]}),
    ]


@admin.register(Tool)
class ToolAdmin(TenantScopedAdmin):
    list_display = ["name", "tenant", "handler_kind", "execution", "timeout_seconds", "enabled"]
    list_filter = ["handler_kind", "execution", "enabled", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["name", "description"]


class ToolCallInline(admin.TabularInline):  # type: ignore[type-arg]
    model = ToolCall
    extra = 0
    can_delete = False
    fields = ("name", "status", "arguments", "result", "error", "created_at", "finished_at")
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(VoiceSession)
class VoiceSessionAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "room",
        "agent",
        "participant_id",
        "transport",
        "state",
        "created_at",
        "ended_at",
        "end_reason",
        "reconnects",
    ]
    list_filter = ["state", "transport", "provider_kind", "end_reason"]
    list_select_related = ["room", "agent"]
    search_fields = ["id", "participant_id", "room__key", "provider_session_id"]
    inlines = [ToolCallInline]


@admin.register(ToolCall)
class ToolCallAdmin(ReadOnlyAdmin):
    list_display = ["name", "session", "status", "execution", "duration", "created_at"]
    list_filter = ["status", "execution"]
    list_select_related = ["session"]
    search_fields = ["name", "call_id"]

    @admin.display(description="duration (ms)")
    def duration(self, obj: ToolCall) -> str:
        duration = obj.duration_ms
        return "" if duration is None else f"{duration:.0f}"
