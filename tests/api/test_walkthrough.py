"""The README's curl walk-through, step by step (the commands, then the API as a
customer's backend calls it, then the voice page the end user opens)."""

from __future__ import annotations

import io
from urllib.parse import urlencode

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from rooms.models import RoomEvent

pytestmark = [pytest.mark.django_db]


def test_the_readme_walk_through(db: None) -> None:
    call_command("createtenant", "acme", "Acme Corp", stdout=io.StringIO(), stderr=io.StringIO())
    out = io.StringIO()
    call_command(
        "createapikey",
        "--tenant",
        "acme",
        "--name",
        "backend",
        "--scope",
        "write",
        stdout=out,
        stderr=io.StringIO(),
    )
    key = out.getvalue().strip()
    assert key.startswith("rv_") and "\n" not in key  # stdout is the key alone
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    agent = api.post(
        "/api/v1/agents/",
        {
            "slug": "robin",
            "name": "Robin",
            "provider_kind": "local",
            "system_prompt": "You are Robin.",
        },
        format="json",
    )
    room = api.post(
        "/api/v1/rooms/",
        {"key": "support-1", "name": "Support", "default_agent": "robin"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="room-support-1",
    )
    assert agent.status_code == 201, agent.json()
    assert room.status_code == 201, room.json()
    room_id = room.json()["id"]
    token = api.post(
        f"/api/v1/rooms/{room_id}/tokens/",
        {"participant_id": "customer-42", "permissions": ["speak", "listen"], "ttl_seconds": 3600},
        format="json",
    )
    assert token.status_code == 201, token.json()

    page = Client().get(token.json()["voice_url"].split("testserver", 1)[1])
    assert page.status_code == 200
    # The page is admitted by the token (a refusal would not name the agent) and its
    # WebSocket path carries it.
    assert b'data-agent-name="Robin"' in page.content
    assert urlencode({"token": token.json()["token"]}).encode() in page.content
    assert page["Referrer-Policy"] == "no-referrer"

    export = api.get(f"/api/v1/rooms/{room_id}/events/export/", {"format": "txt"})
    assert export.status_code == 200
    assert (
        b"".join(export.streaming_content).decode().count("\n")
        == RoomEvent.objects.filter(room_id=room_id).count()
    )
