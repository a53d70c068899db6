"""The sipp scenarios (tests/telephony/sipp/) and the tools in tests/fixtures/sip.py, checked
against a small SIP UAS written here (no roomvoice server): what sipp sends must decode back
to the speech, be paced at 20 ms, carry well-formed RFC 4733 DTMF, and the SIP dialogues must
be the ones the server tests rely on.

Skipped when sipp, espeak-ng or sox is missing or packet capture isn't allowed, unless CI is
set: there they fail."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import sip

MISSING = sip.tools_missing()
pytestmark = pytest.mark.skipif(
    MISSING is not None and not sip.in_ci(), reason=f"{MISSING} (CI unset)"
)


_workdir: list[Path] = []  # the running test's tmp_path: sipp's logs go there


@pytest.fixture(autouse=True)
def _tools_present(tmp_path: Path) -> None:
    _workdir[:] = [tmp_path]
    if MISSING is not None:  # only reached in CI
        pytest.fail(
            f"{MISSING}: CI must run the sipp tests (.ci/run: apt-get install sip-tester)",
            pytrace=False,
        )


NUMBER = "+15550100"
SPEECH = "Hello, one two three."


# --- a small UAS -----------------------------------------------------------------------------


@dataclass
class Message:
    first: str  # request or status line
    headers: list[tuple[str, str]]
    body: str

    @classmethod
    def parse(cls, data: bytes) -> Message:
        head, _, body = data.decode().partition("\r\n\r\n")
        first, *lines = head.split("\r\n")
        headers = [(n.strip(), v.strip()) for n, _, v in (line.partition(":") for line in lines)]
        return cls(first, headers, body)

    def get(self, name: str) -> str:
        return next((v for n, v in self.headers if n.lower() == name.lower()), "")

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    @property
    def method(self) -> str:
        return "" if self.first.startswith("SIP/2.0") else self.first.split()[0]

    @property
    def branch(self) -> str:
        found = re.search(r"branch=([^;\s,]+)", self.get("Via"))
        return found.group(1) if found else ""


@dataclass
class Uas:
    """Answers INVITEs on 127.0.0.1: 404 for a number it doesn't know, 488 without PCMU, PCMA
    or G.722 in the offer, 401 then 403/200 with ``auth``, else 100, 180, 200 with an answer
    for the first codec offered. ``bye_after``: sends the BYE itself that long after the ACK.
    ``reply``: sends the first 50 packets of that PCMU payload to the caller's media."""

    numbers: set[str]
    auth: tuple[str, str] | None = None
    bye_after: float | None = None
    reject_with: int | None = None
    reply: bytes | None = None
    received: list[Message] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)  # wall clock of the first of each
    sent: list[str] = field(default_factory=list)
    port: int = 0
    media_port: int = 0
    remote_media: tuple[str, int] | None = None
    dialog: tuple[Message, str] | None = None  # the INVITE answered 200, and the 200
    bye_answered: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.realm, self.nonce = "roomvoice.test", secrets.token_hex(8)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        uas = self

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                uas.handle(Message.parse(data), addr)

        self.transport, _ = await loop.create_datagram_endpoint(
            Protocol, local_addr=(sip.LOCALHOST, 0)
        )
        self.port = self.transport.get_extra_info("sockname")[1]
        self.media_port = sip.free_port_pair()
        # bound so that sipp's RTP finds a listener (no ICMP unreachable); the capture reads it
        self.media, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=(sip.LOCALHOST, self.media_port)
        )

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.transport.close()
        self.media.close()

    def methods(self) -> list[str]:
        return [m.method or m.first.split()[1] for m in self.received]

    def send(self, text: str, addr: tuple[str, int]) -> None:
        self.sent.append(text)
        self.times.setdefault(
            "sent " + text.split(" ", 2)[0 if not text.startswith("SIP") else 1], time.time()
        )
        self.transport.sendto(text.encode(), addr)

    def respond(
        self, request: Message, addr: tuple[str, int], status: str, *extra: str, body: str = ""
    ) -> None:
        to = request.get("To")
        if not status.startswith("100") and ";tag=" not in to:
            to += ";tag=uas" + request.get("Call-ID")[:8]
        lines = [f"SIP/2.0 {status}", *(f"Via: {v}" for v in request.all("Via"))]
        lines += [f"From: {request.get('From')}", f"To: {to}", f"Call-ID: {request.get('Call-ID')}"]
        lines += [f"CSeq: {request.get('CSeq')}", *extra, f"Content-Length: {len(body)}"]
        self.send("\r\n".join(lines) + "\r\n\r\n" + body, addr)

    def handle(self, msg: Message, addr: tuple[str, int]) -> None:
        self.received.append(msg)
        self.times.setdefault(msg.method or msg.first.split()[1], time.time())
        if msg.method == "INVITE":
            self.invite(msg, addr)
        elif (
            msg.method == "ACK" and self.bye_after is not None and msg.get("CSeq").endswith(" ACK")
        ):
            if self.dialog is not None and msg.branch != self.dialog[0].branch:  # the 2xx ACK
                self.later(self.bye_after, self.send_bye, addr)
        elif msg.method == "BYE":
            self.respond(msg, addr, "200 OK")
        elif msg.first.startswith("SIP/2.0 200") and msg.get("CSeq").endswith("BYE"):
            self.bye_answered.set()

    def invite(self, msg: Message, addr: tuple[str, int]) -> None:
        user = msg.first.split()[1].removeprefix("sip:").split("@")[0]
        if self.reject_with:
            return self.respond(msg, addr, f"{self.reject_with} Rejected")
        if user not in self.numbers:
            return self.respond(msg, addr, "404 Not Found")
        if self.auth is not None:
            header = msg.get("Authorization")
            if not header:
                challenge = (
                    f'Digest realm="{self.realm}", nonce="{self.nonce}", qop="auth", algorithm=MD5'
                )
                return self.respond(msg, addr, "401 Unauthorized", f"WWW-Authenticate: {challenge}")
            if not self.digest_ok(header, "INVITE"):
                return self.respond(msg, addr, "403 Forbidden")
        offered = re.search(r"^m=audio (\d+) RTP/AVP ([\d ]+)", msg.body, re.M)
        conn = re.search(r"^c=IN IP4 (\S+)", msg.body, re.M)
        pts = [int(p) for p in offered.group(2).split()] if offered else []
        codec = next((sip.CODECS_BY_PT[p] for p in pts if p in sip.CODECS_BY_PT), None)
        if codec is None or offered is None or conn is None:
            return self.respond(msg, addr, "488 Not Acceptable Here")
        self.remote_media = (conn.group(1), int(offered.group(1)))
        self.respond(msg, addr, "100 Trying")
        self.respond(msg, addr, "180 Ringing")
        answer = "\r\n".join(
            [
                "v=0",
                f"o=- 2 2 IN IP4 {sip.LOCALHOST}",
                "s=uas",
                f"c=IN IP4 {sip.LOCALHOST}",
                "t=0 0",
                f"m=audio {self.media_port} RTP/AVP {codec.pt} 101",
                f"a=rtpmap:{codec.pt} {codec.name}/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=fmtp:101 0-16",
                "a=ptime:20",
                "",
            ]
        )
        contact = f"Contact: <sip:{user}@{sip.LOCALHOST}:{self.port}>"
        self.respond(msg, addr, "200 OK", contact, "Content-Type: application/sdp", body=answer)
        self.dialog = (msg, self.sent[-1])
        if self.reply is not None:
            self.later(0.3, self.send_reply)

    def digest_ok(self, header: str, method: str) -> bool:
        fields = dict(re.findall(r'(\w+)="?([^",]*)"?', header.removeprefix("Digest ")))
        user, password = self.auth or ("", "")

        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 (SIP digest is MD5)

        ha1, ha2 = md5(f"{user}:{self.realm}:{password}"), md5(f"{method}:{fields.get('uri', '')}")
        if "qop" in fields:
            expected = md5(
                f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:{fields['qop']}:{ha2}"
            )
        else:
            expected = md5(f"{ha1}:{fields.get('nonce', '')}:{ha2}")
        return fields.get("username") == user and fields.get("response") == expected

    def later(self, delay: float, fn: Any, *args: Any) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            await fn(*args) if asyncio.iscoroutinefunction(fn) else fn(*args)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)

    def send_bye(self, addr: tuple[str, int]) -> None:
        assert self.dialog is not None
        invite, ok = self.dialog
        contact = re.search(r"<([^>]+)>", invite.get("Contact"))
        target = contact.group(1) if contact else f"sip:{sip.CALLER}@{addr[0]}:{addr[1]}"
        to_header = re.search(r"^To: (.*)$", ok, re.M)
        assert to_header is not None
        lines = [
            f"BYE {target} SIP/2.0",
            f"Via: SIP/2.0/UDP {sip.LOCALHOST}:{self.port};branch=z9hG4bK{secrets.token_hex(6)}",
            f"From: {to_header.group(1)}",
            f"To: {invite.get('From')}",
            f"Call-ID: {invite.get('Call-ID')}",
            "CSeq: 1 BYE",
            "Max-Forwards: 70",
            "Content-Length: 0",
        ]
        self.send("\r\n".join(lines) + "\r\n\r\n", addr)

    async def send_reply(self) -> None:
        """50 paced PCMU packets from the media port (symmetric RTP) to the caller's media."""
        assert self.reply is not None and self.remote_media is not None
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(50):
            chunk = self.reply[i * 160 : (i + 1) * 160]
            header = struct.pack("!BBHII", 0x80, 0x80 if i == 0 else 0, i, 160 * i, 0x0AA51234)
            self.media.sendto(header + chunk, self.remote_media)
            await asyncio.sleep(max(0, start + (i + 1) * 0.02 - loop.time()))


