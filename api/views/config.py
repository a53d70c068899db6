"""A tenant's configuration: agents, tools, provider credentials, and the tool calls made
in its sessions (read-only).

Writes go through ``voice.services`` and ``providers.services``, so the API applies the
admin's rules (provider_config checked against the provider's schema, a credential of the
agent's provider kind, allow-listed Python handlers, a webhook needs a signing secret).
Secrets are write-only: a response shows ``secret_hint`` (masked), never the secret.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import ProtectedError, QuerySet
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import BaseRouter

from api.errors import Conflict
from api.idempotency import idempotent
from api.serializers import StrictModelSerializer, StrictSerializer
from api.tenancy import TenantScopedMixin
from providers import services as provider_services
from providers.models import ProviderCredential, ProviderKind
from roomvoice.lib.secrets import SecretDecryptionError
from voice import services as voice_services
from voice.models import (
    DEFAULT_TOOL_RESULT_MAX_LENGTH,
    TOOL_EDITABLE_FIELDS,
    Agent,
    Tool,
    ToolCall,
    ToolCallStatus,
    ToolExecution,
    ToolHandlerKind,
)
from voice.tools.runner import ToolSpec, try_tool
from voice.validation import tool_argument_problems


def _tenant_of(serializer: serializers.BaseSerializer) -> Any:  # type: ignore[type-arg]
    return getattr(serializer.context.get("request"), "tenant", None)


def _is_single(instance: Any) -> bool:
    """The serializer edits one existing object (not a create, not a list)."""
    return instance is not None and not isinstance(instance, list | QuerySet)


# --- agents ----------------------------------------------------------------------------------


class AgentSerializer(StrictModelSerializer):
    credential = serializers.PrimaryKeyRelatedField(
        queryset=ProviderCredential.objects.none(),
        allow_null=True,
        required=False,
        help_text="The id of one of the tenant's credentials, of the agent's provider kind.",
    )
    tools = serializers.SlugRelatedField(
        slug_field="name",
        many=True,
        queryset=Tool.objects.none(),
        required=False,
        help_text="Names of the tenant's tools the agent may call.",
    )

    class Meta:
        model = Agent
        fields = [
            "slug",
            "name",
            "provider_kind",
            "credential",
            "model",
            "voice",
            "system_prompt",
            "temperature",
            "provider_config",
            "input_sample_rate",
            "output_sample_rate",
            "transport_sample_rate",
            "mute_on_tool_call",
            "tool_result_max_length",
            "emit_transcription_events",
            "tools",
            "is_active",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tenant = _tenant_of(self)
        credential: Any = self.fields["credential"]
        credential.queryset = (
            ProviderCredential.objects.filter(tenant=tenant)
            if tenant
            else ProviderCredential.objects.none()
        )
        tools: Any = self.fields["tools"]
        tools.child_relation.queryset = (
            Tool.objects.filter(tenant=tenant) if tenant else Tool.objects.none()
        )
        if _is_single(self.instance):
            self.fields["slug"].read_only = True  # the slug names the agent in URLs

    def validate_slug(self, value: str) -> str:
        if Agent.objects.filter(tenant=_tenant_of(self), slug=value.strip().lower()).exists():
            raise serializers.ValidationError("The tenant already has an agent with this slug.")
        return value


class AgentFilter(filters.FilterSet):
    provider_kind = filters.ChoiceFilter(choices=ProviderKind.choices)
    is_active = filters.BooleanFilter()

    class Meta:
        model = Agent
        fields = ["provider_kind", "is_active"]


class AgentViewSet(TenantScopedMixin, viewsets.ModelViewSet):  # type: ignore[type-arg]
    """The tenant's voice agents, by slug. ``provider_config`` is checked against the
    provider's schema and stored normalised; ``credential`` must be of the same provider."""

    queryset = Agent.objects.select_related("credential").prefetch_related("tools").order_by("slug")
    serializer_class = AgentSerializer
    filterset_class = AgentFilter
    lookup_field = "slug"
    # Any one path segment reaches the view (a JSON 404 for a slug that cannot exist), not
    # the router's default that stops at a ".".
    lookup_value_regex = "[^/]+"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    @idempotent
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().create(request, *args, **kwargs)

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = voice_services.agent_create(
            tenant=self.tenant, **serializer.validated_data
        )

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = voice_services.agent_update(
            tenant=self.tenant, agent=serializer.instance, **serializer.validated_data
        )


