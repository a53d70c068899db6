"""Whether we answer a phone call, and with which room and agent. Synchronous ORM reads: call
them off the event loop.

The rules, in the order a SIP INVITE meets them (each with the status the caller gets):

1. the dialled number is one of ours and enabled, its tenant active → else 404;
2. the call comes from an allowed source: the number's trunk's addresses, or, for a number
   without a trunk, ``ROOMVOICE_SIP_ALLOWED_SOURCES`` → else 403;
3. a trunk with credentials wants SIP digest authentication → 401 challenge, 403 when wrong;
4. the voice rules every entry point shares (``voice.admission.plan_voice``: the room is
   open, the caller's access is not revoked, the agent's provider can be built) → 403, 404
   or 503.

Capacity (486) and codecs (488) are the SIP server's to check: they are not about the
database.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from telephony.digest import DigestAuthority, Verdict
from telephony.models import PhoneNumber, parse_sources
from telephony.selectors import number_for
from telephony.services import trunk_reveal_password
from voice.admission import Admission, Refusal, VoicePlan, plan_voice

logger = logging.getLogger(__name__)

MAX_PARTICIPANT_LENGTH = 128


@dataclass(frozen=True, slots=True)
class CallRefusal(Exception):
    """A SIP final response refusing the call: status, reason phrase, extra headers."""

    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    detail: str = ""  # for the log, never sent


@dataclass(frozen=True, slots=True)
class PhoneAdmission:
    number: PhoneNumber
    plan: VoicePlan


def plan_for_number(
    number: PhoneNumber, *, participant_id: str, via: str, metadata: dict[str, Any]
) -> VoicePlan:
    """The voice plan of a call to ``number`` (shared by SIP and Twilio)."""
    admission = Admission(
        tenant=number.tenant,
        room=number.room,
        participant_id=participant_id[:MAX_PARTICIPANT_LENGTH],
        via=via,
        metadata={"number": number.number, **metadata},
    )
    return plan_voice(admission, agent_slug=number.agent.slug if number.agent else None)


def source_allowed(source_ip: str, networks: Iterable[Any]) -> bool:
    try:
        address = ipaddress.ip_address(source_ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:192.0.2.1 from a dual-stack socket
    return any(address.version == net.version and address in net for net in networks)


def admit_sip_call(
    *,
    dialled: str,
    caller: str,
    source_ip: str,
    authorization: str | None,
    authority: DigestAuthority,
    default_sources: Iterable[str],
    metadata: dict[str, Any],
) -> PhoneAdmission:
    number = number_for(dialled)
    if number is None:
        raise CallRefusal(404, "Not Found", detail=f"no number {dialled!r}")
    trunk = number.trunk
    if trunk is not None and not trunk.enabled:
        raise CallRefusal(403, "Forbidden", detail=f"trunk {trunk.name} is disabled")
    if trunk is not None:
        networks = parse_sources(trunk.allowed_sources)
        sources_ok = not networks or source_allowed(source_ip, networks)
    else:
        networks = parse_sources("\n".join(default_sources))
        sources_ok = source_allowed(source_ip, networks)
    if not sources_ok:
        raise CallRefusal(403, "Forbidden", detail=f"source {source_ip} not allowed")
    if trunk is not None and trunk.requires_auth:
        verdict = authority.check(
            authorization,
            method="INVITE",
            username=trunk.username,
            password=trunk_reveal_password(trunk),
        )
        if verdict in (Verdict.MISSING, Verdict.STALE):
            raise CallRefusal(
                401,
                "Unauthorized",
                headers={"WWW-Authenticate": authority.challenge(stale=verdict == Verdict.STALE)},
                detail="challenged",
            )
        if verdict == Verdict.WRONG:
            raise CallRefusal(403, "Forbidden", detail="wrong digest credentials")
    try:
        plan = plan_for_number(number, participant_id=caller, via="sip", metadata=metadata)
    except Refusal as refusal:
        status, reason = {
            "forbidden": (403, "Forbidden"),
            "not_found": (404, "Not Found"),
            "unavailable": (503, "Service Unavailable"),
        }.get(refusal.code, (480, "Temporarily Unavailable"))
        raise CallRefusal(status, reason, detail=refusal.message) from None
    return PhoneAdmission(number=number, plan=plan)
