"""``manage.py runsip``: the SIP process (DESIGN §1). Answers calls to the numbers in the
admin (Telephony → Phone numbers) and runs a voice session for each, until SIGINT/SIGTERM,
which hangs every call up (``server_shutdown``) before exiting."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import signal
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from roomvoice.lib.commandline import EXIT_USAGE, plain
from telephony.sip import SipServer, SipSettings, parse_codecs, parse_port_range

logger = logging.getLogger(__name__)


def sip_settings(options: dict[str, Any]) -> SipSettings:
    """Settings from the command line over ``ROOMVOICE_SIP_*``; CommandError when wrong."""
    bind = options.get("bind") or settings.ROOMVOICE_SIP_BIND
    host, _, port_text = bind.rpartition(":")
    try:
        host = host.strip("[]")
        if host:
            ipaddress.ip_address(host)
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ValueError(port)
    except ValueError:
        raise CommandError(
            f"--bind {bind!r}: use ADDRESS:PORT, e.g. 0.0.0.0:5060", returncode=EXIT_USAGE
        ) from None
    advertised = options.get("advertise") or settings.ROOMVOICE_SIP_ADVERTISED_IP
    if advertised:
        try:
            ipaddress.ip_address(advertised)
        except ValueError:
            raise CommandError(
                f"--advertise {advertised!r} is not an IP address", returncode=EXIT_USAGE
            ) from None
    try:
        rtp_ports = parse_port_range(options.get("rtp_ports") or settings.ROOMVOICE_SIP_RTP_PORTS)
        codecs = parse_codecs(settings.ROOMVOICE_SIP_CODECS)
    except ValueError as error:
        raise CommandError(str(error), returncode=EXIT_USAGE) from None
    max_calls = options.get("max_calls")
    if max_calls is None:
        max_calls = settings.ROOMVOICE_SIP_MAX_CALLS
    if max_calls < 1:
        raise CommandError("--max-calls must be at least 1", returncode=EXIT_USAGE)
    return SipSettings(
        host=host or "0.0.0.0",  # noqa: S104 -- the documented default: every interface
        port=port,
        advertised_ip=advertised,
        rtp_ports=rtp_ports,
        max_calls=max_calls,
        codecs=codecs,
        rtp_timeout_s=float(settings.ROOMVOICE_SIP_RTP_TIMEOUT_S),
        session_expires_s=settings.ROOMVOICE_SIP_SESSION_EXPIRES_S,
        realm=settings.ROOMVOICE_SIP_REALM,
        allowed_sources=tuple(settings.ROOMVOICE_SIP_ALLOWED_SOURCES),
        tcp=not options.get("no_tcp", False),
        auth_key=hmac.new(
            settings.SECRET_KEY.encode(), b"roomvoice.sip.digest-nonce", hashlib.sha256
        ).digest(),
    )


class Command(BaseCommand):
    help = (
        "Answer SIP phone calls (UDP and TCP) for the numbers configured in the admin and "
        "bridge each to its room's agent. Settings: ROOMVOICE_SIP_* (README 'Phone calls'); "
        "the options below override them. Stops on Ctrl-C or SIGTERM, hanging up every call."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", metavar="ADDRESS:PORT", help="Where to listen.")
        parser.add_argument(
            "--advertise", metavar="IP", help="The public address for SDP and Contact (NAT)."
        )
        parser.add_argument("--rtp-ports", metavar="FIRST-LAST", help="The RTP port range.")
        parser.add_argument("--max-calls", type=int, help="Calls held at once (then 486).")
        parser.add_argument("--no-tcp", action="store_true", help="Listen on UDP only.")

    def handle(self, *args: Any, **options: Any) -> None:
        config = sip_settings(options)
        try:
            asyncio.run(self._serve(config))
        except KeyboardInterrupt:
            pass

    async def _serve(self, config: SipSettings) -> None:
        server = SipServer(config, layer=get_channel_layer())
        try:
            await server.start()
        except OSError as error:
            raise CommandError(
                f"cannot listen on {config.host}:{config.port}: {error.strerror or error}"
            ) from None
        self.stderr.write(
            f"runsip: listening on {config.host}:{config.port} "
            f"({'UDP+TCP' if config.tcp else 'UDP'}), media address {config.sdp_ip}, "
            f"RTP {config.rtp_ports[0]}-{config.rtp_ports[1]}, at most {config.max_calls} calls",
            style_func=plain,
        )
        self.stderr.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            self.stderr.write("runsip: stopping, hanging up every call", style_func=plain)
            await server.stop()
