"""Whether a SIP call is answered (``telephony.admission.admit_sip_call``), rule by rule in
the order an INVITE meets them: the number (404), the source address (403), the trunk's
digest authentication (401 challenge, 403 when wrong) and the voice rules every entry point
shares (403 closed room or revoked caller, 404 no agent, 503 provider unavailable).

Callers answer challenges with aiosipua's digest client (not the server's code)."""

from __future__ import annotations

from typing import Any

import pytest
from aiosipua import parse_auth, stringify_auth
from aiosipua.auth import SipDigestAuth, build_credentials

from rooms import services as room_services
from rooms.models import Access, RoomStatus, Tenant
from telephony.admission import CallRefusal, PhoneAdmission, admit_sip_call, plan_for_number
from telephony.digest import NONCE_TTL_S, DigestAuthority
from telephony.models import PhoneNumber, SipTrunk
from telephony.services import trunk_put_password
from tests.fixtures.actors import TenantWorld
from voice import services as voice_services
from voice.admission import VOICE_CHANNEL_ID
from voice.models import Agent

pytestmark = pytest.mark.django_db

NUMBER_A = "+15550100001"
NUMBER_B = "+15550200002"
CALLER = "+15550109999"
REQUEST_URI = f"sip:{NUMBER_A}@127.0.0.1:5060"
AUTHORITY = DigestAuthority(realm="roomvoice-test", key=b"nonce-key-for-tests")
DEFAULT_SOURCES = ["127.0.0.0/8", "::1"]
CARRIER_NETWORK = "203.0.113.0/24"
CARRIER_IP = "203.0.113.10"
USERNAME = "carrier-a"
PASSWORD = "trunk-pass-a-0123456789"


def make_trunk(
    world: TenantWorld,
    *,
    sources: str = "",
    username: str = "",
    password: str = "",
    enabled: bool = True,
) -> SipTrunk:
    trunk = SipTrunk(
        tenant=world.tenant,
        name="carrier",
        allowed_sources=sources,
        username=username,
        enabled=enabled,
    )
    trunk_put_password(trunk, password)
    trunk.full_clean()
    trunk.save()
    return trunk


def make_number(
    world: TenantWorld,
    number: str,
    *,
    trunk: SipTrunk | None = None,
    agent: Agent | None = None,
    enabled: bool = True,
) -> PhoneNumber:
    row = PhoneNumber(
        tenant=world.tenant,
        number=number,
        room=world.room,
        agent=agent,
        trunk=trunk,
        enabled=enabled,
    )
    row.full_clean()
    row.save()
    return row


def admit(**overrides: Any) -> PhoneAdmission:
    arguments: dict[str, Any] = {
        "dialled": NUMBER_A,
        "caller": CALLER,
        "source_ip": "127.0.0.1",
        "authorization": None,
        "authority": AUTHORITY,
        "default_sources": DEFAULT_SOURCES,
        "metadata": {"call_id": "call-1@client"},
    } | overrides
    return admit_sip_call(**arguments)


def refused(**overrides: Any) -> CallRefusal:
    with pytest.raises(CallRefusal) as caught:
        admit(**overrides)
    return caught.value


def status(refusal: CallRefusal) -> tuple[int, str, dict[str, str]]:
    return refusal.status, refusal.reason, refusal.headers


def answer(challenge: str, *, username: str = USERNAME, password: str = PASSWORD) -> str:
    """What a SIP phone sends back to a ``WWW-Authenticate`` challenge."""
    credentials = build_credentials(
        SipDigestAuth(username, password), parse_auth(challenge), "INVITE", REQUEST_URI
    )
    assert credentials is not None
    return stringify_auth(credentials)


def challenge_of(refusal: CallRefusal) -> str:
    assert (refusal.status, refusal.reason) == (401, "Unauthorized")
    assert set(refusal.headers) == {"WWW-Authenticate"}
    return refusal.headers["WWW-Authenticate"]


@pytest.fixture
def number_a(world_a: TenantWorld) -> PhoneNumber:
    """Tenant A's number without a trunk, to room-1 and its default agent."""
    return make_number(world_a, NUMBER_A)


