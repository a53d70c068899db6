"""The HTTPS webhook handler for operator-defined tools (issue 7).

:func:`call_webhook` POSTs one tool call to the operator's URL and returns the response body
as the tool's result for the model. Every failure raises :class:`WebhookError`, whose
``code`` is stable and whose message is safe to show the model (no secret, no URL path, no
library internals).

Request
-------
``POST <url>`` with ``Content-Type: application/json`` and the compact UTF-8 JSON body::

    {"tool": "<tool name>", "call_id": "<call id>", "arguments": {...}}

Signature (for receivers)
-------------------------
Two headers authenticate the request::

    X-Roomvoice-Timestamp: <unix time in whole seconds, e.g. 1767225600>
    X-Roomvoice-Signature: v1=<hex HMAC-SHA256>

where the HMAC key is the tool's secret (UTF-8) and the message is the timestamp header's
value, a dot, and the raw request body bytes exactly as received::

    hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()

A receiver must (1) recompute the HMAC over the raw body before parsing it, (2) compare in
constant time, and (3) refuse timestamps more than a few minutes from its own clock, which
bounds replays. :func:`verify` does all three (default window: 300 s either way). The header
may carry several comma-separated ``v1=`` values (e.g. while a secret is being rotated); the
request is authentic when any of them matches. The signature covers the timestamp and body,
not the method or path.

URL rules and the SSRF guard
----------------------------
- ``https`` only; plain ``http`` only when private targets are allowed (local development
  and tests). No ``user:password@`` in the URL.
- The host is resolved off the event loop (``loop.getaddrinfo`` runs in the executor) and the
  call is refused when *any* resolved address is not public unicast: private, loopback,
  link-local, multicast, reserved, unspecified, shared (100.64/10), site-local, and the IPv4
  addresses embedded in IPv4-mapped (``::ffff:a.b.c.d``), IPv4-compatible, 6to4 and NAT64
  (``64:ff9b::/96``) addresses. ``settings.ROOMVOICE_TOOL_WEBHOOK_ALLOW_PRIVATE`` or the
  ``allow_private`` argument lifts this (and the https-only rule).
- DNS rebinding: the name is resolved once, and the connection goes to an address that was
  checked. The request URL given to httpx carries the checked IP literal as its host, so
  httpx/httpcore never resolve the name again; the ``Host`` header keeps the original
  ``host[:port]``, and for https the ``sni_hostname`` request extension (httpcore) makes the
  TLS handshake send the name as SNI and verify the certificate against the name, not the
  IP. Environment proxies are ignored (``trust_env=False``): a proxy would resolve the name
  itself.
- Redirects are never followed by httpx. A redirect whose target has the same scheme, host
  and port is followed (at most :data:`MAX_REDIRECTS`), over the same checked address; any
  other target is ``bad_redirect``. 307/308 repeat the signed POST; 301/302/303 turn into a
  ``GET`` without a body, still signed (over the empty body) so the receiver can check it.

Response
--------
A 2xx status is required (``http_status`` otherwise, with the status code only). The body is
requested with ``Accept-Encoding: identity`` and read as a stream, stopping as soon as it
exceeds the limit (``ROOMVOICE_TOOL_WEBHOOK_MAX_BYTES``) or when ``Content-Length`` already
says it will (``too_large``); a compressed body is refused (``bad_response``) rather than
inflated. The whole call, DNS included, is bounded by ``timeout_s`` (``timeout``). The body
is decoded as UTF-8 with undecodable bytes replaced.

Logging: one line per call with the tool name, host, status, duration and size. The secret,
the signature, the URL path and the query are never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Final

import httpx
from django.conf import settings

from voice.kit import ToolError

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "MAX_REDIRECTS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookError",
    "call_webhook",
    "is_public_address",
    "sign",
    "verify",
]

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

TIMESTAMP_HEADER: Final = "X-Roomvoice-Timestamp"
SIGNATURE_HEADER: Final = "X-Roomvoice-Signature"
SIGNATURE_VERSION: Final = "v1"
DEFAULT_MAX_RESPONSE_BYTES: Final = 256 * 1024
MAX_REDIRECTS: Final = 3
USER_AGENT: Final = "roomvoice-webhook/1"

_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")


class WebhookError(ToolError):
    """A webhook call failed. ``code`` is stable; ``message`` is safe to show the model.

    Codes: ``misconfigured`` (no secret), ``bad_arguments`` (not JSON-serializable),
    ``refused_target`` (URL rules or SSRF guard), ``connect_failed`` (DNS, TCP or TLS),
    ``timeout``, ``http_status``, ``bad_redirect``, ``too_large``, ``bad_response``
    (compressed body, or the connection broke mid-response).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __repr__(self) -> str:
        return f"WebhookError({self.code!r}, {self.message!r})"


