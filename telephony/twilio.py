"""Twilio voice calls: the TwiML webhook that answers a call by streaming it to us.

A Twilio number's Voice webhook (``POST /telephony/twilio/voice/``) is signed with the
account's auth token (``X-Twilio-Signature``). We check the signature, find the dialled
number in that account's tenant, and answer with TwiML: ``<Reject/>`` when the call
cannot go anywhere, else ``<Connect><Stream>`` to our media-stream WebSocket
(``telephony.consumers.TwilioStreamConsumer``) with a short-lived signed token as a
``<Parameter>`` (stream URLs may not carry a query string; parameters arrive in the
stream's ``start`` message). The token names the tenant, the number, the caller and the
call: the stream admits exactly that call, once, within :data:`STREAM_TOKEN_MAX_AGE_S`.

The signature (Twilio's "webhook security"): base64 of HMAC-SHA1, keyed with the auth
token, over the full URL Twilio requested followed by every POST parameter sorted by name,
name then value, no separators. The URL is ``ROOMVOICE_PUBLIC_URL`` + the request's path
when that setting is set (behind a proxy the request's own scheme and host may differ from
what Twilio called), else the request's absolute URI.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import quoteattr

from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from telephony.admission import plan_for_number
from telephony.models import PhoneNumber, TwilioAccount
from telephony.selectors import number_for, twilio_account_for
from telephony.services import twilio_reveal_auth_token
from voice.admission import Refusal, VoicePlan
from voice.protocol import CLOSE_FORBIDDEN, CLOSE_NOT_FOUND

__all__ = [
    "STREAM_PATH",
    "InvalidStreamToken",
    "StreamClaims",
    "call_plan",
    "stream_claim",
    "stream_token_create",
    "stream_token_verify",
    "twilio_signature",
    "twilio_signature_valid",
    "twilio_voice",
]

logger = logging.getLogger(__name__)

STREAM_PATH = "/ws/twilio/stream/"  # telephony/routing.py serves it
STREAM_SALT = "roomvoice.telephony.twilio.stream"
#: Twilio opens the stream right after it reads the TwiML: a minute is plenty.
STREAM_TOKEN_MAX_AGE_S = 60
SIGNATURE_HEADER = "X-Twilio-Signature"
DEFAULT_PORTS = {"https": 443, "http": 80}
TWIML_CONTENT_TYPE = "text/xml; charset=utf-8"
REJECT_TWIML = '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Reject/></Response>'


# --- the signature ---------------------------------------------------------------------------


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]] = ()) -> str:
    """The ``X-Twilio-Signature`` Twilio computes for a request to ``url`` with these POST
    parameters (repeated names allowed)."""
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    data = url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def twilio_signature_valid(
    auth_token: str, url: str, params: Iterable[tuple[str, str]], signature: str
) -> bool:
    """Whether ``signature`` is Twilio's for this request; compared in constant time. As
    Twilio's own libraries do, the URL counts with and without its scheme's default port
    (``https://host:443/path`` and ``https://host/path``)."""
    if not signature:
        return False
    params = list(params)
    expected = signature.encode()
    found = False
    for candidate in _port_variants(url):
        computed = twilio_signature(auth_token, candidate, params).encode()
        found |= hmac.compare_digest(computed, expected)
    return found


def _port_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    default = DEFAULT_PORTS.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        return [url]
    hostport = parts.netloc.rpartition("@")[2]
    userinfo = parts.netloc[: len(parts.netloc) - len(hostport)]
    if default is None or not hostport:
        return [url]
    if port is None:
        return [url, urlunsplit(parts._replace(netloc=f"{userinfo}{hostport}:{default}"))]
    if port == default:
        host = hostport.rsplit(":", 1)[0]
        return [url, urlunsplit(parts._replace(netloc=f"{userinfo}{host}"))]
    return [url]


def _signed_url(request: HttpRequest) -> str:
    public = str(getattr(settings, "ROOMVOICE_PUBLIC_URL", "") or "").rstrip("/")
    return public + request.get_full_path() if public else request.build_absolute_uri()


def _stream_url(request: HttpRequest) -> str:
    public = str(getattr(settings, "ROOMVOICE_PUBLIC_URL", "") or "").rstrip("/")
    if public:
        scheme, _, rest = public.partition("://")
        return ("ws" if scheme == "http" else "wss") + "://" + rest + STREAM_PATH
    # Plain ws:// only when Twilio itself called over plain http (development).
    return ("wss" if request.is_secure() else "ws") + "://" + request.get_host() + STREAM_PATH


# --- the stream token ------------------------------------------------------------------------


class InvalidStreamToken(ValueError):
    """Not a stream token we signed, tampered with, or expired."""


@dataclass(frozen=True, slots=True)
class StreamClaims:
    tenant_id: uuid.UUID
    number_id: uuid.UUID
    caller: str
    call_sid: str
    account_sid: str


def stream_token_create(
    *, tenant_id: uuid.UUID, number_id: uuid.UUID, caller: str, call_sid: str, account_sid: str
) -> str:
    payload = {
        "t": str(tenant_id),
        "n": str(number_id),
        "f": caller,
        "c": call_sid,
        "a": account_sid,
    }
    return signing.dumps(payload, salt=STREAM_SALT, compress=True)


def stream_token_verify(token: str) -> StreamClaims:
    if not isinstance(token, str) or not token or len(token) > 2048:
        raise InvalidStreamToken("no stream token")
    try:
        payload = signing.loads(token, salt=STREAM_SALT, max_age=STREAM_TOKEN_MAX_AGE_S)
    except signing.SignatureExpired:
        raise InvalidStreamToken("the stream token has expired") from None
    except signing.BadSignature:
        raise InvalidStreamToken("the stream token's signature is not valid") from None
    try:
        return StreamClaims(
            tenant_id=uuid.UUID(payload["t"]),
            number_id=uuid.UUID(payload["n"]),
            caller=str(payload["f"]),
            call_sid=str(payload["c"]),
            account_sid=str(payload["a"]),
        )
    except (KeyError, TypeError, ValueError):
        raise InvalidStreamToken("malformed stream token") from None


# --- where a call goes -----------------------------------------------------------------------


def _participant(caller: str, call_sid: str) -> str:
    """The caller's number is the participant (bindings, mute, revoke follow it); a caller
    without one (withheld) is their call."""
    caller = caller.strip()
    return caller if caller else f"twilio:{call_sid}"


def call_plan(
    number: PhoneNumber, *, caller: str, call_sid: str, metadata: dict[str, Any] | None = None
) -> VoicePlan:
    """The voice plan for a call to ``number`` (ORM reads: off the event loop), by the rules
    every voice connection follows (``voice.admission.plan_voice``): the room takes calls,
    the number's agent (else the room's) exists and can be built, the caller is not
    revoked. Refusal otherwise, in words for the log."""
    return plan_for_number(
        number,
        participant_id=_participant(caller, call_sid),
        via="twilio",
        metadata=dict(metadata or {}),
    )


def stream_claim(claims: StreamClaims, *, call_sid: str, account_sid: str) -> PhoneNumber:
    """The number a stream's token names, for the call that presents it, once (ORM and
    cache: off the event loop). Refusal when the token is for another call or account, the
    number is gone or disabled, or the call already has a stream."""
    if claims.call_sid != call_sid:  # ids, not secrets: the token's signature is the secret
        raise Refusal(CLOSE_FORBIDDEN, "forbidden", "the stream token is for another call")
    if claims.account_sid != account_sid:
        raise Refusal(CLOSE_FORBIDDEN, "forbidden", "the stream token is for another account")
    number = (
        PhoneNumber.objects.select_related("tenant", "room", "room__tenant", "agent")
        .filter(
            pk=claims.number_id,
            tenant_id=claims.tenant_id,
            enabled=True,
            tenant__is_active=True,
        )
        .first()
    )
    if number is None:
        raise Refusal(CLOSE_NOT_FOUND, "not_found", "the number no longer takes calls")
    # One stream per call: a token seen again (a replay) is refused. The cache is Redis
    # (shared by every process) when there is one, else this process's memory.
    if not cache.add(f"telephony:twilio:stream:{call_sid}", 1, STREAM_TOKEN_MAX_AGE_S * 2):
        raise Refusal(CLOSE_FORBIDDEN, "forbidden", "this call already has a stream")
    return number


# --- the webhook -----------------------------------------------------------------------------


def _account(request: HttpRequest) -> TwilioAccount | None:
    """The account whose auth token signed the request, or None (unknown, disabled, or not
    its signature): the caller is not told which."""
    signature = request.headers.get(SIGNATURE_HEADER, "")
    account_sid = request.POST.get("AccountSid", "")
    account = twilio_account_for(account_sid) if account_sid else None
    url = _signed_url(request)
    params = [(name, value) for name, values in request.POST.lists() for value in values]
    if account is None:
        # The same work as for a known account, so the answer's timing says nothing either.
        twilio_signature_valid(secrets.token_urlsafe(24), url, params, signature)
        logger.warning("twilio webhook refused: no enabled account %r", account_sid[:40])
        return None
    if not twilio_signature_valid(twilio_reveal_auth_token(account), url, params, signature):
        logger.warning(
            "twilio webhook refused: bad or missing signature for %s (signed URL %s)",
            account.account_sid,
            url,
        )
        return None
    return account


def _twiml(body: str) -> HttpResponse:
    return HttpResponse(body, content_type=TWIML_CONTENT_TYPE)


def _reject(call_sid: str, why: str) -> HttpResponse:
    logger.info("twilio call %s rejected: %s", call_sid[:40], why)
    return _twiml(REJECT_TWIML)


@csrf_exempt
@require_POST
def twilio_voice(request: HttpRequest) -> HttpResponse:
    """Twilio's Voice webhook for a number: stream the call to us, or reject it."""
    account = _account(request)
    if account is None:
        return HttpResponseForbidden("Forbidden", content_type="text/plain")
    call_sid = request.POST.get("CallSid", "")
    caller = request.POST.get("From", "")
    dialled = request.POST.get("To", "")
    if not call_sid:
        return _reject(call_sid, "no CallSid")
    number = number_for(dialled, tenant_id=account.tenant_id)
    if number is None:
        return _reject(call_sid, f"no enabled number {dialled[:40]!r} in the account's tenant")
    try:
        call_plan(number, caller=caller, call_sid=call_sid)
    except Refusal as refusal:
        return _reject(call_sid, f"{number.number}: {refusal.message}")
    token = stream_token_create(
        tenant_id=number.tenant_id,
        number_id=number.pk,
        caller=caller,
        call_sid=call_sid,
        account_sid=account.account_sid,
    )
    logger.info("twilio call %s to %s: streaming", call_sid[:40], number.number)
    return _twiml(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Connect><Stream url={quoteattr(_stream_url(request))}>"
        f'<Parameter name="token" value={quoteattr(token)}/>'
        "</Stream></Connect></Response>"
    )