@pytest.fixture
def auth_number_a(world_a: TenantWorld) -> PhoneNumber:
    """Tenant A's number behind a trunk that wants digest credentials (from any address)."""
    trunk = make_trunk(world_a, username=USERNAME, password=PASSWORD)
    return make_number(world_a, NUMBER_A, trunk=trunk)


# --- Admitted -------------------------------------------------------------------------------


def test_admitted_call_goes_to_the_numbers_room_and_default_agent_as_the_caller(
    world_a: TenantWorld, number_a: PhoneNumber
) -> None:
    admitted = admit()
    plan = admitted.plan
    assert admitted.number == number_a
    assert (plan.admission.tenant, plan.admission.room) == (world_a.tenant, world_a.room)
    assert (plan.admission.participant_id, plan.admission.via) == (CALLER, "sip")
    assert plan.admission.permissions is None
    assert plan.admission.metadata == {"number": NUMBER_A, "call_id": "call-1@client"}
    assert plan.agent == world_a.agent
    assert plan.config.agent_id == world_a.agent.pk


def test_the_numbers_own_agent_answers_instead_of_the_rooms_default(world_a: TenantWorld) -> None:
    agent = voice_services.agent_create(
        tenant=world_a.tenant, slug="phone", name="Phone", provider_kind="mock"
    )
    make_number(world_a, NUMBER_A, agent=agent)
    assert admit().plan.agent == agent


@pytest.mark.parametrize("dialled", [NUMBER_A[1:], f"sip:{NUMBER_A}@carrier.example.com"])
def test_a_number_is_found_however_the_carrier_writes_it(
    number_a: PhoneNumber, dialled: str
) -> None:
    assert admit(dialled=dialled).number == number_a


def test_a_very_long_caller_is_cut_to_the_longest_participant_id(number_a: PhoneNumber) -> None:
    caller = "x" * 300
    assert admit(caller=caller).plan.admission.participant_id == "x" * 128


def test_each_tenants_number_reaches_only_its_own_room(
    world_a: TenantWorld, world_b: TenantWorld, number_a: PhoneNumber
) -> None:
    number_b = make_number(world_b, NUMBER_B)
    to_b = admit(dialled=NUMBER_B)
    assert to_b.number == number_b
    assert (to_b.plan.admission.tenant, to_b.plan.admission.room) == (world_b.tenant, world_b.room)
    assert to_b.plan.agent == world_b.agent
    assert admit().plan.admission.room == world_a.room


def test_plan_for_number_is_the_same_plan_for_twilio_calls(
    world_a: TenantWorld, number_a: PhoneNumber
) -> None:
    plan = plan_for_number(
        number_a, participant_id=CALLER, via="twilio", metadata={"call_sid": "CA1"}
    )
    assert (plan.admission.room, plan.admission.participant_id) == (world_a.room, CALLER)
    assert plan.admission.via == "twilio"
    assert plan.admission.metadata == {"number": NUMBER_A, "call_sid": "CA1"}
    assert plan.agent == world_a.agent


# --- 1. The number: 404 ---------------------------------------------------------------------


def test_unknown_number_is_404(number_a: PhoneNumber) -> None:
    assert status(refused(dialled="+15550100002")) == (404, "Not Found", {})


def test_disabled_number_is_404(world_a: TenantWorld) -> None:
    make_number(world_a, NUMBER_A, enabled=False)
    assert status(refused()) == (404, "Not Found", {})


def test_number_of_an_inactive_tenant_is_404(world_a: TenantWorld, number_a: PhoneNumber) -> None:
    Tenant.objects.filter(pk=world_a.tenant.pk).update(is_active=False)
    assert status(refused()) == (404, "Not Found", {})


def test_the_404_comes_before_the_source_check(number_a: PhoneNumber) -> None:
    assert refused(dialled="+15550100002", source_ip="192.0.2.1").status == 404


# --- 2. The source address: 403 -------------------------------------------------------------


@pytest.mark.parametrize("source_ip", ["127.0.0.1", "127.9.9.9", "::1"])
def test_number_without_trunk_takes_calls_from_the_default_sources(
    number_a: PhoneNumber, source_ip: str
) -> None:
    assert admit(source_ip=source_ip).number == number_a


