"""Agents and tools (edited in the admin), voice sessions and the tool calls made in them.

State changes go through ``voice.services``, which move sessions and tool calls with
conditional updates so that two processes can never both win a transition; the database
checks below keep every row's state consistent with its timestamps.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from providers.models import ProviderCredential, ProviderKind
from rooms.models import KEY_VALIDATOR, Room, Tenant
from roomvoice.db import choices_check

MAX_SAMPLE_RATE = 192_000
DEFAULT_TOOL_RESULT_MAX_LENGTH = 16_384

TOOL_NAME_VALIDATOR = RegexValidator(
    r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$",
    "Use 1-64 letters, digits, '_' or '-', starting with a letter or '_' "
    "(the function-name rule the providers share).",
)


def _rate_field(default: int | None, help_text: str) -> Any:
    return models.PositiveIntegerField(
        default=default,
        null=default is None,
        blank=default is None,
        validators=[MinValueValidator(8000), MaxValueValidator(MAX_SAMPLE_RATE)],
        help_text=help_text,
    )


class ToolHandlerKind(models.TextChoices):
    PYTHON = "python", "Python callable (dotted path)"
    WEBHOOK = "webhook", "HTTPS webhook"


class ToolExecution(models.TextChoices):
    INLINE = "inline", "Inline (in the session's process)"
    CELERY = "celery", "Celery worker (queue 'tools')"


#: What an operator edits on a Tool (the admin and the API), besides its tenant and secret.
TOOL_EDITABLE_FIELDS = (
    "name",
    "description",
    "parameters",
    "handler_kind",
    "handler",
    "execution",
    "timeout_seconds",
    "on_barge_in",
    "progress_message",
    "progress_delay_seconds",
    "sample_arguments",
    "enabled",
)


class ToolBargeIn(models.TextChoices):
    KEEP = "keep", "Keep running (the answer arrives after the interruption)"
    CANCEL = "cancel", "Cancel the call when the caller starts speaking"


class Tool(models.Model):
    """A function the model may call. ``parameters`` is a JSON Schema object.

    A webhook's signing secret is stored encrypted (``voice.services.tool_create`` /
    ``tool_update`` with ``secret=``); only its masked hint is readable.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="tools")
    name = models.CharField(max_length=64, validators=[TOOL_NAME_VALIDATOR])
    description = models.TextField(blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    handler_kind = models.CharField(
        max_length=16, choices=ToolHandlerKind.choices, default=ToolHandlerKind.PYTHON
    )
    handler = models.CharField(
        max_length=500, help_text="A dotted path (package.module.function) or an https:// URL."
    )
    execution = models.CharField(
        max_length=16, choices=ToolExecution.choices, default=ToolExecution.INLINE
    )
    timeout_seconds = models.FloatField(
        default=10.0, validators=[MinValueValidator(0.1), MaxValueValidator(600.0)]
    )
    encrypted_secret = models.TextField(blank=True, editable=False)
    secret_hint = models.CharField(max_length=16, blank=True, editable=False)
    progress_message = models.CharField(
        max_length=300,
        blank=True,
        help_text="Said to the caller when the tool is still running after the delay below "
        "(e.g. 'Let me check that...'). Blank: nothing is said.",
    )
    progress_delay_seconds = models.FloatField(
        default=2.0, validators=[MinValueValidator(0.0), MaxValueValidator(60.0)]
    )
    on_barge_in = models.CharField(
        max_length=8, choices=ToolBargeIn.choices, default=ToolBargeIn.KEEP
    )
    sample_arguments = models.JSONField(
        default=dict, blank=True, help_text="Arguments for the admin's 'test this tool'."
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="tool_unique_name"),
            choices_check("handler_kind", ToolHandlerKind, "tool_handler_kind_valid"),
            choices_check("execution", ToolExecution, "tool_execution_valid"),
            models.CheckConstraint(
                condition=Q(timeout_seconds__gte=0.1, timeout_seconds__lte=600),
                name="tool_timeout_in_range",
            ),
            choices_check("on_barge_in", ToolBargeIn, "tool_on_barge_in_valid"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        super().clean()
        from voice.validation import validate_tool_handler, validate_tool_parameters

        errors: dict[str, list[str]] = {}
        if self.parameters == {}:
            # The field's default (and a blank admin field): a tool that takes no arguments.
            self.parameters = {"type": "object", "properties": {}}
        try:
            validate_tool_parameters(self.parameters)
        except ValueError as error:
            errors["parameters"] = [str(error)]
        try:
            validate_tool_handler(self.handler_kind, self.handler)
        except ValueError as error:
            errors["handler"] = [str(error)]
        if (
            self.handler_kind == ToolHandlerKind.WEBHOOK
            and not self.encrypted_secret
            and "handler" not in errors
        ):
            errors["secret"] = [
                "A webhook tool needs a signing secret: the webhook uses it to check that "
                "requests come from this server."
            ]
        if not isinstance(self.sample_arguments, dict):
            errors["sample_arguments"] = ["Sample arguments are a JSON object."]
        if errors:
            raise ValidationError(errors)


class Agent(models.Model):
    """A configured voice agent: which provider, how it sounds, what it may call."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="agents")
    slug = models.CharField(
        max_length=64, validators=[KEY_VALIDATOR], help_text="Unique within the tenant."
    )
    name = models.CharField(max_length=200)
    provider_kind = models.CharField(max_length=16, choices=ProviderKind.choices)
    credential = models.ForeignKey(
        ProviderCredential,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="agents",
        help_text="The vendor key this agent connects with (same tenant and kind).",
    )
    model = models.CharField(max_length=200, blank=True, help_text="Blank: the provider default.")
    voice = models.CharField(max_length=200, blank=True)
    system_prompt = models.TextField(blank=True)
    temperature = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)]
    )
    provider_config = models.JSONField(default=dict, blank=True)
    input_sample_rate = _rate_field(16000, "Caller audio → provider, Hz.")
    output_sample_rate = _rate_field(24000, "Provider audio → caller, Hz.")
    transport_sample_rate = _rate_field(None, "Blank: the transport negotiates it.")
    mute_on_tool_call = models.BooleanField(default=False)
    tool_result_max_length = models.PositiveIntegerField(
        default=DEFAULT_TOOL_RESULT_MAX_LENGTH, validators=[MinValueValidator(1)]
    )
    emit_transcription_events = models.BooleanField(default=True)
    tools = models.ManyToManyField(Tool, blank=True, related_name="agents")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "slug"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "slug"], name="agent_unique_slug"),
            choices_check("provider_kind", ProviderKind, "agent_provider_kind_valid"),
            models.CheckConstraint(
                condition=Q(temperature__isnull=True)
                | Q(temperature__gte=0.0, temperature__lte=2.0),
                name="agent_temperature_in_range",
            ),
            models.CheckConstraint(
                condition=Q(input_sample_rate__gte=8000, input_sample_rate__lte=MAX_SAMPLE_RATE)
                & Q(output_sample_rate__gte=8000, output_sample_rate__lte=MAX_SAMPLE_RATE)
                & (
                    Q(transport_sample_rate__isnull=True)
                    | Q(
                        transport_sample_rate__gte=8000,
                        transport_sample_rate__lte=MAX_SAMPLE_RATE,
                    )
                ),
                name="agent_sample_rates_in_range",
            ),
            models.CheckConstraint(
                condition=Q(tool_result_max_length__gte=1), name="agent_tool_result_length_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        super().clean()
        from providers.config import ProviderConfigError
        from providers.registry import UnknownProviderError, validate_provider_config

        errors: dict[str, list[str]] = {}
        if self.provider_kind:
            try:
                self.provider_config = validate_provider_config(
                    self.provider_kind, self.provider_config
                )
            except ProviderConfigError as error:
                errors["provider_config"] = [str(error)]
            except UnknownProviderError as error:
                errors["provider_kind"] = [str(error)]
        if self.credential_id is not None:
            credential = self.credential
            if credential is not None and credential.tenant_id != self.tenant_id:
                errors["credential"] = ["The credential belongs to another tenant."]
            elif credential is not None and credential.kind != self.provider_kind:
                errors["credential"] = [
                    f"The credential is for {credential.get_kind_display()}, "
                    f"not {self.get_provider_kind_display()}."
                ]
        if errors:
            raise ValidationError(errors)


class SessionState(models.TextChoices):
    CONNECTING = "connecting", "Connecting"
    ACTIVE = "active", "Active"
    ENDED = "ended", "Ended"


# The only moves a session may make (the seed's CONNECTING → ACTIVE → ENDED).
SESSION_TRANSITIONS: dict[str, frozenset[str]] = {
    SessionState.CONNECTING: frozenset({SessionState.ACTIVE, SessionState.ENDED}),
    SessionState.ACTIVE: frozenset({SessionState.ENDED}),
    SessionState.ENDED: frozenset(),
}


class TransportKind(models.TextChoices):
    WEBSOCKET = "websocket", "WebSocket"
    WEBRTC = "webrtc", "WebRTC"
    SIP = "sip", "SIP"
    TWILIO = "twilio", "Twilio Media Streams"
    LOCAL = "local", "Local audio"
    CLI = "cli", "Command line"
    MOCK = "mock", "Mock"


class EndReason(models.TextChoices):
    CLIENT_HANGUP = "client_hangup", "Caller hung up"
    ENDED_BY_CALLER = "ended_by_caller", "Ended by the caller"
    ENDED_BY_OPERATOR = "ended_by_operator", "Ended by an operator or the API"
    CONNECT_FAILED = "connect_failed", "Provider connection failed"
    PROVIDER_ERROR = "provider_error", "Provider error"
    TRANSPORT_ERROR = "transport_error", "Transport error"
    ACCESS_REVOKED = "access_revoked", "Access revoked"
    HOST_LOST = "host_lost", "The process holding the session stopped"
    SERVER_SHUTDOWN = "server_shutdown", "Server shut down"
    TIMEOUT = "timeout", "Time limit reached"
    INTERNAL_ERROR = "internal_error", "Internal error in the voice engine"


class VoiceSession(models.Model):
    """One caller ↔ provider conversation in a room."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="voice_sessions")
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions"
    )
    channel_id = models.CharField(max_length=64, default="voice")
    participant_id = models.CharField(max_length=128)
    transport = models.CharField(max_length=16, choices=TransportKind.choices)
    state = models.CharField(
        max_length=16, choices=SessionState.choices, default=SessionState.CONNECTING
    )
    provider_kind = models.CharField(max_length=16, choices=ProviderKind.choices)
    model = models.CharField(max_length=200, blank=True)
    provider_session_id = models.CharField(max_length=200, blank=True)
    resumption_handle = models.TextField(blank=True)
    # The Channels channel name of the process holding the session (control messages go there).
    host_channel_name = models.CharField(max_length=200, blank=True)
    end_reason = models.CharField(max_length=32, choices=EndReason.choices, blank=True)
    end_detail = models.TextField(blank=True)
    usage = models.JSONField(default=dict, blank=True)
    #: Times the provider replaced its vendor session without ending this one (a dropped
    #: socket, the vendor's session-length limit); details in metrics["reconnects"].
    reconnects = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            choices_check("state", SessionState, "session_state_valid"),
            choices_check("transport", TransportKind, "session_transport_valid"),
            choices_check("provider_kind", ProviderKind, "session_provider_kind_valid"),
            models.CheckConstraint(
                condition=Q(end_reason__in=[*EndReason.values, ""]),
                name="session_end_reason_valid",
            ),
            # State and timestamps agree: the table can never hold a half-made transition.
            models.CheckConstraint(
                condition=(
                    Q(
                        state=SessionState.CONNECTING,
                        activated_at__isnull=True,
                        ended_at__isnull=True,
                        end_reason="",
                    )
                    | Q(
                        state=SessionState.ACTIVE,
                        activated_at__isnull=False,
                        ended_at__isnull=True,
                        end_reason="",
                    )
                    | (Q(state=SessionState.ENDED, ended_at__isnull=False) & ~Q(end_reason=""))
                ),
                name="session_state_matches_timestamps",
            ),
        ]
        indexes = [
            models.Index(fields=["room", "state"], name="session_room_state_idx"),
            models.Index(fields=["tenant", "-created_at"], name="session_tenant_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.participant_id} in {self.room_id} ({self.state})"


class ToolCallStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    TIMED_OUT = "timed_out", "Timed out"
    CANCELLED = "cancelled", "Cancelled"


TOOL_CALL_FINAL_STATUSES = frozenset(
    {
        ToolCallStatus.SUCCEEDED,
        ToolCallStatus.FAILED,
        ToolCallStatus.TIMED_OUT,
        ToolCallStatus.CANCELLED,
    }
)


class ToolCall(models.Model):
    """One function call the model made, from request to result."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    session = models.ForeignKey(VoiceSession, on_delete=models.CASCADE, related_name="tool_calls")
    tool = models.ForeignKey(
        Tool, null=True, blank=True, on_delete=models.SET_NULL, related_name="calls"
    )
    call_id = models.CharField(max_length=200, help_text="The provider's id for the call.")
    name = models.CharField(max_length=200)
    arguments = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=ToolCallStatus.choices, default=ToolCallStatus.PENDING
    )
    execution = models.CharField(
        max_length=16, choices=ToolExecution.choices, default=ToolExecution.INLINE
    )
    task_id = models.CharField(max_length=200, blank=True)
    result = models.TextField(blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(
        null=True, blank=True, help_text="When the result reached the live session."
    )
    late_result = models.TextField(
        blank=True,
        help_text="A result the worker produced after the call had already ended (timed out, "
        "cancelled, or its session gone): stored, never delivered to the model.",
    )
    late_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["session", "call_id"], name="tool_call_unique_call_id"),
            choices_check("status", ToolCallStatus, "tool_call_status_valid"),
            choices_check("execution", ToolExecution, "tool_call_execution_valid"),
            models.CheckConstraint(
                condition=(
                    Q(status__in=TOOL_CALL_FINAL_STATUSES, finished_at__isnull=False)
                    | (~Q(status__in=TOOL_CALL_FINAL_STATUSES) & Q(finished_at__isnull=True))
                ),
                name="tool_call_finished_iff_final",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    @property
    def is_late(self) -> bool:
        return self.late_at is not None

    @property
    def duration_ms(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds() * 1000
