"""The browser voice page with an OpenAI, xAI, Gemini or ElevenLabs agent, talking to the
vendor's fake server.

The agent's credential points its endpoint (``base_url``) at the fake, which runs in a
thread of the test process with its own event loop. Chromium's fake microphone plays a
spoken sentence; the fake detects the turns from that audio (its ``auto_vad`` mode, as the
vendor's server VAD would), transcribes them with the text the test queued, and answers
with audio and a transcript. So the whole path runs: the page, daphne, the engine, the
provider's wire protocol, and back.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from providers import services as provider_services
from rooms import services as room_services
from rooms.models import EventKind, RoomEvent, Tenant, User
from tests.fakes.elevenlabs_convai import FakeElevenLabs
from tests.fakes.gemini_live import FakeGeminiLive
from tests.fakes.openai_realtime import FakeOpenAIRealtime
from tests.fakes.xai_realtime import FakeXAIRealtime
from tests.fixtures.browser import (
    TIMEOUT,
    DaphneServer,
    SpeechClip,
    browser_login,
    connection_state,
    console_log,
    eventually,
    final_turns,
    page_errors,
    stat,
    stat_text,
    wait,
)
from voice import services as voice_services
from voice.models import SessionState, VoiceSession

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

HEARD = "what is the weather in Paris"
REPLY = "It is sunny in Paris today."
Fake = FakeOpenAIRealtime | FakeGeminiLive | FakeElevenLabs


@dataclass(frozen=True)
class Vendor:
    make: Callable[..., Fake]
    api_key: str
    model: str  # ElevenLabs: the agent id

    def endpoint(self, fake: Fake) -> str:
        """What the credential's endpoint (base_url) is for this vendor's fake."""
        return fake.ws_base_url if isinstance(fake, FakeElevenLabs) else fake.base_url


VENDORS = {
    "openai": Vendor(FakeOpenAIRealtime, "sk-browser-test-0123456789", "gpt-realtime"),
    "xai": Vendor(FakeXAIRealtime, "xai-browser-test-0123456789", "grok-voice-latest"),
    "gemini": Vendor(
        FakeGeminiLive, "AIza-browser-test-0123456789", "gemini-2.5-flash-native-audio-latest"
    ),
    "elevenlabs": Vendor(
        lambda **options: FakeElevenLabs(agent_id="agent_browser", **options),
        "xi-browser-test-0123456789",
        "agent_browser",
    ),
}


@contextmanager
def fake_in_thread(fake: Fake) -> Iterator[Fake]:
    """Serve ``fake`` from a thread with its own event loop (the test itself is sync)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-vendor", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(fake.__aenter__(), loop).result(timeout=10)
        try:
            yield fake
        finally:
            asyncio.run_coroutine_threadsafe(fake.__aexit__(None, None, None), loop).result(
                timeout=10
            )
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def _cloud_room(tenant: Tenant, kind: str, api_key: str, model: str, base_url: str) -> Any:
    credential = provider_services.credential_create(
        tenant=tenant, name=f"{kind}-fake", kind=kind, secret=api_key, base_url=base_url
    )
    agent = voice_services.agent_create(
        tenant=tenant,
        slug=f"{kind}-agent",
        name=f"{kind} agent",
        provider_kind=kind,
        model=model,
        system_prompt="You are a weather assistant.",
        credential=credential,
    )
    return room_services.room_create(
        tenant=tenant, key=f"{kind}-room", name=f"{kind} room", default_agent=agent
    )


@pytest.mark.parametrize("kind", sorted(VENDORS))
def test_the_voice_page_talks_to_a_cloud_agent_through_its_fake_server(
    kind: str,
    daphne_server: DaphneServer,
    chrome: webdriver.Chrome,
    speech_wav: SpeechClip,
    member_a: User,
    tenant_a: Tenant,
) -> None:
    vendor = VENDORS[kind]
    fake = vendor.make(api_key=vendor.api_key, auto_vad=True, next_reply=REPLY, reply_audio_ms=1200)
    fake.user_transcripts.extend([HEARD] * 20)  # one per detected turn (the clip loops)
    with fake_in_thread(fake):
        room = _cloud_room(tenant_a, kind, vendor.api_key, vendor.model, vendor.endpoint(fake))
        browser_login(chrome, daphne_server, member_a)
        chrome.get(f"{daphne_server.url}/rooms/{room.pk}/voice/")
        wait(chrome).until(lambda d: connection_state(d) == "idle")
        chrome.find_element(By.ID, "connect-button").click()
        wait(chrome).until(lambda d: connection_state(d) in {"live", "error", "ended"})
        assert connection_state(chrome) == "live", page_errors(chrome)
        session_id = uuid.UUID(wait(chrome).until(lambda d: stat_text(d, "session-id")))

        # The fake's VAD found the spoken sentence in the audio that reached it; its
        # transcript and the reply come back to the page, and the reply audio is played.
        wait(chrome).until(lambda d: final_turns(d, "user") and final_turns(d, "assistant"))
        assert final_turns(chrome, "user")[0] == HEARD
        assert final_turns(chrome, "assistant")[0] == REPLY
        wait(chrome).until(lambda d: stat(d, "received-ms") > 0 and stat(d, "played-ms") > 0)

        # What the vendor received is speech: loud in the turn, not silence or noise.
        pcm = np.frombuffer(fake.input_pcm16(), dtype="<i2").astype(np.float64)
        assert pcm.size > 0
        assert np.sqrt(np.mean(pcm**2)) > 100
        assert "You are a weather assistant." in json.dumps(fake.received[0])

        chrome.find_element(By.ID, "end-button").click()
        wait(chrome).until(lambda d: connection_state(d) == "ended")

        def recorded() -> VoiceSession | None:
            return VoiceSession.objects.filter(pk=session_id, state=SessionState.ENDED).first()

        session = eventually(recorded, timeout=TIMEOUT, describe=lambda: session_id)
        assert session is not None and session.provider_kind == kind
        if kind != "gemini":  # Gemini's setupComplete names no session
            assert session.provider_session_id  # the vendor's session (conversation) id
        if kind != "elevenlabs":  # ElevenLabs reports no token usage
            assert session.usage.get("responses", 0) >= 1
        texts = list(
            RoomEvent.objects.filter(session_id=session_id, kind=EventKind.TRANSCRIPT)
            .order_by("index")
            .values_list("role", "text")
        )
        assert ("user", HEARD) in texts
        assert ("assistant", REPLY) in texts
    assert page_errors(chrome) == []
    assert console_log(chrome).severe() == []
