"""providers/wire.py: the shared socket opener and the gap-audio buffer."""

from __future__ import annotations

import socket
from http import HTTPStatus

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from providers.base import ProviderError
from providers.wire import GapAudio, open_socket


def test_gap_audio_keeps_the_newest_audio_within_its_bound_and_counts_the_rest() -> None:
    gap = GapAudio(max_bytes=10)
    for chunk in (b"aaaa", b"bbbb", b"cccc", b"dd"):
        gap.push(chunk)

    assert gap.size == 10
    assert gap.take_dropped() == 4  # "aaaa" went first
    assert gap.take_dropped() == 0
    assert list(gap.drain()) == [b"bbbb", b"cccc", b"dd"]
    assert not gap and gap.size == 0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (HTTPStatus.UNAUTHORIZED, b"", "invalid_api_key"),
        (HTTPStatus.FORBIDDEN, b"", "invalid_api_key"),
        (
            HTTPStatus.BAD_REQUEST,
            b'{"error": "Incorrect API key provided: xa***ey."}',
            "invalid_api_key",
        ),
        (HTTPStatus.BAD_REQUEST, b'{"error": "bad model"}', "http_400"),
        (HTTPStatus.SERVICE_UNAVAILABLE, b"", "http_503"),
    ],
)
async def test_a_refused_handshake_is_a_fatal_error_with_a_clear_code(
    status: HTTPStatus, body: bytes, code: str
) -> None:
    def refuse(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(status, body.decode())

    async with serve(lambda ws: None, "127.0.0.1", 0, process_request=refuse) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        with pytest.raises(ProviderError) as raised:
            await open_socket(
                f"ws://127.0.0.1:{port}/v1?key=secret", headers={"x-key": "secret"}, vendor="V"
            )

    assert raised.value.code == code
    assert raised.value.fatal is True
    assert raised.value.message.startswith("V refused the connection")
    assert "secret" not in str(raised.value)


@pytest.mark.asyncio
async def test_an_unreachable_vendor_is_a_fatal_connect_failed() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ProviderError) as raised:
        await open_socket(f"ws://127.0.0.1:{port}/v1", headers={}, vendor="V")

    assert raised.value.code == "connect_failed"
    assert raised.value.message == "cannot reach V: ConnectionRefusedError"
