"""Rooms, their channel bindings, room tokens and timelines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from api.idempotency import idempotent
from api.pagination import EventCursor
from api.serializers import StrictModelSerializer, StrictSerializer
from api.tenancy import TenantScopedMixin
from rooms import services as room_services
from rooms.models import (
    Access,
    ChannelBinding,
    EventKind,
    EventRole,
    Room,
    RoomEvent,
    RoomStatus,
)
from rooms.tokens import MAX_TTL_SECONDS, PERMISSIONS
from voice.models import Agent

# --- rooms -----------------------------------------------------------------------------------


class RoomSerializer(StrictModelSerializer):
    default_agent = serializers.SlugRelatedField(
        slug_field="slug", queryset=Agent.objects.none(), allow_null=True, required=False
    )

    class Meta:
        model = Room
        fields = [
            "id",
            "key",
            "name",
            "status",
            "metadata",
            "default_agent",
            "last_event_index",
            "created_at",
            "updated_at",
            "closed_at",
        ]
        read_only_fields = [
            "id",
            "status",
            "last_event_index",
            "created_at",
            "updated_at",
            "closed_at",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        tenant = getattr(request, "tenant", None)
        field = self.fields["default_agent"]
        field.queryset = Agent.objects.filter(tenant=tenant) if tenant else Agent.objects.none()
        if self.instance is not None and not isinstance(self.instance, list | QuerySet):
            self.fields["key"].read_only = True  # the key names the room in URLs

    def validate_metadata(self, value: Any) -> Any:
        if not isinstance(value, dict):
            raise serializers.ValidationError("Metadata must be a JSON object.")
        return value


class RoomFilter(filters.FilterSet):
    status = filters.ChoiceFilter(choices=RoomStatus.choices)
    key = filters.CharFilter()

    class Meta:
        model = Room
        fields = ["status", "key"]


class RoomViewSet(TenantScopedMixin, viewsets.ModelViewSet):  # type: ignore[type-arg]
    """Rooms of the tenant. ``DELETE`` removes a room and its timeline; ``close`` keeps it."""

    queryset = Room.objects.select_related("default_agent").order_by("key")
    serializer_class = RoomSerializer
    filterset_class = RoomFilter
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    @idempotent
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().create(request, *args, **kwargs)

    def perform_create(self, serializer: Any) -> None:
        data = serializer.validated_data
        serializer.instance = room_services.room_create(tenant=self.tenant, **data)

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = room_services.room_update(
            tenant=self.tenant, room=serializer.instance, **serializer.validated_data
        )

    @extend_schema(request=None, responses=RoomSerializer)
    @action(detail=True, methods=["post"])
    def close(self, request: Request, pk: str | None = None) -> Response:
        """Close the room: no new sessions; the timeline stays readable."""
        room = room_services.room_set_status(
            tenant=self.tenant, room=self.get_object(), status=RoomStatus.CLOSED
        )
        return Response(self.get_serializer(room).data)

    @extend_schema(request=None, responses=RoomSerializer)
    @action(detail=True, methods=["post"])
    def reopen(self, request: Request, pk: str | None = None) -> Response:
        room = room_services.room_set_status(
            tenant=self.tenant, room=self.get_object(), status=RoomStatus.ACTIVE
        )
        return Response(self.get_serializer(room).data)


class RoomChildMixin(TenantScopedMixin):
    """A resource under ``/rooms/{room_pk}/``: the room must be the tenant's (else 404)."""

    kwargs: dict[str, Any]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        # Before anything reads the body: another tenant's room is a 404, never a 400.
        _ = self.room

    @property
    def room(self) -> Room:
        cached: Room | None = getattr(self, "_room", None)
        if cached is None:
            cached = self.tenant_object(Room, pk=self.kwargs["room_pk"])
            self._room = cached
        return cached


# --- bindings --------------------------------------------------------------------------------


