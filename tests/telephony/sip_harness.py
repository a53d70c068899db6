"""Shared by the SIP call tests: a phone number for tenant A's room, and the SIP server run
in the test's own event loop (``running_sip``), on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from telephony.models import PhoneNumber, SipTrunk
from telephony.services import trunk_put_password
from telephony.sip import SipServer, SipSettings
from tests.fixtures.actors import TenantWorld
from voice import services as voice_services

NUMBER = "+15550100"
CALLER = "+15550001111"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (the server listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
            try:
                other.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


def rtp_range() -> tuple[int, int]:
    """A range of 200 ports, different per worker process so parallel runs do not meet."""
    base = 30000 + (os.getpid() % 100) * 200
    return base, base + 199


def echo_number(world: TenantWorld, *, trunk: SipTrunk | None = None) -> PhoneNumber:
    """``NUMBER`` → tenant A's room-1 with the echo agent (no key, no network: it says how
    long the caller spoke and plays their words back)."""
    agent = voice_services.agent_create(
        tenant=world.tenant, slug="phone-echo", name="Phone echo", provider_kind="echo"
    )
    number = PhoneNumber(
        tenant=world.tenant, number=NUMBER, room=world.room, agent=agent, trunk=trunk
    )
    number.full_clean()
    number.save()
    return number


def auth_trunk(world: TenantWorld, *, username: str, password: str) -> SipTrunk:
    trunk = SipTrunk(tenant=world.tenant, name="carrier", username=username)
    trunk_put_password(trunk, password)
    trunk.full_clean()
    trunk.save()
    return trunk


@contextlib.asynccontextmanager
async def running_sip(**overrides: Any) -> AsyncIterator[SipServer]:
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "rtp_ports": rtp_range(),
        "rtp_timeout_s": 30.0,
        "auth_key": b"test-nonce-key",
        **overrides,
    }
    server = SipServer(SipSettings(**options), layer=get_channel_layer())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        await sync_to_async(_close_connections)()


def _close_connections() -> None:
    from django.db import connections

    connections.close_all()
