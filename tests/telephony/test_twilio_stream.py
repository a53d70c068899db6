"""A phone call end to end through the ASGI application: Twilio's webhook, then its media
stream (``/ws/twilio/stream/``) played by a scripted client that sends the documented
messages (tests/telephony/twilio_scripted.py), with the mock provider as the vendor."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from rooms import services as room_services
from rooms.models import Access, ChannelBinding, EventKind, RoomEvent
from roomvoice.asgi import application
from telephony.models import PhoneNumber
from telephony.twilio import stream_token_create
from tests.fixtures.actors import TenantWorld
from tests.fixtures.api import key_client
from tests.fixtures.voice_ws import ws_connect
from tests.telephony.twilio_scripted import (
    ACCOUNT_A,
    ACCOUNT_B,
    AUTH_TOKEN_A,
    AUTH_TOKEN_B,
    CALLER,
    ScriptedTwilio,
    call_form,
    new_call_sid,
    phone_number,
    sign,
    twilio_account,
)
from voice import admission
from voice import services as voice_services
from voice.g711 import ulaw_decode, ulaw_encode
from voice.mock import MockRealtimeProvider
from voice.models import VoiceSession
from voice.session import LiveSession
from voice.transports.twilio import TwilioRealtimeTransport

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

NUMBER_A = "+15550100001"
NUMBER_B = "+15550200002"


def pcm(samples: int, value: int = 1000) -> bytes:
    return value.to_bytes(2, "little", signed=True) * samples


def ramp(samples: int) -> bytes:
    return b"".join(
        ((i * 37) % 20000 - 10000).to_bytes(2, "little", signed=True) for i in range(samples)
    )


@dataclass
class Phone:
    """Tenant A's Twilio account and number, routed to room-1 and a mock agent at 8 kHz (so
    audio compares byte for byte through the µ-law codec)."""

    world: TenantWorld
    number: PhoneNumber
    provider: MockRealtimeProvider


@dataclass
class Probe:
    """What the engine tells the transport and what the transport reports back: the
    engine's messages and the playback positions (the real methods still run)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    playback: list[int] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self, predicate: Callable[[], bool], *, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [message for message in self.messages if message.get("type") == kind]

    async def started(self) -> str:
        await self.wait(lambda: bool(self.of("session_started")))
        return str(self.of("session_started")[0]["session_id"])


@pytest.fixture
def fresh_layer(request: pytest.FixtureRequest) -> None:
    """With Redis (the second pass), a clean channels-redis layer for each test."""
    if settings.REDIS_URL:
        request.getfixturevalue("redis_layer")


@pytest.fixture
def phone(world_a: TenantWorld, monkeypatch: pytest.MonkeyPatch, fresh_layer: None) -> Phone:
    agent = voice_services.agent_create(
        tenant=world_a.tenant,
        slug="phone",
        name="Phone agent",
        provider_kind="mock",
        input_sample_rate=8000,
        output_sample_rate=8000,
    )
    world_a.room.default_agent = agent
    world_a.room.save(update_fields=["default_agent"])
    twilio_account(world_a.tenant, ACCOUNT_A, AUTH_TOKEN_A)
    number = phone_number(world_a.tenant, world_a.room, NUMBER_A)
    provider = MockRealtimeProvider()
    monkeypatch.setattr(admission, "provider_for", lambda config: provider)
    return Phone(world_a, number, provider)


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[Probe]:
    recorded = Probe()
    send_message = TwilioRealtimeTransport.send_message
    deliver_playback = TwilioRealtimeTransport._deliver_playback

    async def recording_send(
        self: TwilioRealtimeTransport, session: LiveSession, message: dict[str, Any]
    ) -> None:
        recorded.messages.append(dict(message))
        recorded.changed.set()
        await send_message(self, session, message)

    def recording_playback(
        self: TwilioRealtimeTransport, session: LiveSession, played_ms: int
    ) -> None:
        deliver_playback(self, session, played_ms)
        recorded.playback.append(played_ms)
        recorded.changed.set()

    monkeypatch.setattr(TwilioRealtimeTransport, "send_message", recording_send)
    monkeypatch.setattr(TwilioRealtimeTransport, "_deliver_playback", recording_playback)
    yield recorded


def token_for(phone: Phone, call_sid: str, *, caller: str = CALLER) -> str:
    return stream_token_create(
        tenant_id=phone.world.tenant.pk,
        number_id=phone.number.pk,
        caller=caller,
        call_sid=call_sid,
        account_sid=ACCOUNT_A,
    )


