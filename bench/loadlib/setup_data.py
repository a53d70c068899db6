"""The data the server under test needs, made through the services, as an operator would.

Run: ``python -m loadlib.setup_data --callers N --fake-url ws://127.0.0.1:F/v1 --out PLAN.json``
with ``bench/`` and the project on the path, after ``manage.py migrate``, in the same
environment as the server (``ROOMVOICE_DATA_DIR`` pointing at the benchmark's temporary
directory: the embedded SQLite database and the secret key live there).

It makes one tenant, one OpenAI credential whose endpoint (``base_url``) is the echo fake,
and per caller slot a room with its own agent and a room token. The agent's ``model`` is
the caller's id (``bench-caller-0007``), which the provider sends in the URL it opens
(``/realtime?model=...``): that is how the fake's recordings are matched to the load
generator's. A few extra slots (``bench-warmup-0``…) serve the warm-up calls. The plan
written holds, per slot, the caller id, the room id and the token.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def caller_id(index: int) -> str:
    return f"bench-caller-{index:04d}"


WARMUP_SLOTS = 4


def warmup_id(index: int) -> str:
    return f"bench-warmup-{index}"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--callers", type=int, required=True)
    parser.add_argument("--fake-url", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "roomvoice.settings")
    import django

    django.setup()
    from django.db import transaction

    from providers.services import credential_create
    from rooms import services as room_services
    from rooms.tokens import MAX_TTL_SECONDS
    from voice import services as voice_services

    slots = [warmup_id(index) for index in range(WARMUP_SLOTS)]
    slots += [caller_id(index) for index in range(args.callers)]
    plan = []
    with transaction.atomic():
        tenant = room_services.tenant_create(slug="bench", name="Load benchmark")
        credential = credential_create(
            tenant=tenant,
            name="echo fake",
            kind="openai",
            secret="sk-bench-echo-fake",  # noqa: S106 -- the fake takes any key
            base_url=args.fake_url,
        )
        for slot in slots:
            agent = voice_services.agent_create(
                tenant=tenant,
                slug=slot,
                name=slot,
                provider_kind="openai",
                credential=credential,
                model=slot,
                system_prompt=f"Load benchmark agent for {slot}.",
            )
            room = room_services.room_create(
                tenant=tenant, key=slot, name=slot, default_agent=agent
            )
            token = room_services.room_token_create(
                tenant=tenant,
                room=room,
                participant_id=slot,
                ttl_seconds=MAX_TTL_SECONDS,
            )
            plan.append({"id": slot, "room": str(room.pk), "token": token})
    args.out.write_text(json.dumps(plan))


if __name__ == "__main__":
    main(sys.argv[1:])