# --- signing ---------------------------------------------------------------------------------


def sign(secret: str, timestamp: int | str, body: bytes | str) -> str:
    """The ``X-Roomvoice-Signature`` value for ``body`` sent at ``timestamp``: ``v1=<hex>``."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    message = f"{timestamp}.".encode("ascii") + raw
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def verify(
    secret: str,
    timestamp: int | str,
    body: bytes | str,
    signature: str,
    *,
    max_age_s: float = 300,
    now: float | None = None,
) -> bool:
    """Whether ``signature`` (the header value) signs ``body`` at ``timestamp`` with ``secret``.

    False as well when the timestamp is malformed or more than ``max_age_s`` away from ``now``
    (default: the current time) in either direction, which bounds replays.
    """
    if not secret:
        return False
    stamp = str(timestamp).strip()
    if not _TIMESTAMP.fullmatch(stamp):
        return False
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > max_age_s:
        return False
    expected = sign(secret, stamp, body).encode("ascii")
    matched = False
    for candidate in signature.split(","):
        # No early exit: every candidate costs the same constant-time comparison.
        matched |= hmac.compare_digest(candidate.strip().encode("utf-8"), expected)
    return matched


# --- the SSRF guard --------------------------------------------------------------------------


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (6to4, NAT64, IPv4-compatible), if any."""
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or int(address) >> 32 == 0:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


def is_public_address(address: IPAddress) -> bool:
    """Whether a webhook may connect to ``address``: public unicast, nothing local."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public_address(address.ipv4_mapped)
        embedded = _embedded_ipv4(address)
        if embedded is not None and not is_public_address(embedded):
            return False
        if address.is_site_local:
            return False
    elif address in _SHARED_ADDRESS_SPACE:
        return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _resolve(host: str, port: int) -> list[IPAddress]:
    """The host's addresses, in resolver order; an IP literal is its own answer."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise WebhookError("connect_failed", "the webhook host could not be resolved") from None
    addresses: list[IPAddress] = []
    for family, _type, _proto, _canonname, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            address = ipaddress.ip_address(str(sockaddr[0]))
        except ValueError:
            continue
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise WebhookError("connect_failed", "the webhook host could not be resolved")
    return addresses


# --- the call --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    url: httpx.URL
    host: str  # IDNA-encoded, no brackets
    port: int
    host_header: str  # host[:port] as the URL spells it

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.url.scheme, self.host, self.port)


def _target(url: httpx.URL | str, *, allow_private: bool, error_code: str) -> _Target:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise WebhookError(error_code, "the webhook URL is not valid") from None
    scheme = parsed.scheme
    if scheme not in _DEFAULT_PORTS:
        raise WebhookError(error_code, "the webhook URL must use https")
    if scheme == "http" and not allow_private:
        raise WebhookError(error_code, "the webhook URL must use https")
    if parsed.userinfo:
        raise WebhookError(error_code, "the webhook URL must not contain credentials")
    if not parsed.raw_host:
        raise WebhookError(error_code, "the webhook URL names no host")
    return _Target(
        url=parsed.copy_with(fragment=None),
        host=parsed.raw_host.decode("ascii").lower(),
        port=parsed.port or _DEFAULT_PORTS[scheme],
        host_header=parsed.netloc.decode("ascii"),
    )


