"""Twilio's side of a call, scripted from its documentation: the Voice webhook's form and
signature, and a Media Streams client sending the documented messages
(https://www.twilio.com/docs/voice/media-streams/websocket-messages)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from channels.testing import WebsocketCommunicator

from rooms.models import Room, Tenant
from roomvoice.asgi import application
from telephony.models import PhoneNumber, TwilioAccount
from telephony.services import twilio_put_auth_token
from voice.models import Agent

STREAM_PATH = "/ws/twilio/stream/"
ACCOUNT_A = "AC" + "a1" * 16
ACCOUNT_B = "AC" + "b2" * 16
AUTH_TOKEN_A = "auth-token-of-tenant-a-0123456789"
AUTH_TOKEN_B = "auth-token-of-tenant-b-0123456789"
CALLER = "+15550109999"


def sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    """What Twilio puts in X-Twilio-Signature (its documented algorithm, written out)."""
    data = url + "".join(f"{name}{params[name]}" for name in sorted(params))
    return base64.b64encode(
        hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    ).decode()


def new_call_sid() -> str:
    return "CA" + secrets.token_hex(16)


def call_form(
    *, account_sid: str, to: str, caller: str = CALLER, call_sid: str = ""
) -> dict[str, str]:
    """The form Twilio posts to a number's Voice webhook for an incoming call."""
    return {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid or new_call_sid(),
        "CallStatus": "ringing",
        "Called": to,
        "Caller": caller,
        "Direction": "inbound",
        "From": caller,
        "To": to,
    }


def twilio_account(tenant: Tenant, account_sid: str, auth_token: str) -> TwilioAccount:
    account = TwilioAccount(tenant=tenant, account_sid=account_sid)
    twilio_put_auth_token(account, auth_token)
    account.full_clean()
    account.save()
    return account


def phone_number(
    tenant: Tenant, room: Room, number: str, *, agent: Agent | None = None, enabled: bool = True
) -> PhoneNumber:
    row = PhoneNumber(tenant=tenant, room=room, number=number, agent=agent, enabled=enabled)
    row.full_clean()
    row.save()
    return row


@dataclass
class Outbound:
    """What we sent Twilio, in order."""

    messages: list[dict[str, Any]]

    def events(self) -> list[str]:
        return [message["event"] for message in self.messages]


class ScriptedTwilio:
    """One Media Streams connection, as Twilio makes it: no Origin header, no cookie."""

    def __init__(
        self,
        *,
        token: str | None,
        call_sid: str,
        account_sid: str = ACCOUNT_A,
        stream_sid: str = "",
    ) -> None:
        self.token = token
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.stream_sid = stream_sid or "MZ" + secrets.token_hex(16)
        self.communicator = WebsocketCommunicator(
            application, STREAM_PATH, headers=[(b"host", b"localhost")]
        )
        self.received: list[dict[str, Any]] = []
        self._sequence = 0
        self._chunk = 0

    async def connect(self) -> bool:
        connected, _ = await self.communicator.connect(timeout=10)
        return bool(connected)

    async def send(self, message: dict[str, Any]) -> None:
        await self.communicator.send_to(text_data=json.dumps(message))

    def _next(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    async def connected(self) -> None:
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start_message(self, **overrides: Any) -> dict[str, Any]:
        start: dict[str, Any] = {
            "accountSid": self.account_sid,
            "streamSid": self.stream_sid,
            "callSid": self.call_sid,
            "tracks": ["inbound"],
            "customParameters": {} if self.token is None else {"token": self.token},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        start.update(overrides)
        return {
            "event": "start",
            "sequenceNumber": self._next(),
            "start": start,
            "streamSid": self.stream_sid,
        }

    async def start(self, **overrides: Any) -> None:
        await self.send(self.start_message(**overrides))

    async def open(self) -> None:
        """Connect, then ``connected`` and ``start``: how every stream begins."""
        assert await self.connect()
        await self.connected()
        await self.start()

    async def media(self, ulaw: bytes) -> None:
        self._chunk += 1
        await self.send(
            {
                "event": "media",
                "sequenceNumber": self._next(),
                "media": {
                    "track": "inbound",
                    "chunk": str(self._chunk),
                    "timestamp": str(self._chunk * 20),
                    "payload": base64.b64encode(ulaw).decode(),
                },
                "streamSid": self.stream_sid,
            }
        )

    async def mark(self, name: str) -> None:
        await self.send(
            {
                "event": "mark",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    async def dtmf(self, digit: str) -> None:
        await self.send(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": self._next(),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    async def stop(self) -> None:
        await self.send(
            {
                "event": "stop",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            }
        )

    async def next_message(self, *, within: float = 10.0) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(await self.communicator.receive_from(timeout=within))
        self.received.append(message)
        return message

    async def until(self, predicate: Any, *, within: float = 10.0) -> Outbound:
        """Messages from the server up to and including the first that ``predicate`` likes."""
        taken: list[dict[str, Any]] = []
        async with asyncio.timeout(within):
            while True:
                message = await self.next_message(within=within)
                taken.append(message)
                if predicate(message):
                    return Outbound(taken)

    async def until_event(self, event: str, *, within: float = 10.0) -> Outbound:
        return await self.until(lambda message: message["event"] == event, within=within)

    async def closed(self, *, within: float = 10.0) -> int:
        """The close code the server ends the stream with (messages before it are kept)."""
        async with asyncio.timeout(within):
            while True:
                output = await self.communicator.receive_output(timeout=within)
                if output["type"] == "websocket.close":
                    return int(output.get("code", 1000))
                if output.get("text") is not None:
                    self.received.append(json.loads(output["text"]))

    async def hang_up(self) -> None:
        await self.communicator.disconnect()
