"""``manage.py seed_demo``: a demo tenant, a superuser, a room and an agent. Idempotent."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from providers.local.checks import offline_speech_missing
from providers.models import ProviderCredential
from providers.registry import PROVIDERS
from rooms import services as room_services
from rooms.models import MembershipRole, Room, Tenant, User
from roomvoice.lib.secrets import new_token
from voice import services as voice_services
from voice.models import Agent

DEMO_TENANT = "demo"
DEMO_ROOM = "room-1"
DEMO_AGENT = "assistant"
#: Kinds seed_demo chose in earlier versions: re-running it upgrades them.
SEEDED_KINDS = frozenset({"mock", "echo", "local"})
DEMO_PROMPT = (
    "You are Robin, roomvoice's demo assistant. Be friendly and brief: answer in one or two "
    "sentences, and ask a short follow-up question when it helps."
)


class Command(BaseCommand):
    help = (
        "Create the demo tenant, a superuser, room 'room-1' and a demo agent (idempotent). "
        "The superuser comes from DJANGO_SUPERUSER_USERNAME / DJANGO_SUPERUSER_PASSWORD / "
        "DJANGO_SUPERUSER_EMAIL, or is 'admin' with a generated password printed once."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            group = room_services.operator_group_sync()
            tenant = Tenant.objects.filter(slug=DEMO_TENANT).first() or room_services.tenant_create(
                slug=DEMO_TENANT, name="Demo"
            )
            user, password = self._superuser()
            room_services.membership_set(tenant=tenant, user=user, role=MembershipRole.OWNER)
            agent = Agent.objects.filter(tenant=tenant, slug=DEMO_AGENT).first()
            kind, credential, why = self._demo_provider(tenant)
            if agent is None:
                agent = voice_services.agent_create(
                    tenant=tenant,
                    slug=DEMO_AGENT,
                    name="Demo assistant",
                    provider_kind=kind,
                    credential=credential,
                    system_prompt=DEMO_PROMPT,
                )
            elif agent.provider_kind in SEEDED_KINDS and agent.provider_kind != kind:
                # Demos seeded before there was better: mock, then echo, then offline speech.
                agent = voice_services.agent_update(
                    tenant=tenant, agent=agent, provider_kind=kind, credential=credential
                )
            if agent.provider_kind != kind:
                why = "chosen by an operator: left as it is"
            room = Room.objects.filter(tenant=tenant, key=DEMO_ROOM).first()
            if room is None:
                room = room_services.room_create(
                    tenant=tenant, key=DEMO_ROOM, name="Demo room", default_agent=agent
                )
            room_services.binding_attach(tenant=tenant, room=room, channel_id="voice")
        self.stdout.write(f"tenant   {tenant.slug}")
        self.stdout.write(f"room     {room.key} (default agent: {agent.slug})")
        self.stdout.write(f"agent    {agent.slug}: {agent.get_provider_kind_display()} ({why})")
        self.stdout.write(f"voice    /rooms/{room.pk}/voice/   (log in as the superuser)")
        self.stdout.write(f"live     /rooms/{room.pk}/live/")
        self.stdout.write(f"group    {group.name} (admin permissions for tenant staff)")
        if password is None:
            self.stdout.write(
                f"superuser {user.username} (exists; `manage.py changepassword "
                f"{user.username}` to reset)"
            )
        else:
            self.stdout.write(
                self.style.WARNING(
                    f"superuser {user.username} password {password}  (shown once; keep it)"
                )
            )

    @staticmethod
    def _demo_provider(tenant: Tenant) -> tuple[str, ProviderCredential | None, str]:
        """(kind, credential, why): the tenant's first cloud credential if it has one, else
        the offline provider, else (espeak-ng or the speech model missing) the echo test."""
        credential = (
            ProviderCredential.objects.filter(tenant=tenant)
            .exclude(
                kind__in=[kind for kind, spec in PROVIDERS.items() if not spec.needs_credential]
            )
            .order_by("created_at")
            .first()
        )
        if credential is not None:
            return credential.kind, credential, f"the tenant's credential {credential.name!r}"
        missing = offline_speech_missing()
        if missing:
            return "echo", None, f"offline speech unavailable: {missing}"
        return "local", None, "no cloud credential: speech is recognised and synthesised here"

    def _superuser(self) -> tuple[User, str | None]:
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "admin").strip() or "admin"
        email = os.environ.get("DJANGO_SUPERUSER_EMAIL", "").strip()
        env_password = os.environ.get("DJANGO_SUPERUSER_PASSWORD", "")
        existing = User.objects.filter(username=username).first()
        if existing is not None:
            if not existing.is_superuser:
                raise CommandError(f"user {username!r} exists and is not a superuser")
            return existing, None
        password = env_password or new_token(12)
        user = User.objects.create_superuser(username=username, email=email, password=password)
        # An environment password is the operator's own: do not echo it.
        return user, (None if env_password else password)
