"""The browser voice page end to end: headless Chromium, a real daphne, the echo agent.

Chromium's fake microphone loops a spoken sentence with pauses (``speech_wav``): after each
pause the echo agent says how long the caller spoke and plays the speech back, and the next
loop's speech barges in while the echo is still playing. So one call exercises capture,
the socket, the provider, transcripts, playback, barge-in and the session's end.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By

from rooms.models import EventKind, Room, RoomEvent, User
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
from voice.models import EndReason, SessionState, VoiceSession

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

USER_TURN = re.compile(r"\((\d+\.\d) s of speech\)")
ASSISTANT_TURN = re.compile(r"I heard (\d+\.\d) seconds\. Here it is back\.")
# A barge-in must leave at least this much of a reply unplayed, and playback must stay put
# for at least this long afterwards (until new reply audio arrives), to show it was dropped.
DROPPED_MIN_MS = 300
FLAT_MIN_MS = 600

# Records every change of the page's playback counters with the page's clock, so that the
# test can tell afterwards what playback did right after each clear_audio.
RECORD_STATS = """
const stats = document.getElementById('voice-stats');
window.rvStatsHistory = [];
const record = () => window.rvStatsHistory.push({
  t: performance.now(),
  received: Number(stats.dataset.receivedMs),
  played: Number(stats.dataset.playedMs),
  clears: Number(stats.dataset.clears),
});
new MutationObserver(record).observe(stats, {
  attributes: true,
  attributeFilter: ['data-received-ms', 'data-played-ms', 'data-clears'],
});
record();
"""


def barge_in_that_dropped_audio(driver: webdriver.Chrome) -> dict[str, Any] | None:
    """A clear_audio after which the page played nothing more of the reply: when the clear
    counter went up, at least DROPPED_MIN_MS of received audio was unplayed, and the played
    counter then stayed where it was for FLAT_MIN_MS or more, until new reply audio came."""
    recorded = driver.execute_script(
        "return {history: window.rvStatsHistory, now: performance.now()}"
    )
    history: list[dict[str, float]] = recorded["history"]
    for index in range(1, len(history)):
        clear = history[index]
        if clear["clears"] <= history[index - 1]["clears"]:
            continue
        flat_until = recorded["now"]
        for later in history[index + 1 :]:
            if later["received"] != clear["received"]:
                flat_until = later["t"]  # a new reply started arriving
                break
            if later["played"] != clear["played"]:
                flat_until = -1.0  # the "dropped" audio went on playing
                break
        unplayed = clear["received"] - clear["played"]
        if unplayed >= DROPPED_MIN_MS and flat_until - clear["t"] >= FLAT_MIN_MS:
            return {"unplayed_ms": unplayed, "flat_ms": flat_until - clear["t"], **clear}
    return None


def test_voice_page_talks_to_the_echo_agent_with_barge_in(
    daphne_server: DaphneServer,
    chrome: webdriver.Chrome,
    speech_wav: SpeechClip,
    member_a: User,
    echo_room: Room,
) -> None:
    browser_login(chrome, daphne_server, member_a)
    chrome.get(f"{daphne_server.url}/rooms/{echo_room.pk}/voice/")
    wait(chrome).until(lambda d: connection_state(d) == "idle")
    chrome.execute_script(RECORD_STATS)

    chrome.find_element(By.ID, "connect-button").click()
    wait(chrome).until(lambda d: connection_state(d) in {"live", "error", "ended"})
    assert connection_state(chrome) == "live", page_errors(chrome)
    session_id = uuid.UUID(wait(chrome).until(lambda d: stat_text(d, "session-id")))
    # The worklet downsamples the 48 kHz microphone to the 24 kHz the page negotiated.
    assert stat_text(chrome, "sample-rate") == "24000"

    # The microphone's audio goes out.
    wait(chrome).until(lambda d: stat(d, "sent-ms") > 0)
    sent = stat(chrome, "sent-ms")
    wait(chrome).until(lambda d: stat(d, "sent-ms") > sent)

    # The provider heard the speech (it can only time audio that reached it) and answered.
    wait(chrome).until(lambda d: final_turns(d, "user") and final_turns(d, "assistant"))
    user_match = USER_TURN.fullmatch(final_turns(chrome, "user")[0])
    assistant_match = ASSISTANT_TURN.fullmatch(final_turns(chrome, "assistant")[0])
    assert user_match, final_turns(chrome, "user")
    assert assistant_match, final_turns(chrome, "assistant")
    assert assistant_match[1] == user_match[1]  # the reply is about that utterance
    # The utterance is the clip's speech (give or take the VAD's edges), not noise.
    assert 1.0 <= float(user_match[1]) <= speech_wav.speech_seconds + 1.0, user_match[0]

    # Its audio came back and was played.
    wait(chrome).until(lambda d: stat(d, "received-ms") > 0 and stat(d, "played-ms") > 0)

    # The next loop's speech interrupted the echo: the server sent clear_audio and the page
    # dropped what was still queued.
    wait(chrome).until(lambda d: stat(d, "clears") >= 1)
    try:
        barge_in = wait(chrome).until(barge_in_that_dropped_audio)
    except TimeoutException:
        history = chrome.execute_script("return window.rvStatsHistory")
        pytest.fail(f"no barge-in dropped the queued reply; playback counters: {history}")
    assert barge_in is not None and barge_in["unplayed_ms"] >= DROPPED_MIN_MS

    assert page_errors(chrome) == []
    save_screenshot(chrome, "voice-page")

    chrome.find_element(By.ID, "end-button").click()
    wait(chrome).until(lambda d: connection_state(d) == "ended")

    # The server ended the session for the caller and kept its transcript.
    def transcript() -> list[RoomEvent]:
        return list(
            RoomEvent.objects.filter(
                room=echo_room, session_id=session_id, kind=EventKind.TRANSCRIPT
            ).order_by("index")
        )

    def ended_with_transcript() -> bool:
        roles = {event.role for event in transcript()}
        ended = VoiceSession.objects.filter(pk=session_id, state=SessionState.ENDED).exists()
        return ended and {"user", "assistant"} <= roles

    eventually(
        ended_with_transcript,
        timeout=TIMEOUT,
        describe=lambda: (
            VoiceSession.objects.get(pk=session_id).state,
            [(event.role, event.text) for event in transcript()],
        ),
    )
    session = VoiceSession.objects.get(pk=session_id)
    events = transcript()
    assert session.end_reason == EndReason.ENDED_BY_CALLER
    assert session.participant_id == f"user:{member_a.pk}"
    user_texts = [event.text for event in events if event.role == "user"]
    assistant_texts = [event.text for event in events if event.role == "assistant"]
    assert user_texts[0] == user_match[0]
    assert assistant_texts[0] == assistant_match[0]
    assert all(USER_TURN.fullmatch(text) for text in user_texts), user_texts
    assert all(ASSISTANT_TURN.fullmatch(text) for text in assistant_texts), assistant_texts

    assert console_log(chrome).severe() == []


def test_a_room_link_with_a_fragment_token_joins_without_an_account(
    daphne_server: DaphneServer,
    chrome: webdriver.Chrome,
    echo_room: Room,
) -> None:
    from rooms import services as room_services

    token = room_services.room_token_create(
        tenant=echo_room.tenant, room=echo_room, participant_id="guest-7"
    )

    chrome.get(f"{daphne_server.url}/rooms/{echo_room.pk}/voice/#token={token}")
    chrome.find_element(By.ID, "connect-button").click()
    wait(chrome).until(lambda d: connection_state(d) in {"live", "error", "ended"})
    assert connection_state(chrome) == "live", page_errors(chrome)
    session_id = wait(chrome).until(lambda d: stat_text(d, "session-id"))
    wait(chrome).until(lambda d: final_turns(d, "user"))
    chrome.find_element(By.ID, "end-button").click()
    wait(chrome).until(lambda d: connection_state(d) == "ended")
    session = eventually(
        lambda: VoiceSession.objects.filter(pk=session_id, state="ended").first(),
        timeout=TIMEOUT,
        describe=lambda: list(VoiceSession.objects.values_list("state", "participant_id")),
    )

    assert session.participant_id == "guest-7"
    assert session.end_reason == EndReason.ENDED_BY_CALLER
    # Neither the page request nor the WebSocket's put the token in the server's logs.
    assert token not in daphne_server.log_path.read_text(errors="replace")


def test_a_voice_page_opened_without_login_or_token_sends_the_visitor_to_log_in(
    daphne_server: DaphneServer,
    chrome: webdriver.Chrome,
    echo_room: Room,
) -> None:
    chrome.get(f"{daphne_server.url}/rooms/{echo_room.pk}/voice/")

    wait(chrome).until(lambda d: "/accounts/login/" in d.current_url)
    assert f"/rooms/{echo_room.pk}/voice/" in chrome.current_url  # ?next= brings them back


def test_the_page_reconnects_after_the_connection_dies_with_a_new_session(
    daphne_server: DaphneServer,
    chrome: webdriver.Chrome,
    member_a: User,
    echo_room: Room,
) -> None:
    browser_login(chrome, daphne_server, member_a)
    chrome.get(f"{daphne_server.url}/rooms/{echo_room.pk}/voice/")
    chrome.find_element(By.ID, "connect-button").click()
    wait(chrome).until(lambda d: connection_state(d) == "live")
    first = wait(chrome).until(lambda d: stat_text(d, "session-id"))

    # While the server is down, Chromium logs each refused reconnect attempt itself.
    console_log(chrome).expect("net::ERR_CONNECTION_REFUSED")
    daphne_server.crash_and_restart()  # the socket dies with no close frame
    wait(chrome).until(lambda d: stat(d, "reconnects") >= 1)
    wait(chrome).until(
        lambda d: connection_state(d) == "live" and stat_text(d, "session-id") not in ("", first)
    )
    second = stat_text(chrome, "session-id")
    sent = stat(chrome, "sent-ms")
    wait(chrome).until(lambda d: stat(d, "sent-ms") > sent)  # the microphone kept going

    assert second != first
    assert VoiceSession.objects.get(pk=second).participant_id == f"user:{member_a.pk}"
    assert page_errors(chrome) == []
