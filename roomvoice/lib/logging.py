"""Logging that can be grepped by session id and never carries a secret. No Django imports.

- :func:`log_context` binds ``session``, ``room``, ``tenant`` … to the current task or thread
  (a contextvar), and :class:`ContextFilter` copies them onto every record, so a line logged
  anywhere below a voice session reads ``… session=4f2a… room=room-1 …``.
- :class:`KeyValueFormatter` writes one line per record: time, level, logger, message, then
  the context as ``key=value`` pairs. :class:`JsonFormatter` writes one JSON object per line.
- :class:`RedactingFilter` masks anything that looks like a credential (provider keys, our
  API keys, bearer tokens, passwords in URLs) in the message and the arguments.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

__all__ = [
    "ContextFilter",
    "JsonFormatter",
    "KeyValueFormatter",
    "RedactingFilter",
    "current_log_context",
    "log_context",
    "redact",
]

_EMPTY: Mapping[str, str] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "roomvoice_log_context", default=_EMPTY
)

# Order matters: the more specific patterns run first.
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization headers and bearer tokens.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [redacted]"),
    # Passwords inside URLs: scheme://user:password@host
    (re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@"), r"\g<scheme>[redacted]@"),
    # Vendor and our own key shapes: sk-…, sk-proj-…, xai-…, xi-…, rv_…, AIza…
    (
        re.compile(r"\b(sk-(?:proj-)?|xai-|xi-|rv_[a-z0-9]{0,12}_?)[A-Za-z0-9_-]{12,}"),
        r"\1[redacted]",
    ),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{20,}"), "[redacted]"),
    # key=value / "key": "value" pairs whose key names a secret.
    (
        re.compile(
            r"(?i)(\"?\b(?:api[_-]?key|secret|password|token|authorization|xi-api-key)\"?"
            r"\s*[:=]\s*\"?)(?!(?:bearer|basic)\s|\[redacted\])([^\s\",}]{4,})"
        ),
        r"\1[redacted]",
    ),
)


def redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@contextmanager
def log_context(**values: object) -> Iterator[None]:
    """Bind key/value pairs to every log record emitted inside the block."""
    merged = {**_context.get(), **{key: str(value) for key, value in values.items()}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def current_log_context() -> Mapping[str, str]:
    return _context.get()


class ContextFilter(logging.Filter):
    """Copies the current log context onto the record as ``record.context``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.context = dict(_context.get())
        return True


class RedactingFilter(logging.Filter):
    """Masks secrets in the message, its arguments and any exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Format once here so the traceback text is redacted too.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def _context_of(record: logging.LogRecord) -> Mapping[str, str]:
    context = getattr(record, "context", None)
    return context if isinstance(context, Mapping) else {}


class KeyValueFormatter(logging.Formatter):
    """``2026-11-24T10:00:00.123Z INFO voice.session message session=… room=…``"""

    def format(self, record: logging.LogRecord) -> str:
        timestamp = datetime.fromtimestamp(record.created, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[
            :-3
        ]
        pairs = " ".join(f"{key}={value}" for key, value in _context_of(record).items())
        line = f"{timestamp}Z {record.levelname} {record.name} {record.getMessage()}"
        if pairs:
            line = f"{line} {pairs}"
        exception = record.exc_text or (
            self.formatException(record.exc_info) if record.exc_info else ""
        )
        return f"{line}\n{exception}" if exception else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_context_of(record),
        }
        exception = record.exc_text or (
            self.formatException(record.exc_info) if record.exc_info else ""
        )
        if exception:
            payload["exception"] = exception
        return json.dumps(payload, default=str)
