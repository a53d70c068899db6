"""ASGI entry point: HTTP through Django, WebSockets through Channels.

Run with ``daphne roomvoice.asgi:application`` (or ``manage.py runserver``, which is daphne's).
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "roomvoice.settings")

# Django must be set up before anything imports models (consumers, middleware).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import re_path  # noqa: E402

from roomvoice.routing import (  # noqa: E402
    unguarded_websocket_urlpatterns,
    websocket_urlpatterns,
)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(
            [
                # Twilio's media stream: no Origin, no cookie; its signed token admits it.
                *unguarded_websocket_urlpatterns,
                # Everything else: Origin checked against ALLOWED_HOSTS before any consumer
                # runs; the session user resolved from the Django session cookie.
                re_path(
                    r"",
                    AllowedHostsOriginValidator(
                        AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
                    ),
                ),
            ]
        ),
    }
)
