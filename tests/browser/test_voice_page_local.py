"""The browser voice page against the offline provider: headless Chromium, a real daphne,
and an agent whose speech is recognised (Whisper tiny.en), understood (the rules brain) and
said (espeak-ng) on the server, with no key and no network.

Chromium's fake microphone loops a spoken weather question with a long pause after it (this
module's ``speech_wav``): the agent calls its ``get_weather`` tool and says the result, and
the page shows the caller's words, the tool call and the answer, and plays the answer.
"""

from __future__ import annotations

import uuid
import wave
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from selenium import webdriver
from selenium.webdriver.common.by import By

from rooms import services as room_services
from rooms.models import EventKind, Room, RoomEvent, Tenant, User
from tests.fixtures.actors import TenantWorld
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
    save_screenshot,
    stat,
    stat_text,
    wait,
)
from tests.fixtures.speech import spoken
from voice import services as voice_services
from voice.models import EndReason, SessionState, ToolCall, TransportKind, VoiceSession

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(180),
]

QUESTION = "What is the weather in Paris?"
SAMPLE_RATE = 48_000
LEAD_MS = 300
# The pause after the question, before Chromium loops the file: room for the whole answer
# (the VAD's 500 ms of silence, ~0.5 s to recognise, the tool, then ~3 s of speech played at
# real time), so the next loop's question does not barge in on it.
PAUSE_MS = 6000
# The first answer needs the server to recognise speech on its one recogniser thread, run
# the tool and synthesise the reply: more than the page's usual wait on a slow machine.
ANSWER_TIMEOUT = 60
PLAYED_MIN_MS = 1000  # of a ~3 s answer

# The loudest the page's playback meter went, recorded as the page updates it.
RECORD_OUTPUT_METER = """
const meter = document.getElementById('output-level');
window.rvOutputPeak = 0;
new MutationObserver(() => {
  window.rvOutputPeak = Math.max(window.rvOutputPeak, Number(meter.dataset.rms || 0));
}).observe(meter, {attributes: true, attributeFilter: ['data-rms']});
"""


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> SpeechClip:
    """Overrides the shared clip (tests/fixtures/browser.py) for this module: QUESTION at
    48 kHz, peak -3 dBFS, then PAUSE_MS of silence."""
    path = Path(tmp_path_factory.mktemp("offline-speech")) / "question.wav"
    pcm = spoken(QUESTION, rate=SAMPLE_RATE, lead_ms=LEAD_MS, tail_ms=PAUSE_MS, gain_db=-3.0)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes(pcm)
    total = len(pcm) / 2 / SAMPLE_RATE
    return SpeechClip(path, total - (LEAD_MS + PAUSE_MS) / 1000, total)


@pytest.fixture
def offline_room(tenant_a: Tenant, world_a: TenantWorld) -> Room:
    """A room of tenant A whose default agent is the offline provider's, with tenant A's
    ``get_weather`` tool (tests.fixtures.actors.get_weather: the city and 21 degrees)."""
    agent = voice_services.agent_create(
        tenant=tenant_a,
        slug="offline",
        name="Robin",
        provider_kind="local",
        system_prompt="You are Robin, the front desk assistant of a small hotel.",
        tools=[world_a.tool],
    )
    return room_services.room_create(
        tenant=tenant_a, key="offline-test", name="Offline test", default_agent=agent
    )


def weather_question(texts: list[str]) -> str | None:
    return next((t for t in texts if "weather" in t.lower() and "paris" in t.lower()), None)


def weather_answer(texts: list[str]) -> str | None:
    return next((t for t in texts if "Paris" in t and "21" in t), None)


def succeeded_tool_calls(driver: webdriver.Chrome) -> list[str]:
    selector = '#tool-calls li.rv-tool-call[data-status="succeeded"] .rv-tool-name'
    return [item.text for item in driver.find_elements(By.CSS_SELECTOR, selector)]


