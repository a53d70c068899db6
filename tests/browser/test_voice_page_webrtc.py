"""The browser voice page over WebRTC, end to end: headless Chromium, a real daphne, the
echo agent.

The page's "Connection" switch picks the transport (WebSocket by default; remembered in
localStorage; ``?transport=webrtc`` in the page's URL wins). Over WebRTC the microphone is an
Opus track, the reply comes back on the server's track and the JSON protocol runs on the
``events`` data channel; the rest of the page is the same. Chromium's fake microphone loops
a spoken sentence with pauses (``speech_wav``), which the echo agent plays back.
"""

from __future__ import annotations

import re
import uuid

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from rooms import services as room_services
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
from voice import services as voice_services
from voice.models import EndReason, SessionState, TransportKind, VoiceSession

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

USER_TURN = re.compile(r"\((\d+\.\d) s of speech\)")
ASSISTANT_TURN = re.compile(r"I heard (\d+\.\d) seconds\. Here it is back\.")
# The echo of a ~2.4 s sentence is audible for well over this (barge-ins cut it short, at
# ~0.45 s into each echo: see tests/fixtures/browser.py).
PLAYED_MIN_MS = 300

# How long the server keeps a call whose track brings no audio (ROOMVOICE_WEBRTC_MEDIA_TIMEOUT_S).
MEDIA_TIMEOUT_S = 20

# Keeps the page's microphone stream within reach (window.rvMic), to take it away.
KEEP_MIC = """
const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = async (constraints) => {
  window.rvMic = await getUserMedia(constraints);
  return window.rvMic;
};
"""

# The loudest the page's playback meter went, recorded as the page updates it.
RECORD_OUTPUT_METER = """
const meter = document.getElementById('output-level');
window.rvOutputPeak = 0;
new MutationObserver(() => {
  window.rvOutputPeak = Math.max(window.rvOutputPeak, Number(meter.dataset.rms || 0));
}).observe(meter, {attributes: true, attributeFilter: ['data-rms']});
"""


def transport_choice(driver: webdriver.Chrome) -> str:
    checked = driver.find_elements(By.CSS_SELECTOR, '#transport-choice input[name="transport"]')
    return next(
        (radio.get_attribute("value") or "" for radio in checked if radio.is_selected()), ""
    )


def transport_radios_enabled(driver: webdriver.Chrome) -> list[bool]:
    radios = driver.find_elements(By.CSS_SELECTOR, '#transport-choice input[name="transport"]')
    return [radio.is_enabled() for radio in radios]


def choose_transport(driver: webdriver.Chrome, value: str) -> None:
    driver.find_element(
        By.CSS_SELECTOR, f'#transport-choice input[name="transport"][value="{value}"]'
    ).click()


def start_call(driver: webdriver.Chrome) -> str:
    """Connect; returns the session id once live."""
    driver.find_element(By.ID, "connect-button").click()
    wait(driver).until(lambda d: connection_state(d) in {"live", "error", "ended"})
    assert connection_state(driver) == "live", page_errors(driver)
    return wait(driver).until(lambda d: stat_text(d, "session-id"))


def ended_session(session_id: str) -> VoiceSession:
    return eventually(
        lambda: VoiceSession.objects.filter(pk=session_id, state=SessionState.ENDED).first(),
        timeout=TIMEOUT,
        describe=lambda: VoiceSession.objects.filter(pk=session_id).values_list(
            "state", "end_reason"
        ),
    )


