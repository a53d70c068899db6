"""A URLconf for tests/voice/test_webrtc_seed.py: the seed's FastRTC example, the Django way
(``mount_webrtc`` with a transport of one's own and an ``on_client_connected`` callback)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from voice.channels import RealtimeVoiceChannel
from voice.mock import MockRealtimeProvider
from voice.transports import WebRTCRealtimeTransport
from voice.webrtc import mount_webrtc

provider = MockRealtimeProvider()
transport = WebRTCRealtimeTransport()
channel = RealtimeVoiceChannel("voice", provider=provider, transport=transport)
transport.on_client_connected = lambda peer_id: channel.start_session(
    room_id="room-1", participant_id="caller", connection=peer_id
)


async def auth(request: HttpRequest) -> dict[str, Any] | None:
    if request.headers.get("Authorization") != "Bearer let-me-in":
        return None
    return {"caller": "tester"}


urlpatterns = mount_webrtc("rtc/", transport=transport, auth=auth)
