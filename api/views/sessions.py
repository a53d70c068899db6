"""Voice sessions: list and inspect them; end or reconfigure a live one (delivered to the
process that holds it, over its host channel)."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from api.errors import Conflict
from api.serializers import StrictSerializer
from api.tenancy import TenantScopedMixin
from voice import services as voice_services
from voice.models import SessionState, VoiceSession


class SessionSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    room = serializers.UUIDField(source="room_id", read_only=True)
    room_key = serializers.CharField(source="room.key", read_only=True)
    agent: Any = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = VoiceSession
        fields = [
            "id",
            "room",
            "room_key",
            "agent",
            "channel_id",
            "participant_id",
            "transport",
            "state",
            "provider_kind",
            "model",
            "provider_session_id",
            "end_reason",
            "end_detail",
            "usage",
            "metrics",
            "reconnects",
            "metadata",
            "created_at",
            "activated_at",
            "ended_at",
        ]
        read_only_fields = fields


class UtcDateTimeFilter(filters.IsoDateTimeFilter):
    """An ISO 8601 time with any offset Python accepts, compared in UTC (PostgreSQL refuses
    offsets beyond ±15:59 that Python parses)."""

    def filter(self, qs: Any, value: Any) -> Any:
        if value is not None:
            try:
                value = value.astimezone(UTC)
            except (OverflowError, ValueError):
                raise serializers.ValidationError(
                    {str(self.field_name): ["Out of range once converted to UTC."]}
                ) from None
        return super().filter(qs, value)


class SessionFilter(filters.FilterSet):
    room = filters.UUIDFilter(field_name="room_id")
    agent = filters.CharFilter(field_name="agent__slug")
    state = filters.ChoiceFilter(choices=SessionState.choices)
    created_after = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt")
    participant = filters.CharFilter(field_name="participant_id")

    class Meta:
        model = VoiceSession
        fields = ["room", "agent", "state", "created_after", "created_before", "participant"]


class EndSerializer(StrictSerializer):
    reason = serializers.ChoiceField(
        choices=["ended_by_operator"], default="ended_by_operator", required=False
    )


class ReconfigureSerializer(StrictSerializer):
    system_prompt = serializers.CharField(required=False, allow_blank=True, max_length=50_000)
    voice = serializers.CharField(required=False, max_length=200)
    temperature = serializers.FloatField(required=False, min_value=0.0, max_value=2.0)
    provider_config = serializers.DictField(required=False)
    tools = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False, max_length=128
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError("Name at least one change.")
        return attrs


class Accepted(serializers.Serializer):  # type: ignore[type-arg]
    accepted = serializers.BooleanField()


class SessionViewSet(TenantScopedMixin, viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    """The tenant's voice sessions, newest first."""

    queryset = VoiceSession.objects.select_related("room", "agent").order_by("-created_at")
    serializer_class = SessionSerializer
    filterset_class = SessionFilter

    @extend_schema(request=EndSerializer, responses={202: Accepted})
    @action(detail=True, methods=["post"])
    def end(self, request: Request, pk: str | None = None) -> Response:
        """End a live session: its host ends it (the transcript is flushed and the row
        records the reason). 409 when it has already ended."""
        session = self.get_object()
        EndSerializer(data=request.data).is_valid(raise_exception=True)
        if not voice_services.voice_session_request_end(tenant=self.tenant, session_id=session.pk):
            raise Conflict("The session has already ended.")
        return Response({"accepted": True}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=ReconfigureSerializer, responses={202: Accepted})
    @action(detail=True, methods=["post"])
    def reconfigure(self, request: Request, pk: str | None = None) -> Response:
        """Change a live session's prompt, voice, temperature, provider options or tools
        (names of this tenant's tools; [] for none). Applied by its host; 409 when the
        session has ended or has no reachable host."""
        session = self.get_object()
        serializer = ReconfigureSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if not voice_services.voice_session_request_reconfigure(
            tenant=self.tenant, session_id=session.pk, changes=dict(serializer.validated_data)
        ):
            raise Conflict("The session has ended or no process holds it.")
        return Response({"accepted": True}, status=status.HTTP_202_ACCEPTED)
