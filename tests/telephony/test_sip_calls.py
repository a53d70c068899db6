"""Phone calls end to end: ``sipp`` (a real SIP peer, Debian sip-tester) calls the SIP server
of ``runsip``, run in the test's event loop on loopback ports, with the echo agent (no key,
no network: it hears the caller, says how long they spoke and plays their words back).

Each call is checked where a user would see it: the SIP dialogue (sipp's log), the voice
session and the room's timeline in the database, and the RTP we sent, captured on ``lo``
(pacing, sequence and timestamps, and the decoded audio: the caller's own speech, echoed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from asgiref.sync import sync_to_async

from rooms.models import EventKind, RoomEvent
from telephony.sip import SipServer
from tests.fixtures import sip as tools
from tests.fixtures.actors import TenantWorld
from tests.telephony.sip_harness import NUMBER, auth_trunk, echo_number, free_port, running_sip
from voice import services as voice_services
from voice.models import EndReason, SessionState, VoiceSession

CALLER_URI = f"sip:{tools.CALLER}@127.0.0.1"
SPEECH = "Hello, I would like to know the opening hours of the library."

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        tools.tools_missing() is not None and not tools.in_ci(),
        reason=str(tools.tools_missing()),
    ),
]


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sip-media")


def call_media(media_dir: Path, codec: str) -> tools.CallMedia:
    return tools.make_call_media(SPEECH, codec, media_dir)


async def sessions() -> list[dict[str, Any]]:
    return await sync_to_async(
        lambda: list(
            VoiceSession.objects.order_by("created_at").values(
                "id",
                "state",
                "end_reason",
                "end_detail",
                "transport",
                "participant_id",
                "metadata",
                "created_at",
                "activated_at",
                "ended_at",
            )
        )
    )()


async def until(check: Callable[[], Any], within: float = 10) -> Any:
    """Poll an async ``check`` until it returns something truthy (database state written by
    another task), failing after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            result = await check()
            if result:
                return result
            await asyncio.sleep(0.05)


async def ended_sessions() -> list[dict[str, Any]]:
    rows = await sessions()
    return rows if rows and all(row["state"] == SessionState.ENDED for row in rows) else []


async def timeline(world: TenantWorld) -> list[tuple[str, str, str]]:
    return await sync_to_async(
        lambda: [
            (event.kind, event.role, event.text)
            for event in RoomEvent.objects.filter(room=world.room).order_by("index")
        ]
    )()


