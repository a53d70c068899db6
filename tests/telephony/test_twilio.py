"""Twilio's Voice webhook (``POST /telephony/twilio/voice/``): the signature, where a call
goes, and the TwiML that streams it to us. Twilio's side is scripted from its
documentation (tests/telephony/twilio_scripted.py)."""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

from rooms import services as room_services
from rooms.models import Access, RoomStatus
from telephony.models import PhoneNumber
from telephony.twilio import (
    InvalidStreamToken,
    stream_token_create,
    stream_token_verify,
    twilio_signature,
    twilio_signature_valid,
)
from tests.fixtures.actors import TenantWorld
from tests.fixtures.voice_ws import mock_agent_for
from tests.telephony.twilio_scripted import (
    ACCOUNT_A,
    ACCOUNT_B,
    AUTH_TOKEN_A,
    AUTH_TOKEN_B,
    CALLER,
    call_form,
    phone_number,
    sign,
    twilio_account,
)
from voice.models import VoiceSession

pytestmark = pytest.mark.django_db

WEBHOOK = "/telephony/twilio/voice/"
SIGNED_URL = "http://testserver" + WEBHOOK  # what Twilio called, as the test client sends it
NUMBER_A = "+15550100001"
NUMBER_B = "+15550200002"


@dataclass
class Numbers:
    a: PhoneNumber
    b: PhoneNumber


@pytest.fixture
def numbers(world_a: TenantWorld, world_b: TenantWorld) -> Numbers:
    """Each tenant has a Twilio account and a number routed to its room-1 (mock agent)."""
    mock_agent_for(world_a.tenant, world_a.room)
    mock_agent_for(world_b.tenant, world_b.room)
    twilio_account(world_a.tenant, ACCOUNT_A, AUTH_TOKEN_A)
    twilio_account(world_b.tenant, ACCOUNT_B, AUTH_TOKEN_B)
    return Numbers(
        a=phone_number(world_a.tenant, world_a.room, NUMBER_A),
        b=phone_number(world_b.tenant, world_b.room, NUMBER_B),
    )


def post(
    form: dict[str, str], *, auth_token: str | None, url: str = SIGNED_URL, **extra: Any
) -> Any:
    headers = {} if auth_token is None else {"HTTP_X_TWILIO_SIGNATURE": sign(auth_token, url, form)}
    return Client().post(WEBHOOK, form, **headers, **extra)


def twiml(response: Any) -> ET.Element:
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/xml")
    return ET.fromstring(response.content)  # noqa: S314 (our own answer)


def rejected(response: Any) -> bool:
    root = twiml(response)
    return [child.tag for child in root] == ["Reject"] and root.tag == "Response"


def streamed_to(response: Any) -> tuple[str, str]:
    """The stream URL and the token parameter of a ``<Connect><Stream>`` answer."""
    root = twiml(response)
    (connect,) = list(root)
    (stream,) = list(connect)
    (parameter,) = list(stream)
    assert (connect.tag, stream.tag, parameter.tag) == ("Connect", "Stream", "Parameter")
    assert parameter.get("name") == "token"
    return str(stream.get("url")), str(parameter.get("value"))


# --- the signature algorithm -----------------------------------------------------------------


