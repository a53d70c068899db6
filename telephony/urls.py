"""HTTP endpoints of the telephony app: Twilio's Voice webhook (``/telephony/twilio/voice/``)."""

from __future__ import annotations

from django.urls import path

from telephony.twilio import twilio_voice

app_name = "telephony"
urlpatterns = [
    path("twilio/voice/", twilio_voice, name="twilio-voice"),
]
