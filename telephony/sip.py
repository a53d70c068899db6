"""The SIP server behind ``manage.py runsip``: answers phone calls and runs a voice session
for each.

Signalling is aiosipua's (RFC 3261 parsing, transactions, dialogs, 2xx retransmission,
CANCEL, session timers), over UDP and TCP; media is aiortp's, wrapped by
``voice.transports.sip``. What this module adds is the policy and the lifecycle:

INVITE → 100 Trying (aiosipua) → capacity (486) → number, source, digest auth, room and agent
(``telephony.admission``: 404/403/401/503) → SDP offer/answer (488 without a common codec)
→ 180 Ringing → the voice session starts (the provider connects: 503 if it cannot) → 200 OK
with our SDP. Then, until one side hangs up:

- the caller's BYE (or CANCEL before the answer) ends the session (``client_hangup``);
- the session ending for any other reason (the API, an operator, a revoked binding, the
  provider) sends BYE;
- no RTP from the caller for ``rtp_timeout_s`` ends it (``timeout``), and so does an
  expired session timer (RFC 4028);
- a re-INVITE with ``sendonly``/``inactive`` holds the call (nothing sent, the caller's
  audio not passed on, the inactivity clock stopped), ``sendrecv`` resumes it;
- DTMF (RFC 4733) goes to the engine: the room's timeline and ``ON_DTMF`` hooks.

Each call is its own session host on the channel layer (DESIGN §6): an operator's end or
reconfigure request and Celery tool results reach it like they reach a WebSocket consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

from aiosipua import (
    IncomingCall,
    SdpNegotiationError,
    SipRequest,
    SipUAC,
    SipUAS,
    TcpSipTransport,
    UdpSipTransport,
    negotiate_sdp,
    parse_uri,
)
from aiosipua.rtp_bridge import CallSession
from aiosipua.transport import _UdpProtocol
from channels.db import database_sync_to_async
from django.db import close_old_connections

from roomvoice.lib.logging import log_context
from telephony.admission import CallRefusal, PhoneAdmission, admit_sip_call
from telephony.digest import DigestAuthority
from telephony.registration import RegistrationTarget, TrunkRegistration
from voice.agents import channel_for_agent
from voice.channels import RealtimeVoiceChannel
from voice.control import RoomControlListener
from voice.django_store import DjangoStore
from voice.host import serve_host_channel
from voice.models import EndReason, TransportKind
from voice.session import LiveSession
from voice.transports.sip import SipMedia, SIPRealtimeTransport

logger = logging.getLogger(__name__)

ANY_ADDRESS = "0.0.0.0"  # noqa: S104 -- compared with, and the documented default bind
CODEC_PAYLOAD_TYPES = {"PCMU": 0, "PCMA": 8, "G722": 9}
USER_AGENT = "roomvoice"
SUBSCRIBE_TIMEOUT_S = 10.0
WATCHDOG_PERIOD_S = 0.25
RTP_BIND_ATTEMPTS = 5
UNREGISTER_GRACE_S = 0.2
HOLD_DIRECTIONS = frozenset({"sendonly", "inactive"})


@dataclass(frozen=True, slots=True)
class SipSettings:
    host: str = ANY_ADDRESS
    port: int = 5060
    advertised_ip: str = ""
    rtp_ports: tuple[int, int] = (20000, 20999)
    max_calls: int = 50
    codecs: tuple[int, ...] = (9, 0, 8)
    rtp_timeout_s: float = 30.0
    session_expires_s: int = 1800
    realm: str = "roomvoice"
    allowed_sources: tuple[str, ...] = ("127.0.0.0/8", "::1")
    tcp: bool = True
    auth_key: bytes = b""

    @property
    def media_ip(self) -> str:
        """Where RTP sockets bind."""
        return self.host

    @property
    def sdp_ip(self) -> str:
        """The address callers send RTP to (and SIP requests, in Contact)."""
        if self.advertised_ip:
            return self.advertised_ip
        if self.host not in (ANY_ADDRESS, "::", ""):
            return self.host
        return _primary_ip()


class _QuietUdpProtocol(_UdpProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._owner._udp_transport = transport  # type: ignore[assignment]


class _UdpTransport(UdpSipTransport):
    """aiosipua's UDP transport, but its protocol's ``connection_made`` asserts that the
    transport is an ``asyncio.DatagramTransport``, which CPython 3.11's selector datagram
    transport is not (its class does not derive from it until 3.12): the assertion is
    logged as an error at every start though the transport works. This protocol skips it."""

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _QuietUdpProtocol(self), local_addr=self.local_addr
        )
        self._udp_transport = transport


def _primary_ip() -> str:
    """This host's address on its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere real
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def parse_codecs(names: list[str] | tuple[str, ...]) -> tuple[int, ...]:
    types: list[int] = []
    for name in names:
        key = name.strip().upper().replace(".", "")
        if key not in CODEC_PAYLOAD_TYPES:
            raise ValueError(f"unknown codec {name!r}: use {', '.join(CODEC_PAYLOAD_TYPES)}")
        types.append(CODEC_PAYLOAD_TYPES[key])
    if not types:
        raise ValueError("at least one codec is needed")
    return tuple(dict.fromkeys(types))