@pytest.mark.parametrize(
    "source_ip", ["192.0.2.1", "::2", "::ffff:192.0.2.1", "not-an-address", ""]
)
def test_number_without_trunk_refuses_other_sources(number_a: PhoneNumber, source_ip: str) -> None:
    assert status(refused(source_ip=source_ip)) == (403, "Forbidden", {})


def test_number_without_trunk_and_no_default_sources_refuses_every_call(
    number_a: PhoneNumber,
) -> None:
    assert refused(default_sources=[]).status == 403


def test_trunk_sources_replace_the_default_ones(world_a: TenantWorld) -> None:
    trunk = make_trunk(world_a, sources=f"{CARRIER_NETWORK}\n2001:db8::/32")
    number = make_number(world_a, NUMBER_A, trunk=trunk)
    assert admit(source_ip=CARRIER_IP).number == number
    assert admit(source_ip="2001:db8::5").number == number
    assert status(refused(source_ip="127.0.0.1")) == (403, "Forbidden", {})


def test_disabled_trunk_refuses_even_its_own_sources(world_a: TenantWorld) -> None:
    trunk = make_trunk(world_a, sources=CARRIER_NETWORK, enabled=False)
    make_number(world_a, NUMBER_A, trunk=trunk)
    assert status(refused(source_ip=CARRIER_IP)) == (403, "Forbidden", {})


