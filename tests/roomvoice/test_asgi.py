from __future__ import annotations

import pytest
from channels.testing import HttpCommunicator, WebsocketCommunicator

from roomvoice.asgi import application


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_http_goes_to_django() -> None:
    communicator = HttpCommunicator(
        application, "GET", "/healthz", headers=[(b"host", b"localhost")]
    )
    response = await communicator.get_response(timeout=10)

    assert response["status"] == 200


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)  # the auth middleware reads the session store
async def test_websocket_to_an_unknown_path_is_refused() -> None:
    communicator = WebsocketCommunicator(
        application,
        "/ws/nowhere/",
        headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")],
    )
    connected, _ = await communicator.connect(timeout=5)
    await communicator.disconnect()

    assert connected is False


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_websocket_from_a_foreign_origin_is_refused() -> None:
    communicator = WebsocketCommunicator(
        application,
        "/ws/nowhere/",
        headers=[(b"origin", b"https://evil.example"), (b"host", b"localhost")],
    )
    connected, _ = await communicator.connect(timeout=5)
    await communicator.disconnect()

    assert connected is False