async def answered_call(phone: Phone, probe: Probe) -> tuple[ScriptedTwilio, LiveSession]:
    call_sid = new_call_sid()
    twilio = ScriptedTwilio(token=token_for(phone, call_sid), call_sid=call_sid)
    await twilio.open()
    session_id = await probe.started()
    return twilio, phone.provider.sessions[session_id]


async def row(session_id: str) -> VoiceSession:
    found: VoiceSession = await database_sync_to_async(VoiceSession.objects.get)(pk=session_id)
    return found


def payloads(messages: list[dict[str, Any]]) -> bytes:
    return b"".join(
        base64.b64decode(m["media"]["payload"]) for m in messages if m["event"] == "media"
    )


# --- from the webhook to the hang-up -----------------------------------------------------------


async def test_a_call_is_answered_streamed_recorded_and_hung_up(phone: Phone, probe: Probe) -> None:
    form = call_form(account_sid=ACCOUNT_A, to=NUMBER_A)

    def webhook() -> Any:
        url = "http://testserver/telephony/twilio/voice/"
        return Client().post(
            "/telephony/twilio/voice/",
            form,
            HTTP_X_TWILIO_SIGNATURE=sign(AUTH_TOKEN_A, url, form),
        )

    response = await database_sync_to_async(webhook)()
    token = response.content.decode().split('name="token" value="')[1].split('"')[0]
    twilio = ScriptedTwilio(token=token, call_sid=form["CallSid"])
    await twilio.open()
    session_id = await probe.started()
    session = phone.provider.sessions[session_id]
    await phone.provider.simulate_transcription(session, "hello, who is this?", role="user")
    await phone.provider.simulate_transcription(session, "your assistant", role="assistant")
    await twilio.stop()
    code = await twilio.closed()
    await twilio.hang_up()
    ended = await row(session_id)
    texts = await database_sync_to_async(
        lambda: list(
            RoomEvent.objects.filter(room=phone.world.room, kind=EventKind.TRANSCRIPT)
            .order_by("index")
            .values_list("role", "text", "participant_id")
        )
    )()

    assert response.status_code == 200
    assert code == 1000  # we close the socket; Twilio ends the call
    assert (ended.state, ended.end_reason) == ("ended", "client_hangup")
    assert ended.transport == "twilio"
    assert ended.participant_id == CALLER
    assert ended.tenant_id == phone.world.tenant.pk
    assert ended.room_id == phone.world.room.pk
    assert ended.metadata["call_sid"] == form["CallSid"]
    assert (ended.metadata["via"], ended.metadata["to"]) == ("twilio", NUMBER_A)
    assert texts == [
        ("user", "hello, who is this?", CALLER),
        ("assistant", "your assistant", ""),
    ]
    assert session.id not in phone.provider.connected


# --- audio both ways -------------------------------------------------------------------------


async def test_caller_audio_reaches_the_provider_as_pcm16(phone: Phone, probe: Probe) -> None:
    twilio, session = await answered_call(phone, probe)
    spoken = ulaw_encode(ramp(5 * 160))

    for offset in range(0, len(spoken), 160):  # 20 ms per media message, as Twilio sends
        await twilio.media(spoken[offset : offset + 160])
    await phone.provider.wait_until(
        lambda: sum(len(a) for _, a in phone.provider.sent_audio) >= 2 * 5 * 160
    )
    await twilio.hang_up()

    assert b"".join(a for _, a in phone.provider.sent_audio) == ulaw_decode(spoken)


async def test_reply_audio_comes_back_as_mulaw_media_with_marks(phone: Phone, probe: Probe) -> None:
    twilio, session = await answered_call(phone, probe)
    reply = ramp(12 * 160)  # 240 ms

    await phone.provider.simulate_response_start(session)
    await phone.provider.simulate_audio(session, reply)
    sent = await twilio.until(lambda m: m["event"] == "mark" and len(twilio.received) >= 15)
    await twilio.hang_up()

    # A mark after every 5 chunks (100 ms) and at the end of what the engine handed over.
    assert sent.events() == [
        *["media"] * 5,
        "mark",
        *["media"] * 5,
        "mark",
        "media",
        "media",
        "mark",
    ]
    assert all(m["streamSid"] == twilio.stream_sid for m in sent.messages)
    media = [
        base64.b64decode(m["media"]["payload"]) for m in sent.messages if m["event"] == "media"
    ]
    assert [len(chunk) for chunk in media] == [160] * 12  # 20 ms each
    assert payloads(sent.messages) == ulaw_encode(reply)
    assert len({m["mark"]["name"] for m in sent.messages if m["event"] == "mark"}) == 3