def test_another_tenants_trunk_addresses_do_not_open_a_number(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    make_trunk(world_b, sources="192.0.2.0/24")
    make_number(world_a, NUMBER_A, trunk=make_trunk(world_a, sources=CARRIER_NETWORK))
    assert refused(source_ip="192.0.2.1").status == 403


def test_a_wrong_source_is_refused_before_any_challenge(world_a: TenantWorld) -> None:
    trunk = make_trunk(world_a, sources=CARRIER_NETWORK, username=USERNAME, password=PASSWORD)
    make_number(world_a, NUMBER_A, trunk=trunk)
    assert status(refused(source_ip="192.0.2.1")) == (403, "Forbidden", {})


# --- 3. Digest authentication: 401, then 403 or in ------------------------------------------


def test_call_without_credentials_is_challenged(auth_number_a: PhoneNumber) -> None:
    challenge = challenge_of(refused(source_ip="192.0.2.1"))
    params = parse_auth(challenge).params
    assert (params["realm"], params["algorithm"], params["qop"]) == (
        "roomvoice-test",
        "MD5",
        "auth",
    )
    assert "stale" not in params


def test_caller_answering_the_challenge_with_the_trunks_credentials_is_admitted(
    world_a: TenantWorld, auth_number_a: PhoneNumber
) -> None:
    challenge = challenge_of(refused(source_ip="192.0.2.1"))
    admitted = admit(source_ip="192.0.2.1", authorization=answer(challenge))
    assert admitted.number == auth_number_a
    assert admitted.plan.admission.participant_id == CALLER
    assert admitted.plan.admission.room == world_a.room


@pytest.mark.parametrize(
    ("username", "password"),
    [(USERNAME, "guess-0123456789"), ("someone-else", PASSWORD), (USERNAME.upper(), PASSWORD)],
)
def test_wrong_credentials_are_403_without_a_new_challenge(
    auth_number_a: PhoneNumber, username: str, password: str
) -> None:
    challenge = challenge_of(refused())
    header = answer(challenge, username=username, password=password)
    assert status(refused(authorization=header)) == (403, "Forbidden", {})


def test_a_nonce_of_another_server_key_is_403(auth_number_a: PhoneNumber) -> None:
    foreign = DigestAuthority(realm="roomvoice-test", key=b"someone-elses-key").challenge()
    assert status(refused(authorization=answer(foreign))) == (403, "Forbidden", {})


def test_right_credentials_on_an_old_nonce_are_challenged_again_as_stale(
    auth_number_a: PhoneNumber,
) -> None:
    old_nonce = AUTHORITY.nonce(now=1_000_000_000)
    old = f'Digest realm="roomvoice-test", nonce="{old_nonce}", algorithm=MD5, qop="auth"'
    challenge = challenge_of(refused(authorization=answer(old)))
    params = parse_auth(challenge).params
    assert params["stale"] == "true"
    assert params["nonce"] != old_nonce
    assert int(params["nonce"].split(".")[0]) > 1_000_000_000 + NONCE_TTL_S
    # The phone retries with the fresh nonce, without asking its user.
    assert admit(authorization=answer(challenge)).number == auth_number_a


def test_a_basic_authorization_is_answered_with_a_digest_challenge(
    auth_number_a: PhoneNumber,
) -> None:
    challenge_of(refused(authorization="Basic Y2Fycmllci1hOnRydW5rLXBhc3M="))


def test_credentials_of_another_tenants_trunk_do_not_open_a_number(
    world_a: TenantWorld, world_b: TenantWorld, auth_number_a: PhoneNumber
) -> None:
    trunk_b = make_trunk(world_b, username="carrier-b", password="trunk-pass-b-0123456789")
    make_number(world_b, NUMBER_B, trunk=trunk_b)
    challenge = challenge_of(refused())
    as_b = answer(challenge, username="carrier-b", password="trunk-pass-b-0123456789")
    assert refused(authorization=as_b).status == 403
    assert admit(dialled=NUMBER_B, authorization=as_b).plan.admission.tenant == world_b.tenant


def test_trunk_without_credentials_never_challenges(world_a: TenantWorld) -> None:
    trunk = make_trunk(world_a, sources=CARRIER_NETWORK)
    number = make_number(world_a, NUMBER_A, trunk=trunk)
    assert admit(source_ip=CARRIER_IP, authorization="Digest garbage").number == number


def test_a_non_ascii_user_name_is_403(auth_number_a: PhoneNumber) -> None:
    challenge = challenge_of(refused())
    header = answer(challenge, username="carrièr")
    assert status(refused(authorization=header)) == (403, "Forbidden", {})


# --- 4. The voice rules ---------------------------------------------------------------------


@pytest.mark.parametrize("room_status", [RoomStatus.CLOSED, RoomStatus.PAUSED, RoomStatus.ARCHIVED])
def test_call_to_a_room_that_is_not_active_is_403(
    world_a: TenantWorld, number_a: PhoneNumber, room_status: str
) -> None:
    room_services.room_set_status(tenant=world_a.tenant, room=world_a.room, status=room_status)
    assert status(refused()) == (403, "Forbidden", {})


def test_caller_whose_voice_binding_was_revoked_is_403(
    world_a: TenantWorld, number_a: PhoneNumber
) -> None:
    binding, _ = room_services.binding_attach(
        tenant=world_a.tenant, room=world_a.room, channel_id=VOICE_CHANNEL_ID, participant_id=CALLER
    )
    room_services.binding_set_access(tenant=world_a.tenant, binding=binding, access=Access.NONE)
    assert status(refused()) == (403, "Forbidden", {})
    # Another caller to the same number is still answered.
    assert admit(caller="+15550108888").plan.admission.participant_id == "+15550108888"


def test_another_participants_revoked_binding_does_not_refuse_the_caller(
    world_a: TenantWorld, number_a: PhoneNumber
) -> None:
    # The world's voice binding is for participant "caller", not for this phone number.
    room_services.binding_set_access(
        tenant=world_a.tenant, binding=world_a.binding, access=Access.NONE
    )
    assert admit().plan.admission.participant_id == CALLER


def test_agent_whose_provider_cannot_be_built_is_503(world_a: TenantWorld) -> None:
    agent = voice_services.agent_create(
        tenant=world_a.tenant, slug="gemini", name="Gemini", provider_kind="gemini"
    )
    make_number(world_a, NUMBER_A, agent=agent)
    assert status(refused()) == (503, "Service Unavailable", {})


def test_room_whose_default_agent_was_removed_is_404(
    world_a: TenantWorld, number_a: PhoneNumber
) -> None:
    room_services.room_update(tenant=world_a.tenant, room=world_a.room, default_agent=None)
    assert status(refused()) == (404, "Not Found", {})