# --- tools -----------------------------------------------------------------------------------


class ToolSerializer(StrictModelSerializer):
    secret = serializers.CharField(
        write_only=True,
        required=False,
        max_length=4096,
        help_text="A webhook's signing secret (HMAC of each request). Stored encrypted and never "
        "returned; omit it on update to keep the current one.",
    )

    class Meta:
        model = Tool
        fields = [*TOOL_EDITABLE_FIELDS, "secret", "secret_hint", "created_at", "updated_at"]
        read_only_fields = ["secret_hint", "created_at", "updated_at"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if _is_single(self.instance):
            self.fields["name"].read_only = True  # the name names the tool in URLs

    def validate_name(self, value: str) -> str:
        if Tool.objects.filter(tenant=_tenant_of(self), name=value.strip()).exists():
            raise serializers.ValidationError("The tenant already has a tool with this name.")
        return value

    def validate_secret(self, value: str) -> str:
        # The service's own checks (length, whitespace), next to the other field errors.
        try:
            return voice_services.tool_clean_secret(value)
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.message_dict["secret"]) from None


class ToolTestSerializer(StrictSerializer):
    arguments = serializers.DictField(
        required=False,
        help_text="Checked against the tool's parameters. Omitted: the tool's sample_arguments.",
    )


class ToolTestResultSerializer(serializers.Serializer):  # type: ignore[type-arg]
    status = serializers.ChoiceField(
        choices=["succeeded", "failed", "timed_out"],
        help_text="How the run ended (a failure's details are never shown, only logged).",
    )
    result = serializers.CharField(help_text="What the model would have received.")
    duration_ms = serializers.FloatField()


class ToolFilter(filters.FilterSet):
    handler_kind = filters.ChoiceFilter(choices=ToolHandlerKind.choices)
    execution = filters.ChoiceFilter(choices=ToolExecution.choices)
    enabled = filters.BooleanFilter()

    class Meta:
        model = Tool
        fields = ["handler_kind", "execution", "enabled"]


class ToolViewSet(TenantScopedMixin, viewsets.ModelViewSet):  # type: ignore[type-arg]
    """Functions the tenant's agents may call, by name. A webhook needs a signing secret;
    a Python handler must be on the server's allow-list."""

    queryset = Tool.objects.order_by("name")
    serializer_class = ToolSerializer
    filterset_class = ToolFilter
    lookup_field = "name"
    lookup_value_regex = "[^/]+"  # as for agents: a JSON 404 for any name that is not one
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    @idempotent
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().create(request, *args, **kwargs)

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = voice_services.tool_create(
            tenant=self.tenant, **serializer.validated_data
        )

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = voice_services.tool_update(
            tenant=self.tenant, tool=serializer.instance, **serializer.validated_data
        )

    @extend_schema(request=ToolTestSerializer, responses=ToolTestResultSerializer)
    @action(detail=True, methods=["post"])
    @idempotent
    def test(self, request: Request, name: str | None = None) -> Response:
        """Run the tool once, exactly as a session would (same timeout, error texts and
        truncation), and return what the model would receive. It has the tool's side
        effects (a webhook call, a handler that writes), so it needs write access, and a
        retry with the same Idempotency-Key gets the first run's answer (no second run)."""
        tool = self.get_object()
        serializer = ToolTestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        arguments = serializer.validated_data.get("arguments", tool.sample_arguments)
        problems = tool_argument_problems(tool.parameters, arguments)
        if problems:
            raise serializers.ValidationError({"arguments": problems})
        try:
            spec = ToolSpec.from_row(tool)
        except SecretDecryptionError:
            raise Conflict(
                "The tool's secret cannot be decrypted with the server's keys: set it again."
            ) from None
        outcome = async_to_sync(try_tool)(spec, arguments, limit=DEFAULT_TOOL_RESULT_MAX_LENGTH)
        body = {
            "status": outcome.status,
            "result": outcome.text,
            "duration_ms": round(outcome.duration_ms, 3),
        }
        return Response(ToolTestResultSerializer(body).data)


# --- provider credentials --------------------------------------------------------------------


