"""Pages of the voice app: /rooms/<room>/voice/ and /rooms/<room>/live/."""

from __future__ import annotations

from django.urls import path, register_converter

from voice import views
from voice.webrtc import mount_webrtc


class RoomRefConverter:
    """A room's UUID or key."""

    regex = r"[\w-]{1,64}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return str(value)


register_converter(RoomRefConverter, "room")

app_name = "voice"
urlpatterns = [
    path("<room:room>/voice/", views.voice_page, name="voice-page"),
    path("<room:room>/live/", views.live_view, name="live-view"),
    path("<room:room>/live/events/", views.live_events, name="live-events"),
    path(
        "<room:room>/live/bindings/<uuid:binding_id>/<str:action>/",
        views.binding_action,
        name="binding-action",
    ),
    path(
        "<room:room>/live/sessions/<uuid:session_id>/end/",
        views.session_end,
        name="session-end",
    ),
    # WebRTC signalling: POST <room>/webrtc/offer/, PATCH/DELETE <room>/webrtc/<peer>/.
    *mount_webrtc("<room:room>/webrtc/"),
]
