"""Stopping the server while WebRTC calls are live: every call's session ends as
``server_shutdown`` (recorded, and told to the caller), its peer connection closes, and the
process exits (aiortc's decoder threads are not daemons: one peer left open keeps the
interpreter alive after SIGTERM).

Under daphne (no ASGI lifespan) a Twisted "before shutdown" trigger closes the gateways;
under uvicorn the ASGI lifespan's shutdown does."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCSessionDescription
from channels.db import database_sync_to_async
from django.test import AsyncClient

from rooms import services as room_services
from rooms.models import Room, Tenant, User
from roomvoice.asgi import application
from tests.fixtures.actors import TenantWorld
from tests.fixtures.browser import DaphneServer
from tests.fixtures.voice_ws import mock_agent_for
from tests.fixtures.webrtc import WebRTCCaller
from voice.mock import MockRealtimeProvider
from voice.models import EndReason, SessionState, VoiceSession
from voice.webrtc import gateway

ROOT = Path(__file__).resolve().parents[2]
EXIT_WITHIN_S = 10.0


async def _row(session_id: str) -> VoiceSession:
    row: VoiceSession = await database_sync_to_async(VoiceSession.objects.get)(pk=session_id)
    return row


def _post_json(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=15) as response:
        payload: dict[str, Any] = json.loads(response.read())
        return response.status, payload


async def _live_call(url: str, room: Room, token: str) -> tuple[WebRTCCaller, str]:
    """A caller of the server process, signalling over HTTP, once its session is live and
    the server's audio reaches it. Returns the caller and the session's id."""
    caller = WebRTCCaller()
    body = {**(await caller.offer_body()), "token": token}
    status, answer = await asyncio.to_thread(
        _post_json, f"{url}/rooms/{room.pk}/webrtc/offer/", body
    )
    assert status == 201, answer
    await caller.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    started = await caller.until(
        lambda: caller.message("session_started"), within=30, what="session_started"
    )
    await caller.until(lambda: len(caller.heard) >= 10, what="the server's audio track")
    return caller, str(started["session_id"])


def _terminate(process: subprocess.Popen[bytes]) -> tuple[int | None, float]:
    """SIGTERM; the exit code (None: still running after ``EXIT_WITHIN_S``) and how long
    the process took to exit."""
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=EXIT_WITHIN_S)
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - sent
    return code, time.monotonic() - sent


def _serve_with_uvicorn(server: DaphneServer) -> None:
    """The same application, settings and port under uvicorn (``--lifespan on``: startup
    fails if the application does not speak the lifespan protocol)."""
    port = server.url.rsplit(":", 1)[1]
    server.command = [
        sys.executable,
        "-m",
        "uvicorn",
        "roomvoice.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        port,
        "--lifespan",
        "on",
    ]
    server.crash_and_restart()  # no call was made on daphne


@pytest.mark.integration
@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("server_kind", ["daphne", "uvicorn"])
async def test_sigterm_ends_the_live_webrtc_calls_and_the_server_exits(
    server_kind: str, daphne_server: DaphneServer, echo_room: Room, tenant_a: Tenant
) -> None:
    if server_kind == "uvicorn":
        await asyncio.to_thread(_serve_with_uvicorn, daphne_server)
    token = await database_sync_to_async(room_services.room_token_create)(
        tenant=tenant_a, room=echo_room, participant_id="caller"
    )
    caller, session_id = await _live_call(daphne_server.url, echo_room, token)
    try:
        code, took = await asyncio.to_thread(_terminate, daphne_server.process)

        assert code is not None, (
            f"{server_kind} still running {took:.1f} s after SIGTERM:\n{daphne_server.log_tail()}"
        )
        # uvicorn re-raises the signal once it has shut down: it exits "by" SIGTERM.
        assert code == {"daphne": 0, "uvicorn": -signal.SIGTERM}[server_kind], (
            daphne_server.log_tail()
        )
        row = await _row(session_id)
        assert (row.state, row.end_reason) == (SessionState.ENDED, EndReason.SERVER_SHUTDOWN)
        assert row.ended_at is not None
        await caller.until(
            lambda: caller.message("session_ended", reason="server_shutdown"),
            what="session_ended",
        )
    finally:
        await caller.close()


# --- the lifespan, in this process -----------------------------------------------------------


class Lifespan:
    """Drives ``roomvoice.asgi.application``'s lifespan scope as an ASGI server does."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self._sent = asyncio.Event()
        self.task = asyncio.ensure_future(
            application({"type": "lifespan", "asgi": {"version": "3.0"}}, self.inbox.get, self.send)
        )

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        self._sent.set()

    async def request(self, kind: str, *, within: float = 10.0) -> dict[str, Any]:
        count = len(self.sent)
        self.inbox.put_nowait({"type": kind})
        async with asyncio.timeout(within):
            while len(self.sent) == count:
                self._sent.clear()
                await self._sent.wait()
        return self.sent[-1]


@pytest.fixture
def offer_path(world_a: TenantWorld) -> str:
    mock_agent_for(world_a.tenant, world_a.room)
    return f"/rooms/{world_a.room.pk}/webrtc/offer/"


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_lifespan_shutdown_ends_the_live_webrtc_calls(
    offer_path: str, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    lifespan = Lifespan()
    assert await lifespan.request("lifespan.startup") == {"type": "lifespan.startup.complete"}
    client = AsyncClient()
    await client.aforce_login(member_a)
    caller = WebRTCCaller()
    status, answer = await caller.connect(client, offer_path)
    assert status == 201, answer
    started = await caller.until(lambda: caller.message("session_started"), what="started")

    done = await lifespan.request("lifespan.shutdown")

    # Complete only once the end is recorded and the peer connection closed.
    assert done == {"type": "lifespan.shutdown.complete"}
    await asyncio.wait_for(lifespan.task, 1)
    row = await _row(started["session_id"])
    assert (row.state, row.end_reason) == (SessionState.ENDED, EndReason.SERVER_SHUTDOWN)
    assert gateway().peers == []
    assert built_providers[0].connected == set()  # the provider disconnected
    await caller.until(lambda: caller.message("session_ended", reason="server_shutdown"))
    await caller.until(lambda: caller.pc.connectionState == "closed", what="peer closed")
    await caller.close()


def test_a_server_that_never_served_webrtc_does_not_load_it_to_shut_down() -> None:
    script = (
        "import asyncio, sys\n"
        "from roomvoice.asgi import application\n"
        "async def main():\n"
        "    inbox = asyncio.Queue()\n"
        "    for kind in ('lifespan.startup', 'lifespan.shutdown'):\n"
        "        inbox.put_nowait({'type': kind})\n"
        "    sent = []\n"
        "    async def send(message):\n"
        "        sent.append(message['type'])\n"
        "    await application({'type': 'lifespan'}, inbox.get, send)\n"
        "    print(sent, 'aiortc' in sys.modules, 'voice.webrtc' in sys.modules)\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "roomvoice.settings_test"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.splitlines()[-1] == (
        "['lifespan.startup.complete', 'lifespan.shutdown.complete'] False False"
    )
