"""The SIP transport: a phone call's RTP audio to and from the engine. Pure asyncio.

Signalling (INVITE, BYE, re-INVITE, digest auth) is the SIP server's (``telephony/sip.py``,
run by ``manage.py runsip``); this module is the media half, one :class:`SipMedia` per call:

- **In**: aiortp receives RTP, reorders it in its jitter buffer, conceals lost packets
  (codec PLC, else a generic concealer) and decodes G.711 µ-law/A-law (8 kHz) or G.722
  (16 kHz). The decoded PCM goes straight to the engine's audio callback (a synchronous,
  non-blocking queue put): no ORM, no channel layer, no await on this path.
- **Out**: the engine's reply audio (already resampled to the codec's rate, because
  :meth:`SIPRealtimeTransport.transport_sample_rate` says what the call negotiated) goes
  into an :class:`~voice.transports.pacer.OutboundAudioPacer`, which sends one 20 ms RTP
  packet every 20 ms with an ~80 ms prebuffer and silence in between; barge-in clears it.
- **Events**: RFC 4733 telephone-events (DTMF) and RTP inactivity are reported to the
  server, which tells the engine and ends dead calls.
- **Playback**: the pacer knows exactly how much of a reply went out, so the engine's
  truncation on barge-in uses that rather than a wall-clock guess.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from voice.transports.base import RealtimeTransport
from voice.transports.pacer import FRAME_MS, OutboundAudioPacer

if TYPE_CHECKING:
    from voice.session import LiveSession

logger = logging.getLogger(__name__)

#: RTP clock per codec payload type (G.722's RTP clock is 8000 although it carries 16 kHz
#: audio: RFC 3551 §4.5.2).
RTP_CLOCK = {0: 8000, 8: 8000, 9: 8000}
CODEC_NAMES = {0: "PCMU", 8: "PCMA", 9: "G722"}


class SipMedia:
    """One call's RTP: aiosipua's ``CallSession`` (negotiated SDP + aiortp session) plus our
    pacer. ``hangup`` is the server's: it sends BYE (or a final response before answer)."""

    def __init__(
        self,
        call_session: Any,
        *,
        hangup: Callable[[str], Awaitable[None]],
        prebuffer_ms: int = 80,
    ) -> None:
        self.call_session = call_session
        self.hangup = hangup
        self.prebuffer_ms = prebuffer_ms
        self.payload_type: int = int(call_session.chosen_payload_type)
        self.codec_name = CODEC_NAMES.get(self.payload_type, str(self.payload_type))
        self.sample_rate = 8000
        self.pacer: OutboundAudioPacer | None = None
        self.receiver: Callable[[bytes], None] | None = None
        self.on_played: Callable[[int], None] | None = None
        self.on_dtmf: Callable[[str, int], None] | None = None  # (digit, duration_ms)
        self.last_rx = time.monotonic()  # the answer counts as a sign of life
        self.packets_in = 0
        self.on_hold = False
        self._codec: Any = None
        self._rtp: Any = None
        self._timestamp = 0
        self._step = RTP_CLOCK.get(self.payload_type, 8000) * FRAME_MS // 1000
        self._closed = False

    @property
    def local_port(self) -> int:
        return int(self.call_session._rtp_port)

    async def start(self) -> None:
        """Bind the RTP socket and start the outbound clock (silence until a reply)."""
        await self.call_session.start()
        self._rtp = self.call_session.rtp_session
        self._codec = self._rtp.codec
        self.sample_rate = int(self._codec.sample_rate)
        self.call_session.on_audio = self._on_audio
        self.call_session.on_dtmf = self._on_dtmf
        self.pacer = OutboundAudioPacer(
            sample_rate=self.sample_rate,
            send_frame=self._send_frame,
            prebuffer_ms=self.prebuffer_ms,
            on_played=self._played,
        )
        self.pacer.start()

    def _on_audio(self, pcm: bytes, timestamp: int) -> None:
        self.last_rx = time.monotonic()
        self.packets_in += 1
        receiver = self.receiver
        if receiver is not None and not self.on_hold:
            receiver(pcm)

    def _on_dtmf(self, digit: str, duration: int) -> None:
        self.last_rx = time.monotonic()
        if self.on_dtmf is not None:
            # RFC 4733 durations are in RTP clock units.
            self.on_dtmf(digit, duration * 1000 // RTP_CLOCK.get(self.payload_type, 8000))

    def _played(self, played_ms: int) -> None:
        if self.on_played is not None:
            self.on_played(played_ms)

    def _send_frame(self, pcm: bytes, skipped: int) -> None:
        if self._closed or self._rtp is None:
            return
        self._timestamp = (self._timestamp + skipped * self._step) & 0xFFFFFFFF
        self._rtp.send_audio(self._codec.encode(pcm), self._timestamp)
        self._timestamp = (self._timestamp + self._step) & 0xFFFFFFFF

    def hold(self, held: bool) -> None:
        """The caller put us on hold (sendonly/inactive) or took us off it."""
        self.on_hold = held
        if self.pacer is not None:
            self.pacer.pause(held)
        if not held:
            self.last_rx = time.monotonic()  # the inactivity clock restarts

    def update_remote(self, address: tuple[str, int]) -> None:
        self.call_session.update_remote(address)

    def silent_for(self) -> float:
        return time.monotonic() - self.last_rx

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"codec": self.codec_name, "packets_in": self.packets_in}
        if self.pacer is not None:
            stats["pacer"] = self.pacer.describe()
        try:
            rtp = self.call_session.stats
            stats["rtp"] = {k: v for k, v in rtp.items() if isinstance(v, int | float | str)}
        except Exception:
            logger.debug("no RTP stats", exc_info=True)
        return stats

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.pacer is not None:
            await self.pacer.stop()
        await self.call_session.close()


