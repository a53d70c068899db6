"""``TwilioStreamConsumer`` (``/ws/twilio/stream/``): a phone call's Twilio media stream.

Transport only (CONVENTIONS): Twilio connects, we accept and wait (up to
:data:`START_TIMEOUT_S`) for its ``connected`` and ``start`` messages; the ``start``
carries the signed token of the TwiML webhook (``telephony.twilio``) in its custom
parameters. The token must be valid, unexpired, for this very call (its ``callSid`` and
``accountSid``) and not used before; its number must still take calls and its room, agent
and the caller's binding must allow the call. Then the session starts like a browser's
(``voice.consumers.SessionHostConsumer``): the caller's number is the participant, the
consumer's channel is the session's host channel (so the API's end, reconfigure and tool
results reach it), and the frames go synchronously to the transport
(``voice.transports.twilio``). A refusal closes the socket — Twilio then hangs up, as the
TwiML has nothing after ``<Connect>`` — and is logged with its reason. ``stop``, or the
socket closing, ends the session as ``client_hangup``; ending the session closes the
socket, which ends the call.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async

from roomvoice.lib.logging import log_context
from telephony.twilio import (
    InvalidStreamToken,
    StreamClaims,
    call_plan,
    stream_claim,
    stream_token_verify,
)
from voice.admission import Refusal, VoicePlan
from voice.consumers import (
    CLOSE_BAD_REQUEST,
    CLOSE_INTERNAL,
    ConsumerSender,
    SessionHostConsumer,
)
from voice.models import TransportKind
from voice.protocol import CLOSE_NORMAL, CLOSE_UNAUTHENTICATED
from voice.session import LiveSession
from voice.transports.twilio import (
    StreamEnded,
    StreamStart,
    TwilioRealtimeTransport,
    TwilioStream,
)

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0  # Twilio sends "connected" and "start" at once
CLOSE_START_TIMEOUT = 4408


def _plan_for(claims: StreamClaims, start: StreamStart) -> VoicePlan:
    number = stream_claim(claims, call_sid=start.call_sid, account_sid=start.account_sid)
    return call_plan(
        number,
        caller=claims.caller,
        call_sid=start.call_sid,
        metadata={
            "call_sid": start.call_sid,
            "stream_sid": start.stream_sid,
            "account_sid": start.account_sid,
            "from": claims.caller,
            "to": number.number,
        },
    )


class TwilioStreamConsumer(SessionHostConsumer):
    stream: TwilioStream | None = None
    transport: TwilioRealtimeTransport | None = None

    async def connect(self) -> None:
        await self.accept()
        self.transport = TwilioRealtimeTransport()
        self.stream = self.transport.stream(ConsumerSender(self))
        self._spawn(self._run_session(), name=self.START_TASK)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Twilio's frames go straight to the stream (no database on that path; see
        ``VoiceConsumer.dispatch``); everything else keeps Channels' dispatch."""
        if message["type"] == "websocket.receive" and self.stream is not None:
            self.stream.receive(text=message.get("text"), data=message.get("bytes"))
            return
        await super().dispatch(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.stream is not None:
            self.stream.receive(text=text_data, data=bytes_data)

    def hosted_session(self) -> LiveSession | None:
        return self.stream.session if self.stream is not None else None

    async def connection_gone(self) -> None:
        if self.stream is not None and self.transport is not None:
            await self.transport.connection_lost(self.stream)

    async def _refuse(self, why: str, code: int) -> None:
        logger.info("twilio stream refused: %s", why)
        if self.stream is not None:
            await self.stream.close(code)

    async def _run_session(self) -> None:
        stream, transport = self.stream, self.transport
        assert stream is not None and transport is not None
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                start = await stream.wait_started()
        except TimeoutError:
            await self._refuse(f"no start within {START_TIMEOUT_S:g} s", CLOSE_START_TIMEOUT)
            return
        except StreamEnded as ended:
            # A stop (the caller hung up first) or a start we cannot use.
            await self._refuse(str(ended), CLOSE_NORMAL if stream.stopped else CLOSE_BAD_REQUEST)
            return
        with log_context(call=start.call_sid):
            try:
                claims = stream_token_verify(start.custom_parameters.get("token", ""))
                plan = await database_sync_to_async(_plan_for)(claims, start)
            except InvalidStreamToken as error:
                await self._refuse(str(error), CLOSE_UNAUTHENTICATED)
                return
            except Refusal as refusal:
                await self._refuse(f"{refusal.code}: {refusal.message}", refusal.close_code)
                return
            except Exception:
                logger.exception("twilio stream could not be admitted")
                await self._refuse("a server fault", CLOSE_INTERNAL)
                return
            if stream.stopped or stream.closed:
                logger.info("twilio call %s ended before its session started", start.call_sid)
                return
            admission = plan.admission
            with log_context(room=str(admission.room.pk), participant=admission.participant_id):

                async def unavailable() -> None:
                    await stream.close(CLOSE_INTERNAL)

                await self.host_session(
                    plan,
                    transport=transport,
                    connection=stream,
                    transport_kind=TransportKind.TWILIO.value,
                    unavailable=unavailable,
                )
