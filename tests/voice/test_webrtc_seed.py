"""``mount_webrtc`` with a transport of one's own (the seed's ``mount_fastrtc_realtime`` +
``on_client_connected``): the callback starts a session for each peer; ``auth`` admits."""

from __future__ import annotations

import numpy as np
import pytest
from django.test import AsyncClient

from tests.fixtures.webrtc import WebRTCCaller, rms, tone
from tests.voice import webrtc_seed_urls as seed

pytestmark = [pytest.mark.asyncio, pytest.mark.urls("tests.voice.webrtc_seed_urls")]


def _sent(session_id: str) -> np.ndarray:
    audio = b"".join(pcm for sid, pcm in seed.provider.sent_audio if sid == session_id)
    return np.frombuffer(audio, dtype=np.int16)


async def test_on_client_connected_starts_a_session_per_peer() -> None:
    caller = WebRTCCaller()
    client = AsyncClient()
    status, answer = await caller.connect(
        client, "/rtc/offer/", headers={"Authorization": "Bearer let-me-in"}
    )
    assert status == 201, answer
    started = await caller.until(lambda: caller.message("session_started"), what="started")
    session = seed.provider.sessions[started["session_id"]]
    assert session.room_id == "room-1"
    assert session.participant_id == "caller"

    caller.mic.play(tone(500))
    await seed.provider.wait_until(lambda: rms(_sent(session.id)[-3200:]) > 2000)
    await seed.provider.simulate_transcription(session, "hi", role="assistant", is_final=True)
    await caller.until(lambda: caller.message("transcription", text="hi"), what="transcript")

    assert answer["peer_url"] == f"/rtc/{answer['peer_id']}/"
    response = await client.delete(answer["peer_url"])
    assert response.status_code == 204
    await caller.until(lambda: caller.pc.connectionState == "closed", what="closed")
    await seed.provider.wait_until(lambda: session.is_ended)
    await caller.close()


async def test_auth_refuses_without_the_credential() -> None:
    caller = WebRTCCaller()
    status, body = await caller.connect(AsyncClient(), "/rtc/offer/")
    assert status == 401
    assert body["code"] == "unauthenticated"
    assert seed.transport.gateway.peers == []
    await caller.close()