class CredentialSerializer(StrictModelSerializer):
    secret = serializers.CharField(
        write_only=True,
        max_length=provider_services.MAX_SECRET_LENGTH,
        help_text="The vendor API key. Stored encrypted and never returned (see secret_hint); "
        "replace it with the rotate action.",
    )

    class Meta:
        model = ProviderCredential
        fields = [
            "id",
            "name",
            "kind",
            "secret",
            "base_url",
            "secret_hint",
            "created_at",
            "secret_updated_at",
        ]
        read_only_fields = ["id", "secret_hint", "created_at", "secret_updated_at"]

    def validate_name(self, value: str) -> str:
        tenant = _tenant_of(self)
        if ProviderCredential.objects.filter(tenant=tenant, name=value.strip()).exists():
            raise serializers.ValidationError("The tenant already has a credential with this name.")
        return value


class RotateSerializer(StrictSerializer):
    secret = serializers.CharField(
        write_only=True,
        max_length=provider_services.MAX_SECRET_LENGTH,
        help_text="The new vendor API key (replaces the stored one at once).",
    )


class CredentialFilter(filters.FilterSet):
    kind = filters.ChoiceFilter(choices=ProviderKind.choices)

    class Meta:
        model = ProviderCredential
        fields = ["kind"]


class CredentialViewSet(TenantScopedMixin, viewsets.ModelViewSet):  # type: ignore[type-arg]
    """The tenant's vendor keys, masked. The secret is write-only: set on create, replaced
    with ``rotate``. A credential that agents use cannot be deleted (409)."""

    queryset = ProviderCredential.objects.order_by("name")
    serializer_class = CredentialSerializer
    filterset_class = CredentialFilter
    http_method_names = ["get", "post", "delete", "head", "options"]

    @idempotent
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().create(request, *args, **kwargs)

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = provider_services.credential_create(
            tenant=self.tenant, **serializer.validated_data
        )

    def perform_destroy(self, instance: ProviderCredential) -> None:
        try:
            instance.delete()
        except ProtectedError:
            agents = sorted(instance.agents.values_list("slug", flat=True))
            raise Conflict(
                f"Agents use this credential ({', '.join(agents)}): point them at another "
                "credential or delete them first."
            ) from None

    @extend_schema(request=RotateSerializer, responses=CredentialSerializer)
    @action(detail=True, methods=["post"])
    @idempotent
    def rotate(self, request: Request, pk: str | None = None) -> Response:
        """Replace the secret (a new vendor key); live sessions keep the one they opened
        with."""
        credential = self.get_object()
        serializer = RotateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        credential = provider_services.credential_set_secret(
            tenant=self.tenant, credential=credential, secret=serializer.validated_data["secret"]
        )
        return Response(self.get_serializer(credential).data)


# --- tool calls ------------------------------------------------------------------------------


class ToolCallSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    session = serializers.UUIDField(source="session_id", read_only=True)
    tool: Any = serializers.SlugRelatedField(
        slug_field="name",
        read_only=True,
        allow_null=True,
        help_text="The tool's name; null when the call named no tool or the tool was deleted.",
    )
    duration_ms = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = ToolCall
        fields = [
            "id",
            "session",
            "tool",
            "call_id",
            "name",
            "arguments",
            "status",
            "execution",
            "task_id",
            "result",
            "error",
            "late_result",
            "late_at",
            "delivered_at",
            "created_at",
            "started_at",
            "finished_at",
            "duration_ms",
        ]
        read_only_fields = fields


class ToolCallFilter(filters.FilterSet):
    session = filters.UUIDFilter(field_name="session_id")
    tool = filters.CharFilter(field_name="tool__name")
    status = filters.ChoiceFilter(choices=ToolCallStatus.choices)
    execution = filters.ChoiceFilter(choices=ToolExecution.choices)

    class Meta:
        model = ToolCall
        fields = ["session", "tool", "status", "execution"]


class ToolCallViewSet(TenantScopedMixin, viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    """The function calls made in the tenant's sessions, newest first."""

    queryset = ToolCall.objects.select_related("tool").order_by("-created_at", "-id")
    serializer_class = ToolCallSerializer
    filterset_class = ToolCallFilter


# --- routes ----------------------------------------------------------------------------------


def register(router: BaseRouter) -> None:
    """Add this module's routes to the ``/api/v1/`` router."""
    router.register("agents", AgentViewSet, basename="agent")
    router.register("tools", ToolViewSet, basename="tool")
    router.register("credentials", CredentialViewSet, basename="credential")
    router.register("tool-calls", ToolCallViewSet, basename="tool-call")


__all__ = [
    "AgentViewSet",
    "CredentialViewSet",
    "ToolCallViewSet",
    "ToolViewSet",
    "register",
]