@contextlib.asynccontextmanager
async def running_uas(**kwargs: Any) -> AsyncIterator[Uas]:
    uas = Uas(numbers={NUMBER}, **kwargs)
    await uas.start()
    try:
        yield uas
    finally:
        uas.close()


async def call(
    uas: Uas,
    scenario: str,
    *,
    timeout: float = 20,  # noqa: ASYNC109 (sipp's -timeout)
    **kwargs: Any,
) -> sip.SippResult:
    return await sip.run_sipp(
        scenario,
        target=f"{sip.LOCALHOST}:{uas.port}",
        number=kwargs.pop("number", NUMBER),
        media_port=kwargs.pop("media_port", None) or sip.sipp_media_port(),
        sip_port=sip.free_udp_port(),
        timeout=timeout,
        workdir=_workdir[0] / f"sipp-{len(list(_workdir[0].glob('sipp-*')))}",
        **kwargs,
    )


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sipp-media")


def media(codec: str, directory: Path, digits: str = "1#") -> sip.CallMedia:
    return sip.make_call_media(SPEECH, codec, directory, digits=digits)


# --- the files -------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["PCMU", "PCMA", "G722"])
def test_speech_payload_is_raw_frames_that_decode_to_the_speech(
    codec: str, media_dir: Path
) -> None:
    m = media(codec, media_dir)
    rate = sip.CODECS[codec].sample_rate
    assert sip.read_wav(m.wav)[1] == rate
    size = m.payload.stat().st_size
    assert size % 160 == 0 and size // 160 * 20 == m.duration_ms
    assert m.payload.read_bytes()[:4] != b"RIFF"  # sipp would send a header as audio
    assert 1000 < m.duration_ms < 4000, "keep the sipp runs short"
    decoded = m.codec.codec().decode(m.payload.read_bytes())
    correlation, lag = sip.best_correlation(m.pcm, decoded, max_lag=100)
    assert correlation > 0.98, (correlation, lag)
    silence = m.codec.codec().decode(m.silence.read_bytes())
    assert len(silence) == rate * 2 and sip.rms(silence) < 50