class SIPRealtimeTransport(RealtimeTransport):
    """The engine's view of phone calls: ``start_session(..., connection=SipMedia)``.

    ``transport_sample_rate`` is the negotiated codec's (8000 for G.711, 16000 for G.722),
    so the engine resamples to and from the provider's rates per session. ``disconnect``
    hangs the call up (BYE): a session ended by the API, an operator, a revoked binding or
    a provider failure ends the phone call too.
    """

    name = "sip"

    def __init__(self) -> None:
        super().__init__()
        self._media: dict[str, SipMedia] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def media(self, session: LiveSession) -> SipMedia | None:
        return self._media.get(session.id)

    def transport_sample_rate(self, session: LiveSession) -> int | None:
        media = self._media.get(session.id)
        return media.sample_rate if media is not None else None

    async def accept(self, session: LiveSession, connection: Any) -> None:
        if not isinstance(connection, SipMedia):
            raise TypeError("the SIP transport takes a SipMedia connection")
        self._media[session.id] = connection
        connection.receiver = lambda pcm: self._deliver_audio(session, pcm)
        connection.on_played = lambda ms: self._deliver_playback(session, ms)

        def on_dtmf(digit: str, duration_ms: int) -> None:  # from aiortp's receive callback
            task = asyncio.ensure_future(self._deliver_dtmf(session, digit, duration_ms))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        connection.on_dtmf = on_dtmf

    async def send_audio(self, session: LiveSession, audio: bytes) -> None:
        media = self._media.get(session.id)
        if media is not None and media.pacer is not None:
            media.pacer.push(audio)

    async def interrupt(self, session: LiveSession) -> None:
        media = self._media.get(session.id)
        if media is not None and media.pacer is not None:
            media.pacer.clear()

    async def end_of_response(self, session: LiveSession) -> None:
        media = self._media.get(session.id)
        if media is not None and media.pacer is not None:
            media.pacer.end_of_response()

    async def disconnect(self, session: LiveSession) -> None:
        media = self._media.pop(session.id, None)
        if media is None:
            return
        media.receiver = None
        media.on_played = None
        media.on_dtmf = None
        try:
            await media.hangup(session.end_reason or "ended")
        finally:
            await media.close()

    async def caller_hung_up(self, session: LiveSession) -> None:
        """The far end ended the call (BYE, CANCEL, RTP silence): the engine ends the
        session (its disconnect callbacks), and no BYE goes back."""
        media = self._media.get(session.id)
        if media is not None:
            media.hangup = _already_gone
        await self._deliver_disconnect(session)

    async def close(self) -> None:
        for media in list(self._media.values()):
            await media.close()
        self._media.clear()


async def _already_gone(reason: str) -> None:
    return None
