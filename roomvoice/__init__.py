"""roomvoice: realtime speech-to-speech AI rooms on Django."""

from roomvoice.celery import app as celery_app

__all__ = ["celery_app"]