def parse_port_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    first, last = int(low), int(high or low)
    if not 1024 <= first < last <= 65535 or last - first < 3:
        raise ValueError(f"{text!r} is not a port range such as 20000-20999")
    return first, last


class RtpPorts:
    """Even RTP ports (RTCP on the next odd one) from a range, never two calls on one."""

    def __init__(self, first: int, last: int) -> None:
        self._free = list(range(first + first % 2, last, 2))
        self._used: set[int] = set()

    def take(self) -> int:
        for index, port in enumerate(self._free):
            if port not in self._used:
                self._free.append(self._free.pop(index))  # round robin: fresh ports first
                self._used.add(port)
                return port
        raise RuntimeError("no free RTP port in the range")

    def give_back(self, port: int) -> None:
        self._used.discard(port)

    @property
    def in_use(self) -> int:
        return len(self._used)


@dataclass(eq=False)
class PhoneCall:
    """One answered (or answering) call and its voice session."""

    server: SipServer
    uas: SipUAS
    invite: IncomingCall
    admission: PhoneAdmission | None = None
    media: SipMedia | None = None
    transport: SIPRealtimeTransport | None = None
    voice: RealtimeVoiceChannel | None = None
    session: LiveSession | None = None
    answered: bool = False
    over: bool = False
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def call_id(self) -> str:
        return self.invite.call_id

    def spawn(self, coroutine: Any, name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coroutine)
        task.set_name(f"sip-{name}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def hangup(self, reason: str) -> None:
        """The session ended on our side: BYE after the answer, a final error before it."""
        if self.over:
            return
        self.over = True
        if self.answered:
            self.invite.hangup()
            logger.info("call %s: BYE sent (%s)", self.call_id, reason)
        else:
            self.server.refuse(self.invite, CallRefusal(503, "Service Unavailable"))


class SipServer:
    def __init__(self, settings: SipSettings, *, layer: Any = None) -> None:
        self.settings = settings
        self.layer = layer
        self.calls: dict[str, PhoneCall] = {}
        self.ports = RtpPorts(*settings.rtp_ports)
        self.authority = DigestAuthority(realm=settings.realm, key=settings.auth_key)
        self._transports: list[Any] = []
        self._uas: list[SipUAS] = []
        self.registrations: list[TrunkRegistration] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        address = (self.settings.host, self.settings.port)
        advertised = (self.settings.sdp_ip, self.settings.port)
        kinds: list[type[Any]] = [_UdpTransport]
        if self.settings.tcp:
            kinds.append(TcpSipTransport)
        for kind in kinds:
            transport = kind(local_addr=address)
            # Over UDP a UAC shares the socket: it sends REGISTERs (and gets their answers).
            uac = SipUAC(transport) if kind is _UdpTransport else None
            uas = SipUAS(
                transport,
                user_agent=USER_AGENT,
                uac=uac,
                advertised_addr=advertised,
                session_expires=self.settings.session_expires_s,
            )
            uas.on_invite = self._invite_handler(uas)
            uas.on_reinvite = self._on_reinvite
            uas.on_bye = lambda call, request: self._far_end_left(call.call_id, "BYE")
            uas.on_cancel = self._on_cancel
            uas.on_ack_timeout = lambda call: self._far_end_left(call.call_id, "no ACK")
            uas.on_session_expired = lambda call: self._expired(call.call_id)
            await uas.start()  # binds the transport
            self._transports.append(transport)
            self._uas.append(uas)
            if uac is not None:
                await self._register(uac)
        logger.info(
            "SIP listening on %s:%d (%s), RTP %d-%d, media address %s",
            *address,
            "UDP+TCP" if self.settings.tcp else "UDP",
            *self.settings.rtp_ports,
            self.settings.sdp_ip,
        )

    async def _register(self, uac: SipUAC) -> None:
        """Register with the registrar of every enabled trunk that names one."""
        targets = await database_sync_to_async(_registration_targets)()
        for target in targets:
            registration = TrunkRegistration(target=target, uac=uac, user_agent=USER_AGENT)
            self.registrations.append(registration)
            await registration.start()

    async def stop(self) -> None:
        """Hang up every call (``server_shutdown``), unregister, and stop listening."""
        await asyncio.gather(
            *(self.end_call(call, EndReason.SERVER_SHUTDOWN) for call in list(self.calls.values())),
            return_exceptions=True,
        )
        for registration in self.registrations:
            await registration.stop()
        if self.registrations:
            await asyncio.sleep(UNREGISTER_GRACE_S)  # the un-REGISTERs leave before the socket
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for uas in self._uas:
            await uas.stop()
        self._uas.clear()
        self._transports.clear()

    def _invite_handler(self, uas: SipUAS) -> Any:
        def on_invite(call: IncomingCall) -> None:
            self._spawn(self._answer(uas, call))

        return on_invite

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("SIP task failed", exc_info=task.exception())

    # --- answering -----------------------------------------------------------------------------

    def refuse(self, invite: IncomingCall, refusal: CallRefusal) -> None:
        """A final response to the INVITE (the caller ACKs it; aiosipua absorbs the ACK)."""
        response = invite.dialog.create_response(invite.invite, refusal.status, refusal.reason)
        response.headers.set_single("User-Agent", USER_AGENT)
        for name, value in refusal.headers.items():
            response.headers.set_single(name, value)
        try:
            invite.transport.send_reply(response)  # type: ignore[union-attr]
        except Exception:
            logger.warning("could not send %d to %s", refusal.status, invite.source_addr)
        invite.dialog.terminate()
        level = logging.DEBUG if refusal.status == 401 else logging.INFO
        logger.log(
            level,
            "call %s from %s refused: %d %s (%s)",
            invite.call_id,
            invite.source_addr[0],
            refusal.status,
            refusal.reason,
            refusal.detail or "-",
        )

    async def _answer(self, uas: SipUAS, invite: IncomingCall) -> None:
        if len(self.calls) >= self.settings.max_calls:
            self.refuse(invite, CallRefusal(486, "Busy Here", detail="at capacity"))
            return
        call = PhoneCall(server=self, uas=uas, invite=invite)
        self.calls[invite.call_id] = call
        try:
            with log_context(call=invite.call_id):
                await self._run_call(call)
        finally:
            self.calls.pop(invite.call_id, None)
            call.done.set()

    async def _run_call(self, call: PhoneCall) -> None:
        invite = call.invite
        caller, dialled = _participant(invite), _dialled(invite.invite)
        try:
            call.admission = await database_sync_to_async(_admit)(
                dialled=dialled,
                caller=caller,
                source_ip=invite.source_addr[0],
                authorization=invite.invite.get_header("authorization"),
                authority=self.authority,
                default_sources=self.settings.allowed_sources,
                metadata={"call_id": invite.call_id, "to": dialled, "from": caller},
            )
        except CallRefusal as refusal:
            self.refuse(invite, refusal)
            return
        except Exception:
            logger.exception("call %s could not be admitted", invite.call_id)
            self.refuse(invite, CallRefusal(500, "Server Internal Error"))
            return
        for _attempt in range(RTP_BIND_ATTEMPTS):
            try:
                call.media = self._negotiate(call)
            except CallRefusal as refusal:
                self.refuse(invite, refusal)
                return
            try:
                await call.media.start()
                break
            except OSError as error:  # another program took the port: try the next one
                self.ports.give_back(call.media.local_port)
                logger.warning("RTP port %d is taken: %s", call.media.local_port, error)
                await call.media.close()
                call.media = None
        if call.media is None:
            logger.error("no RTP port could be bound in %d tries", RTP_BIND_ATTEMPTS)
            self.refuse(invite, CallRefusal(503, "Service Unavailable"))
            return
        try:
            if not call.over:
                invite.ringing()
                await self._converse(call)
        finally:
            logger.info("call %s media: %s", invite.call_id, call.media.stats())
            await call.media.close()
            self.ports.give_back(call.media.local_port)

    def _negotiate(self, call: PhoneCall) -> SipMedia:
        offer = call.invite.sdp_offer
        if offer is None or offer.audio is None:
            raise CallRefusal(488, "Not Acceptable Here", detail="no SDP audio offer")
        port = self.ports.take()
        try:
            session = CallSession(
                local_ip=self.settings.media_ip,
                rtp_port=port,
                offer=offer,
                advertised_ip=self.settings.sdp_ip,
                supported_codecs=list(self.settings.codecs),
                symmetric_rtp=True,  # send where the caller's RTP comes from (NAT)
                jitter_capacity=32,
                jitter_prefetch=4,
            )
        except (SdpNegotiationError, ValueError) as error:
            self.ports.give_back(port)
            raise CallRefusal(488, "Not Acceptable Here", detail=str(error)) from None
        if session.chosen_payload_type not in self.settings.codecs:
            self.ports.give_back(port)
            raise CallRefusal(488, "Not Acceptable Here", detail="no common codec")
        return SipMedia(session, hangup=call.hangup)

    async def _converse(self, call: PhoneCall) -> None:
        """Start the session (the provider connects while the caller hears ringing), answer,
        and stay until the call is over."""
        admission, media, invite = call.admission, call.media, call.invite
        assert admission is not None and media is not None
        plan = admission.plan
        room_id = str(plan.admission.room.pk)
        host_name = str(await self.layer.new_channel()) if self.layer is not None else ""
        store = DjangoStore(
            tenant=plan.admission.tenant,
            agent=plan.agent,
            transport=TransportKind.SIP,
            host_channel_name=host_name,
        )
        call.transport = SIPRealtimeTransport()
        call.voice = voice = channel_for_agent(
            plan.config, transport=call.transport, store=store, provider=plan.provider
        )
        try:
            listener = RoomControlListener(voice, room_uuid=room_id, room_id=room_id)
            call.spawn(listener.run(), "control")
            try:
                async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                    await listener.wait_subscribed()
            except TimeoutError:
                logger.error("room control subscription timed out: refusing the call")
                call.over = True
                self.refuse(invite, CallRefusal(503, "Service Unavailable"))
                return

            metadata = {
                "via": "sip",
                **plan.admission.metadata,
                "codec": media.codec_name,
                "sample_rate": media.sample_rate,
                "source": f"{invite.source_addr[0]}:{invite.source_addr[1]}",
            }
            try:
                call.session = await voice.start_session(
                    room_id, plan.admission.participant_id, connection=media, metadata=metadata
                )
            except Exception:
                # The engine recorded the failure; the transport's disconnect answered 503.
                logger.info("call %s: the voice session did not start", call.call_id, exc_info=True)
                return
            if call.over:  # the caller gave up while the provider connected
                await voice.end_session(call.session, reason=EndReason.CLIENT_HANGUP)
                return
            if call.session.is_ended:
                return
            invite.accept(media.call_session.sdp_answer)
            call.answered = True
            logger.info(
                "call %s answered: %s → %s (%s, session %s)",
                call.call_id,
                plan.admission.participant_id,
                admission.number.number,
                media.codec_name,
                call.session.id,
            )
            if self.layer is not None and host_name:
                session = call.session

                async def on_end(reason: str) -> None:
                    await voice.end_session(session, reason=reason)

                call.spawn(
                    serve_host_channel(self.layer, host_name, voice, session, on_end=on_end),
                    "host",
                )
            await self._watch(call)
        finally:
            if call.session is not None:
                # Ends it if it is still live. If another task is ending it (the caller's BYE,
                # an operator), this waits until that end is complete: cancelling that task
                # halfway would leave the session unrecorded.
                await voice.end_session(call.session, reason=EndReason.INTERNAL_ERROR)
            for task in list(call.tasks):
                task.cancel()
            await asyncio.gather(*call.tasks, return_exceptions=True)
            await voice.close()
            await database_sync_to_async(close_old_connections)()

    async def _watch(self, call: PhoneCall) -> None:
        """Until the session ends: end it when the caller's RTP stops (not while on hold)."""
        session, media, voice = call.session, call.media, call.voice
        assert session is not None and media is not None and voice is not None
        timeout = self.settings.rtp_timeout_s
        while not session.is_ended:
            if not media.on_hold and media.silent_for() > timeout:
                await voice.end_session(
                    session,
                    reason=EndReason.TIMEOUT,
                    detail=f"no RTP from the caller for {timeout:g} s",
                )
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WATCHDOG_PERIOD_S):
                    await call.done.wait()

    async def end_call(self, call: PhoneCall, reason: str) -> None:
        if call.voice is not None and call.session is not None:
            await call.voice.end_session(call.session, reason=reason)
        elif not call.answered and not call.over:
            call.over = True
            self.refuse(call.invite, CallRefusal(503, "Service Unavailable"))
        await call.done.wait()

    # --- the far end ---------------------------------------------------------------------------

    def _far_end_left(self, call_id: str, why: str) -> None:
        call = self.calls.get(call_id)
        if call is None or call.over:
            return
        call.over = True
        logger.info("call %s: the caller hung up (%s)", call_id, why)
        if call.transport is not None and call.session is not None:
            call.spawn(call.transport.caller_hung_up(call.session), "hangup")

    def _on_cancel(self, request: SipRequest, addr: tuple[str, int]) -> None:
        # aiosipua answered the CANCEL (200) and the INVITE (487); the session (if it was
        # starting) must stop.
        call = self.calls.get(request.call_id or "")
        if call is None:
            return
        call.over = True
        if call.voice is not None and call.session is not None:
            call.spawn(
                call.voice.end_session(call.session, reason=EndReason.CLIENT_HANGUP), "cancel"
            )

    def _expired(self, call_id: str) -> None:
        """The RFC 4028 session timer ran out (aiosipua sent BYE)."""
        call = self.calls.get(call_id)
        if call is None or call.over:
            return
        call.over = True
        if call.voice is not None and call.session is not None:
            call.spawn(
                call.voice.end_session(
                    call.session, reason=EndReason.TIMEOUT, detail="SIP session timer expired"
                ),
                "expired",
            )

    def _on_reinvite(self, invite: IncomingCall) -> None:
        """Hold, unhold or a new media address: answer with our SDP for the new offer."""
        call = self.calls.get(invite.call_id)
        offer = invite.sdp_offer
        if call is None or call.media is None:
            return
        if offer is None or offer.audio is None:
            invite.accept(call.media.call_session.sdp_answer)  # a refresh without an offer
            return
        try:
            answer, _ = negotiate_sdp(
                offer,
                local_ip=self.settings.sdp_ip,
                rtp_port=call.media.local_port,
                supported_codecs=[call.media.payload_type],  # the codec cannot change mid-call
            )
        except (SdpNegotiationError, ValueError) as error:
            response = invite.dialog.create_response(invite.invite, 488, "Not Acceptable Here")
            invite.transport.send_reply(response)  # type: ignore[union-attr]
            logger.info("call %s: re-INVITE refused (%s)", invite.call_id, error)
            return
        held = offer.audio.direction in HOLD_DIRECTIONS or _zero_address(offer)
        if held != call.media.on_hold:
            logger.info("call %s %s", invite.call_id, "on hold" if held else "resumed")
        call.media.hold(held)
        address = offer.rtp_address
        if address is not None and not _zero_address(offer):
            call.media.update_remote(address)
        invite.accept(answer)


