"""The voice admin: agents and tools (edited by tenant owners), and the read-only history of
voice sessions and their tool calls.

A tool's webhook signing secret is write-only here: typed into a password field, stored
encrypted by ``voice.services``, shown afterwards only as its masked hint. "Test this tool"
(``<tool pk>/test/``) runs a tool once with arguments typed in the admin, exactly as a
session would, and shows what the model would receive.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from providers.registry import UnknownProviderError, get_spec
from rooms.admin_base import ReadOnlyAdmin, TenantScopedAdmin
from roomvoice.lib.secrets import SecretDecryptionError
from voice import services
from voice.models import (
    DEFAULT_TOOL_RESULT_MAX_LENGTH,
    TOOL_EDITABLE_FIELDS,
    Agent,
    Tool,
    ToolCall,
    VoiceSession,
)
from voice.tools.runner import ToolSpec, TrialOutcome, try_tool
from voice.validation import tool_argument_problems


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


def provider_summary(agent: Agent) -> str:
    try:
        spec = get_spec(agent.provider_kind)
    except UnknownProviderError:
        return f"{agent.provider_kind}: not a provider of this build"
    if not spec.needs_credential:
        return f"{spec.label}: runs on this server, no key, no network"
    if agent.credential is None:
        return f"{spec.label}: NO CREDENTIAL, sessions cannot start"
    return f"{spec.label}: cloud, key “{agent.credential.name}”"


@admin.register(Agent)
class AgentAdmin(TenantScopedAdmin):
    form = AgentForm
    list_display = ["name", "slug", "tenant", "provider", "model", "voice", "is_active"]
    list_filter = ["provider_kind", "is_active", "tenant"]
    list_select_related = ["tenant", "credential"]
    search_fields = ["name", "slug"]
    filter_horizontal = ["tools"]
    readonly_fields = ["provider"]
    fieldsets = [
        (None, {"fields": ["tenant", "slug", "name", "is_active"]}),
        (
            "Provider",
            {
                "fields": [
                    "provider",
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

    @admin.display(description="Provider", ordering="provider_kind")
    def provider(self, agent: Agent) -> str:
        """Which provider answers, and where: on this server (no key), or a vendor with
        which key; an agent that cannot start says so."""
        if agent._state.adding:
            return "(shown once saved)"
        return provider_summary(agent)


# --- Tools ----------------------------------------------------------------------------------

TOOL_MODEL_FIELDS = ("tenant", *TOOL_EDITABLE_FIELDS)


def _tool_calls_url(**filters: Any) -> str:
    """The tool call list, filtered (``tool__id__exact``, ``session__id__exact``)."""
    query = urlencode({key: str(value) for key, value in filters.items()})
    return f"{reverse('admin:voice_toolcall_changelist')}?{query}"


class ToolForm(forms.ModelForm):  # type: ignore[type-arg]
    secret = forms.CharField(
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        required=False,
        strip=True,
        help_text="The signing key for webhooks (HMAC of each request). Stored encrypted; "
        "never shown again. Leave blank to keep the current one.",
    )

    class Meta:
        model = Tool
        fields = list(TOOL_MODEL_FIELDS)

    def clean_secret(self) -> str:
        secret: str = self.cleaned_data.get("secret", "")
        if not secret:
            return ""
        # The service's own checks (length, whitespace), as a form error, not a 500.
        try:
            return services.tool_clean_secret(secret)
        except ValidationError as error:
            raise forms.ValidationError(error.message_dict["secret"]) from None

    def _post_clean(self) -> None:
        # A secret typed here counts for the model's "a webhook needs a secret" check. The
        # instance only ever holds it encrypted; the service stores it on save.
        secret = self.cleaned_data.get("secret", "")
        if secret:
            services.tool_put_secret(self.instance, secret)
        refused = "secret" in self.errors
        super()._post_clean()  # type: ignore[misc]
        if refused:  # the form's reason is enough: not also the model's "needs a secret"
            del self.errors["secret"][1:]


class ToolTrialForm(forms.Form):
    """The arguments for one run of a tool, checked against the tool's parameters."""

    arguments = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 12, "cols": 80, "class": "vLargeTextField"}),
        required=False,
        strip=True,
        help_text="A JSON object, checked against the tool's parameters.",
    )

    def __init__(self, *args: Any, tool: Tool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tool = tool

    def clean_arguments(self) -> dict[str, Any]:
        text: str = self.cleaned_data.get("arguments", "") or "{}"
        try:
            arguments: dict[str, Any] = json.loads(text)
        except ValueError as error:
            raise forms.ValidationError(f"Not valid JSON: {error}") from None
        problems = tool_argument_problems(self.tool.parameters, arguments)
        if problems:
            raise forms.ValidationError(problems)
        return arguments


@admin.register(Tool)
class ToolAdmin(TenantScopedAdmin):
    form = ToolForm
    change_form_template = "admin/voice/tool/change_form.html"
    list_display = [
        "name",
        "tenant",
        "handler_kind",
        "execution",
        "timeout_seconds",
        "enabled",
        "calls",
    ]
    list_filter = ["handler_kind", "execution", "enabled", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["name", "description"]
    readonly_fields = ["secret_hint"]
    actions = ["test_selected_tool"]
    fieldsets = [
        ("Definition", {"fields": ["tenant", "name", "description", "parameters"]}),
        ("Handler", {"fields": ["handler_kind", "handler", "secret", "secret_hint"]}),
        (
            "Execution",
            {
                "fields": [
                    "execution",
                    "timeout_seconds",
                    "on_barge_in",
                    "progress_message",
                    "progress_delay_seconds",
                ]
            },
        ),
        ("Testing", {"fields": ["sample_arguments"]}),
        (None, {"fields": ["enabled"]}),
    ]

    @admin.display(description="calls")
    def calls(self, obj: Tool) -> str:
        return format_html('<a href="{}">calls</a>', _tool_calls_url(tool__id__exact=obj.pk))

    def save_model(self, request: HttpRequest, obj: Tool, form: Any, change: bool) -> None:
        # Through the service, which encrypts the secret: the plaintext never reaches the
        # instance, the admin's log or any message.
        secret: str = form.cleaned_data.get("secret", "")
        values = {
            name: form.cleaned_data[name]
            for name in TOOL_MODEL_FIELDS
            if name in form.cleaned_data and name not in ("tenant", "name", "handler")
        }
        if not change:
            created = services.tool_create(
                tenant=obj.tenant, name=obj.name, handler=obj.handler, secret=secret, **values
            )
            obj.__dict__.update({k: v for k, v in created.__dict__.items() if k != "_state"})
            obj._state.adding = False
            obj._state.db = created._state.db
            return
        services.tool_update(
            tenant=obj.tenant,
            tool=obj,
            secret=secret,
            name=obj.name,
            handler=obj.handler,
            **values,
        )

    # --- "Test this tool" ---------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        info = (self.opts.app_label, self.opts.model_name)
        return [
            path(
                "<path:object_id>/test/",
                self.admin_site.admin_view(self.trial_view),
                name="{}_{}_test".format(*info),
            ),
            *super().get_urls(),
        ]

    @admin.action(description="Test the selected tool", permissions=["change"])
    def test_selected_tool(
        self, request: HttpRequest, queryset: QuerySet[Tool]
    ) -> HttpResponse | None:
        selected = list(queryset.values_list("pk", flat=True)[:2])
        if len(selected) != 1:
            self.message_user(request, "Select exactly one tool to test.", messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("admin:voice_tool_test", args=[selected[0]]))

    def trial_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        # Through the tenant-scoped queryset: another tenant's tool does not exist here.
        tool = self.get_object(request, unquote(object_id))
        if tool is None:
            raise Http404("No such tool.")
        # Running a tool has side effects (a webhook, a handler that writes): the same
        # permission as editing it.
        if not self.has_change_permission(request, tool):
            raise PermissionDenied
        outcome: TrialOutcome | None = None
        problem = ""
        if request.method == "POST":
            form = ToolTrialForm(request.POST, tool=tool)
            if form.is_valid():
                try:
                    spec = ToolSpec.from_row(tool)
                except SecretDecryptionError:
                    problem = (
                        "The tool's secret cannot be decrypted with the server's keys: "
                        "set it again."
                    )
                else:
                    outcome = async_to_sync(try_tool)(
                        spec, form.cleaned_data["arguments"], limit=DEFAULT_TOOL_RESULT_MAX_LENGTH
                    )
        else:
            sample = tool.sample_arguments if isinstance(tool.sample_arguments, dict) else {}
            form = ToolTrialForm(
                initial={"arguments": json.dumps(sample, indent=2, ensure_ascii=False)},
                tool=tool,
            )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Test {tool.name}",
            "subtitle": None,
            "opts": self.opts,
            "app_label": self.opts.app_label,
            "original": tool,
            "form": form,
            "outcome": outcome,
            "problem": problem,
            "has_view_permission": self.has_view_permission(request, tool),
            "has_change_permission": True,
            "media": self.media + form.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/voice/tool/test_tool.html", context)


# --- Sessions and tool calls (read-only history) -------------------------------------------


class ToolCallInline(admin.TabularInline):  # type: ignore[type-arg]
    model = ToolCall
    extra = 0
    can_delete = False
    fields = (
        "name",
        "status",
        "arguments",
        "result",
        "error",
        "created_at",
        "finished_at",
        "delivered",
        "late",
    )
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    @admin.display(description="delivered", boolean=True)
    def delivered(self, obj: ToolCall) -> bool:
        return obj.delivered_at is not None

    @admin.display(description="late", boolean=True)
    def late(self, obj: ToolCall) -> bool:
        return obj.is_late


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
        "tool_calls_link",
    ]
    list_filter = ["state", "transport", "provider_kind", "end_reason"]
    list_select_related = ["room", "agent"]
    search_fields = ["id", "participant_id", "room__key", "provider_session_id"]
    readonly_fields = ["tool_calls_link"]
    inlines = [ToolCallInline]

    @admin.display(description="tool calls")
    def tool_calls_link(self, obj: VoiceSession) -> str:
        return format_html(
            '<a href="{}">tool calls</a>', _tool_calls_url(session__id__exact=obj.pk)
        )


@admin.register(ToolCall)
class ToolCallAdmin(ReadOnlyAdmin):
    list_display = [
        "session",
        "name",
        "status",
        "execution",
        "duration",
        "delivered",
        "late",
        "created_at",
    ]
    # Filtering by session works through the URL (?session__id__exact=<pk>, the sessions'
    # "tool calls" link) rather than a list of every session.
    # The tool filter offers only the tools of calls the user may see (the queryset is
    # tenant-scoped): never another tenant's tool names.
    list_filter = ["status", "execution", ("tool", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["session"]
    search_fields = ["call_id", "name"]
    fieldsets = [
        (None, {"fields": ["tenant", "session", "tool", "call_id", "name", "status", "execution"]}),
        ("Call", {"fields": ["pretty_arguments", "result", "error"]}),
        ("Late result", {"fields": ["late", "late_result", "late_at"]}),
        (
            "Timing",
            {
                "fields": [
                    "task_id",
                    "created_at",
                    "started_at",
                    "finished_at",
                    "duration",
                    "delivered_at",
                ]
            },
        ),
    ]
    readonly_fields = [
        "tenant",
        "session",
        "tool",
        "call_id",
        "name",
        "status",
        "execution",
        "pretty_arguments",
        "result",
        "error",
        "late",
        "late_result",
        "late_at",
        "task_id",
        "created_at",
        "started_at",
        "finished_at",
        "duration",
        "delivered_at",
    ]

    @admin.display(description="arguments")
    def pretty_arguments(self, obj: ToolCall) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.arguments, indent=2, ensure_ascii=False))

    @admin.display(description="duration (ms)")
    def duration(self, obj: ToolCall) -> str:
        duration = obj.duration_ms
        return "" if duration is None else f"{duration:.0f}"

    @admin.display(description="delivered", boolean=True)
    def delivered(self, obj: ToolCall) -> bool:
        return obj.delivered_at is not None

    @admin.display(description="late", boolean=True)
    def late(self, obj: ToolCall) -> bool:
        return obj.is_late
