"""Telephony rows: numbers are normalised and validated and point only at their own tenant's
room, agent and trunk; trunks need addresses or credentials; secrets (trunk passwords, Twilio
auth tokens) are stored encrypted, revealed only by the services, and shown only masked.
Also the reads that find a row for a call (``telephony.selectors``)."""

from __future__ import annotations

import ipaddress

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from providers.services import secret_box
from rooms import services as room_services
from rooms.models import Room, Tenant
from telephony import services
from telephony.models import (
    PhoneNumber,
    SipTrunk,
    TwilioAccount,
    normalize_number,
    parse_sources,
)
from telephony.selectors import number_for, twilio_account_for
from tests.fixtures.actors import TenantWorld
from voice import services as voice_services
from voice.models import Agent

pytestmark = pytest.mark.django_db

NUMBER = "+15550100000"
PASSWORD = "trunk-pass-0123456789"
AUTH_TOKEN = "twilio-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
INVALID_NUMBER = (
    "Enter an E.164 number (+15550100000) or a SIP user name (letters, digits, '-', '_', '.'; "
    "at most 64)."
)
OPEN_TRUNK = (
    "Name the addresses calls come from, or set a user name and password: a trunk open to "
    "anyone is refused."
)
SECRET_RULE = "At most 256 characters, no spaces or control characters."


def make_number(
    world: TenantWorld,
    number: str = NUMBER,
    *,
    room: Room | None = None,
    agent: Agent | None = None,
    trunk: SipTrunk | None = None,
    enabled: bool = True,
) -> PhoneNumber:
    row = PhoneNumber(
        tenant=world.tenant,
        number=number,
        room=room or world.room,
        agent=agent,
        trunk=trunk,
        enabled=enabled,
    )
    row.full_clean()
    row.save()
    return row


def make_trunk(
    world: TenantWorld,
    *,
    name: str = "carrier",
    sources: str = "",
    username: str = "",
    password: str = "",
) -> SipTrunk:
    trunk = SipTrunk(tenant=world.tenant, name=name, allowed_sources=sources, username=username)
    services.trunk_put_password(trunk, password)
    trunk.full_clean()
    trunk.save()
    return trunk


def make_account(
    world: TenantWorld, sid: str = ACCOUNT_SID, token: str = AUTH_TOKEN
) -> TwilioAccount:
    account = TwilioAccount(tenant=world.tenant, account_sid=sid)
    services.twilio_put_auth_token(account, token)
    account.full_clean()
    account.save()
    return account


def clean_errors(row: PhoneNumber | SipTrunk | TwilioAccount) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        row.full_clean()
    return caught.value.message_dict


def bare_room(world: TenantWorld, key: str = "no-agent") -> Room:
    return room_services.room_create(tenant=world.tenant, key=key)


def deactivate(tenant: Tenant) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(is_active=False)


# --- normalize_number and parse_sources -----------------------------------------------------


@pytest.mark.parametrize(
    ("written", "normalised"),
    [
        ("+1 (555) 010-0000", "+15550100000"),
        ("+1-555-010-0000", "+15550100000"),
        ("1.555.010.0000", "15550100000"),
        ("  +15550100000\t", "+15550100000"),
        ("tel:+1 555 010 0000", "+15550100000"),
        ("sip:+15550100000@carrier.example.com", "+15550100000"),
        ("SIPS:alice@example.com", "alice"),
        ("alice.smith", "alice.smith"),
        ("front-desk", "front-desk"),
    ],
)
def test_normalize_number_drops_separators_and_uri_parts(written: str, normalised: str) -> None:
    assert normalize_number(written) == normalised


def test_parse_sources_reads_addresses_and_networks_by_line_and_comma_ignoring_comments() -> None:
    text = "203.0.113.0/24  # carrier A\n\n198.51.100.7, 10.1.2.3/8\n# all of B:\n2001:db8::/32\n"
    assert parse_sources(text) == [
        ipaddress.ip_network("203.0.113.0/24"),
        ipaddress.ip_network("198.51.100.7/32"),
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    ]
    assert parse_sources("") == []
    assert parse_sources("  # nothing here\n") == []