def test_the_connection_switch_defaults_to_websocket_and_remembers_the_choice(
    daphne_server: DaphneServer,
    chrome: webdriver.Chrome,
    member_a: User,
    echo_room: Room,
) -> None:
    browser_login(chrome, daphne_server, member_a)
    page = f"{daphne_server.url}/rooms/{echo_room.pk}/voice/"
    chrome.get(page)
    wait(chrome).until(lambda d: connection_state(d) == "idle")
    assert transport_choice(chrome) == "websocket"
    # Only the WebSocket's diagnostics show.
    chrome.find_element(By.CSS_SELECTOR, "#voice-stats summary").click()
    assert chrome.find_element(By.CSS_SELECTOR, '[data-stat="dropped-frames"]').is_displayed()
    assert not chrome.find_element(By.CSS_SELECTOR, '[data-stat="rtt-ms"]').is_displayed()

    choose_transport(chrome, "webrtc")
    chrome.get(page)
    wait(chrome).until(lambda d: connection_state(d) == "idle")
    assert transport_choice(chrome) == "webrtc"  # remembered
    chrome.find_element(By.CSS_SELECTOR, "#voice-stats summary").click()
    assert chrome.find_element(By.CSS_SELECTOR, '[data-stat="rtt-ms"]').is_displayed()
    assert not chrome.find_element(By.CSS_SELECTOR, '[data-stat="dropped-frames"]').is_displayed()

    # The page's URL wins over the remembered choice, without replacing it.
    chrome.get(f"{page}?transport=websocket")
    wait(chrome).until(lambda d: connection_state(d) == "idle")
    assert transport_choice(chrome) == "websocket"
    chrome.get(page)
    wait(chrome).until(lambda d: connection_state(d) == "idle")
    assert transport_choice(chrome) == "webrtc"

    # The choice is made between calls: a call over the WebSocket disables it.
    choose_transport(chrome, "websocket")
    session_id = start_call(chrome)
    assert transport_radios_enabled(chrome) == [False, False]
    assert stat_text(chrome, "transport") == "websocket"
    chrome.find_element(By.ID, "end-button").click()
    wait(chrome).until(lambda d: connection_state(d) == "ended")
    assert transport_radios_enabled(chrome) == [True, True]
    assert ended_session(session_id).transport == TransportKind.WEBSOCKET
    assert page_errors(chrome) == []
    assert console_log(chrome).severe() == []


def test_the_voice_page_talks_to_the_echo_agent_over_webrtc(
    daphne_server: DaphneServer,
    chrome: webdriver.Chrome,
    speech_wav: SpeechClip,
    member_a: User,
    echo_room: Room,
) -> None:
    browser_login(chrome, daphne_server, member_a)
    chrome.get(f"{daphne_server.url}/rooms/{echo_room.pk}/voice/?transport=webrtc")
    wait(chrome).until(lambda d: connection_state(d) == "idle")
    assert transport_choice(chrome) == "webrtc"
    chrome.execute_script(RECORD_OUTPUT_METER)

    session_id = uuid.UUID(start_call(chrome))
    # The session is the WebRTC transport's, and the page says so.
    row = VoiceSession.objects.get(pk=session_id)
    assert row.transport == TransportKind.WEBRTC
    assert row.participant_id == f"user:{member_a.pk}"
    wait(chrome).until(lambda d: stat_text(d, "connection-state") == "connected")
    assert stat_text(chrome, "transport") == "webrtc"
    assert stat_text(chrome, "sample-rate") == "48000"  # Opus' clock (session_started)

    # The microphone's track goes out (getStats: the audio source's duration grows).
    wait(chrome).until(lambda d: stat(d, "sent-ms") > 0)
    sent = stat(chrome, "sent-ms")
    wait(chrome).until(lambda d: stat(d, "sent-ms") > sent)

    # The echo agent heard the speech on the track (it can only time audio that reached it)
    # and answered over the data channel.
    wait(chrome).until(lambda d: final_turns(d, "user") and final_turns(d, "assistant"))
    user_match = USER_TURN.fullmatch(final_turns(chrome, "user")[0])
    assistant_match = ASSISTANT_TURN.fullmatch(final_turns(chrome, "assistant")[0])
    assert user_match, final_turns(chrome, "user")
    assert assistant_match, final_turns(chrome, "assistant")
    assert assistant_match[1] == user_match[1]
    assert 1.0 <= float(user_match[1]) <= speech_wav.speech_seconds + 1.0, user_match[0]

    # The echo played: the reply track was audible at the page (its analyser: "played"),
    # the browser decoded sound on it (getStats: audio energy) and the meter moved.
    wait(chrome).until(lambda d: stat(d, "played-ms") >= PLAYED_MIN_MS)
    wait(chrome).until(lambda d: float(stat_text(d, "reply-energy") or 0) > 0)
    assert chrome.execute_script("return window.rvOutputPeak") > 0.003
    assert stat(chrome, "received-ms") > 0

    # The next loop's speech barges in: the server clears its queue and tells the page.
    wait(chrome).until(lambda d: stat(d, "clears") >= 1)

    # A typed message goes on the data channel; the agent answers it.
    chrome.find_element(By.ID, "text-input").send_keys("over the data channel")
    chrome.find_element(By.CSS_SELECTOR, '#text-form button[type="submit"]').click()
    wait(chrome).until(lambda d: "You typed: over the data channel" in final_turns(d, "assistant"))

    # The page never sent what WebRTC refuses (audio, hello, playback): no errors came back.
    assert page_errors(chrome) == []
    save_screenshot(chrome, "voice-page-webrtc")

    chrome.find_element(By.ID, "end-button").click()
    wait(chrome).until(lambda d: connection_state(d) == "ended")
    assert "you ended the conversation" in chrome.find_element(By.ID, "connection-state").text

    session = ended_session(str(session_id))
    assert session.end_reason == EndReason.ENDED_BY_CALLER
    assert session.transport == TransportKind.WEBRTC
    transcript = RoomEvent.objects.filter(
        room=echo_room, session_id=session_id, kind=EventKind.TRANSCRIPT
    ).order_by("index")
    texts = [(event.role, event.text) for event in transcript]
    assert ("user", user_match[0]) in texts
    assert ("assistant", assistant_match[0]) in texts
    assert console_log(chrome).severe() == []


