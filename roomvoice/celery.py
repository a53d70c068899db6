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
def ping(marker: str) -> str:
    """A no-op task that health checks and tests send through the broker."""
    return marker