async def test_barge_in_clears_twilio_and_truncates_at_the_marks_played(
    phone: Phone, probe: Probe
) -> None:
    twilio, session = await answered_call(phone, probe)
    await phone.provider.simulate_response_start(session)
    await phone.provider.simulate_audio(session, ramp(50 * 160))  # 1 s of reply
    sent = await twilio.until(lambda m: m["event"] == "mark" and len(twilio.received) >= 60)
    mark_at = [i for i, m in enumerate(sent.messages) if m["event"] == "mark"]
    marks = [sent.messages[i]["mark"]["name"] for i in mark_at]
    # What the caller has heard when Twilio returns the third mark: the media before it.
    played_ms = 20 * sent.events()[: mark_at[2]].count("media")

    # Twilio played up to the third mark (after 15 media messages: 300 ms) and says so.
    for name in marks[:3]:
        await twilio.mark(name)
    await probe.wait(lambda: probe.playback[-1:] == [300])
    await phone.provider.simulate_speech_start(session)  # the caller talks over the reply
    cleared = await twilio.until_event("clear")
    # Twilio answers a clear with the marks it dropped: unplayed, so they must not count.
    for name in marks[3:]:
        await twilio.mark(name)
    await phone.provider.simulate_response_start(session)  # the next reply
    await phone.provider.simulate_audio(session, ramp(5 * 160))
    next_reply = await twilio.until_event("mark")
    await twilio.mark(next_reply.messages[-1]["mark"]["name"])
    await probe.wait(lambda: probe.playback[-1:] == [100])
    await twilio.hang_up()

    assert played_ms == 300
    assert phone.provider.truncations == [(session.id, 300)]
    assert cleared.messages[-1] == {"event": "clear", "streamSid": twilio.stream_sid}
    # 100, 200, 300 from the first reply; 0 at the barge-in and at the next reply's start;
    # the cleared marks changed nothing; then the next reply's own 100 ms.
    assert probe.playback == [0, 100, 200, 300, 0, 0, 100]


async def test_keys_the_caller_presses_go_on_the_timeline(phone: Phone, probe: Probe) -> None:
    twilio, session = await answered_call(phone, probe)

    await twilio.dtmf("4")
    await twilio.dtmf("#")
    await twilio.stop()
    await twilio.closed()
    await twilio.hang_up()
    pressed = await database_sync_to_async(
        lambda: list(
            RoomEvent.objects.filter(room=phone.world.room, kind=EventKind.SYSTEM)
            .exclude(metadata__dtmf=None)
            .order_by("index")
            .values_list("text", "metadata", "session_id")
        )
    )()

    assert [(text, m["dtmf"]["digit"], str(s)) for text, m, s in pressed] == [
        ("The caller pressed 4.", "4", session.id),
        ("The caller pressed #.", "#", session.id),
    ]


async def test_bad_frames_are_ignored_and_the_call_goes_on(phone: Phone, probe: Probe) -> None:
    twilio, session = await answered_call(phone, probe)

    await twilio.communicator.send_to(text_data="{not json")
    await twilio.send({"event": "dance"})
    await twilio.send({"event": "media", "streamSid": twilio.stream_sid, "media": {"payload": "!"}})
    await twilio.send({"event": "stop", "streamSid": "MZ-someone-else", "stop": {}})
    await twilio.communicator.send_to(bytes_data=b"\x00\x01")
    await twilio.media(ulaw_encode(pcm(160)))
    await phone.provider.wait_until(lambda: phone.provider.sent_audio)
    state = (await row(session.id)).state
    await twilio.hang_up()

    assert state == "active"
    assert b"".join(a for _, a in phone.provider.sent_audio) == ulaw_decode(ulaw_encode(pcm(160)))


# --- ending the call from our side -----------------------------------------------------------


