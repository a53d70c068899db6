"""The webhook tool handler (voice.tools.webhook) against a local HTTP(S) server.

The server runs in a thread on 127.0.0.1, verifies every request's signature with
``verify()`` and records what it saw. Name resolution is patched at ``socket.getaddrinfo``
(the boundary) for names that must look public; nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from voice.tools.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookError,
    call_webhook,
    is_public_address,
    sign,
    verify,
)

pytestmark = pytest.mark.timeout(30)

SECRET = "whsec-test-0123456789abcdef"
PUBLIC_NAME = "hooks.example.com"
BIG_CHUNK = 64 * 1024
BIG_TOTAL = 64 * 1024 * 1024


@dataclass
class Seen:
    method: str
    path: str
    host: str
    body: bytes
    timestamp: str
    signature: str
    verified: bool


@dataclass
class ServerState:
    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    server_names: list[str | None] = field(default_factory=list)
    release_slow: threading.Event = field(default_factory=threading.Event)
    big_done: threading.Event = field(default_factory=threading.Event)
    big_written: int = 0
    big_error: BaseException | None = None


class Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        state = self.server.state
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        timestamp = self.headers.get(TIMESTAMP_HEADER, "")
        signature = self.headers.get(SIGNATURE_HEADER, "")
        verified = verify(SECRET, timestamp, body, signature)
        state.requests.append(
            Seen(
                self.command, self.path, self.headers["Host"], body, timestamp, signature, verified
            )
        )
        if not verified:
            return self._answer(401, b"bad signature")
        path = self.path
        if path == "/echo":
            payload = json.loads(body)
            return self._answer(200, json.dumps({"echo": payload, "note": "ça va"}).encode())
        if path == "/result" and self.command == "GET":
            return self._answer(200, b"result after 303")
        if path == "/status-503":
            return self._answer(503, b"upstream secret stack trace")
        if path == "/redirect-relative":
            return self._redirect(307, "/echo")
        if path == "/redirect-absolute":
            return self._redirect(308, f"http://{self.headers['Host']}/echo")
        if path == "/redirect-303":
            return self._redirect(303, "/result")
        if path == "/redirect-loop":
            return self._redirect(307, "/redirect-loop")
        if path == "/redirect-other-host":
            return self._redirect(307, f"http://localhost:{state.port}/echo")
        if path == "/redirect-other-port":
            return self._redirect(307, f"http://127.0.0.1:{state.port + 1}/echo")
        if path == "/redirect-https":
            return self._redirect(307, f"https://127.0.0.1:{state.port}/echo")
        if path == "/declared-big":
            self.send_response(200)
            self.send_header("Content-Length", str(10_000_000))
            self.end_headers()
            self.wfile.write(b"x" * 10)
            return None
        if path == "/gzip":
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"\x1f\x8b\x08\x00")
            return None
        if path == "/big":
            return self._big()
        if path == "/slow":
            state.release_slow.wait(20)
            return self._answer(200, b"too late")
        return self._answer(404, b"no such route")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, status: int, location: str) -> None:
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _big(self) -> None:
        """A close-delimited body (no Content-Length) far larger than any limit."""
        state = self.server.state
        self.send_response(200)
        self.end_headers()
        chunk = b"y" * BIG_CHUNK
        try:
            while state.big_written < BIG_TOTAL:
                self.wfile.write(chunk)
                state.big_written += len(chunk)
        except OSError as error:  # the client hung up
            state.big_error = error
        finally:
            state.big_done.set()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: ServerState) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = state
        state.port = self.server_address[1]

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.state.connections += 1
        return True


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerState]]:
    running: list[tuple[_Server, threading.Thread]] = []

    def start(tls: ssl.SSLContext | None = None) -> ServerState:
        state = ServerState()
        server = _Server(state)
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: state.server_names.append(name)
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        running.append((server, thread))
        return state

    yield start
    for server, thread in running:
        server.state.release_slow.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def server(start_server: Callable[..., ServerState]) -> ServerState:
    return start_server()


@pytest.fixture
def resolve_as(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[str]]:
    """Make PUBLIC_NAME (or another name) resolve to the given addresses; returns the calls."""
    real = socket.getaddrinfo
    calls: list[str] = []
    answers: dict[str, list[str]] = {}

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            calls.append(host)
            infos = []
            for address in answers[host]:
                if ipaddress.ip_address(address).version == 6:
                    infos.append(
                        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))
                    )
                else:
                    infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
            return infos
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)

    def configure(*addresses: str, name: str = PUBLIC_NAME) -> list[str]:
        answers[name] = list(addresses)
        return calls

    return configure


async def _call(url: str, **overrides: Any) -> str:
    options: dict[str, Any] = {
        "secret": SECRET,
        "name": "lookup_order",
        "arguments": {"order": "A-17", "qty": 2},
        "call_id": "call-1",
        "timeout_s": 5.0,
        "allow_private": True,
    }
    options.update(overrides)
    return await call_webhook(url, **options)


# --- signing ---------------------------------------------------------------------------------


def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"k", b"1700000000." + b'{"a":1}', hashlib.sha256).hexdigest()
    assert sign("k", 1700000000, b'{"a":1}') == f"v1={expected}"
    assert sign("k", "1700000000", '{"a":1}') == f"v1={expected}"


def test_verify_accepts_fresh_signature_and_any_of_several() -> None:
    signature = sign(SECRET, 1000, b"body")
    assert verify(SECRET, "1000", b"body", signature, now=1000)
    assert verify(SECRET, 1000, b"body", f"v1=00ff, {signature}", now=1299)


def test_verify_rejects_replayed_or_future_timestamp() -> None:
    signature = sign(SECRET, 1000, b"body")
    assert not verify(SECRET, 1000, b"body", signature, now=1301)
    assert not verify(SECRET, 1000, b"body", signature, now=699)
    assert not verify(SECRET, 1000, b"body", signature, now=1100, max_age_s=60)


def test_verify_rejects_tampering_wrong_secret_and_malformed_input() -> None:
    signature = sign(SECRET, 1000, b"body")
    assert not verify(SECRET, 1000, b"body!", signature, now=1000)
    assert not verify("other", 1000, b"body", signature, now=1000)
    assert not verify(SECRET, 1001, b"body", signature, now=1000)
    assert not verify("", 1000, b"body", sign("", 1000, b"body"), now=1000)
    assert not verify(SECRET, "+1000", b"body", signature, now=1000)
    assert not verify(SECRET, "1e3", b"body", signature, now=1000)
    assert not verify(SECRET, 1000, b"body", signature.upper(), now=1000)
    assert not verify(SECRET, 1000, b"body", "v1=é", now=1000)
    assert not verify(SECRET, 1000, b"body", "", now=1000)


# --- the address check -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.5",
        "172.16.3.4",
        "192.168.1.1",
        "127.0.0.1",
        "127.8.9.10",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.10",
        "::",
        "::1",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "fec0::1",
        "ff02::1",
        "2001:db8::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.5",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "2002:a00:5::1",
        "2002:7f00:1::1",
        "64:ff9b::a00:5",
        "64:ff9b::7f00:1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is False


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is True


# --- calls against the local server ----------------------------------------------------------


@pytest.mark.asyncio
async def test_success_posts_signed_json_verified_by_the_server(server: ServerState) -> None:
    result = await _call(f"http://127.0.0.1:{server.port}/echo")

    assert json.loads(result) == {
        "echo": {
            "tool": "lookup_order",
            "call_id": "call-1",
            "arguments": {"order": "A-17", "qty": 2},
        },
        "note": "ça va",
    }
    [seen] = server.requests
    assert seen.method == "POST"
    assert seen.verified is True
    assert seen.host == f"127.0.0.1:{server.port}"
    assert seen.signature == sign(SECRET, seen.timestamp, seen.body)
    assert json.loads(seen.body) == {
        "tool": "lookup_order",
        "call_id": "call-1",
        "arguments": {"order": "A-17", "qty": 2},
    }


@pytest.mark.asyncio
async def test_wrong_secret_is_detected_by_the_server(server: ServerState) -> None:
    with pytest.raises(WebhookError) as caught:
        await _call(f"http://127.0.0.1:{server.port}/echo", secret="not-the-secret")

    assert caught.value.code == "http_status"
    assert str(caught.value) == "the webhook answered HTTP 401"
    [seen] = server.requests
    assert seen.verified is False


@pytest.mark.asyncio
async def test_non_2xx_reports_the_status_code_only(server: ServerState) -> None:
    with pytest.raises(WebhookError) as caught:
        await _call(f"http://127.0.0.1:{server.port}/status-503")

    assert (caught.value.code, caught.value.message) == (
        "http_status",
        "the webhook answered HTTP 503",
    )
    assert "stack trace" not in str(caught.value)


@pytest.mark.asyncio
async def test_too_large_body_stops_reading_early(server: ServerState) -> None:
    with pytest.raises(WebhookError) as caught:
        await _call(f"http://127.0.0.1:{server.port}/big", max_response_bytes=1024)

    assert (caught.value.code, caught.value.message) == (
        "too_large",
        "the webhook response is larger than 1024 bytes",
    )
    assert await asyncio.to_thread(server.big_done.wait, 20)
    assert isinstance(server.big_error, OSError)
    assert server.big_written < BIG_TOTAL


@pytest.mark.asyncio
async def test_declared_content_length_over_the_limit_is_refused_unread(
    server: ServerState,
) -> None:
    with pytest.raises(WebhookError) as caught:
        await _call(f"http://127.0.0.1:{server.port}/declared-big", max_response_bytes=1000)

    assert caught.value.code == "too_large"


@pytest.mark.asyncio
async def test_max_bytes_defaults_to_the_setting(server: ServerState, settings: Any) -> None:
    settings.ROOMVOICE_TOOL_WEBHOOK_MAX_BYTES = 10
    with pytest.raises(WebhookError) as caught:
        await _call(f"http://127.0.0.1:{server.port}/echo")

    assert caught.value.message == "the webhook response is larger than 10 bytes"


@pytest.mark.asyncio
async def test_compressed_body_is_refused(server: ServerState) -> None:
    with pytest.raises(WebhookError) as caught:
        await _call(f"http://127.0.0.1:{server.port}/gzip")

    assert caught.value.code == "bad_response"


@pytest.mark.asyncio
async def test_slow_server_times_out(server: ServerState) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(WebhookError) as caught:
        await _call(f"http://127.0.0.1:{server.port}/slow", timeout_s=0.3)

    assert (caught.value.code, caught.value.message) == (
        "timeout",
        "the webhook did not answer within 0.3 s",
    )
    assert loop.time() - started < 5
    assert [seen.path for seen in server.requests] == ["/slow"]


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/redirect-relative", "/redirect-absolute"])
async def test_same_host_redirect_is_followed_with_the_signed_post(
    server: ServerState, path: str
) -> None:
    result = await _call(f"http://127.0.0.1:{server.port}{path}")

    assert json.loads(result)["echo"]["tool"] == "lookup_order"
    assert [(seen.method, seen.path, seen.verified) for seen in server.requests] == [
        ("POST", path, True),
        ("POST", "/echo", True),
    ]
    assert server.requests[1].body == server.requests[0].body


@pytest.mark.asyncio
async def test_303_redirect_becomes_a_signed_get(server: ServerState) -> None:
    result = await _call(f"http://127.0.0.1:{server.port}/redirect-303")

    assert result == "result after 303"
    assert [(seen.method, seen.path, seen.body, seen.verified) for seen in server.requests] == [
        ("POST", "/redirect-303", server.requests[0].body, True),
        ("GET", "/result", b"", True),
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/redirect-other-host", "the webhook redirected to another host"),
        ("/redirect-other-port", "the webhook redirected to another host"),
        ("/redirect-https", "the webhook redirected to another host"),
        ("/redirect-loop", "the webhook redirected too many times"),
    ],
)
async def test_other_origin_redirects_and_loops_are_refused(
    server: ServerState, path: str, message: str
) -> None:
    with pytest.raises(WebhookError) as caught:
        await _call(f"http://127.0.0.1:{server.port}{path}")

    assert (caught.value.code, caught.value.message) == ("bad_redirect", message)
    expected = 4 if path == "/redirect-loop" else 1
    assert [seen.path for seen in server.requests] == [path] * expected


@pytest.mark.asyncio
async def test_http_is_refused_when_private_targets_are_not_allowed(server: ServerState) -> None:
    with pytest.raises(WebhookError) as caught:
        await _call(f"http://127.0.0.1:{server.port}/echo", allow_private=False)

    assert (caught.value.code, caught.value.message) == (
        "refused_target",
        "the webhook URL must use https",
    )
    assert server.connections == 0


@pytest.mark.asyncio
async def test_allow_private_defaults_to_the_setting(server: ServerState, settings: Any) -> None:
    settings.ROOMVOICE_TOOL_WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(WebhookError) as caught:
        await _call(f"http://127.0.0.1:{server.port}/echo", allow_private=None)
    assert caught.value.code == "refused_target"

    settings.ROOMVOICE_TOOL_WEBHOOK_ALLOW_PRIVATE = True
    await _call(f"http://127.0.0.1:{server.port}/echo", allow_private=None)
    assert len(server.requests) == 1


@pytest.mark.asyncio
async def test_loopback_ip_literal_is_refused_over_https(server: ServerState) -> None:
    with pytest.raises(WebhookError) as caught:
        await _call(f"https://127.0.0.1:{server.port}/echo", allow_private=False)

    assert caught.value.code == "refused_target"
    assert server.connections == 0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "addresses",
    [
        ["10.0.0.5"],
        ["169.254.169.254"],
        ["::ffff:127.0.0.1"],
        ["127.0.0.1"],
        ["93.184.216.34", "127.0.0.1"],
    ],
)
async def test_public_name_resolving_to_a_private_address_is_refused(
    server: ServerState, resolve_as: Callable[..., list[str]], addresses: list[str]
) -> None:
    calls = resolve_as(*addresses)
    with pytest.raises(WebhookError) as caught:
        await _call(f"https://{PUBLIC_NAME}:{server.port}/echo", allow_private=False)

    assert (caught.value.code, caught.value.message) == (
        "refused_target",
        "the webhook host resolves to a private or reserved address",
    )
    assert calls == [PUBLIC_NAME]
    assert server.connections == 0


@pytest.mark.asyncio
async def test_connection_goes_to_the_checked_address_with_the_name_as_host(
    server: ServerState, resolve_as: Callable[..., list[str]]
) -> None:
    calls = resolve_as("127.0.0.1")
    result = await _call(f"http://{PUBLIC_NAME}:{server.port}/redirect-absolute")

    assert json.loads(result)["echo"]["call_id"] == "call-1"
    # Resolved once: the redirect and the connection reuse the checked address.
    assert calls == [PUBLIC_NAME]
    assert [(seen.path, seen.host, seen.verified) for seen in server.requests] == [
        ("/redirect-absolute", f"{PUBLIC_NAME}:{server.port}", True),
        ("/echo", f"{PUBLIC_NAME}:{server.port}", True),
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://hooks.example.com/x", "the webhook URL must use https"),
        ("https://user:pw@hooks.example.com/x", "the webhook URL must not contain credentials"),
        ("/relative", "the webhook URL must use https"),
        ("https://[::1/x", "the webhook URL is not valid"),
    ],
)
async def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(WebhookError) as caught:
        await _call(url)

    assert (caught.value.code, caught.value.message) == ("refused_target", message)


@pytest.mark.asyncio
async def test_missing_secret_is_refused_before_any_request(server: ServerState) -> None:
    with pytest.raises(WebhookError) as caught:
        await _call(f"http://127.0.0.1:{server.port}/echo", secret="")

    assert caught.value.code == "misconfigured"
    assert server.connections == 0


@pytest.mark.asyncio
async def test_unreachable_port_is_connect_failed(server: ServerState) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(WebhookError) as caught:
        await _call(f"http://127.0.0.1:{closed_port}/echo")

    assert caught.value.code == "connect_failed"


# --- TLS: SNI and certificate checked against the name, connection to the checked IP -------


def _self_signed(tmp_path: Path, hostname: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = tmp_path / "cert.pem"
    key_file = tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    client_context = ssl.create_default_context(cafile=str(cert_file))
    return server_context, client_context


@pytest.mark.asyncio
async def test_https_sends_the_name_as_sni_and_verifies_the_certificate_for_it(
    start_server: Callable[..., ServerState],
    resolve_as: Callable[..., list[str]],
    tmp_path: Path,
) -> None:
    server_context, client_context = _self_signed(tmp_path, PUBLIC_NAME)
    server = start_server(server_context)
    calls = resolve_as("127.0.0.1")

    result = await _call(f"https://{PUBLIC_NAME}:{server.port}/echo", ssl_context=client_context)

    assert json.loads(result)["echo"]["tool"] == "lookup_order"
    assert calls == [PUBLIC_NAME]
    assert server.server_names == [PUBLIC_NAME]
    assert [(seen.host, seen.verified) for seen in server.requests] == [
        (f"{PUBLIC_NAME}:{server.port}", True)
    ]


@pytest.mark.asyncio
async def test_https_certificate_for_another_name_is_refused(
    start_server: Callable[..., ServerState],
    resolve_as: Callable[..., list[str]],
    tmp_path: Path,
) -> None:
    server_context, client_context = _self_signed(tmp_path, "other.example.com")
    server = start_server(server_context)
    resolve_as("127.0.0.1")

    with pytest.raises(WebhookError) as caught:
        await _call(f"https://{PUBLIC_NAME}:{server.port}/echo", ssl_context=client_context)

    assert caught.value.code == "connect_failed"
    assert server.requests == []


# --- logging ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_secret_and_signature_never_reach_the_logs(
    server: ServerState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await _call(f"http://127.0.0.1:{server.port}/echo")
    with pytest.raises(WebhookError):
        await _call(f"http://127.0.0.1:{server.port}/status-503")
    with pytest.raises(WebhookError):
        await _call(f"http://127.0.0.1:{server.port}/redirect-other-host")

    signatures = [seen.signature for seen in server.requests]
    assert len(signatures) == 3
    text = caplog.text
    for leaked in [SECRET, *signatures, *(s.removeprefix("v1=") for s in signatures)]:
        assert leaked not in text
    webhook_lines = [r.getMessage() for r in caplog.records if r.name == "voice.tools.webhook"]
    assert len(webhook_lines) == 3
    assert webhook_lines[0].startswith("webhook tool=lookup_order host=127.0.0.1 status=200 ")
    assert "failed code=http_status" in webhook_lines[1]
    assert "failed code=bad_redirect" in webhook_lines[2]