class BindingSerializer(StrictModelSerializer):
    class Meta:
        model = ChannelBinding
        fields = [
            "id",
            "channel_id",
            "participant_id",
            "access",
            "muted",
            "output_muted",
            "visibility",
            "metadata",
            "attached_at",
            "updated_at",
        ]
        read_only_fields = ["id", "attached_at", "updated_at"]
        # Attach validates through the service (uniqueness per room included).
        validators: list[Any] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance is not None and not isinstance(self.instance, list | QuerySet):
            for name in ("channel_id", "participant_id", "metadata"):
                self.fields[name].read_only = True


class AccessSerializer(StrictSerializer):
    access = serializers.ChoiceField(choices=Access.choices)


class BindingViewSet(RoomChildMixin, viewsets.ModelViewSet):  # type: ignore[type-arg]
    """Who may speak and hear in the room. Changes reach live sessions at once."""

    queryset = ChannelBinding.objects.order_by("channel_id", "participant_id")
    serializer_class = BindingSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[ChannelBinding]:
        return super().get_queryset().filter(room=self.room)

    @idempotent
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Attach a binding. An existing one (same channel and participant) is returned
        unchanged with 200, never widened."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        binding, created = room_services.binding_attach(
            tenant=self.tenant, room=self.room, **serializer.validated_data
        )
        return Response(
            self.get_serializer(binding).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = room_services.binding_update(
            tenant=self.tenant, binding=serializer.instance, **serializer.validated_data
        )

    def perform_destroy(self, instance: ChannelBinding) -> None:
        room_services.binding_detach(tenant=self.tenant, binding=instance)

    def _set(self, **change: Any) -> Response:
        binding = room_services.binding_update(
            tenant=self.tenant, binding=self.get_object(), **change
        )
        return Response(self.get_serializer(binding).data)

    @extend_schema(request=None, responses=BindingSerializer)
    @action(detail=True, methods=["post"])
    def mute(self, request: Request, room_pk: str, pk: str) -> Response:
        return self._set(muted=True)

    @extend_schema(request=None, responses=BindingSerializer)
    @action(detail=True, methods=["post"])
    def unmute(self, request: Request, room_pk: str, pk: str) -> Response:
        return self._set(muted=False)

    @extend_schema(request=None, responses=BindingSerializer)
    @action(detail=True, methods=["post"])
    def mute_output(self, request: Request, room_pk: str, pk: str) -> Response:
        return self._set(output_muted=True)

    @extend_schema(request=None, responses=BindingSerializer)
    @action(detail=True, methods=["post"])
    def unmute_output(self, request: Request, room_pk: str, pk: str) -> Response:
        return self._set(output_muted=False)

    @extend_schema(request=AccessSerializer, responses=BindingSerializer)
    @action(detail=True, methods=["post"])
    def set_access(self, request: Request, room_pk: str, pk: str) -> Response:
        serializer = AccessSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self._set(access=serializer.validated_data["access"])


# --- tokens ----------------------------------------------------------------------------------


class TokenRequestSerializer(StrictSerializer):
    participant_id = serializers.CharField(max_length=200)
    permissions = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(PERMISSIONS)),
        default=["speak", "listen"],
        min_length=1,
    )
    ttl_seconds = serializers.IntegerField(min_value=1, max_value=MAX_TTL_SECONDS, default=3600)


class TokenSerializer(serializers.Serializer):  # type: ignore[type-arg]
    token = serializers.CharField()
    participant_id = serializers.CharField()
    permissions = serializers.ListField(child=serializers.CharField())
    expires_in = serializers.IntegerField()
    voice_url = serializers.CharField(help_text="The voice page for this room and token.")
    websocket_path = serializers.CharField()


