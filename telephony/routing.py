"""WebSocket routes of the telephony app.

Twilio's media stream connects without an ``Origin`` header or a session cookie: these
routes are served *outside* the origin check and the session middleware (roomvoice/asgi.py);
the stream authenticates itself with the signed token of the TwiML that started it.
"""

from __future__ import annotations

from django.urls import URLPattern, re_path

from telephony.consumers import TwilioStreamConsumer

websocket_urlpatterns: list[URLPattern] = [
    re_path(r"^ws/twilio/stream/$", TwilioStreamConsumer.as_asgi()),
]
