"""Typed environment variable readers that fail loudly.

Settings read every knob through these helpers so that a typo such as ``DEBUG=ture`` or
``REDIS_URL=localhost`` stops the process at start-up with a message naming the variable,
instead of silently falling back to a default. No Django imports here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = [
    "EnvError",
    "env_bool",
    "env_float",
    "env_ice_servers",
    "env_int",
    "env_list",
    "env_optional_str",
    "env_str",
    "env_url",
]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class EnvError(ValueError):
    """An environment variable holds a value its reader cannot accept."""

    def __init__(self, name: str, value: str, expected: str) -> None:
        super().__init__(f"environment variable {name}={value!r} is invalid: expected {expected}")
        self.name = name
        self.value = value


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    """The variable's value, or None when it is unset or blank."""
    value = (os.environ if environ is None else environ).get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def env_str(name: str, default: str, *, environ: Mapping[str, str] | None = None) -> str:
    value = _raw(name, environ)
    return default if value is None else value


def env_optional_str(name: str, *, environ: Mapping[str, str] | None = None) -> str | None:
    return _raw(name, environ)


def env_bool(name: str, default: bool, *, environ: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, environ)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise EnvError(name, value, "one of 1/0, true/false, yes/no, on/off")


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    value = _raw(name, environ)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise EnvError(name, value, "an integer") from None
    _check_range(name, value, number, minimum, maximum)
    return number


def env_float(
    name: str,
    default: float,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> float:
    value = _raw(name, environ)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise EnvError(name, value, "a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise EnvError(name, value, "a finite number")
    _check_range(name, value, number, minimum, maximum)
    return number


def _check_range(
    name: str,
    value: str,
    number: float,
    minimum: float | None,
    maximum: float | None,
) -> None:
    if minimum is not None and number < minimum:
        raise EnvError(name, value, f"a value >= {minimum}")
    if maximum is not None and number > maximum:
        raise EnvError(name, value, f"a value <= {maximum}")


def env_list(
    name: str,
    default: list[str],
    *,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """A comma-separated list; blank items are an error (``a,,b`` is a typo)."""
    value = _raw(name, environ)
    if value is None:
        return list(default)
    items = [item.strip() for item in value.split(",")]
    if any(not item for item in items):
        raise EnvError(name, value, "a comma-separated list without empty items")
    return items


def env_ice_servers(
    name: str, *, environ: Mapping[str, str] | None = None
) -> list[dict[str, object]]:
    """WebRTC ICE servers as JSON, in the browser's ``RTCIceServer`` shape:
    ``[{"urls": "stun:host:3478"}, {"urls": ["turn:host"], "username": "u", "credential":
    "p"}]``. Unset: none (host candidates only: fine on one network). The value is never
    echoed in an error (TURN credentials)."""
    value = _raw(name, environ)
    if value is None:
        return []
    expected = 'a JSON list of {"urls": "stun:…"|["turn:…"], "username"?, "credential"?}'
    try:
        servers = json.loads(value)
    except ValueError:
        raise EnvError(name, "<hidden>", expected) from None
    if not isinstance(servers, list):
        raise EnvError(name, "<hidden>", expected)
    for server in servers:
        if not isinstance(server, dict) or set(server) - {"urls", "username", "credential"}:
            raise EnvError(name, "<hidden>", expected)
        urls = server.get("urls")
        urls = [urls] if isinstance(urls, str) else urls
        if not isinstance(urls, list) or not urls:
            raise EnvError(name, "<hidden>", expected)
        for url in urls:
            if not isinstance(url, str) or url.split(":", 1)[0] not in _ICE_SCHEMES:
                raise EnvError(name, "<hidden>", expected)
        for key in ("username", "credential"):
            if key in server and not isinstance(server[key], str):
                raise EnvError(name, "<hidden>", expected)
    return servers


_ICE_SCHEMES = frozenset({"stun", "stuns", "turn", "turns"})


def env_url(
    name: str,
    *,
    schemes: frozenset[str],
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """An optional URL whose scheme must be one of ``schemes`` and which must name a host."""
    value = _raw(name, environ)
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError as error:
        raise EnvError(name, _mask_url(value), f"a parseable URL ({error})") from None
    allowed = ", ".join(sorted(schemes))
    if parts.scheme not in schemes:
        raise EnvError(name, _mask_url(value), f"a URL with scheme {allowed}")
    if not parts.hostname and not parts.path:
        raise EnvError(name, _mask_url(value), "a URL naming a host")
    return value


def _mask_url(url: str) -> str:
    """The URL with any password replaced, for error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        # Unparseable (e.g. a broken IPv6 host): hide everything between "//" and the last "@".
        scheme, separator, rest = url.partition("//")
        userinfo, at, host = rest.rpartition("@")
        return f"{scheme}{separator}***@{host}" if separator and at else url
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()
