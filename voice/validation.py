"""Checks on what operators type into tools (admin, API, services share them). No ORM."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from voice.models import ToolHandlerKind

_DOTTED_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def validate_tool_parameters(parameters: Any) -> None:
    """A tool's parameters must be a valid JSON Schema describing an object."""
    if not isinstance(parameters, dict):
        raise ValueError('Parameters must be a JSON Schema object, e.g. {"type": "object"}.')
    if parameters.get("type") != "object":
        raise ValueError('Parameters must describe an object: set "type": "object".')
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as error:
        location = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        raise ValueError(f"Not a valid JSON Schema at {location}: {error.message}") from None
    properties = parameters.get("properties", {})
    for name in parameters.get("required", []):
        if name not in properties:
            raise ValueError(f'"required" names {name!r}, which is not in "properties".')


def python_handler_allowed(path: str) -> bool:
    """Tenants edit their tools, so only callables the operator listed may be named: an
    entry is an exact dotted path, or a module prefix ending in '.' (``myapp.tools.``)."""
    from django.conf import settings

    for entry in settings.ROOMVOICE_TOOL_HANDLER_ALLOWLIST:
        if path == entry or (entry.endswith(".") and path.startswith(entry)):
            return True
    return False


def validate_tool_handler(kind: str, handler: str) -> None:
    handler = handler.strip()
    if kind == ToolHandlerKind.PYTHON:
        if not _DOTTED_PATH.match(handler):
            raise ValueError("A Python handler is a dotted path such as 'package.module.function'.")
        if not python_handler_allowed(handler):
            raise ValueError(
                f"{handler!r} is not an allowed tool handler: the server operator lists the "
                "importable handlers in ROOMVOICE_TOOL_HANDLER_ALLOWLIST."
            )
    elif kind == ToolHandlerKind.WEBHOOK:
        from django.conf import settings

        parts = urlsplit(handler)
        # Plain http only where private targets are allowed (local development, tests): the
        # same rule the webhook call itself applies.
        schemes = ("https", "http") if settings.ROOMVOICE_TOOL_WEBHOOK_ALLOW_PRIVATE else ("https",)
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError("A webhook handler is an https:// URL with a host.")
        if parts.username or parts.password:
            raise ValueError("Put webhook credentials in the tool's secret, not in the URL.")
    else:
        raise ValueError(f"Unknown handler kind {kind!r}.")


def tool_argument_problems(parameters: Any, arguments: Any) -> list[str]:
    """What is wrong with ``arguments`` for a tool with ``parameters`` ("path: message"
    lines; empty when they fit). The admin's and the API's "test this tool" share it."""
    if not isinstance(arguments, dict):
        return ['The arguments must be a JSON object, e.g. {"city": "x"}.']
    schema = parameters or {"type": "object", "properties": {}}
    try:
        errors = sorted(
            Draft202012Validator(schema).iter_errors(arguments),
            key=lambda error: list(map(str, error.path)),
        )
    except SchemaError:
        return ["The tool's parameters are not a valid JSON Schema: fix the tool first."]
    return [
        "/".join(str(part) for part in error.absolute_path or ["(top level)"])
        + f": {error.message}"
        for error in errors
    ]