def test_parse_sources_refuses_what_is_not_an_address() -> None:
    with pytest.raises(ValueError, match="carrier.example.com"):
        parse_sources("203.0.113.0/24\ncarrier.example.com")


# --- PhoneNumber ----------------------------------------------------------------------------


def test_number_with_dashes_is_stored_normalised(world_a: TenantWorld) -> None:
    row = make_number(world_a, "+1-555-010-0000")
    assert PhoneNumber.objects.filter(pk=row.pk).values_list("number", flat=True).get() == NUMBER


@pytest.mark.parametrize("written", ["+1 (555) 010-0000", "tel:+15550100000"])
def test_number_written_with_spaces_parentheses_or_a_uri_scheme_is_stored_normalised(
    world_a: TenantWorld, written: str
) -> None:
    row = make_number(world_a, written)
    assert row.number == NUMBER


@pytest.mark.parametrize("number", ["+1 555 abc!", "two words", "x" * 65, "+"])
def test_number_that_is_neither_e164_nor_a_sip_user_is_refused(
    world_a: TenantWorld, number: str
) -> None:
    row = PhoneNumber(tenant=world_a.tenant, number=number, room=world_a.room)
    assert clean_errors(row)["number"] == [INVALID_NUMBER]
    assert not PhoneNumber.objects.exists()


def test_a_sip_user_name_is_a_valid_number(world_a: TenantWorld) -> None:
    assert make_number(world_a, "front-desk.1").number == "front-desk.1"


def test_a_number_belongs_to_one_tenant_only(world_a: TenantWorld, world_b: TenantWorld) -> None:
    make_number(world_a)
    taken = PhoneNumber(tenant=world_b.tenant, number=NUMBER, room=world_b.room)
    assert clean_errors(taken) == {"number": ["Phone number with this Number already exists."]}


def test_an_empty_number_is_refused_by_the_database(world_a: TenantWorld) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        PhoneNumber.objects.create(tenant=world_a.tenant, number="", room=world_a.room)


def test_number_routes_to_the_rooms_default_agent_when_it_names_none(world_a: TenantWorld) -> None:
    row = make_number(world_a)
    assert row.agent is None
    assert row.room.default_agent == world_a.agent


def test_number_for_a_room_without_default_agent_must_name_an_agent(world_a: TenantWorld) -> None:
    room = bare_room(world_a)
    row = PhoneNumber(tenant=world_a.tenant, number=NUMBER, room=room)
    assert clean_errors(row) == {"agent": ["The room has no default agent: choose one."]}
    assert make_number(world_a, room=room, agent=world_a.agent).agent == world_a.agent


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("room", "The room belongs to another tenant."),
        ("agent", "The agent belongs to another tenant."),
        ("trunk", "The trunk belongs to another tenant."),
    ],
)
def test_number_cannot_point_at_another_tenants_room_agent_or_trunk(
    world_a: TenantWorld, world_b: TenantWorld, field: str, message: str
) -> None:
    theirs = {
        "room": world_b.room,
        "agent": world_b.agent,
        "trunk": make_trunk(world_b, sources="203.0.113.0/24"),
    }
    row = PhoneNumber(tenant=world_a.tenant, number=NUMBER, room=world_a.room)
    setattr(row, field, theirs[field])
    assert clean_errors(row) == {field: [message]}
    assert not PhoneNumber.objects.exists()


def test_str_of_a_number_shows_its_label(world_a: TenantWorld) -> None:
    row = make_number(world_a)
    assert str(row) == NUMBER
    row.label = "Front desk"
    assert str(row) == f"{NUMBER} (Front desk)"


# --- SipTrunk -------------------------------------------------------------------------------


def test_trunk_with_addresses_only_is_valid_and_needs_no_authentication(
    world_a: TenantWorld,
) -> None:
    trunk = make_trunk(world_a, sources="203.0.113.0/24")
    assert (trunk.requires_auth, trunk.encrypted_password, trunk.password_hint) == (False, "", "")


