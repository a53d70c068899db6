"""``manage.py createapikey --tenant SLUG --name NAME``: a tenant API key, shown once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from rooms import services as room_services
from rooms.models import ApiKeyScope, Tenant
from roomvoice.lib.commandline import EXIT_USAGE, plain, validation_text

MAX_EXPIRY_DAYS = 3650


class Command(BaseCommand):
    help = (
        "Create an API key for a tenant. The key is printed once, alone on stdout, so a "
        "script can capture it (KEY=$(manage.py createapikey ...)); the details go to stderr. "
        "Only a hash is stored: keep the key now. Exit codes: 0 created, 2 bad input."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, metavar="SLUG", help="The tenant's slug.")
        parser.add_argument(
            "--name", required=True, help="What the key is for, e.g. 'billing sync'."
        )
        parser.add_argument(
            "--scope",
            choices=ApiKeyScope.values,
            default=ApiKeyScope.READ,
            help="read (the default) or write (read and write).",
        )
        parser.add_argument(
            "--expires-in-days",
            type=int,
            metavar="D",
            help=f"Expire after D days (1-{MAX_EXPIRY_DAYS}); default: never.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"no tenant {options['tenant']!r}", returncode=EXIT_USAGE)
        days: int | None = options["expires_in_days"]
        if days is not None and not 1 <= days <= MAX_EXPIRY_DAYS:
            raise CommandError(
                f"--expires-in-days must be between 1 and {MAX_EXPIRY_DAYS}, got {days}",
                returncode=EXIT_USAGE,
            )
        name = str(options["name"]).strip()
        if not name:
            raise CommandError("--name cannot be blank", returncode=EXIT_USAGE)
        expires_at = timezone.now() + timedelta(days=days) if days is not None else None
        try:
            api_key, plaintext = room_services.api_key_create(
                tenant=tenant, name=name, scope=options["scope"], expires_at=expires_at
            )
        except ValidationError as error:
            raise CommandError(validation_text(error), returncode=EXIT_USAGE) from None
        self.stdout.write(plaintext)
        expiry = api_key.expires_at.isoformat(timespec="seconds") if api_key.expires_at else "never"
        self.stderr.write(
            f"created API key {api_key.name!r} ({api_key.masked}) for tenant {tenant.slug}: "
            f"scope {api_key.scope}, expires {expiry}",
            style_func=plain,
        )
        if not tenant.is_active:
            self.stderr.write(
                f"tenant {tenant.slug} is inactive: the key works once it is active again",
                style_func=self.style.WARNING,
            )
        self.stderr.write("The key is shown only this once: store it now.", style_func=plain)