def test_dtmf_pcap_holds_rfc4733_events(tmp_path: Path) -> None:
    pcap = sip.make_dtmf_pcap(tmp_path / "dtmf.pcap", "1#")
    datagrams = sip.read_udp_pcap(pcap)
    packets = [
        sip.RtpPacket(when, ("127.0.0.1", 1), ("127.0.0.1", 2), *parsed)
        for when, data in datagrams
        if (parsed := sip.parse_rtp(data)) is not None
    ]
    assert len(packets) == len(datagrams) == 2 * (10 + 3)
    assert {p.pt for p in packets} == {sip.DTMF_PT} and not sip.sequence_gaps(packets)
    events = sip.dtmf_events(packets)
    assert [(e.digit, e.duration, e.end_packets, e.marker_first) for e in events] == [
        ("1", 1600, 3, True),
        ("#", 1600, 3, True),
    ]
    assert events[1].timestamp - events[0].timestamp == 8 * (sip.DTMF_TONE_MS + sip.DTMF_GAP_MS)
    assert sip.read_udp_pcap(sip.make_dtmf_pcap(tmp_path / "none.pcap", "")) == []


def test_run_sipp_wants_every_declared_variable() -> None:
    declared = sip.scenario_variables(sip.SIPP_DIR / "call.xml")
    assert declared == {"stream_ms", "dtmf_delay_ms", "dtmf_ms", "pause_ms"}
    with pytest.raises(ValueError, match="pause_ms"):
        asyncio.run(
            sip.run_sipp(
                "call.xml",
                target="127.0.0.1:9",
                number=NUMBER,
                media_port=sip.free_port_pair(),
                sip_port=sip.free_udp_port(),
                variables={"stream_ms": 1, "dtmf_delay_ms": 1},
            )
        )


