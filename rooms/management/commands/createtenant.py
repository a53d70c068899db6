"""``manage.py createtenant <slug> <name> [--owner USERNAME]``: a new tenant."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from rooms import services as room_services
from rooms.models import MembershipRole, Tenant, User
from roomvoice.lib.commandline import EXIT_USAGE, validation_text


class Command(BaseCommand):
    help = (
        "Create a tenant with SLUG (1-64 lowercase letters, digits, '-' or '_') and NAME. "
        "--owner makes an existing user its owner. Exit codes: 0 created, 2 bad input "
        "(invalid or taken slug, unknown user)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="The tenant's slug, e.g. acme (unique).")
        parser.add_argument("name", help='The tenant\'s display name, e.g. "Acme Inc."')
        parser.add_argument(
            "--owner", metavar="USERNAME", help="An existing user to make the tenant's owner."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        slug = str(options["slug"]).strip().lower()
        name = str(options["name"]).strip()
        owner_name: str | None = options["owner"]
        owner = None
        if owner_name is not None:
            owner = User.objects.filter(username=owner_name).first()
            if owner is None:
                raise CommandError(f"no user {owner_name!r}", returncode=EXIT_USAGE)
        if Tenant.objects.filter(slug=slug).exists():
            raise CommandError(f"a tenant {slug!r} already exists", returncode=EXIT_USAGE)
        try:
            with transaction.atomic():
                tenant = room_services.tenant_create(slug=slug, name=name)
                if owner is not None:
                    room_services.membership_set(
                        tenant=tenant, user=owner, role=MembershipRole.OWNER
                    )
        except ValidationError as error:
            raise CommandError(validation_text(error), returncode=EXIT_USAGE) from None
        self.stdout.write(f"created tenant {tenant.slug} ({tenant.name})  id {tenant.pk}")
        if owner is not None:
            self.stdout.write(f"owner    {owner.get_username()}")