class TokenViewSet(RoomChildMixin, viewsets.GenericViewSet):  # type: ignore[type-arg]
    """Mint a signed, expiring token for one participant of the room (for their browser
    or app: the voice page and WebSocket accept it as ``?token=``)."""

    serializer_class = TokenRequestSerializer

    @extend_schema(request=TokenRequestSerializer, responses={201: TokenSerializer})
    @idempotent
    def create(self, request: Request, room_pk: str) -> Response:
        serializer = TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        room = self.room
        token = room_services.room_token_create(
            tenant=self.tenant,
            room=room,
            participant_id=data["participant_id"],
            permissions=data["permissions"],
            ttl_seconds=data["ttl_seconds"],
        )
        body = {
            "token": token,
            "participant_id": data["participant_id"].strip(),
            "permissions": sorted(set(data["permissions"])),
            "expires_in": data["ttl_seconds"],
            "voice_url": request.build_absolute_uri(f"/rooms/{room.pk}/voice/?token={token}"),
            "websocket_path": f"/ws/rooms/{room.pk}/voice/?token={token}",
        }
        return Response(body, status=status.HTTP_201_CREATED)


# --- events ----------------------------------------------------------------------------------


class EventSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    session_id = serializers.UUIDField(allow_null=True, read_only=True)

    class Meta:
        model = RoomEvent
        fields = [
            "id",
            "index",
            "kind",
            "role",
            "text",
            "status",
            "blocked_by",
            "session_id",
            "channel_id",
            "participant_id",
            "metadata",
            "occurred_at",
        ]
        read_only_fields = fields


class EventFilter(filters.FilterSet):
    kind = filters.ChoiceFilter(choices=EventKind.choices)
    role = filters.ChoiceFilter(choices=EventRole.choices)
    session = filters.UUIDFilter(field_name="session_id")
    after_index = filters.NumberFilter(
        field_name="index", lookup_expr="gt", min_value=0, max_value=2**62
    )

    class Meta:
        model = RoomEvent
        fields = ["kind", "role", "session", "after_index"]


EXPORT_FORMATS = ("jsonl", "txt")


class EventViewSet(RoomChildMixin, viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    """The room's timeline in index order (transcripts, typed messages, tool calls, system
    events), with cursor pagination that stays stable while the room goes on."""

    queryset = RoomEvent.objects.all()
    serializer_class = EventSerializer
    pagination_class = EventCursor
    filterset_class = EventFilter

    def get_queryset(self) -> QuerySet[RoomEvent]:
        return super().get_queryset().filter(room=self.room).order_by("index")

    @extend_schema(
        parameters=[
            OpenApiParameter("format", OpenApiTypes.STR, enum=list(EXPORT_FORMATS), required=True)
        ],
        responses={
            (200, "application/x-ndjson"): OpenApiTypes.STR,
            (200, "text/plain"): OpenApiTypes.STR,
        },
    )
    @action(detail=False, methods=["get"], url_path="export")
    def export(self, request: Request, room_pk: str) -> StreamingHttpResponse:
        """The whole filtered timeline as JSON Lines (one event per line) or plain text
        ("[time] role: text"; blocked events marked), streamed."""
        wanted = request.query_params.get("format", "")
        if wanted not in EXPORT_FORMATS:
            raise serializers.ValidationError(
                {"format": [f"Choose one of {list(EXPORT_FORMATS)}."]}
            )
        events = self.filter_queryset(self.get_queryset())
        lines = _jsonl(events) if wanted == "jsonl" else _text(events)
        content_type = "application/x-ndjson" if wanted == "jsonl" else "text/plain; charset=utf-8"
        response = StreamingHttpResponse(lines, content_type=content_type)
        name = f"{self.room.key}.{wanted}"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


def _jsonl(events: QuerySet[RoomEvent]) -> Iterator[str]:
    for event in events.iterator(chunk_size=500):
        yield json.dumps(EventSerializer(event).data, ensure_ascii=False) + "\n"


def _text(events: QuerySet[RoomEvent]) -> Iterator[str]:
    for event in events.iterator(chunk_size=500):
        who = event.role or event.kind
        mark = f" [blocked: {event.blocked_by}]" if event.status == "blocked" else ""
        yield f"[{event.occurred_at.isoformat(timespec='seconds')}] {who}: {event.text}{mark}\n"


__all__ = [
    "BindingViewSet",
    "EventViewSet",
    "RoomViewSet",
    "TokenViewSet",
]