def test_a_room_link_with_a_fragment_token_joins_over_webrtc(
    daphne_server: DaphneServer,
    chrome: webdriver.Chrome,
    echo_room: Room,
) -> None:
    token = room_services.room_token_create(
        tenant=echo_room.tenant, room=echo_room, participant_id="guest-7"
    )

    chrome.get(f"{daphne_server.url}/rooms/{echo_room.pk}/voice/?transport=webrtc#token={token}")
    session_id = start_call(chrome)
    wait(chrome).until(lambda d: final_turns(d, "user"))
    chrome.find_element(By.ID, "end-button").click()
    wait(chrome).until(lambda d: connection_state(d) == "ended")

    session = ended_session(session_id)
    assert session.participant_id == "guest-7"
    assert session.transport == TransportKind.WEBRTC
    assert session.end_reason == EndReason.ENDED_BY_CALLER
    # The token went in the offer's body: never in a URL the server logs.
    assert token not in daphne_server.log_path.read_text(errors="replace")
    assert page_errors(chrome) == []


def test_a_refused_offer_shows_the_error_and_connect_works_again(
    daphne_server: DaphneServer,
    chrome: webdriver.Chrome,
    echo_room: Room,
) -> None:
    # A room link whose token is not valid: the offer is refused (401, unauthenticated).
    console_log(chrome).expect("401 (Unauthorized)")
    chrome.get(f"{daphne_server.url}/rooms/{echo_room.pk}/voice/?transport=webrtc#token=bogus")
    chrome.find_element(By.ID, "connect-button").click()
    wait(chrome).until(lambda d: connection_state(d) == "error")
    errors = page_errors(chrome)
    assert len(errors) == 1, errors
    assert errors[0].startswith("unauthenticated: You are not signed in"), errors
    assert not VoiceSession.objects.exists()

    # Not retried on its own (a refusal), but the caller may try again.
    connect = chrome.find_element(By.ID, "connect-button")
    assert connect.is_enabled()
    connect.click()
    wait(chrome).until(lambda d: connection_state(d) == "error" and len(page_errors(d)) == 1)