def test_the_voice_page_asks_the_offline_agent_and_hears_the_tools_answer(
    daphne_server: DaphneServer,
    chrome: webdriver.Chrome,
    speech_wav: SpeechClip,
    member_a: User,
    offline_room: Room,
) -> None:
    assert 1.0 <= speech_wav.speech_seconds <= 4.0, speech_wav  # the timing above
    browser_login(chrome, daphne_server, member_a)
    chrome.get(f"{daphne_server.url}/rooms/{offline_room.pk}/voice/")
    wait(chrome).until(lambda d: connection_state(d) == "idle")
    chrome.execute_script(RECORD_OUTPUT_METER)

    chrome.find_element(By.ID, "connect-button").click()
    wait(chrome).until(lambda d: connection_state(d) in {"live", "error", "ended"})
    assert connection_state(chrome) == "live", page_errors(chrome)
    session_id = uuid.UUID(wait(chrome).until(lambda d: stat_text(d, "session-id")))
    assert stat_text(chrome, "transport") == "websocket"
    wait(chrome).until(lambda d: stat(d, "sent-ms") > 0)

    # The server recognised the question (the fake microphone loops it: at least once)...
    question = wait(chrome, ANSWER_TIMEOUT).until(
        lambda d: weather_question(final_turns(d, "user"))
    )
    # ... called the tool, which the page shows ...
    wait(chrome, ANSWER_TIMEOUT).until(lambda d: "get_weather" in succeeded_tool_calls(d))
    # ... and said its result.
    answer = wait(chrome, ANSWER_TIMEOUT).until(
        lambda d: weather_answer(final_turns(d, "assistant"))
    )

    # The answer was heard: its audio arrived, played, and moved the playback meter.
    wait(chrome).until(lambda d: stat(d, "played-ms") >= PLAYED_MIN_MS)
    assert stat(chrome, "received-ms") >= stat(chrome, "played-ms")
    assert chrome.execute_script("return window.rvOutputPeak") > 0.003

    assert page_errors(chrome) == []
    save_screenshot(chrome, "voice-page-offline")

    chrome.find_element(By.ID, "end-button").click()
    wait(chrome).until(lambda d: connection_state(d) == "ended")

    # The session kept the turns and the tool call.
    session = eventually(
        lambda: VoiceSession.objects.filter(pk=session_id, state=SessionState.ENDED).first(),
        timeout=TIMEOUT,
        describe=lambda: VoiceSession.objects.filter(pk=session_id).values_list(
            "state", "end_reason"
        ),
    )
    assert session is not None
    assert session.end_reason == EndReason.ENDED_BY_CALLER
    assert session.transport == TransportKind.WEBSOCKET
    timeline = list(
        RoomEvent.objects.filter(room=offline_room, session_id=session_id)
        .order_by("index")
        .values_list("kind", "role", "text")
    )
    assert (EventKind.TRANSCRIPT, "user", question) in timeline
    assert (EventKind.TOOL_CALL, "tool", 'get_weather({"city": "Paris"})') in timeline
    assert (EventKind.TRANSCRIPT, "assistant", answer) in timeline
    calls = list(ToolCall.objects.filter(session_id=session_id))
    assert calls  # one per loop of the question that was answered before the end
    assert all(
        (call.name, call.arguments) == ("get_weather", {"city": "Paris"}) for call in calls
    ), calls
    assert calls[0].status == "succeeded"
    assert console_log(chrome).severe() == []


def test_the_seeded_demo_agent_answers_aloud_with_no_key(
    daphne_server: DaphneServer,
    chrome: webdriver.Chrome,
    speech_wav: SpeechClip,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What ``scripts/dev.py run`` serves: ``seed_demo``'s room and agent, no credential, so
    the offline provider. It has no tools: it says what it heard."""
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "demo-admin")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "demo-password-123")
    call_command("seed_demo", stdout=StringIO())
    room = Room.objects.get(tenant__slug="demo", key="room-1")
    assert room.default_agent is not None and room.default_agent.provider_kind == "local"
    browser_login(chrome, daphne_server, User.objects.get(username="demo-admin"))
    chrome.get(f"{daphne_server.url}/rooms/{room.pk}/voice/")
    wait(chrome).until(lambda d: connection_state(d) == "idle")

    chrome.find_element(By.ID, "connect-button").click()
    wait(chrome).until(lambda d: connection_state(d) in {"live", "error", "ended"})
    assert connection_state(chrome) == "live", page_errors(chrome)

    question = wait(chrome, ANSWER_TIMEOUT).until(
        lambda d: weather_question(final_turns(d, "user"))
    )
    answer = wait(chrome, ANSWER_TIMEOUT).until(
        lambda d: next((t for t in final_turns(d, "assistant") if "Paris" in t), None)
    )
    assert answer.startswith("I heard:") and question.rstrip(".?!") in answer
    wait(chrome).until(lambda d: stat(d, "played-ms") >= PLAYED_MIN_MS)
    assert page_errors(chrome) == []
    chrome.find_element(By.ID, "end-button").click()
    wait(chrome).until(lambda d: connection_state(d) == "ended")
