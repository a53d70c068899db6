"""The live room view in a browser, while a member talks on the voice page in another.

The owner watches the member's call arrive live (the session, then the transcript as the
echo agent hears and answers), mutes the member's binding from the page (the member's page
says so), and ends the call from it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from rooms import services as room_services
from rooms.models import ChannelBinding, Room, User
from tests.fixtures.browser import (
    TIMEOUT,
    DaphneServer,
    browser_login,
    connection_state,
    console_log,
    eventually,
    save_screenshot,
    stat_text,
    wait,
)
from voice.models import VoiceSession

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def live_state(driver: webdriver.Chrome) -> str:
    return driver.find_element(By.ID, "live-state").get_attribute("data-state") or ""


def timeline_roles_after(driver: webdriver.Chrome, index: int) -> set[str]:
    """Roles of the transcript rows the page added after ``index`` (the last one it was
    rendered with)."""
    rows = driver.find_elements(By.CSS_SELECTOR, '#timeline li[data-kind="transcript"]')
    return {
        row.get_attribute("data-role") or ""
        for row in rows
        if int(row.get_attribute("data-index") or 0) > index
    }


def binding_row_muted(driver: webdriver.Chrome, binding: ChannelBinding) -> str:
    row = driver.find_element(By.CSS_SELECTOR, f'#bindings tr[data-binding-id="{binding.pk}"]')
    return row.get_attribute("data-muted") or ""


def test_owner_watches_a_call_live_and_mutes_the_caller(
    daphne_server: DaphneServer,
    chrome_factory: Callable[[], webdriver.Chrome],
    owner_a: User,
    member_a: User,
    echo_room: Room,
) -> None:
    binding, _ = room_services.binding_attach(
        tenant=echo_room.tenant,
        room=echo_room,
        channel_id="voice",
        participant_id=f"user:{member_a.pk}",
    )
    caller, owner = chrome_factory(), chrome_factory()

    # The member calls.
    browser_login(caller, daphne_server, member_a)
    caller.get(f"{daphne_server.url}/rooms/{echo_room.pk}/voice/")
    wait(caller).until(lambda d: connection_state(d) == "idle")
    caller.find_element(By.ID, "connect-button").click()
    wait(caller).until(lambda d: connection_state(d) == "live")
    session_id = wait(caller).until(lambda d: stat_text(d, "session-id"))

    # The owner opens the live view: the call is there, and its transcript arrives live.
    browser_login(owner, daphne_server, owner_a)
    owner.get(f"{daphne_server.url}/rooms/{echo_room.pk}/live/")
    wait(owner).until(lambda d: live_state(d) == "live")
    rendered_up_to = int(
        owner.find_element(By.ID, "live-app").get_attribute("data-last-index") or 0
    )
    session_row = f'#sessions li[data-session-id="{session_id}"][data-state="active"]'
    wait(owner).until(lambda d: d.find_elements(By.CSS_SELECTOR, session_row))
    wait(owner).until(lambda d: {"user", "assistant"} <= timeline_roles_after(d, rendered_up_to))

    # The owner mutes the caller.
    assert binding_row_muted(owner, binding) == "false"
    owner.find_element(
        By.CSS_SELECTOR, f'#bindings tr[data-binding-id="{binding.pk}"] button[data-action="mute"]'
    ).click()
    wait(owner).until(lambda d: binding_row_muted(d, binding) == "true")
    binding.refresh_from_db()
    assert binding.muted is True
    assert owner.find_elements(
        By.CSS_SELECTOR,
        f'#bindings tr[data-binding-id="{binding.pk}"] button[data-action="unmute"]',
    )
    assert owner.find_elements(By.CSS_SELECTOR, "#live-errors li") == []
    save_screenshot(owner, "live-view")
    # The caller's page is told at once (the engine applies it to the next frame).
    notice = caller.find_element(By.ID, "access-notice")
    wait(caller).until(lambda d: notice.get_attribute("data-can-speak") == "false")
    assert notice.is_displayed()
    assert "muted" in notice.text

    # The owner ends the call from the live view.
    owner.find_element(
        By.CSS_SELECTOR,
        f'#sessions li[data-session-id="{session_id}"] button[data-action="end-session"]',
    ).click()
    wait(caller).until(lambda d: connection_state(d) == "ended")
    ended_row = f'#sessions li[data-session-id="{session_id}"][data-state="ended"]'
    wait(owner).until(
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, ended_row)
            or not d.find_elements(By.CSS_SELECTOR, f'#sessions li[data-session-id="{session_id}"]')
        )
    )

    ended = eventually(
        lambda: VoiceSession.objects.filter(pk=session_id, state="ended").first(),
        timeout=TIMEOUT,
        describe=lambda: VoiceSession.objects.filter(pk=session_id).values("state").first(),
    )
    assert ended.end_reason == "ended_by_operator"

    for driver in (caller, owner):
        assert console_log(driver).severe() == []