def _registration_targets() -> list[RegistrationTarget]:
    from telephony.models import SipTrunk
    from telephony.services import trunk_reveal_password

    try:
        return [
            RegistrationTarget(
                trunk=trunk.name,
                username=trunk.username,
                password=trunk_reveal_password(trunk),
                registrar=trunk.registrar,
                expires=trunk.register_expires,
            )
            for trunk in SipTrunk.objects.filter(enabled=True, tenant__is_active=True)
            .exclude(registrar="")
            .exclude(encrypted_password="")
        ]
    finally:
        close_old_connections()


def _admit(**arguments: Any) -> PhoneAdmission:
    try:
        return admit_sip_call(**arguments)
    finally:
        close_old_connections()


def _zero_address(offer: Any) -> bool:
    """RFC 2543 hold: c=0.0.0.0."""
    address = offer.rtp_address
    return address is not None and address[0] == ANY_ADDRESS


def _dialled(request: SipRequest) -> str:
    """The number called: the request URI's user part (else the To header's)."""
    try:
        user = parse_uri(request.uri).user
    except ValueError:
        user = None
    if not user and request.to_addr is not None:
        user = request.to_addr.uri.user
    return user or ""


def _participant(invite: IncomingCall) -> str:
    """The caller as the room knows them: ``sip:user@host`` (or ``tel:+1555…``)."""
    address = invite.invite.from_addr
    if address is None:
        return "sip:anonymous"
    uri = address.uri
    if uri.scheme == "tel" or not uri.host:
        return f"tel:{uri.user or uri.host}"
    return f"{uri.scheme}:{uri.user}@{uri.host}" if uri.user else f"{uri.scheme}:{uri.host}"
