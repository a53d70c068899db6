"""SIP digest authentication, server side (``telephony.digest.DigestAuthority``).

The client side is written here from RFC 2617 §3.2.2 (and RFC 7616 for SHA-256), checked
against RFC 2617's own worked example, so the server is never checked against itself; one
test also answers with aiosipua's client. Time is passed in (``now=``): no sleeps."""

from __future__ import annotations

import hashlib
import re
import time

import pytest
from aiosipua import parse_auth, stringify_auth
from aiosipua.auth import SipDigestAuth, build_credentials

from telephony.digest import NONCE_TTL_S, DigestAuthority, Verdict

REALM = "roomvoice-test"
AUTHORITY = DigestAuthority(realm=REALM, key=b"nonce-key-for-tests")
USERNAME = "carrier"
PASSWORD = "trunk-pass-0123456789"
URI = "sip:+15550100000@127.0.0.1:5060"
NOW = 1_800_000_000.0
HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str = "",
    nc: str = "",
    cnonce: str = "",
) -> str:
    """RFC 2617 §3.2.2.1: request-digest, with or without qop=auth."""

    def h(text: str) -> str:
        return HASHES[algorithm](text.encode()).hexdigest()

    ha1 = h(f"{username}:{realm}:{password}")
    ha2 = h(f"{method}:{uri}")
    if qop:
        return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return h(f"{ha1}:{nonce}:{ha2}")


def authorization(
    nonce: str,
    *,
    algorithm: str = "MD5",
    qop: str = "auth",
    username: str = USERNAME,
    realm: str = REALM,
    password: str = PASSWORD,
    method: str = "INVITE",
    uri: str = URI,
    nc: str = "00000001",
    cnonce: str = "0a4f113b",
    omit: tuple[str, ...] = (),
    **overrides: str,
) -> str:
    """An ``Authorization`` header a SIP phone would send. After the response is computed,
    ``overrides`` replace parameters and ``omit`` leaves some out."""
    params = {
        "username": username,
        "realm": realm,
        "nonce": nonce,
        "uri": uri,
        "algorithm": algorithm,
        "response": digest_response(
            algorithm=algorithm,
            username=username,
            realm=realm,
            password=password,
            method=method,
            uri=uri,
            nonce=nonce,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
        ),
    }
    if qop:
        params |= {"qop": qop, "nc": nc, "cnonce": cnonce}
    params |= overrides
    quoted = {"username", "realm", "nonce", "uri", "response", "cnonce"}
    return "Digest " + ", ".join(
        f'{name}="{value}"' if name in quoted else f"{name}={value}"
        for name, value in params.items()
        if name not in omit
    )


def check(header: str | None, *, now: float = NOW, password: str = PASSWORD) -> Verdict:
    return AUTHORITY.check(header, method="INVITE", username=USERNAME, password=password, now=now)


def challenge_params(header: str) -> dict[str, str]:
    assert header.startswith("Digest ")
    return dict(re.findall(r'(\w+)="?([^",]*)"?', header[len("Digest ") :]))


# --- The test's own client ------------------------------------------------------------------