async def call_webhook(
    url: str,
    *,
    secret: str,
    name: str,
    arguments: dict[str, Any],
    call_id: str,
    timeout_s: float,
    max_response_bytes: int | None = None,
    allow_private: bool | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> str:
    """POST the tool call to ``url``; the response body (UTF-8) is the tool's result.

    ``max_response_bytes`` defaults to ``settings.ROOMVOICE_TOOL_WEBHOOK_MAX_BYTES`` and
    ``allow_private`` to ``settings.ROOMVOICE_TOOL_WEBHOOK_ALLOW_PRIVATE``. ``ssl_context``
    replaces the default trust (httpx's certifi bundle, hostname checked) for a private CA
    or a test; it cannot turn verification off unless the caller builds one that does. Raises
    :class:`WebhookError`; a cancellation from the caller propagates unchanged.
    """
    if allow_private is None:
        allow_private = bool(settings.ROOMVOICE_TOOL_WEBHOOK_ALLOW_PRIVATE)
    limit = (
        int(settings.ROOMVOICE_TOOL_WEBHOOK_MAX_BYTES)
        if max_response_bytes is None
        else max_response_bytes
    )
    if not secret:
        raise WebhookError("misconfigured", "the webhook has no signing secret")
    target = _target(url, allow_private=allow_private, error_code="refused_target")
    try:
        body = json.dumps(
            {"tool": name, "call_id": call_id, "arguments": arguments},
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        ).encode("utf-8")
    except (TypeError, ValueError):
        raise WebhookError("bad_arguments", "the tool arguments are not valid JSON") from None

    started = time.monotonic()
    try:
        try:
            async with asyncio.timeout(timeout_s):
                addresses = await _resolve(target.host, target.port)
                if not allow_private and not all(map(is_public_address, addresses)):
                    raise WebhookError(
                        "refused_target",
                        "the webhook host resolves to a private or reserved address",
                    )
                status, content = await _exchange(
                    target,
                    addresses,
                    body,
                    secret=secret,
                    limit=limit,
                    timeout_s=timeout_s,
                    ssl_context=ssl_context,
                )
        except TimeoutError:
            raise WebhookError(
                "timeout", f"the webhook did not answer within {timeout_s:g} s"
            ) from None
    except WebhookError as error:
        logger.warning(
            "webhook tool=%s host=%s failed code=%s duration_ms=%d",
            name,
            target.host,
            error.code,
            (time.monotonic() - started) * 1000,
        )
        raise
    logger.info(
        "webhook tool=%s host=%s status=%d duration_ms=%d bytes=%d",
        name,
        target.host,
        status,
        (time.monotonic() - started) * 1000,
        len(content),
    )
    return content.decode("utf-8", errors="replace")


async def _exchange(
    target: _Target,
    addresses: list[IPAddress],
    body: bytes,
    *,
    secret: str,
    limit: int,
    timeout_s: float,
    ssl_context: ssl.SSLContext | None,
) -> tuple[int, bytes]:
    """(status, body) after following same-origin redirects over the checked addresses."""
    timestamp = str(int(time.time()))
    method, content, url = "POST", body, target.url
    # trust_env=False: no proxy from the environment (it would resolve the name itself).
    async with httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(timeout_s),
        verify=True if ssl_context is None else ssl_context,
    ) as client:
        for hop in range(MAX_REDIRECTS + 1):
            headers = {
                "Host": target.host_header,
                "User-Agent": USER_AGENT,
                "Accept-Encoding": "identity",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(secret, timestamp, content),
            }
            if method == "POST":
                headers["Content-Type"] = "application/json"
            response = await _send(client, target, addresses, method, url, content, headers)
            try:
                status = response.status_code
                if status in _REDIRECT_STATUSES:
                    if hop == MAX_REDIRECTS:
                        raise WebhookError("bad_redirect", "the webhook redirected too many times")
                    url = _redirect_url(target, url, response.headers.get("location"))
                    if status == 303 or (status in (301, 302) and method == "POST"):
                        method, content = "GET", b""
                    continue
                if not 200 <= status < 300:
                    raise WebhookError("http_status", f"the webhook answered HTTP {status}")
                return status, await _read_limited(response, limit)
            finally:
                await response.aclose()
    raise AssertionError("unreachable")  # pragma: no cover


def _redirect_url(target: _Target, current: httpx.URL, location: str | None) -> httpx.URL:
    if not location:
        raise WebhookError("bad_redirect", "the webhook redirected without a location")
    try:
        joined = current.join(location)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise WebhookError("bad_redirect", "the webhook redirected to an invalid URL") from None
    # The scheme was allowed for the original URL: only the origin comparison decides here.
    following = _target(joined, allow_private=True, error_code="bad_redirect")
    if following.origin != target.origin:
        raise WebhookError("bad_redirect", "the webhook redirected to another host")
    return following.url


async def _send(
    client: httpx.AsyncClient,
    target: _Target,
    addresses: list[IPAddress],
    method: str,
    url: httpx.URL,
    content: bytes,
    headers: dict[str, str],
) -> httpx.Response:
    """Send to the first checked address that accepts the connection; URL host is the IP."""
    extensions = (
        {"sni_hostname": target.host}
        if url.scheme == "https" and not _is_ip_literal(target.host)
        else None
    )
    for address in list(addresses):
        request = client.build_request(
            method,
            url.copy_with(host=str(address)),
            content=content or None,
            headers=headers,
            extensions=extensions,
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.ConnectError:
            continue  # nothing was sent: the next checked address is safe to try
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError:
            raise WebhookError("bad_response", "the webhook connection broke") from None
        if addresses[0] != address:  # later hops (redirects) go where this one went
            addresses.remove(address)
            addresses.insert(0, address)
        return response
    raise WebhookError("connect_failed", "could not connect to the webhook host")


async def _read_limited(response: httpx.Response, limit: int) -> bytes:
    too_large = WebhookError("too_large", f"the webhook response is larger than {limit} bytes")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise WebhookError("bad_response", "the webhook answered with a compressed body")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except httpx.TimeoutException:
        raise TimeoutError from None
    except httpx.HTTPError:
        raise WebhookError("bad_response", "the webhook connection broke mid-response") from None
    return b"".join(chunks)