# --- calls -----------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("codec", ["PCMU", "PCMA", "G722"])
async def test_call_streams_paced_speech_then_dtmf_then_hangs_up(
    codec: str, media_dir: Path
) -> None:
    m = media(codec, media_dir)
    reply = sip.CODECS["PCMU"].codec().encode(sip.read_wav(media("PCMU", media_dir).wav)[0])
    media_port = sip.sipp_media_port()
    async with running_uas(reply=reply if codec == "PCMU" else None) as uas:
        with sip.RtpCapture(uas.media_port) as to_uas, sip.RtpCapture(media_port) as to_sipp:
            result = await call(
                uas,
                "call.xml",
                media_port=media_port,
                keys=m.keys(),
                variables=m.variables(dtmf_delay_ms=200, pause_ms=300),
            )
            await asyncio.sleep(0.1)
    assert result.ok, result.report()
    assert result.first_lines() == [">INVITE", "<100", "<180", "<200", ">ACK", ">BYE", "<200"], (
        result.report()
    )
    assert uas.methods() == ["INVITE", "ACK", "BYE"]
    invite = uas.received[0]
    assert f"m=audio {media_port} RTP/AVP {m.codec.pt} 101" in invite.body
    assert f"a=rtpmap:{m.codec.pt} {codec}/8000" in invite.body and "a=fmtp:101 0-16" in invite.body
    assert invite.get("From").startswith(f"<sip:{sip.CALLER}@")
    ack, bye = uas.received[1], uas.received[2]
    assert ack.first == f"ACK sip:{NUMBER}@127.0.0.1:{uas.port} SIP/2.0"  # to the 200's Contact
    assert ";tag=" in ack.get("To") and ack.branch != invite.branch and ack.get("CSeq") == "1 ACK"
    assert bye.get("CSeq") == "2 BYE" and bye.get("To") == ack.get("To")

    packets = to_uas.snapshot()
    assert {p.src for p in packets} == {(sip.LOCALHOST, media_port)}, (
        "all RTP comes from [media_port]"
    )
    audio = [p for p in packets if p.pt == m.codec.pt]
    dtmf = [p for p in packets if p.pt == sip.DTMF_PT]
    speech = audio[: m.duration_ms // 20]
    before = [p for p in audio if p.time < dtmf[0].time]
    after = [p for p in audio if p.time > dtmf[-1].time]
    assert len(before) + len(after) == len(audio), "no audio while the keys play"
    assert len(sip.streams(audio)) == 1, "speech and silence are one stream"
    assert all(len(p.payload) == 160 for p in audio)
    assert not sip.sequence_gaps(audio)
    # +160 a packet, except where sipp switches from the speech file to the silence file
    # and where it resumes after the keys (there by the time it paused)
    steps = sip.timestamp_steps(audio)
    assert {i for i, _ in steps} <= {len(speech), len(before)}, steps
    resumed = (after[0].timestamp - before[-1].timestamp) / 8 - (
        after[0].time - before[-1].time
    ) * 1000
    assert abs(resumed) < 40, f"the timestamp after the keys is {resumed:+.0f} ms off the clock"
    # sipp's own pacing: 20 ms on average, but its sender thread sometimes sends two packets
    # back to back after a 40 ms gap (a loaded machine); what we send is held to more
    pace = sip.pacing(before)
    assert 19.5 < pace.mean_ms < 20.5 and 19 < pace.median_ms < 21, pace
    assert pace.max_ms < 100 and abs(pace.drift_ms) < 60, pace
    assert 19 < sip.pacing(after).median_ms < 21, sip.pacing(after)  # a burst as it resumes

    correlation, lag = sip.best_correlation(m.pcm, sip.decode(speech, m.codec.pt), max_lag=100)
    assert correlation > 0.98, (correlation, lag)
    silence = sip.decode(audio[len(speech) :], m.codec.pt)
    assert len(silence) > 0 and sip.rms(silence) < 50, "silence follows the speech"

    events = sip.dtmf_events(packets)
    assert [e.digit for e in events] == ["1", "#"], events
    for e in events:
        assert e.marker_first and e.end_packets == 3 and e.duration == 1600 and e.volume == 10, e
    assert len(sip.streams(dtmf)) == 1 and dtmf[0].ssrc != audio[0].ssrc
    assert not sip.sequence_gaps(dtmf)
    first_dtmf = dtmf[0].time - speech[-1].time
    assert 0.15 < first_dtmf < 0.6, f"DTMF {first_dtmf:.3f} s after the speech (dtmf_delay_ms=200)"
    hold = uas.times["BYE"] - dtmf[-1].time
    assert 0.35 < hold < 0.7, f"BYE {hold:.3f} s after the last key (its 100 ms gap + pause_ms 300)"

    if codec == "PCMU":  # the other direction: what the UAS sent, captured on sipp's port
        back = to_sipp.snapshot()
        assert len(back) == 50 and {p.src for p in back} == {(sip.LOCALHOST, uas.media_port)}
        assert not sip.sequence_gaps(back) and not sip.timestamp_steps(back)
        assert 19 < sip.pacing(back).median_ms < 21, sip.pacing(back)
        assert sip.decode(back, 0) == sip.CODECS["PCMU"].codec().decode(reply[: 50 * 160])


@pytest.mark.asyncio
async def test_call_timing_follows_the_variables(media_dir: Path) -> None:
    """What a hang-up mid-response test does: cut the speech short, no DTMF, hang up soon."""
    m = media("PCMU", media_dir, digits="")
    async with running_uas() as uas:
        with sip.RtpCapture(uas.media_port) as to_uas:
            result = await call(
                uas, "call.xml", keys=m.keys(), variables=m.variables(stream_ms=500, pause_ms=300)
            )
    assert result.ok, result.report()
    held = uas.times["BYE"] - uas.times["ACK"]
    assert 0.75 < held < 1.0, f"BYE {held:.3f} s after the ACK (stream_ms 500 + pause_ms 300)"
    packets = to_uas.snapshot()
    assert {p.pt for p in packets} == {0}, "no DTMF"
    assert 35 <= len(packets) <= 50
    speech = sip.decode(packets[:20], 0)
    assert sip.best_correlation(m.pcm[: len(speech)], speech, max_lag=10)[0] > 0.98
    assert sip.rms(sip.decode(packets[27:], 0)) < 50, "silence after stream_ms"


@pytest.mark.asyncio
async def test_call_wait_bye_answers_our_bye(media_dir: Path) -> None:
    m = media("PCMA", media_dir)
    async with running_uas(bye_after=1.0) as uas:
        with sip.RtpCapture(uas.media_port) as to_uas:
            result = await call(uas, "call_wait_bye.xml", keys=m.keys(loops=-1))
            await asyncio.wait_for(uas.bye_answered.wait(), 2)
    assert result.ok, result.report()
    assert result.first_lines() == [">INVITE", "<100", "<180", "<200", ">ACK", "<BYE", ">200"], (
        result.report()
    )
    audio = to_uas.of_pt(8)
    assert 40 <= len(audio) <= 60, "streamed for about 1 s"
    assert not sip.sequence_gaps(audio) and not sip.timestamp_steps(audio)
    assert audio[-1].time < uas.times["sent BYE"] + 0.05, "the RTP stops with our BYE"


@pytest.mark.asyncio
async def test_call_wait_bye_fails_without_our_bye(media_dir: Path) -> None:
    m = media("PCMU", media_dir)
    async with running_uas() as uas:
        result = await call(uas, "call_wait_bye.xml", keys=m.keys(loops=-1), timeout=3)
    assert not result.ok and result.elapsed < 10, result.report()


@pytest.mark.asyncio
async def test_call_fails_on_an_unexpected_final_response(media_dir: Path) -> None:
    m = media("PCMU", media_dir)
    async with running_uas(reject_with=486) as uas:
        result = await call(uas, "call.xml", keys=m.keys(), variables=m.variables(), timeout=5)
    assert not result.ok, result.report()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("scenario", "number", "status"),
    [("no_common_codec.xml", NUMBER, "488"), ("unknown_number.xml", "+15559999999", "404")],
)
async def test_rejections_are_expected_and_acked(scenario: str, number: str, status: str) -> None:
    async with running_uas() as uas:
        result = await call(uas, scenario, number=number, timeout=10)
        await asyncio.sleep(0.1)
    assert result.ok, result.report()
    assert result.first_lines() == [">INVITE", f"<{status}", ">ACK"], result.report()
    invite, ack = uas.received
    if scenario == "no_common_codec.xml":
        assert re.search(r"^m=audio \d+ RTP/AVP 18\r?$", invite.body, re.M), invite.body
    # RFC 3261 17.1.1.3: the ACK of a non-2xx is in the INVITE's transaction
    assert ack.branch == invite.branch and ack.get("CSeq") == "1 ACK"
    assert ack.first.split()[1] == invite.first.split()[1] and ";tag=" in ack.get("To")