def test_trunk_with_credentials_only_is_valid_and_requires_authentication(
    world_a: TenantWorld,
) -> None:
    trunk = make_trunk(world_a, username="carrier", password=PASSWORD)
    assert trunk.requires_auth is True


def test_trunk_open_to_anyone_is_refused(world_a: TenantWorld) -> None:
    trunk = SipTrunk(tenant=world_a.tenant, name="open", allowed_sources=" \n ")
    assert clean_errors(trunk) == {"allowed_sources": [OPEN_TRUNK]}


def test_trunk_with_a_user_name_but_no_password_is_refused(world_a: TenantWorld) -> None:
    trunk = SipTrunk(
        tenant=world_a.tenant, name="half", allowed_sources="203.0.113.0/24", username="carrier"
    )
    assert clean_errors(trunk) == {"username": ["A user name needs a password."]}


def test_trunk_with_an_address_that_is_not_one_is_refused(world_a: TenantWorld) -> None:
    trunk = SipTrunk(
        tenant=world_a.tenant, name="typo", allowed_sources="203.0.113.0/24\n203.0.113.300"
    )
    (message,) = clean_errors(trunk)["allowed_sources"]
    assert message == (
        "Not an address or network: '203.0.113.300' does not appear to be an IPv4 or IPv6 "
        "network. Write one per line, e.g. 203.0.113.0/24."
    )


