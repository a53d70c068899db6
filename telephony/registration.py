"""Registering ``runsip`` with a carrier's registrar (trunks that send calls only to a
registered contact). aiosipua's :class:`~aiosipua.Registration` does the REGISTER
transaction, the digest retry (401/407), 423 Min-Expires and the refresh before expiry;
this module keeps one per trunk that names a registrar, and retries a failed one (a refused
password, an unreachable registrar) every ``RETRY_S`` seconds, with the reason logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field

from aiosipua import Registration, SipDigestAuth, SipUAC

logger = logging.getLogger(__name__)

RETRY_S = 60.0
RESEND_S = 2.0
RESENDS = 4
DEFAULT_PORT = 5060


@dataclass(frozen=True, slots=True)
class RegistrationTarget:
    """One trunk's registration: who we are (``username`` at the registrar's domain), where
    to register, with what password, and for how long."""

    trunk: str
    username: str
    password: str
    registrar: str  # host or host:port
    expires: int = 300

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.registrar.rpartition(":")
        if not host or not port.isdigit():
            return self.registrar, DEFAULT_PORT
        return host, int(port)

    @property
    def aor(self) -> str:
        return f"sip:{self.username}@{self.host_port[0]}"


@dataclass(eq=False)
class TrunkRegistration:
    target: RegistrationTarget
    uac: SipUAC
    user_agent: str
    registration: Registration | None = None
    registered: asyncio.Event = field(default_factory=asyncio.Event)
    failed: asyncio.Event = field(default_factory=asyncio.Event)  # the last attempt failed
    granted_expires: int = 0
    last_failure: str = ""
    _retry: asyncio.Task[None] | None = None
    _answer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        host, port = self.target.host_port
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM
            )
            address = (str(infos[0][4][0]), int(infos[0][4][1]))
        except OSError as error:
            self._failed(f"cannot resolve {host}: {error}")
            return
        self.registration = Registration(
            self.uac,
            self.target.aor,
            address,
            expires=self.target.expires,
            auth=SipDigestAuth(self.target.username, self.target.password),
            user_agent=self.user_agent,
        )
        self.registration.on_registered = self._on_registered
        self.registration.on_failed = lambda reg, status, reason: self._failed(f"{status} {reason}")
        self.registration.on_expired = lambda reg: self._failed("the registration expired")
        self.failed.clear()
        self._answer = asyncio.get_running_loop().create_task(self._until_answered())

    async def _until_answered(self) -> None:
        """aiosipua sends one REGISTER and waits for ever: over UDP a lost request (or a
        registrar that is down) would leave the trunk silently unregistered. Resent every
        ``RESEND_S`` a few times, then a failure (retried later)."""
        assert self.registration is not None
        for _ in range(RESENDS):
            self.registration.register()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESEND_S):
                    await _first(self.registered, self.failed)
            if self.registered.is_set() or self.failed.is_set():
                return
        self._failed(f"no answer from the registrar in {RESENDS * RESEND_S:g} s")

    def _on_registered(self, registration: Registration) -> None:
        self.granted_expires = int(getattr(registration, "granted_expires", 0) or 0)
        self.last_failure = ""
        self.failed.clear()
        if not self.registered.is_set():
            logger.info(
                "trunk %s registered at %s as %s for %d s",
                self.target.trunk,
                self.target.registrar,
                self.target.aor,
                self.granted_expires,
            )
        self.registered.set()

    def _failed(self, reason: str) -> None:
        self.registered.clear()
        self.last_failure = reason
        self.failed.set()
        logger.warning(
            "trunk %s: registration at %s failed (%s); retrying in %g s",
            self.target.trunk,
            self.target.registrar,
            reason,
            RETRY_S,
        )
        if self._retry is None or self._retry.done():
            self._retry = asyncio.get_running_loop().create_task(self._again())

    async def _again(self) -> None:
        await asyncio.sleep(RETRY_S)
        await self.start()

    async def stop(self) -> None:
        """Unregister (Expires: 0) and stop refreshing."""
        for task in (self._retry, self._answer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.registration is not None and self.registered.is_set():
            with contextlib.suppress(Exception):
                self.registration.unregister()
        self.registered.clear()


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
