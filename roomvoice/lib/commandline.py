"""Readable output and exit codes for the management commands. Framework-free.

Every command exits with one of three codes, so scripts can tell a failure from a mistake:

- ``EXIT_OK`` (0): done;
- ``EXIT_FAILED`` (1): the command ran and what it tried failed (a provider refused the
  session, a check failed);
- ``EXIT_USAGE`` (2): bad input: an unknown tenant, room or agent, a bad value, a file that
  cannot be read (argparse's own code for bad arguments).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Final

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "format_age",
    "format_clock",
    "format_table",
    "one_line",
    "plain",
    "quiet_logging",
    "validation_text",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2


@contextmanager
def quiet_logging(verbosity: int) -> Iterator[None]:
    """Log records below WARNING are dropped for the block unless ``verbosity`` (Django's
    ``-v``) is 2 or more: a command's own lines stay readable. Restored afterwards."""
    if verbosity >= 2:
        yield
        return
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.INFO))
    try:
        yield
    finally:
        logging.disable(previous)


def plain(text: str) -> str:
    """A ``style_func`` for informational lines on stderr, which Django otherwise colours as
    errors on a terminal: ``self.stderr.write(text, style_func=plain)``."""
    return text


def one_line(value: object, limit: int = 200) -> str:
    """``value`` as text on one line (whitespace runs become one space), cut to ``limit``
    characters with an ellipsis."""
    text = " ".join(str(value).split())
    if len(text) > limit:
        return text[: max(0, limit - 1)] + "…"
    return text


def validation_text(error: Exception) -> str:
    """A validation error as one line, ``field: message; other: message``. Takes Django's
    ``ValidationError`` by duck typing (``message_dict`` or ``messages``), anything else
    by its ``str``."""
    by_field = getattr(error, "message_dict", None)
    if isinstance(by_field, dict):
        return "; ".join(
            " ".join(messages) if field == "__all__" else f"{field}: {' '.join(messages)}"
            for field, messages in by_field.items()
        )
    messages = getattr(error, "messages", None)
    if isinstance(messages, list):
        return " ".join(str(message) for message in messages)
    return str(error)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """Lines of a left-aligned table, a header row first; cells are put on one line."""
    table = [[one_line(header) for header in headers]]
    table.extend([one_line(cell, limit=300) for cell in row] for row in rows)
    widths = [max(len(row[column]) for row in table) for column in range(len(headers))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]


def format_clock(seconds: float) -> str:
    """Elapsed time as ``MM:SS.ss`` (``H:MM:SS.ss`` from an hour on)."""
    seconds = max(0.0, seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 1:
        return f"{int(hours)}:{int(minutes):02d}:{secs:05.2f}"
    return f"{int(minutes):02d}:{secs:05.2f}"


def format_age(seconds: float) -> str:
    """A duration for people: ``45s``, ``12m``, ``3h 05m``, ``2d 04h``."""
    seconds = int(max(0.0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"