def test_trunk_names_are_unique_within_a_tenant_only(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    make_trunk(world_a, sources="203.0.113.0/24")
    make_trunk(world_b, sources="203.0.113.0/24")
    again = SipTrunk(tenant=world_a.tenant, name="carrier", allowed_sources="198.51.100.0/24")
    assert clean_errors(again) == {
        "__all__": ["Sip trunk with this Tenant and Name already exists."]
    }


def test_trunk_password_is_stored_encrypted_and_revealed_by_the_service(
    world_a: TenantWorld,
) -> None:
    trunk = make_trunk(world_a, username="carrier", password=PASSWORD)
    column = SipTrunk.objects.filter(pk=trunk.pk).values_list("encrypted_password", flat=True).get()
    assert PASSWORD not in column
    assert column.startswith("gAAAAA")  # a Fernet token
    assert secret_box().decrypt(column) == PASSWORD
    assert services.trunk_reveal_password(SipTrunk.objects.get(pk=trunk.pk)) == PASSWORD
    assert trunk.password_hint == "tru…89"


def test_trunk_password_is_stripped_and_a_blank_one_clears_the_credentials(
    world_a: TenantWorld,
) -> None:
    trunk = SipTrunk(tenant=world_a.tenant, name="carrier", username="carrier")
    services.trunk_put_password(trunk, f"  {PASSWORD}\n")
    assert services.trunk_reveal_password(trunk) == PASSWORD
    services.trunk_put_password(trunk, "")
    assert (trunk.encrypted_password, trunk.password_hint) == ("", "")
    assert services.trunk_reveal_password(trunk) == ""
    assert trunk.requires_auth is False


def test_a_short_password_gets_no_hint_at_all(world_a: TenantWorld) -> None:
    trunk = make_trunk(world_a, username="carrier", password="s3cret")
    assert trunk.password_hint == "…"


@pytest.mark.parametrize("password", ["two words", "tab\there", "bell\x07", "x" * 257])
def test_unusable_trunk_password_is_refused_and_nothing_is_set(
    world_a: TenantWorld, password: str
) -> None:
    trunk = SipTrunk(tenant=world_a.tenant, name="carrier", username="carrier")
    with pytest.raises(ValidationError) as caught:
        services.trunk_put_password(trunk, password)
    assert caught.value.message_dict == {"password": [SECRET_RULE]}
    assert (trunk.encrypted_password, trunk.password_hint) == ("", "")


def test_trunk_str_and_repr_show_neither_password_nor_ciphertext(world_a: TenantWorld) -> None:
    trunk = make_trunk(world_a, username="carrier", password=PASSWORD)
    for text in (str(trunk), repr(trunk)):
        assert PASSWORD not in text
        assert trunk.encrypted_password not in text
    assert str(trunk) == "carrier"
    assert repr(trunk) == f"<SipTrunk {trunk.pk} carrier>"


# --- TwilioAccount --------------------------------------------------------------------------


def test_twilio_auth_token_is_stored_encrypted_and_revealed_by_the_service(
    world_a: TenantWorld,
) -> None:
    account = make_account(world_a)
    column = (
        TwilioAccount.objects.filter(pk=account.pk)
        .values_list("encrypted_auth_token", flat=True)
        .get()
    )
    assert AUTH_TOKEN not in column
    assert secret_box().decrypt(column) == AUTH_TOKEN
    fresh = TwilioAccount.objects.get(pk=account.pk)
    assert services.twilio_reveal_auth_token(fresh) == AUTH_TOKEN
    assert fresh.auth_token_hint == "twi…cdef"


def test_twilio_account_str_and_repr_show_only_the_sid_and_hint(world_a: TenantWorld) -> None:
    account = make_account(world_a)
    assert str(account) == f"{ACCOUNT_SID} (twi…cdef)"
    assert repr(account) == f"<TwilioAccount {ACCOUNT_SID}>"
    for text in (str(account), repr(account)):
        assert AUTH_TOKEN not in text
        assert account.encrypted_auth_token not in text


@pytest.mark.parametrize("token", ["", "   ", "has space-0123456789", "x" * 257])
def test_unusable_auth_token_is_refused(world_a: TenantWorld, token: str) -> None:
    account = TwilioAccount(tenant=world_a.tenant, account_sid=ACCOUNT_SID)
    with pytest.raises(ValidationError) as caught:
        services.twilio_put_auth_token(account, token)
    expected = "Enter a value." if not token.strip() else SECRET_RULE
    assert caught.value.message_dict == {"auth_token": [expected]}
    assert account.encrypted_auth_token == ""


def test_twilio_account_without_a_token_is_refused_by_the_database(world_a: TenantWorld) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        TwilioAccount.objects.create(tenant=world_a.tenant, account_sid=ACCOUNT_SID)


@pytest.mark.parametrize(
    "sid",
    [
        "AC" + "0" * 31,
        "AC" + "0" * 33,
        "AC" + "A" * 32,
        "AC" + "g" * 32,
        "PN" + "0" * 32,
        "",
    ],
)
def test_account_sid_must_be_ac_and_32_hex_digits(world_a: TenantWorld, sid: str) -> None:
    account = TwilioAccount(tenant=world_a.tenant, account_sid=sid)
    services.twilio_put_auth_token(account, AUTH_TOKEN)
    assert "An account SID is AC and 32 hex digits." in clean_errors(account)["account_sid"]


def test_an_account_sid_belongs_to_one_tenant_only(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    make_account(world_a)
    taken = TwilioAccount(tenant=world_b.tenant, account_sid=ACCOUNT_SID)
    services.twilio_put_auth_token(taken, AUTH_TOKEN)
    assert clean_errors(taken) == {
        "account_sid": ["Twilio account with this Account SID already exists."]
    }


# --- Selectors: which number a call dialled -------------------------------------------------


@pytest.mark.parametrize(
    "dialled",
    [
        NUMBER,
        NUMBER[1:],
        "+1 (555) 010-0000",
        f"sip:{NUMBER}@carrier.example.com",
        f"sip:{NUMBER[1:]}@carrier.example.com",
        f"tel:{NUMBER}",
    ],
)
def test_number_for_finds_a_number_dialled_with_or_without_plus(
    world_a: TenantWorld, dialled: str
) -> None:
    row = make_number(world_a)
    found = number_for(dialled)
    assert found == row
    assert (found.tenant, found.room) == (world_a.tenant, world_a.room)


def test_number_for_finds_a_number_stored_without_plus_when_dialled_with_one(
    world_a: TenantWorld,
) -> None:
    row = make_number(world_a, NUMBER[1:])
    assert number_for(NUMBER) == row


def test_the_same_number_with_or_without_plus_cannot_be_configured_twice(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    """A carrier may send either spelling: two rows would split one number's calls between
    two rooms (or two tenants)."""
    with_plus = make_number(world_a, NUMBER)
    without = PhoneNumber(tenant=world_b.tenant, number=NUMBER[1:], room=world_b.room)
    assert clean_errors(without) == {
        "number": ["This number is already configured (perhaps written with or without '+')."]
    }
    assert number_for(NUMBER) == with_plus
    assert number_for(NUMBER[1:]) == with_plus


def test_number_for_finds_a_sip_user_by_its_name_or_sip_uri(world_a: TenantWorld) -> None:
    row = make_number(world_a, "front-desk")
    assert number_for("front-desk") == row
    assert number_for("sip:front-desk@pbx.example.com") == row
    assert number_for("front") is None


@pytest.mark.parametrize("dialled", ["", "   ", "+15550100001", "sip:@carrier.example.com"])
def test_number_for_an_unknown_number_is_none(world_a: TenantWorld, dialled: str) -> None:
    make_number(world_a)
    assert number_for(dialled) is None


def test_number_for_skips_disabled_numbers(world_a: TenantWorld) -> None:
    make_number(world_a, enabled=False)
    assert number_for(NUMBER) is None


def test_number_for_skips_numbers_of_inactive_tenants(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    make_number(world_a)
    theirs = make_number(world_b, "+15550200000")
    deactivate(world_a.tenant)
    assert number_for(NUMBER) is None
    assert number_for("+15550200000") == theirs


def test_number_for_within_a_tenant_finds_only_that_tenants_numbers(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    row = make_number(world_a)
    assert number_for(NUMBER, tenant_id=world_a.tenant.pk) == row
    assert number_for(NUMBER, tenant_id=world_b.tenant.pk) is None


def test_number_for_loads_the_agent_and_trunk_with_the_number(world_a: TenantWorld) -> None:
    trunk = make_trunk(world_a, sources="203.0.113.0/24")
    agent = voice_services.agent_create(
        tenant=world_a.tenant, slug="phone", name="Phone", provider_kind="mock"
    )
    make_number(world_a, agent=agent, trunk=trunk)
    found = number_for(NUMBER)
    assert found is not None
    assert (found.agent, found.trunk) == (agent, trunk)


def test_twilio_account_for_finds_enabled_accounts_of_active_tenants(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    account = make_account(world_a)
    other_sid = "AC" + "fedcba9876543210" * 2
    disabled = make_account(world_b, other_sid)
    TwilioAccount.objects.filter(pk=disabled.pk).update(enabled=False)
    assert twilio_account_for(ACCOUNT_SID) == account
    assert twilio_account_for(other_sid) is None
    assert twilio_account_for("AC" + "1" * 32) is None
    deactivate(world_a.tenant)
    assert twilio_account_for(ACCOUNT_SID) is None


def test_a_registrar_needs_the_credentials_to_register_with(world_a: TenantWorld) -> None:
    trunk = SipTrunk(
        tenant=world_a.tenant,
        name="carrier",
        allowed_sources="203.0.113.0/24",
        registrar="sip.carrier.example",
    )
    assert clean_errors(trunk) == {
        "registrar": ["Registering needs the user name and password to register with."]
    }
    trunk.username = "acme"
    services.trunk_put_password(trunk, "carrier-pass-0123")
    trunk.full_clean()  # valid now


@pytest.mark.parametrize(
    "registrar", ["sip carrier", "sip.carrier.example:0", "sip.carrier.example:http", "[::1]"]
)
def test_a_registrar_must_be_a_host_with_an_optional_port(
    world_a: TenantWorld, registrar: str
) -> None:
    trunk = SipTrunk(tenant=world_a.tenant, name="carrier", username="acme", registrar=registrar)
    services.trunk_put_password(trunk, "carrier-pass-0123")
    assert list(clean_errors(trunk)) == ["registrar"]
