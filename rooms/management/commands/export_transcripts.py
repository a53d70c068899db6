"""``manage.py export_transcripts --room R --format jsonl|txt``: a room's timeline, streamed."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from rooms.models import EventStatus, Room, RoomEvent, Tenant
from roomvoice.lib.commandline import EXIT_USAGE, plain

FORMATS = ("jsonl", "txt")
FIELDS = (
    "index",
    "kind",
    "role",
    "text",
    "status",
    "blocked_by",
    "session_id",
    "participant_id",
    "occurred_at",
)
CHUNK_SIZE = 1000


def find_room(room_ref: str, tenant_slug: str | None = None) -> Room:
    """The room named by ``room_ref`` (its id, or its key) for a command, within the tenant
    ``tenant_slug`` when given. A key that several tenants use needs the tenant. Raises a
    CommandError (exit code 2) naming what is wrong."""
    rooms = Room.objects.select_related("tenant")
    where = ""
    if tenant_slug is not None:
        tenant = Tenant.objects.filter(slug=tenant_slug).first()
        if tenant is None:
            raise CommandError(f"no tenant {tenant_slug!r}", returncode=EXIT_USAGE)
        rooms = rooms.filter(tenant=tenant)
        where = f" in tenant {tenant.slug}"
    ref = room_ref.strip()
    try:
        room_id: uuid.UUID | None = uuid.UUID(ref)
    except ValueError:
        room_id = None
    if room_id is not None:
        room = rooms.filter(pk=room_id).first()
        if room is None:
            raise CommandError(f"no room with id {ref}{where}", returncode=EXIT_USAGE)
        return room
    matches = list(rooms.filter(key=ref.lower()).order_by("tenant__slug")[:10])
    if not matches:
        raise CommandError(f"no room {ref!r}{where}", returncode=EXIT_USAGE)
    if len(matches) > 1:
        tenants = ", ".join(room.tenant.slug for room in matches)
        raise CommandError(
            f"room key {ref!r} is used by several tenants ({tenants}): add --tenant SLUG "
            "or give the room's id",
            returncode=EXIT_USAGE,
        )
    return matches[0]


class Command(BaseCommand):
    help = (
        "Export a room's timeline (transcripts, typed messages, tool calls and system events, "
        "in index order), streamed from the database. jsonl: one JSON object per event "
        f"({', '.join(FIELDS)}; times in ISO 8601). txt: '[HH:MM:SS] role: text' lines in "
        "the server's time zone, a '--- date ---' line where the day changes; blocked events "
        "are marked, their text left out. --room takes the room's key or id (--tenant when "
        "several tenants use the key). Writes stdout unless --output. Exit codes: 0 exported, "
        "2 bad input (unknown tenant or room, unwritable file)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--room", required=True, metavar="R", help="The room's key or id.")
        parser.add_argument("--tenant", metavar="SLUG", help="The room's tenant.")
        parser.add_argument("--format", required=True, choices=FORMATS, dest="export_format")
        parser.add_argument(
            "--output",
            metavar="FILE",
            help="Write FILE (replaced whole, only once the export is complete).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        room = find_room(options["room"], options["tenant"])
        lines = _lines(room, options["export_format"])
        output: str | None = options["output"]
        if output is None:
            count = 0
            for line in lines:
                self.stdout.write(line)
                count += 1
            target = "stdout"
        else:
            count = _write_file(Path(output), lines)
            target = output
        self.stderr.write(
            f"exported {count} event(s) of room {room.key} (tenant {room.tenant.slug}) to {target}",
            style_func=plain,
        )


def _lines(room: Room, export_format: str) -> Iterator[str]:
    rows = (
        RoomEvent.objects.filter(room=room, tenant_id=room.tenant_id)
        .order_by("index")
        .values(*FIELDS)
        .iterator(chunk_size=CHUNK_SIZE)
    )
    render: Callable[[dict[str, Any]], str] = _jsonl if export_format == "jsonl" else _Text()
    for row in rows:
        yield render(row)


def _jsonl(row: dict[str, Any]) -> str:
    record = dict(row)
    record["session_id"] = str(row["session_id"]) if row["session_id"] else None
    record["occurred_at"] = row["occurred_at"].isoformat()
    return json.dumps(record, ensure_ascii=False)


class _Text:
    """Renders events as transcript lines; a line of its own where the date changes."""

    def __init__(self) -> None:
        self.day: date | None = None

    def __call__(self, row: dict[str, Any]) -> str:
        when = timezone.localtime(row["occurred_at"])
        who = row["role"] or row["kind"]
        if row["status"] == EventStatus.BLOCKED:
            text = f"[blocked by {row['blocked_by'] or 'a hook'}; text withheld]"
        else:
            text = "\n    ".join(str(row["text"]).splitlines()) or ""
        line = f"[{when:%H:%M:%S}] {who}: {text}"
        if when.date() != self.day:
            self.day = when.date()
            return f"--- {self.day.isoformat()} ---\n{line}"
        return line


def _write_file(path: Path, lines: Iterator[str]) -> int:
    """Writes the lines to a temporary file beside ``path``, then moves it into place: an
    export that fails half-way leaves no half file."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        handle: IO[str] = tempfile.NamedTemporaryFile(
            "w",
            encoding="utf-8",
            newline="\n",
            dir=directory,
            prefix=f".{path.name}.",
            suffix=".partial",
            delete=False,
        )
    except OSError as error:
        raise CommandError(
            f"cannot write {path}: {error.strerror or error}", returncode=EXIT_USAGE
        ) from None
    count = 0
    try:
        with handle:
            for line in lines:
                handle.write(line + "\n")
                count += 1
        os.replace(handle.name, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        if isinstance(error, OSError):
            raise CommandError(
                f"cannot write {path}: {error.strerror or error}", returncode=EXIT_USAGE
            ) from None
        raise
    return count