async def test_ending_the_session_through_the_api_hangs_up_the_call(
    phone: Phone, probe: Probe
) -> None:
    twilio, session = await answered_call(phone, probe)

    def end() -> int:
        client = key_client(phone.world.tenant)
        return int(client.post(f"/api/v1/sessions/{session.id}/end/").status_code)

    status = await database_sync_to_async(end)()
    code = await twilio.closed()
    await twilio.hang_up()
    ended = await row(session.id)

    assert status == 202
    assert code == 1000
    assert (ended.state, ended.end_reason) == ("ended", "ended_by_operator")


async def test_reconfiguring_the_session_through_the_api_reaches_the_call(
    phone: Phone, probe: Probe
) -> None:
    twilio, session = await answered_call(phone, probe)

    def reconfigure() -> int:
        client = key_client(phone.world.tenant)
        url = f"/api/v1/sessions/{session.id}/reconfigure/"
        return int(client.post(url, {"system_prompt": "Be brief."}, format="json").status_code)

    status = await database_sync_to_async(reconfigure)()
    await phone.provider.wait_until(
        lambda: any(call.method == "reconfigure" for call in phone.provider.calls)
    )
    await twilio.hang_up()

    assert status == 202
    [call] = [call for call in phone.provider.calls if call.method == "reconfigure"]
    assert call.kwargs["system_prompt"] == "Be brief."


async def test_twilio_closing_the_socket_ends_the_session(phone: Phone, probe: Probe) -> None:
    twilio, session = await answered_call(phone, probe)

    await twilio.communicator.disconnect(code=1006)
    ended = await row(session.id)

    assert (ended.state, ended.end_reason) == ("ended", "client_hangup")
    assert session.id not in phone.provider.connected


async def test_operator_mute_drops_the_callers_audio(phone: Phone, probe: Probe) -> None:
    twilio, session = await answered_call(phone, probe)
    binding = await database_sync_to_async(ChannelBinding.objects.get)(
        room=phone.world.room, participant_id=CALLER
    )

    await database_sync_to_async(room_services.binding_set_muted)(
        tenant=phone.world.tenant, binding=binding, muted=True
    )
    await probe.wait(lambda: bool(probe.of("access")))
    await twilio.media(ulaw_encode(pcm(160)))
    await twilio.stop()
    await twilio.closed()
    await twilio.hang_up()
    ended = await row(session.id)

    assert probe.of("access")[0]["can_speak"] is False
    assert phone.provider.sent_audio == []
    assert ended.metrics["engine"]["inbound_dropped_access"] == 1


# --- refusals --------------------------------------------------------------------------------


async def refused(twilio: ScriptedTwilio, *, start: bool = True) -> int:
    assert await twilio.connect()
    await twilio.connected()
    if start:
        await twilio.start()
    code = await twilio.closed()
    await twilio.hang_up()
    return code


async def no_session_started(phone: Phone) -> bool:
    count = await database_sync_to_async(VoiceSession.objects.count)()
    return count == 0 and phone.provider.calls == []


async def test_a_token_for_another_call_is_refused(phone: Phone) -> None:
    token = token_for(phone, new_call_sid())

    code = await refused(ScriptedTwilio(token=token, call_sid=new_call_sid()))

    assert code == 4403
    assert await no_session_started(phone)


async def test_a_token_is_good_for_one_stream(phone: Phone, probe: Probe) -> None:
    call_sid = new_call_sid()
    first = ScriptedTwilio(token=token_for(phone, call_sid), call_sid=call_sid)
    await first.open()
    await probe.started()

    replayed = await refused(ScriptedTwilio(token=token_for(phone, call_sid), call_sid=call_sid))
    await first.hang_up()
    count = await database_sync_to_async(VoiceSession.objects.count)()

    assert replayed == 4403
    assert count == 1


async def test_an_expired_token_is_refused(phone: Phone, monkeypatch: pytest.MonkeyPatch) -> None:
    call_sid = new_call_sid()
    token = token_for(phone, call_sid)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 61)

    code = await refused(ScriptedTwilio(token=token, call_sid=call_sid))

    assert code == 4401
    assert await no_session_started(phone)


@pytest.mark.parametrize("token", [None, "", "not-a-token"])
async def test_a_stream_without_a_valid_token_is_refused(phone: Phone, token: str | None) -> None:
    code = await refused(ScriptedTwilio(token=token, call_sid=new_call_sid()))

    assert code == 4401
    assert await no_session_started(phone)


