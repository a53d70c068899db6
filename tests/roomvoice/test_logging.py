from __future__ import annotations

import io
import json
import logging

import pytest

from roomvoice.lib.logging import (
    ContextFilter,
    JsonFormatter,
    KeyValueFormatter,
    current_log_context,
    log_context,
    redact,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key sk-proj-abcdefghijklmnop1234", "key sk-proj-[redacted]"),
        ("xai-ABCDEFGHIJKLMNOP1234 used", "xai-[redacted] used"),
        ("Authorization: Bearer abc.def.ghi-123456", "Authorization: Bearer [redacted]"),
        ("redis://:s3cretpass@cache:6379/0", "redis://:[redacted]@cache:6379/0"),
        ("postgres://app:pw-12345@db/x", "postgres://app:[redacted]@db/x"),
        ('{"api_key": "abcd1234efgh"}', '{"api_key": "[redacted]"}'),
        ("token=abcdefgh12345678", "token=[redacted]"),
        ("rv_ab12cd34_Zm9vYmFyYmF6cXV4cXV1eA", "rv_ab12cd34_[redacted]"),
        ("AIzaSyA1234567890abcdefghijk", "[redacted]"),
        ("session 4f2a ended normally", "session 4f2a ended normally"),
    ],
)
def test_redact_masks_credentials_and_leaves_ordinary_text(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_log_context_nests_and_unwinds() -> None:
    with log_context(session="s1", room="room-1"):
        with log_context(session="s2"):
            assert dict(current_log_context()) == {"session": "s2", "room": "room-1"}
        assert dict(current_log_context()) == {"session": "s1", "room": "room-1"}
    assert dict(current_log_context()) == {}


def _record(message: str) -> logging.LogRecord:
    record = logging.LogRecord("voice.session", logging.INFO, __file__, 1, message, None, None)
    ContextFilter().filter(record)
    return record


def test_key_value_lines_can_be_grepped_by_session() -> None:
    with log_context(session="4f2a", tenant="acme"):
        line = KeyValueFormatter().format(_record("provider connected"))

    assert line.endswith(" INFO voice.session provider connected session=4f2a tenant=acme")


def test_json_lines_carry_the_context_as_fields() -> None:
    with log_context(session="4f2a"):
        payload = json.loads(JsonFormatter().format(_record("provider connected")))

    assert payload["session"] == "4f2a"
    assert payload["message"] == "provider connected"
    assert payload["level"] == "INFO"


def test_configured_console_log_never_prints_a_secret() -> None:
    """Through the handler that settings.LOGGING installs (its filters and formatter)."""
    console = next(
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler.formatter, KeyValueFormatter)
    )
    assert isinstance(console, logging.StreamHandler)
    logger = logging.getLogger("providers.openai")
    secret = "sk-proj-abcdefghijklmnopqrstuvwx"
    buffer = io.StringIO()
    previous = console.setStream(buffer)
    try:
        with log_context(session="abc123"):
            logger.warning("connect failed for key %s", secret)
            try:
                raise RuntimeError(f"upstream rejected {secret}")
            except RuntimeError:
                logger.exception("provider error")
    finally:
        console.setStream(previous)
    err = buffer.getvalue()

    assert secret not in err
    assert "connect failed for key sk-proj-[redacted] session=abc123" in err
    assert "RuntimeError: upstream rejected sk-proj-[redacted]" in err