def test_the_test_client_reproduces_rfc_2617s_worked_example() -> None:
    # RFC 2617 §3.5: Mufasa's request for /dir/index.html.
    assert (
        digest_response(
            algorithm="MD5",
            username="Mufasa",
            realm="testrealm@host.com",
            password="Circle Of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


# --- Challenges and nonces ------------------------------------------------------------------


def test_challenge_offers_md5_with_qop_auth_and_a_fresh_nonce() -> None:
    header = AUTHORITY.challenge()
    params = challenge_params(header)
    assert set(params) == {"realm", "nonce", "algorithm", "qop"}
    assert (params["realm"], params["algorithm"], params["qop"]) == (REALM, "MD5", "auth")
    issued, salt, signature = params["nonce"].split(".")
    assert abs(int(issued) - time.time()) <= 2
    assert re.fullmatch(r"[0-9a-f]{8}", salt)
    assert re.fullmatch(r"[0-9a-f]{32}", signature)


def test_stale_challenge_says_so() -> None:
    header = AUTHORITY.challenge(stale=True)
    assert header.endswith(", stale=true")
    assert challenge_params(header)["stale"] == "true"
    assert "stale" not in AUTHORITY.challenge()


def test_every_nonce_is_different_even_within_one_second() -> None:
    nonces = {AUTHORITY.nonce(now=NOW) for _ in range(20)}
    assert len(nonces) == 20
    assert {nonce.split(".")[0] for nonce in nonces} == {str(int(NOW))}


def test_a_nonce_issued_by_another_process_with_the_same_key_is_accepted() -> None:
    other_process = DigestAuthority(realm=REALM, key=b"nonce-key-for-tests")
    assert check(authorization(other_process.nonce(now=NOW))) == Verdict.OK


# --- Right answers --------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
@pytest.mark.parametrize("qop", ["auth", ""])
def test_right_credentials_are_ok(algorithm: str, qop: str) -> None:
    nonce = AUTHORITY.nonce(now=NOW)
    assert check(authorization(nonce, algorithm=algorithm, qop=qop)) == Verdict.OK


@pytest.mark.parametrize("qop", ["auth", ""])
def test_algorithm_defaults_to_md5_when_the_client_names_none(qop: str) -> None:
    nonce = AUTHORITY.nonce(now=NOW)
    assert check(authorization(nonce, qop=qop, omit=("algorithm",))) == Verdict.OK


def test_lower_case_algorithm_name_and_upper_case_response_are_accepted() -> None:
    nonce = AUTHORITY.nonce(now=NOW)
    header = authorization(nonce, algorithm="SHA-256").replace(
        "algorithm=SHA-256", "algorithm=sha-256"
    )
    assert check(header) == Verdict.OK
    response = challenge_params(authorization(nonce))["response"]
    assert check(authorization(nonce, response=response.upper())) == Verdict.OK


def test_aiosipuas_client_answers_the_challenge() -> None:
    challenge = parse_auth(AUTHORITY.challenge())
    credentials = build_credentials(SipDigestAuth(USERNAME, PASSWORD), challenge, "INVITE", URI)
    assert credentials is not None
    header = stringify_auth(credentials)
    assert AUTHORITY.check(header, method="INVITE", username=USERNAME, password=PASSWORD) == (
        Verdict.OK
    )


# --- No credentials: challenge --------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "Basic Y2FycmllcjpzZWNyZXQ="])
def test_no_digest_credentials_is_missing(header: str | None) -> None:
    assert check(header) == Verdict.MISSING


# --- Wrong answers --------------------------------------------------------------------------


def test_wrong_password_is_wrong() -> None:
    nonce = AUTHORITY.nonce(now=NOW)
    assert check(authorization(nonce, password="guess-0123456789")) == Verdict.WRONG


def test_wrong_user_name_is_wrong_even_with_the_right_password() -> None:
    nonce = AUTHORITY.nonce(now=NOW)
    assert check(authorization(nonce, username="intruder")) == Verdict.WRONG


def test_another_realm_is_wrong() -> None:
    nonce = AUTHORITY.nonce(now=NOW)
    assert check(authorization(nonce, realm="elsewhere")) == Verdict.WRONG


def test_an_answer_computed_for_another_method_is_wrong() -> None:
    nonce = AUTHORITY.nonce(now=NOW)
    assert check(authorization(nonce, method="REGISTER")) == Verdict.WRONG


def test_a_response_copied_onto_another_uri_is_wrong() -> None:
    nonce = AUTHORITY.nonce(now=NOW)
    response = challenge_params(authorization(nonce))["response"]
    forged = authorization(nonce, uri="sip:+15550199999@127.0.0.1", response=response)
    assert check(forged) == Verdict.WRONG


@pytest.mark.parametrize(
    "nonce",
    [
        DigestAuthority(realm=REALM, key=b"another-key").nonce(now=NOW),
        DigestAuthority(realm="elsewhere", key=b"nonce-key-for-tests").nonce(now=NOW),
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "1800000000.deadbeef",
        "abc.def.ghi",
    ],
    ids=["other-key", "other-realm", "foreign", "two-parts", "not-a-time"],
)
def test_a_nonce_we_did_not_sign_is_wrong_even_with_the_right_password(nonce: str) -> None:
    assert check(authorization(nonce)) == Verdict.WRONG


def test_a_nonce_with_a_moved_issue_time_is_wrong() -> None:
    issued, salt, signature = AUTHORITY.nonce(now=NOW - 3600).split(".")
    refreshed = f"{int(NOW)}.{salt}.{signature}"
    assert check(authorization(refreshed)) == Verdict.WRONG


@pytest.mark.parametrize("missing", ["nonce", "uri", "response", "username", "realm"])
def test_a_missing_parameter_is_wrong(missing: str) -> None:
    nonce = AUTHORITY.nonce(now=NOW)
    assert check(authorization(nonce, omit=(missing,))) == Verdict.WRONG


@pytest.mark.parametrize("missing", ["nc", "cnonce"])
def test_qop_auth_without_nonce_count_or_client_nonce_is_wrong(missing: str) -> None:
    nonce = AUTHORITY.nonce(now=NOW)
    assert check(authorization(nonce, omit=(missing,))) == Verdict.WRONG


def test_qop_auth_int_is_not_offered_and_is_wrong() -> None:
    nonce = AUTHORITY.nonce(now=NOW)
    assert check(authorization(nonce, qop="auth-int")) == Verdict.WRONG


def test_an_algorithm_we_do_not_speak_is_wrong() -> None:
    nonce = AUTHORITY.nonce(now=NOW)
    header = authorization(nonce).replace("algorithm=MD5", "algorithm=SHA-512-256")
    assert check(header) == Verdict.WRONG


@pytest.mark.parametrize("field", ["username", "response"])
def test_non_ascii_credentials_are_wrong_not_a_crash(field: str) -> None:
    nonce = AUTHORITY.nonce(now=NOW)
    assert check(authorization(nonce, **{field: "é"})) == Verdict.WRONG


# --- Old nonces: challenge again, marked stale ----------------------------------------------


def test_right_credentials_on_a_nonce_older_than_the_ttl_are_stale() -> None:
    nonce = AUTHORITY.nonce(now=NOW - NONCE_TTL_S - 1)
    assert check(authorization(nonce)) == Verdict.STALE


def test_a_nonce_exactly_ttl_old_is_still_ok() -> None:
    nonce = AUTHORITY.nonce(now=NOW - NONCE_TTL_S)
    assert check(authorization(nonce)) == Verdict.OK


def test_a_nonce_from_the_future_is_stale() -> None:
    nonce = AUTHORITY.nonce(now=NOW + 60)
    assert check(authorization(nonce)) == Verdict.STALE


def test_wrong_credentials_on_an_old_nonce_are_wrong_not_stale() -> None:
    nonce = AUTHORITY.nonce(now=NOW - NONCE_TTL_S - 1)
    assert check(authorization(nonce, password="guess-0123456789")) == Verdict.WRONG


def test_check_uses_the_clock_when_no_time_is_given() -> None:
    fresh = AUTHORITY.nonce()
    old = AUTHORITY.nonce(now=time.time() - NONCE_TTL_S - 60)
    verdicts = [
        AUTHORITY.check(authorization(nonce), method="INVITE", username=USERNAME, password=PASSWORD)
        for nonce in (fresh, old)
    ]
    assert verdicts == [Verdict.OK, Verdict.STALE]