@pytest.mark.asyncio
async def test_rejection_scenario_fails_on_200(media_dir: Path) -> None:
    async with running_uas() as uas:  # the number is known: 100, 180, 200 instead of the 404
        result = await call(uas, "unknown_number.xml", number=NUMBER, timeout=5)
    assert not result.ok, result.report()


@pytest.mark.asyncio
async def test_auth_call_answers_the_challenge(media_dir: Path) -> None:
    m = media("G722", media_dir)
    async with running_uas(auth=("trunk-user", "s3cret")) as uas:
        result = await call(
            uas,
            "auth_call.xml",
            keys=m.keys(),
            variables={"pause_ms": 500},
            auth=("trunk-user", "s3cret"),
        )
    assert result.ok, result.report()
    assert result.first_lines() == [
        ">INVITE", "<401", ">ACK", ">INVITE", "<100", "<180", "<200", ">ACK", ">BYE", "<200",
    ], result.report()  # fmt: skip
    first, ack401, second = uas.received[:3]
    assert ack401.branch == first.branch and ack401.get("CSeq") == "1 ACK"
    assert second.get("CSeq") == "2 INVITE" and second.branch != first.branch
    assert second.get("Call-ID") == first.get("Call-ID") and second.get("From") == first.get("From")
    assert uas.received[3].get("CSeq") == "2 ACK" and uas.received[4].get("CSeq") == "3 BYE"


@pytest.mark.asyncio
async def test_auth_wrong_expects_403() -> None:
    async with running_uas(auth=("trunk-user", "s3cret")) as uas:
        result = await call(uas, "auth_wrong.xml", auth=("trunk-user", "wrong"), timeout=10)
    assert result.ok, result.report()
    assert result.first_lines() == [">INVITE", "<401", ">ACK", ">INVITE", "<403", ">ACK"], (
        result.report()
    )
    ack403 = uas.received[-1]
    assert ack403.branch == uas.received[2].branch and ack403.get("CSeq") == "2 ACK"


def test_free_ports() -> None:
    port = sip.sipp_media_port()
    assert port % 2 == 0
    for p in range(port, port + 4):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((sip.LOCALHOST, p))
