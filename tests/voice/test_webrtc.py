"""The WebRTC transport end to end: an aiortc caller (tests/fixtures/webrtc.py) signals over
HTTP (``/rooms/<room>/webrtc/``), sends its microphone on an Opus track and talks JSON on
the ``events`` data channel; the room's agent (the mock provider) answers."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient, override_settings

from rooms import services as room_services
from rooms.models import User
from tests.fixtures.actors import TenantWorld
from tests.fixtures.voice_ws import mock_agent_for
from tests.fixtures.webrtc import WebRTCCaller, rms, tone
from voice import services as voice_services
from voice.mock import MockRealtimeProvider
from voice.models import VoiceSession
from voice.webrtc import gateway

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def offer_path(world_a: TenantWorld) -> str:
    mock_agent_for(world_a.tenant, world_a.room)
    return f"/rooms/{world_a.room.pk}/webrtc/offer/"


async def _client(user: User | None = None, **options: Any) -> AsyncClient:
    client = AsyncClient(**options)
    if user is not None:
        await client.aforce_login(user)
    return client


async def _live(
    offer_path: str, user: User, built: list[MockRealtimeProvider]
) -> tuple[WebRTCCaller, MockRealtimeProvider, Any]:
    caller = WebRTCCaller()
    status, answer = await caller.connect(await _client(user), offer_path)
    assert status == 201, answer
    started = await caller.until(lambda: caller.message("session_started"), what="session_started")
    provider = built[0]
    return caller, provider, provider.sessions[started["session_id"]]


async def _row(session_id: str) -> VoiceSession:
    row: VoiceSession = await database_sync_to_async(VoiceSession.objects.get)(pk=session_id)
    return row


async def _ended_row(session_id: str, within: float = 15.0) -> VoiceSession:
    async with asyncio.timeout(within):
        while True:
            row = await _row(session_id)
            if row.state == "ended":
                return row
            await asyncio.sleep(0.05)


async def _hang_up(caller: WebRTCCaller, session_id: str) -> VoiceSession:
    """The caller closes its peer connection; the session ends as a hang-up."""
    await caller.close()
    return await _ended_row(session_id)


def _sent_pcm(provider: MockRealtimeProvider) -> np.ndarray:
    return np.frombuffer(b"".join(audio for _, audio in provider.sent_audio), dtype=np.int16)


# --- talking ---------------------------------------------------------------------------------


async def test_a_member_talks_over_webrtc_both_ways(
    offer_path: str, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    caller, provider, session = await _live(offer_path, member_a, built_providers)
    started = caller.message("session_started")
    assert started is not None
    assert started["transport"] == "webrtc"
    assert started["sample_rate"] == 48000

    # The microphone's tone reaches the provider (Opus, then 48 → 16 kHz).
    caller.mic.play(tone(600, amplitude=8000))
    await provider.wait_until(lambda: rms(_sent_pcm(provider)[-3200:]) > 2000)

    # The provider's events reach the caller over the data channel...
    await provider.simulate_transcription(session, "hello there", role="user", is_final=True)
    transcript = await caller.until(
        lambda: caller.message("transcription", text="hello there"), what="transcription"
    )
    assert transcript == {
        "type": "transcription",
        "text": "hello there",
        "role": "user",
        "is_final": True,
    }
    # ...and its audio (24 kHz) plays on the caller's track (48 kHz, Opus).
    await provider.simulate_response_start(session)
    await provider.simulate_audio(session, tone(800, amplitude=10000, rate=24000))
    await provider.simulate_response_end(session)
    await caller.until(lambda: rms(caller.heard_pcm()[-4800:]) > 3000, what="reply audio")

    row = await _row(session.id)
    assert row.transport == "webrtc"
    assert row.participant_id == f"user:{member_a.pk}"
    await caller.close()
    ended = await _ended_row(session.id)
    assert ended.end_reason == "client_hangup"


async def test_reply_audio_is_paced_in_real_time(
    offer_path: str, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    caller, provider, session = await _live(offer_path, member_a, built_providers)
    await provider.simulate_response_start(session)
    # Two seconds of reply handed over at once: it must come out over ~2 s, not in a burst.
    await provider.simulate_audio(session, tone(2000, amplitude=10000, rate=24000))
    await provider.simulate_response_end(session)

    def loud_frames() -> list[float]:
        return [at for at, pcm in caller.heard if rms(np.frombuffer(pcm, np.int16)) > 3000]

    await caller.until(lambda: len(loud_frames()) >= 95, within=10, what="the whole reply")
    times = loud_frames()
    assert 1.6 <= times[-1] - times[0] <= 2.6
    await _hang_up(caller, session.id)


async def test_barge_in_clears_the_reply_and_truncates_at_what_was_sent(
    offer_path: str, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    caller, provider, session = await _live(offer_path, member_a, built_providers)
    await provider.simulate_response_start(session)
    await provider.simulate_audio(session, tone(5000, amplitude=10000, rate=24000))
    await caller.until(
        lambda: sum(rms(np.frombuffer(p, np.int16)) > 3000 for _, p in caller.heard) >= 40,
        what="the reply playing",
    )

    await provider.simulate_speech_start(session)  # the caller talks over it
    await caller.until(lambda: caller.message("clear_audio"), what="clear_audio")
    await provider.wait_until(lambda: provider.truncations)
    cleared_at = time.monotonic()
    _, played_ms = provider.truncations[-1]
    # What went out before the barge-in: more than the 40 frames heard, far less than 5 s.
    assert 700 <= played_ms <= 3000

    # A little later, the caller hears silence: the 5 s reply was dropped on the server.
    since = cleared_at + 0.3
    await caller.until(
        lambda: caller.heard_pcm(since=since).size >= 9600, what="200 ms after the barge-in"
    )
    assert rms(caller.heard_pcm(since=since)) < 200
    await _hang_up(caller, session.id)


async def test_typed_text_and_interrupt_go_over_the_data_channel(
    offer_path: str, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    caller, provider, session = await _live(offer_path, member_a, built_providers)
    caller.send({"type": "text", "text": "what is the weather"})
    await provider.wait_until(
        lambda: any(c.method == "inject_text" and "weather" in str(c.args) for c in provider.calls)
    )
    # Bad input gets an error and the call goes on.
    caller.send({"type": "nonsense"})
    await caller.until(lambda: caller.message("error", code="unknown_type"), what="error")
    caller.send({"type": "audio", "data": "AAAAAA=="})
    refused = await caller.until(
        lambda: caller.message("error", code="bad_message"), what="audio refused"
    )
    assert "audio track" in refused["message"]
    caller.send({"type": "end"})
    ended = await _ended_row(session.id)
    assert ended.end_reason == "ended_by_caller"
    await caller.close()


# --- the end of a call -----------------------------------------------------------------------


async def test_an_operator_end_reaches_the_caller_and_closes_the_peer(
    offer_path: str, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    caller, _provider, session = await _live(offer_path, member_a, built_providers)
    await database_sync_to_async(_request_end)(session.id)
    await caller.until(lambda: caller.message("session_ended"), what="session_ended")
    await caller.until(lambda: caller.pc.connectionState == "closed", what="peer closed")
    ended = await _ended_row(session.id)
    assert ended.end_reason == "ended_by_operator"
    assert gateway().peers == []
    await caller.close()


def _request_end(session_id: str) -> None:
    row = VoiceSession.objects.select_related("tenant").get(pk=session_id)
    assert voice_services.voice_session_request_end(tenant=row.tenant, session_id=row.pk)


@override_settings(ROOMVOICE_WEBRTC_MEDIA_TIMEOUT_S=1.5)
async def test_a_caller_that_vanishes_is_hung_up(
    offer_path: str, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    caller, _provider, session = await _live(offer_path, member_a, built_providers)
    # The caller's machine stops sending anything (no DTLS goodbye): its media stops.
    caller.mic.stop()
    ended = await _ended_row(session.id, within=20)
    assert ended.end_reason == "timeout"
    assert "no audio from the caller" in ended.end_detail
    await caller.close()


async def test_delete_hangs_up(
    offer_path: str, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    client = await _client(member_a)
    caller = WebRTCCaller()
    status, answer = await caller.connect(client, offer_path)
    assert status == 201
    started = await caller.until(lambda: caller.message("session_started"), what="started")
    response = await client.delete(answer["peer_url"])
    assert response.status_code == 204
    ended = await _ended_row(started["session_id"])
    assert ended.end_reason == "ended_by_caller"
    assert (await client.delete(answer["peer_url"])).status_code == 404
    await caller.close()


# --- who may call ----------------------------------------------------------------------------


async def test_anonymous_callers_are_refused(offer_path: str) -> None:
    caller = WebRTCCaller()
    status, body = await caller.connect(await _client(), offer_path)
    assert status == 401
    assert body["code"] == "unauthenticated"
    assert gateway().peers == []
    await caller.close()


async def test_another_tenants_member_cannot_reach_the_room(
    offer_path: str, owner_b: User, built_providers: list[MockRealtimeProvider]
) -> None:
    caller = WebRTCCaller()
    status, body = await caller.connect(await _client(owner_b), offer_path)
    assert status == 404
    assert body["code"] == "not_found"
    assert built_providers == []
    await caller.close()


async def test_tenant_b_member_reaches_b_but_not_a(
    world_a: TenantWorld,
    world_b: TenantWorld,
    owner_b: User,
    built_providers: list[MockRealtimeProvider],
) -> None:
    await database_sync_to_async(mock_agent_for)(world_b.tenant, world_b.room)
    caller = WebRTCCaller()
    status, _ = await caller.connect(
        await _client(owner_b), f"/rooms/{world_b.room.pk}/webrtc/offer/"
    )
    assert status == 201
    started = await caller.until(lambda: caller.message("session_started"), what="started in B")
    await _hang_up(caller, started["session_id"])


async def test_a_room_token_admits_without_a_login(
    world_a: TenantWorld, offer_path: str, built_providers: list[MockRealtimeProvider]
) -> None:
    token = await database_sync_to_async(_token_for)(world_a)
    caller = WebRTCCaller()
    status, _ = await caller.connect(await _client(), offer_path, token=token)
    assert status == 201
    started = await caller.until(lambda: caller.message("session_started"), what="started")
    row = await _row(started["session_id"])
    assert row.participant_id == "caller"
    await _hang_up(caller, started["session_id"])

    other = WebRTCCaller()
    status, body = await other.connect(await _client(), offer_path, token=token + "x")
    assert status == 401
    await other.close()


def _token_for(world: TenantWorld) -> str:
    return room_services.room_token_create(
        tenant=world.tenant, room=world.room, participant_id="caller"
    )


async def test_a_login_needs_the_csrf_token(offer_path: str, member_a: User) -> None:
    caller = WebRTCCaller()
    client = await _client(member_a, enforce_csrf_checks=True)
    status, body = await caller.connect(client, offer_path)
    assert status == 403
    assert "CSRF" in body["message"]
    await caller.close()


# --- bad offers and limits -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("not json", "not JSON"),
        (json.dumps({"sdp": 5}), "'sdp'"),
        (json.dumps({"sdp": "v=0\r\n"}), "no audio"),
        (json.dumps({"sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"}), "could not"),
        (json.dumps({"sdp": "x" * 70_000}), "over"),
    ],
)
async def test_bad_offers_are_refused_with_a_reason(
    offer_path: str, member_a: User, body: str, fragment: str
) -> None:
    client = await _client(member_a)
    response = await client.post(offer_path, data=body, content_type="application/json")
    assert response.status_code == 400
    assert fragment in json.loads(response.content)["message"]
    assert gateway().peers == []


@override_settings(ROOMVOICE_WEBRTC_MAX_PEERS=1)
async def test_calls_over_the_limit_are_refused_busy(
    offer_path: str, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    first, _provider, session = await _live(offer_path, member_a, built_providers)
    second = WebRTCCaller()
    status, body = await second.connect(await _client(member_a), offer_path)
    assert status == 503
    assert body["code"] == "busy"
    await second.close()
    await _hang_up(first, session.id)


async def test_trickled_candidates_are_taken_and_bad_ones_refused(
    offer_path: str, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    client = await _client(member_a)
    caller = WebRTCCaller()
    status, answer = await caller.connect(client, offer_path)
    assert status == 201
    url = answer["peer_url"]
    good = {
        "candidate": "candidate:1 1 udp 2130706431 192.0.2.99 50000 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }
    end = {"candidate": "", "sdpMid": "0"}
    response = await client.patch(
        url, data=json.dumps({"candidates": [good, end]}), content_type="application/json"
    )
    assert response.status_code == 204
    response = await client.patch(
        url, data=json.dumps({"candidates": [{"candidate": "nonsense"}]}), content_type="x"
    )
    assert response.status_code == 400
    # Another room's path does not reach this peer.
    wrong = url.replace(str(answer["peer_id"]), "0" * 32)
    assert (await client.patch(wrong, data="{}", content_type="x")).status_code == 404
    started = await caller.until(lambda: caller.message("session_started"), what="started")
    await _hang_up(caller, started["session_id"])


@override_settings(ROOMVOICE_WEBRTC_CONNECT_TIMEOUT_S=1.0)
async def test_a_peer_that_never_connects_is_dropped(
    offer_path: str, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    client = await _client(member_a)
    caller = WebRTCCaller()
    body = await caller.offer_body()  # offered, then never applies the answer: no ICE
    response = await client.post(offer_path, data=json.dumps(body), content_type="x")
    assert response.status_code == 201
    (peer,) = gateway().peers
    # Lost at the connect timeout: the session (started meanwhile) ends, recorded.
    await asyncio.wait_for(peer.wait_closed(), 10)
    (session_id,) = built_providers[0].sessions
    ended = await _row(session_id)
    assert ended.end_reason == "timeout"
    assert "not established" in ended.end_detail
    assert gateway().peers == []
    await caller.close()
