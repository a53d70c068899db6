"""ASGI entry point: HTTP through Django, WebSockets through Channels, and the lifespan.

Run with ``daphne roomvoice.asgi:application`` (or ``manage.py runserver``, which is daphne's),
or ``uvicorn roomvoice.asgi:application``. At uvicorn's shutdown the lifespan ends the live
WebRTC calls (daphne has no lifespan: ``voice.webrtc`` hooks its reactor instead).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

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


async def lifespan(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """The ASGI lifespan: nothing to start; at shutdown, end the live WebRTC calls (their
    peer connections' threads would keep the process alive). A process that never loaded
    the WebRTC module has none, and does not import it (nor aiortc) to find out."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if "voice.webrtc" in sys.modules:
                from voice.webrtc import close_gateways

                await close_gateways()
            await send({"type": "lifespan.shutdown.complete"})
            return


application = ProtocolTypeRouter(
    {
        "lifespan": lifespan,
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