async def test_a_token_naming_another_tenants_number_is_refused(
    phone: Phone, world_b: TenantWorld
) -> None:
    call_sid = new_call_sid()
    token = stream_token_create(
        tenant_id=world_b.tenant.pk,  # signed by us, but the number is tenant A's
        number_id=phone.number.pk,
        caller=CALLER,
        call_sid=call_sid,
        account_sid=ACCOUNT_A,
    )

    code = await refused(ScriptedTwilio(token=token, call_sid=call_sid))

    assert code == 4404
    assert await no_session_started(phone)


async def test_a_token_for_another_account_is_refused(phone: Phone) -> None:
    call_sid = new_call_sid()
    twilio = ScriptedTwilio(
        token=token_for(phone, call_sid), call_sid=call_sid, account_sid=ACCOUNT_B
    )

    code = await refused(twilio)

    assert code == 4403
    assert await no_session_started(phone)


async def test_a_number_disabled_since_the_webhook_is_refused(phone: Phone) -> None:
    call_sid = new_call_sid()
    token = token_for(phone, call_sid)
    await database_sync_to_async(PhoneNumber.objects.filter(pk=phone.number.pk).update)(
        enabled=False
    )

    code = await refused(ScriptedTwilio(token=token, call_sid=call_sid))

    assert code == 4404
    assert await no_session_started(phone)


async def test_a_caller_revoked_since_the_webhook_is_refused(phone: Phone) -> None:
    call_sid = new_call_sid()
    token = token_for(phone, call_sid)
    await database_sync_to_async(room_services.binding_attach)(
        tenant=phone.world.tenant,
        room=phone.world.room,
        channel_id="voice",
        participant_id=CALLER,
        access=Access.NONE,
    )

    code = await refused(ScriptedTwilio(token=token, call_sid=call_sid))

    assert code == 4403
    assert await no_session_started(phone)


async def test_a_stream_that_never_starts_is_closed(
    phone: Phone, monkeypatch: pytest.MonkeyPatch
) -> None:
    from telephony import consumers

    monkeypatch.setattr(consumers, "START_TIMEOUT_S", 0.2)

    code = await refused(ScriptedTwilio(token=None, call_sid=new_call_sid()), start=False)

    assert code == 4408
    assert await no_session_started(phone)


async def test_a_stream_in_another_media_format_is_refused(phone: Phone) -> None:
    call_sid = new_call_sid()
    twilio = ScriptedTwilio(token=token_for(phone, call_sid), call_sid=call_sid)
    assert await twilio.connect()
    await twilio.start(mediaFormat={"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1})

    code = await twilio.closed()
    await twilio.hang_up()

    assert code == 4400
    assert await no_session_started(phone)


# --- the route -----------------------------------------------------------------------------------


async def test_the_stream_needs_no_origin_but_other_routes_still_do(phone: Phone) -> None:
    twilio = ScriptedTwilio(token=None, call_sid=new_call_sid())
    twilio_connected = await twilio.connect()
    await twilio.hang_up()
    voice, voice_connected = await ws_connect(
        f"/ws/rooms/{phone.world.room.pk}/voice/", origin="https://evil.example"
    )
    await voice.disconnect()
    # As Twilio would connect (no Origin, no cookie), but to a browser route.
    no_origin = WebsocketCommunicator(
        application, f"/ws/rooms/{phone.world.room.pk}/voice/", headers=[(b"host", b"localhost")]
    )
    no_origin_connected, _ = await no_origin.connect(timeout=10)
    await no_origin.disconnect()

    assert twilio_connected is True
    assert voice_connected is False
    assert no_origin_connected is False


async def test_the_webhook_and_stream_keep_tenants_apart(
    phone: Phone, probe: Probe, world_b: TenantWorld
) -> None:
    def setup_b() -> None:
        twilio_account(world_b.tenant, ACCOUNT_B, AUTH_TOKEN_B)
        phone_number(world_b.tenant, world_b.room, NUMBER_B)

    await database_sync_to_async(setup_b)()
    form = call_form(account_sid=ACCOUNT_B, to=NUMBER_A)

    def webhook() -> bytes:
        url = "http://testserver/telephony/twilio/voice/"
        signature = sign(AUTH_TOKEN_B, url, form)
        return bytes(
            Client()
            .post("/telephony/twilio/voice/", form, HTTP_X_TWILIO_SIGNATURE=signature)
            .content
        )

    answer = await database_sync_to_async(webhook)()

    assert b"<Reject/>" in answer
    assert b"token" not in answer
    assert await no_session_started(phone)
