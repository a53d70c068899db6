"""``/api/v1/`` and the schema: ``/api/schema/`` (OpenAPI 3) and ``/api/docs/`` (Swagger UI)."""

from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter, SimpleRouter

from api.views import config, rooms, sessions

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("rooms", rooms.RoomViewSet, basename="room")
router.register("sessions", sessions.SessionViewSet, basename="session")
config.register(router)  # agents, tools, credentials, tool-calls

room_router = SimpleRouter(trailing_slash=True)
room_router.register("bindings", rooms.BindingViewSet, basename="room-binding")
room_router.register("events", rooms.EventViewSet, basename="room-event")
room_router.register("tokens", rooms.TokenViewSet, basename="room-token")

app_name = "api"

urlpatterns = [
    path("v1/", include(router.urls)),
    path("v1/rooms/<uuid:room_pk>/", include(room_router.urls)),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]
