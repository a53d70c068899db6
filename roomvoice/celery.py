"""The Celery application. Configuration comes from Django settings (``CELERY_*``).

Start a worker for tool calls with ``celery -A roomvoice worker -Q tools``. In the embedded
default (no ``REDIS_URL``) tasks run eagerly in the calling process.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "roomvoice.settings")

app = Celery("roomvoice")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="roomvoice.ping", ignore_result=True)
def ping(reply_channel: str, marker: str) -> None:
    """Answers on a channel-layer channel: proves broker → worker → channel layer works,
    the same route a tool result takes back to the live session."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    async_to_sync(layer.send)(reply_channel, {"type": "ping.reply", "marker": marker})