def test_signature_matches_twilios_published_example() -> None:
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+14158675309",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
    }

    assert twilio_signature("12345", url, params.items()) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert twilio_signature_valid("12345", url, params.items(), "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    # Twilio's libraries accept the URL with its scheme's default port too.
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    assert twilio_signature_valid(
        "12345", with_port, params.items(), "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    )
    tampered = {**params, "Digits": "9999"}
    assert not twilio_signature_valid(
        "12345", url, tampered.items(), "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    )
    assert not twilio_signature_valid("12345", url, params.items(), "")


def test_repeated_parameters_are_signed_sorted_and_once() -> None:
    params = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678")]
    params += [("Digits", "1234"), ("Digits", "1234")]

    signature = twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", params)

    assert signature == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


# --- the webhook -------------------------------------------------------------------------------


def test_signed_call_to_a_number_is_streamed_with_a_token_for_that_call(
    numbers: Numbers, world_a: TenantWorld
) -> None:
    form = call_form(account_sid=ACCOUNT_A, to=NUMBER_A)

    url, token = streamed_to(post(form, auth_token=AUTH_TOKEN_A))
    claims = stream_token_verify(token)

    assert url == "ws://testserver/ws/twilio/stream/"  # plain http here: development
    assert claims.tenant_id == world_a.tenant.pk
    assert claims.number_id == numbers.a.pk
    assert (claims.caller, claims.call_sid, claims.account_sid) == (
        CALLER,
        form["CallSid"],
        ACCOUNT_A,
    )
    assert VoiceSession.objects.count() == 0  # the session starts with the stream


def test_public_url_is_what_is_signed_and_where_the_stream_connects(
    numbers: Numbers, settings: Any
) -> None:
    settings.ROOMVOICE_PUBLIC_URL = "https://voice.example.com"
    form = call_form(account_sid=ACCOUNT_A, to=NUMBER_A)
    public = "https://voice.example.com" + WEBHOOK

    signed_as_public = post(form, auth_token=AUTH_TOKEN_A, url=public)
    signed_as_seen = post(form, auth_token=AUTH_TOKEN_A, url=SIGNED_URL)

    url, _ = streamed_to(signed_as_public)
    assert url == "wss://voice.example.com/ws/twilio/stream/"
    assert signed_as_seen.status_code == 403


def test_https_request_streams_over_wss(numbers: Numbers) -> None:
    form = call_form(account_sid=ACCOUNT_A, to=NUMBER_A)

    response = post(form, auth_token=AUTH_TOKEN_A, url="https://testserver" + WEBHOOK, secure=True)

    assert streamed_to(response)[0] == "wss://testserver/ws/twilio/stream/"


@pytest.mark.parametrize("problem", ["bad", "missing", "other_accounts_token", "unknown_account"])
def test_unsigned_or_wrongly_signed_requests_are_forbidden_alike(
    numbers: Numbers, problem: str
) -> None:
    form = call_form(account_sid=ACCOUNT_A, to=NUMBER_A)
    if problem == "bad":
        response = Client().post(WEBHOOK, form, HTTP_X_TWILIO_SIGNATURE="bm90IGEgc2lnbmF0dXJl")
    elif problem == "missing":
        response = post(form, auth_token=None)
    elif problem == "other_accounts_token":
        response = post(form, auth_token=AUTH_TOKEN_B)  # B's token, A's AccountSid
    else:
        form["AccountSid"] = "AC" + "0" * 32
        response = post(form, auth_token=AUTH_TOKEN_A)

    assert response.status_code == 403
    assert response.content == b"Forbidden"  # the same answer whatever the reason
    assert b"Stream" not in response.content


def test_a_tampered_form_is_forbidden(numbers: Numbers) -> None:
    form = call_form(account_sid=ACCOUNT_A, to=NUMBER_A)
    signature = sign(AUTH_TOKEN_A, SIGNED_URL, form)

    response = Client().post(
        WEBHOOK, {**form, "From": "+15550000000"}, HTTP_X_TWILIO_SIGNATURE=signature
    )

    assert response.status_code == 403


def test_disabled_account_is_forbidden(numbers: Numbers) -> None:
    from telephony.models import TwilioAccount

    TwilioAccount.objects.filter(account_sid=ACCOUNT_A).update(enabled=False)

    response = post(call_form(account_sid=ACCOUNT_A, to=NUMBER_A), auth_token=AUTH_TOKEN_A)

    assert response.status_code == 403


def test_get_is_not_allowed(numbers: Numbers) -> None:
    assert Client().get(WEBHOOK).status_code == 405


def test_unknown_number_is_rejected(numbers: Numbers) -> None:
    response = post(call_form(account_sid=ACCOUNT_A, to="+15559999999"), auth_token=AUTH_TOKEN_A)

    assert rejected(response)


def test_disabled_number_is_rejected(numbers: Numbers) -> None:
    PhoneNumber.objects.filter(pk=numbers.a.pk).update(enabled=False)

    response = post(call_form(account_sid=ACCOUNT_A, to=NUMBER_A), auth_token=AUTH_TOKEN_A)

    assert rejected(response)


def test_number_written_without_plus_reaches_the_same_number(numbers: Numbers) -> None:
    response = post(call_form(account_sid=ACCOUNT_A, to=NUMBER_A[1:]), auth_token=AUTH_TOKEN_A)

    _, token = streamed_to(response)
    assert stream_token_verify(token).number_id == numbers.a.pk


def test_tenant_b_account_cannot_route_to_tenant_a_number(numbers: Numbers) -> None:
    response = post(call_form(account_sid=ACCOUNT_B, to=NUMBER_A), auth_token=AUTH_TOKEN_B)

    assert rejected(response)


def test_tenant_a_account_cannot_route_to_tenant_b_number(numbers: Numbers) -> None:
    response = post(call_form(account_sid=ACCOUNT_A, to=NUMBER_B), auth_token=AUTH_TOKEN_A)

    assert rejected(response)


def test_each_account_routes_to_its_own_number(numbers: Numbers, world_b: TenantWorld) -> None:
    response = post(call_form(account_sid=ACCOUNT_B, to=NUMBER_B), auth_token=AUTH_TOKEN_B)

    claims = stream_token_verify(streamed_to(response)[1])
    assert (claims.tenant_id, claims.number_id) == (world_b.tenant.pk, numbers.b.pk)


@pytest.mark.parametrize("status", [RoomStatus.CLOSED, RoomStatus.PAUSED, RoomStatus.ARCHIVED])
def test_call_to_a_room_not_taking_calls_is_rejected(
    numbers: Numbers, world_a: TenantWorld, status: str
) -> None:
    type(world_a.room).objects.filter(pk=world_a.room.pk).update(status=status)

    response = post(call_form(account_sid=ACCOUNT_A, to=NUMBER_A), auth_token=AUTH_TOKEN_A)

    assert rejected(response)


def test_revoked_caller_is_rejected(numbers: Numbers, world_a: TenantWorld) -> None:
    room_services.binding_attach(
        tenant=world_a.tenant,
        room=world_a.room,
        channel_id="voice",
        participant_id=CALLER,
        access=Access.NONE,
    )

    revoked = post(call_form(account_sid=ACCOUNT_A, to=NUMBER_A), auth_token=AUTH_TOKEN_A)
    other = post(
        call_form(account_sid=ACCOUNT_A, to=NUMBER_A, caller="+15550107777"),
        auth_token=AUTH_TOKEN_A,
    )

    assert rejected(revoked)
    assert streamed_to(other)[1]


def test_number_without_an_agent_is_rejected(numbers: Numbers, world_a: TenantWorld) -> None:
    type(world_a.room).objects.filter(pk=world_a.room.pk).update(default_agent=None)

    response = post(call_form(account_sid=ACCOUNT_A, to=NUMBER_A), auth_token=AUTH_TOKEN_A)

    assert rejected(response)


def test_number_with_an_unavailable_provider_is_rejected(
    numbers: Numbers, world_a: TenantWorld
) -> None:
    from tests.fixtures.voice_ws import unbuilt_agent_for

    unbuilt_agent_for(world_a.tenant, world_a.room)

    response = post(call_form(account_sid=ACCOUNT_A, to=NUMBER_A), auth_token=AUTH_TOKEN_A)

    assert rejected(response)


# --- the stream token --------------------------------------------------------------------------


def _token(**overrides: Any) -> str:
    claims: dict[str, Any] = {
        "tenant_id": uuid.uuid4(),
        "number_id": uuid.uuid4(),
        "caller": CALLER,
        "call_sid": "CA" + "1" * 32,
        "account_sid": ACCOUNT_A,
    }
    return stream_token_create(**{**claims, **overrides})


def test_stream_token_expires_after_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    token = _token()
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 61)

    with pytest.raises(InvalidStreamToken, match="expired"):
        stream_token_verify(token)


@pytest.mark.parametrize("token", ["", "garbage", "x" * 3000])
def test_malformed_stream_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidStreamToken):
        stream_token_verify(token)


def test_tampered_stream_token_is_refused() -> None:
    token = _token()
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")

    with pytest.raises(InvalidStreamToken, match="signature"):
        stream_token_verify(tampered)


def test_a_room_token_is_not_a_stream_token(world_a: TenantWorld) -> None:
    room_token = room_services.room_token_create(
        tenant=world_a.tenant, room=world_a.room, participant_id=CALLER
    )

    with pytest.raises(InvalidStreamToken):
        stream_token_verify(room_token)