def envelope(pcm: bytes, rate: int) -> np.ndarray:
    """RMS per 20 ms window."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    window = rate // 50
    usable = len(samples) // window * window
    return np.sqrt((samples[:usable].reshape(-1, window) ** 2).mean(axis=1))


def best_match(heard: np.ndarray, said: np.ndarray) -> float:
    """The highest normalised correlation of ``said``'s loudness envelope against any
    stretch of ``heard``'s: 1.0 when the caller's words come back as they were spoken."""
    said = said - said.mean()
    best = 0.0
    for start in range(0, max(1, len(heard) - len(said) + 1)):
        piece = heard[start : start + len(said)]
        if len(piece) < len(said):
            break
        piece = piece - piece.mean()
        denominator = float(np.linalg.norm(piece) * np.linalg.norm(said))
        if denominator > 0:
            best = max(best, float(piece @ said) / denominator)
    return best


async def place_call(
    server: SipServer, scenario: str, media: tools.CallMedia | None = None, **options: Any
) -> tools.SippResult:
    return await tools.run_sipp(
        scenario,
        target=f"127.0.0.1:{server.settings.port}",
        number=options.pop("number", NUMBER),
        media_port=options.pop("media_port", tools.free_port_pair()),
        sip_port=free_port(),
        keys=media.keys(loops=options.pop("loops", 1)) if media is not None else None,
        **options,
    )


@pytest.mark.parametrize("codec", ["PCMU", "PCMA", "G722"])
async def test_a_call_is_answered_echoed_paced_and_recorded(
    world_a: TenantWorld, media_dir: Path, codec: str
) -> None:
    await sync_to_async(echo_number)(world_a)
    media = call_media(media_dir, codec)
    media_port = tools.free_port_pair()
    # Long enough after the speech for the echo to come back whole, then the caller hangs up.
    pause_ms = media.duration_ms + 2500
    async with running_sip() as server:
        with tools.RtpCapture(media_port) as capture:
            result = await place_call(
                server,
                "call.xml",
                media,
                media_port=media_port,
                variables=media.variables(dtmf_delay_ms=200, pause_ms=pause_ms),
            )
        assert result.ok, result.report()
        assert result.first_lines() == [
            ">INVITE", "<100", "<180", "<200", ">ACK", ">BYE", "<200"
        ], result.report()  # fmt: skip

        [row] = await until(ended_sessions)
        await until(lambda: _all_released(server))

    # The session, as the room and the API see it.
    assert (row["transport"], row["participant_id"]) == ("sip", CALLER_URI)
    assert row["end_reason"] == EndReason.CLIENT_HANGUP
    assert row["metadata"]["codec"] == codec
    assert row["metadata"]["sample_rate"] == (16000 if codec == "G722" else 8000)
    assert row["metadata"]["number"] == NUMBER
    assert row["created_at"] <= row["activated_at"] <= row["ended_at"]
    call_s = (row["ended_at"] - row["activated_at"]).total_seconds()
    scripted_s = (media.duration_ms + 200 + media.dtmf_ms + pause_ms) / 1000
    assert scripted_s - 0.5 <= call_s <= scripted_s + 3, (call_s, scripted_s)

    # The timeline: what the caller said and heard, and the keys pressed.
    events = await timeline(world_a)
    transcripts = [(role, text) for kind, role, text in events if kind == EventKind.TRANSCRIPT]
    assert transcripts[0][0] == "user" and transcripts[0][1].endswith("s of speech)")
    assert transcripts[1][0] == "assistant" and transcripts[1][1].startswith("I heard ")
    assert [text for kind, _, text in events if "pressed" in text] == [
        "The caller pressed 1.",
        "The caller pressed #.",
    ]

    # What we sent: one stream in the negotiated codec, 20 ms apart, gap-free numbering.
    ours = [p for p in capture.snapshot() if p.pt == media.codec.pt]
    assert len(tools.streams(ours)) == 1
    assert tools.sequence_gaps(ours) == []
    assert tools.timestamp_steps(ours) == []
    pace = tools.pacing(ours)
    assert 19.0 <= pace.mean_ms <= 21.0, pace
    assert 15.0 <= pace.median_ms <= 25.0, pace
    assert abs(pace.drift_ms) < 100, pace
    # ... and what it says: the caller's own words, correctly encoded and decoded.
    rate = media.codec.sample_rate
    heard = envelope(tools.decode(ours, media.codec.pt), rate)
    said = envelope(media.pcm, rate)
    assert best_match(heard, said) > 0.8


async def test_a_call_with_no_common_codec_is_refused_with_488(world_a: TenantWorld) -> None:
    await sync_to_async(echo_number)(world_a)
    async with running_sip() as server:
        result = await place_call(server, "no_common_codec.xml")
    assert result.ok, result.report()
    assert "<488" in result.first_lines()
    assert await sessions() == []


async def test_an_unknown_number_is_refused_with_404(world_a: TenantWorld) -> None:
    await sync_to_async(echo_number)(world_a)
    async with running_sip() as server:
        result = await place_call(server, "unknown_number.xml", number="+15559999999")
    assert result.ok, result.report()
    assert "<404" in result.first_lines()
    assert await sessions() == []


async def test_a_trunk_with_credentials_challenges_and_admits_the_right_password(
    world_a: TenantWorld, media_dir: Path
) -> None:
    trunk = await sync_to_async(auth_trunk)(world_a, username="carrier", password="s3cret-pass")
    await sync_to_async(echo_number)(world_a, trunk=trunk)
    media = call_media(media_dir, "PCMU")
    async with running_sip() as server:
        wrong = await place_call(
            server, "auth_wrong.xml", media, auth=("carrier", "not-the-password")
        )
        assert wrong.ok, wrong.report()
        assert "<401" in wrong.first_lines() and "<403" in wrong.first_lines()
        assert await sessions() == []

        right = await place_call(
            server,
            "auth_call.xml",
            media,
            auth=("carrier", "s3cret-pass"),
            variables={"pause_ms": 1000},
        )
        assert right.ok, right.report()
        assert right.first_lines()[:4] == [">INVITE", "<100", "<401", ">ACK"], right.report()
        [row] = await until(ended_sessions)
    assert row["end_reason"] == EndReason.CLIENT_HANGUP


async def test_the_caller_hangs_up_mid_reply_and_our_audio_stops(
    world_a: TenantWorld, media_dir: Path
) -> None:
    await sync_to_async(echo_number)(world_a)
    media = call_media(media_dir, "PCMU")
    media_port = tools.free_port_pair()
    async with running_sip() as server:
        with tools.RtpCapture(media_port) as capture:
            # Hang up about half a second into the echo of the speech.
            result = await place_call(
                server,
                "call.xml",
                media,
                media_port=media_port,
                variables=media.variables(pause_ms=1300),
            )
            assert result.ok, result.report()
            [row] = await until(ended_sessions)
            stop = len(capture.snapshot())
            await asyncio.sleep(0.3)  # a grace period in which nothing may follow the BYE
            after = capture.snapshot()[stop:]
        await until(lambda: _all_released(server))
    assert row["end_reason"] == EndReason.CLIENT_HANGUP
    assert after == []
    # The BYE came while the echo was playing: part of it went out, not all of it.
    loud = envelope(tools.decode(capture.snapshot(), 0), 8000) > 300
    assert 5 <= loud.sum() < media.duration_ms // 20 - 10, loud.sum()
    events = await timeline(world_a)
    assert ("transcript", "user") in {(kind, role) for kind, role, _ in events}


async def test_a_caller_who_stops_sending_rtp_is_hung_up_with_a_reason(
    world_a: TenantWorld, media_dir: Path
) -> None:
    await sync_to_async(echo_number)(world_a)
    media = call_media(media_dir, "PCMA")
    async with running_sip(rtp_timeout_s=1.0) as server:
        # The speech plays once, then the caller's side falls silent (no RTP at all) and
        # waits for our BYE.
        result = await place_call(server, "call_wait_bye.xml", media, loops=1)
        assert result.ok, result.report()
        assert result.first_lines()[-2:] == ["<BYE", ">200"], result.report()
        [row] = await until(ended_sessions)
    assert row["end_reason"] == EndReason.TIMEOUT
    assert row["end_detail"] == "no RTP from the caller for 1 s"


async def test_at_capacity_a_new_call_gets_486_busy_here(
    world_a: TenantWorld, media_dir: Path, tmp_path: Path
) -> None:
    await sync_to_async(echo_number)(world_a)
    media = call_media(media_dir, "PCMU")
    busy = tmp_path / "busy.xml"
    busy.write_text((tools.SIPP_DIR / "unknown_number.xml").read_text().replace('"404"', '"486"'))
    async with running_sip(max_calls=1) as server:
        first = asyncio.ensure_future(place_call(server, "call_wait_bye.xml", media, loops=-1))
        await until(lambda: _live_calls(server))
        second = await place_call(server, busy)
        assert second.ok, second.report()
        assert "<486" in second.first_lines()
        assert len(await sessions()) == 1
    # Stopping the server hung the first call up.
    result = await asyncio.wait_for(first, 30)
    assert result.ok and result.first_lines()[-2:] == ["<BYE", ">200"], result.report()
    [row] = await until(ended_sessions)
    assert row["end_reason"] == EndReason.SERVER_SHUTDOWN


async def _all_released(server: SipServer) -> bool:
    """Every call gone and its RTP port given back."""
    return server.calls == {} and server.ports.in_use == 0


async def _live_calls(server: SipServer) -> bool:
    return any(call.answered for call in server.calls.values())


def _end_session(world: TenantWorld, session_id: Any) -> None:
    voice_services.voice_session_request_end(tenant=world.tenant, session_id=session_id)


@pytest.mark.integration
async def test_our_hang_up_through_the_api_sends_bye(
    world_a: TenantWorld, media_dir: Path, redis_layer: None
) -> None:
    await sync_to_async(echo_number)(world_a)
    media = call_media(media_dir, "G722")
    async with running_sip() as server:
        call = asyncio.ensure_future(place_call(server, "call_wait_bye.xml", media, loops=-1))
        await until(lambda: _live_calls(server))
        [session] = await sessions()
        assert session["state"] == SessionState.ACTIVE
        await sync_to_async(_end_session)(world_a, session["id"])
        result = await asyncio.wait_for(call, 30)
        assert result.ok, result.report()
        assert result.first_lines()[-2:] == ["<BYE", ">200"], result.report()
        [row] = await until(ended_sessions)
    assert row["end_reason"] == EndReason.ENDED_BY_OPERATOR


async def test_a_call_on_hold_sends_nothing_survives_the_silence_and_resumes(
    world_a: TenantWorld, media_dir: Path
) -> None:
    await sync_to_async(echo_number)(world_a)
    media = call_media(media_dir, "PCMU")
    media_port = tools.free_port_pair()
    # The caller sends no RTP for 2 s while holding: longer than the 1 s RTP timeout, which
    # must not count while the call is on hold.
    async with running_sip(rtp_timeout_s=1.0) as server:
        with tools.RtpCapture(media_port) as capture:
            result = await place_call(
                server,
                "hold.xml",
                media,
                media_port=media_port,
                loops=-1,
                variables={"talk_ms": 1500, "hold_ms": 2000},
            )
        assert result.ok, result.report()
        [row] = await until(ended_sessions)
    assert row["end_reason"] == EndReason.CLIENT_HANGUP  # the caller's BYE, not our timeout

    answers = [
        text
        for direction, text in result.sip_messages()
        if direction == "received" and text.startswith("SIP/2.0 200") and "m=audio" in text
    ]
    assert [_direction(text) for text in answers] == ["sendrecv", "recvonly", "sendrecv"]

    # Our RTP: flowing, then a silence of (about) the hold, then flowing again.
    ours = capture.of_pt(0)
    gaps = tools.intervals_ms(ours)
    longest = max(gaps)
    assert 1500 <= longest <= 2600, longest
    held_at = gaps.index(longest)
    assert held_at >= 40 and len(gaps) - held_at >= 40  # ≥ 0.8 s of packets on each side


def _direction(sdp: str) -> str:
    for line in sdp.splitlines():
        line = line.strip()
        if line in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
            return line[2:]
    return "sendrecv"