def test_the_page_reconnects_over_webrtc_after_the_server_dies(
    daphne_server: DaphneServer,
    chrome: webdriver.Chrome,
    member_a: User,
    echo_room: Room,
) -> None:
    browser_login(chrome, daphne_server, member_a)
    chrome.get(f"{daphne_server.url}/rooms/{echo_room.pk}/voice/?transport=webrtc")
    first = start_call(chrome)

    # While the server is down, Chromium logs each refused offer itself.
    console_log(chrome).expect("net::ERR_CONNECTION_REFUSED")
    daphne_server.crash_and_restart()  # no goodbye: the peer connection just goes quiet
    wait(chrome, 60).until(lambda d: stat(d, "reconnects") >= 1)
    wait(chrome).until(
        lambda d: connection_state(d) == "live" and stat_text(d, "session-id") not in ("", first)
    )
    second = stat_text(chrome, "session-id")
    assert VoiceSession.objects.get(pk=second).transport == TransportKind.WEBRTC
    # The same microphone goes on over the new connection: the agent hears it.
    turns = len(final_turns(chrome, "user"))
    wait(chrome).until(lambda d: len(final_turns(d, "user")) > turns)
    assert page_errors(chrome) == []

    chrome.find_element(By.ID, "end-button").click()
    wait(chrome).until(lambda d: connection_state(d) == "ended")
    assert ended_session(second).end_reason == EndReason.ENDED_BY_CALLER


def test_an_operator_ends_the_webrtc_call(
    daphne_server: DaphneServer,
    chrome: webdriver.Chrome,
    member_a: User,
    echo_room: Room,
) -> None:
    browser_login(chrome, daphne_server, member_a)
    chrome.get(f"{daphne_server.url}/rooms/{echo_room.pk}/voice/?transport=webrtc")
    session_id = start_call(chrome)

    # The session's host (the process holding the peer) gets the request on its channel.
    assert voice_services.voice_session_request_end(tenant=echo_room.tenant, session_id=session_id)
    wait(chrome).until(lambda d: connection_state(d) == "ended")
    state_text = chrome.find_element(By.ID, "connection-state").text
    assert "an operator ended the conversation" in state_text
    assert ended_session(session_id).end_reason == EndReason.ENDED_BY_OPERATOR
    # The server closed the call after session_ended: the page takes that as the end, not
    # as a lost connection to reconnect.
    assert stat(chrome, "reconnects") == 0
    assert chrome.find_element(By.ID, "connect-button").is_enabled()
    assert page_errors(chrome) == []


def test_a_webrtc_call_outlives_its_microphone(
    daphne_server: DaphneServer,
    chrome: webdriver.Chrome,
    member_a: User,
    echo_room: Room,
) -> None:
    """A microphone that goes away (unplugged) leaves the track silent; the server ends a call
    whose track brings nothing for MEDIA_TIMEOUT_S, so the page sends silence instead and the
    caller can go on typing."""
    chrome.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": KEEP_MIC})
    browser_login(chrome, daphne_server, member_a)
    chrome.get(f"{daphne_server.url}/rooms/{echo_room.pk}/voice/?transport=webrtc")
    session_id = start_call(chrome)

    # What an unplugged microphone looks like to the page.
    chrome.execute_script(
        "const track = window.rvMic.getAudioTracks()[0]; track.stop();"
        "track.dispatchEvent(new Event('ended'));"
    )
    wait(chrome).until(lambda d: any(error.startswith("mic_ended") for error in page_errors(d)))
    sent = stat(chrome, "sent-ms")
    # The track went on (with silence) for longer than the server waits for audio.
    wait(chrome, MEDIA_TIMEOUT_S + TIMEOUT).until(
        lambda d: stat(d, "sent-ms") > sent + (MEDIA_TIMEOUT_S + 1) * 1000
    )
    assert connection_state(chrome) == "live"
    assert VoiceSession.objects.get(pk=session_id).state == SessionState.ACTIVE

    chrome.find_element(By.ID, "text-input").send_keys("still here")
    chrome.find_element(By.CSS_SELECTOR, '#text-form button[type="submit"]').click()
    wait(chrome).until(lambda d: "You typed: still here" in final_turns(d, "assistant"))
    chrome.find_element(By.ID, "end-button").click()
    wait(chrome).until(lambda d: connection_state(d) == "ended")
    assert ended_session(session_id).end_reason == EndReason.ENDED_BY_CALLER
