"""``runsip`` registers with a carrier's registrar for trunks that name one: ``sipp`` plays
the registrar, challenges with digest, checks the credentials, and takes the un-REGISTER
when the server stops."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from telephony.models import SipTrunk
from telephony.services import trunk_put_password
from tests.fixtures import sip as tools
from tests.fixtures.actors import TenantWorld
from tests.telephony.sip_harness import free_port, running_sip

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        tools.tools_missing() is not None and not tools.in_ci(),
        reason=str(tools.tools_missing()),
    ),
]


def registering_trunk(world: TenantWorld, *, registrar: str, password: str) -> SipTrunk:
    trunk = SipTrunk(
        tenant=world.tenant,
        name="carrier",
        username="roomvoice-trunk",
        registrar=registrar,
        register_expires=120,
        allowed_sources="127.0.0.1",
    )
    trunk_put_password(trunk, password)
    trunk.full_clean()
    trunk.save()
    return trunk


async def registrar(port: int) -> tools.SippResult:
    return await tools.run_sipp(
        "registrar.xml",
        target="127.0.0.1:5060",  # unused: sipp answers where the requests come from
        number="registrar",
        media_port=tools.free_port_pair(),
        sip_port=port,
        timeout=20,
    )


async def test_a_trunk_with_a_registrar_is_registered_with_digest_and_unregistered_on_stop(
    world_a: TenantWorld,
) -> None:
    port = free_port()
    await sync_to_async(registering_trunk)(
        world_a, registrar=f"127.0.0.1:{port}", password="reg-s3cret-pass"
    )
    # Started together: a REGISTER sent before sipp listens is retransmitted (UDP timer E).
    carrier = asyncio.ensure_future(registrar(port))
    async with running_sip() as server:
        [registration] = server.registrations
        async with asyncio.timeout(10):
            await registration.registered.wait()
        assert registration.granted_expires == 60  # the registrar's grant, not our ask
    result = await asyncio.wait_for(carrier, 30)
    assert result.ok, result.report()
    registers = [text for direction, text in result.sip_messages() if text.startswith("REGISTER")]
    assert len(registers) == 3
    assert "Authorization: Digest" in registers[1] and 'username="roomvoice-trunk"' in registers[1]
    assert "Expires: 0" in registers[2] or "expires=0" in registers[2]


async def test_a_refused_registration_is_reported_not_fatal(world_a: TenantWorld) -> None:
    port = free_port()
    await sync_to_async(registering_trunk)(
        world_a, registrar=f"127.0.0.1:{port}", password="not-the-password"
    )
    # Started together: a REGISTER sent before sipp listens is retransmitted (UDP timer E).
    carrier = asyncio.ensure_future(registrar(port))
    async with running_sip() as server:
        [registration] = server.registrations
        async with asyncio.timeout(10):
            await registration.failed.wait()
        assert registration.last_failure.startswith("403")
        assert not registration.registered.is_set()
    result = await asyncio.wait_for(carrier, 30)
    assert not result.ok  # the registrar saw wrong credentials
