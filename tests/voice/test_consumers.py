"""The voice consumer end to end through the ASGI application (auth middleware, origin
check, routing): the protocol of docs/protocol.md, with the mock provider playing the
vendor."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from redis.exceptions import TimeoutError as RedisTimeoutError

from rooms import services as room_services
from rooms.models import Access, ChannelBinding, EventKind, RoomEvent, User
from tests.fixtures.actors import TenantWorld
from tests.fixtures.voice_ws import (
    mock_agent_for,
    receive_until,
    unbuilt_agent_for,
    ws_connect,
)
from voice.mock import MockRealtimeProvider
from voice.models import VoiceSession
from voice.session import LiveSession

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


def _pcm(samples: int, value: int = 1000) -> bytes:
    return value.to_bytes(2, "little", signed=True) * samples


def _b64_audio(pcm: bytes) -> str:
    return json.dumps({"type": "audio", "data": base64.b64encode(pcm).decode()})


@pytest.fixture
def room_path(world_a: TenantWorld) -> str:
    mock_agent_for(world_a.tenant, world_a.room)
    return f"/ws/rooms/{world_a.room.pk}/voice/?sample_rate=16000"


async def _start(path: str, user: User | None) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    communicator, connected = await ws_connect(path, user=user)
    assert connected
    started = await receive_until(communicator, "session_started")
    return communicator, started


async def _refusal(path: str, user: User | None = None) -> tuple[dict[str, Any], int]:
    """A refused connection: the error it was told and the close code."""
    communicator, connected = await ws_connect(path, user=user)
    assert connected  # accepted only to be told why
    error = json.loads(await communicator.receive_from(timeout=10))
    closed = await communicator.receive_output(timeout=10)
    await communicator.disconnect()
    assert closed["type"] == "websocket.close"
    return error, int(closed["code"])


def _session(provider: MockRealtimeProvider, session_id: str) -> LiveSession:
    return provider.sessions[session_id]


async def _row(session_id: str) -> VoiceSession:
    row: VoiceSession = await database_sync_to_async(VoiceSession.objects.get)(pk=session_id)
    return row


# --- the protocol ------------------------------------------------------------------------------


async def test_member_starts_a_session_and_audio_reaches_the_provider(
    room_path: str, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    communicator, started = await _start(room_path, member_a)
    provider = built_providers[0]

    await communicator.send_to(text_data=_b64_audio(_pcm(320)))
    await communicator.send_to(bytes_data=_pcm(320, 2000))
    await provider.wait_until(lambda: sum(len(a) for _, a in provider.sent_audio) >= 1280)
    row = await _row(started["session_id"])
    await communicator.disconnect()

    assert started["sample_rate"] == 16000
    assert started["audio_format"] == "base64_json"
    assert row.state == "active"
    assert row.transport == "websocket"
    assert row.participant_id == f"user:{member_a.pk}"
    assert b"".join(a for _, a in provider.sent_audio) == _pcm(320) + _pcm(320, 2000)


async def test_provider_events_reach_the_client_in_the_seed_format(
    room_path: str, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    communicator, started = await _start(room_path, member_a)
    provider = built_providers[0]
    session = _session(provider, started["session_id"])

    await provider.simulate_transcription(session, "hel", role="user", is_final=False)
    partial = await receive_until(communicator, "transcription")
    await provider.simulate_transcription(session, "hello", role="user", is_final=True)
    final = await receive_until(communicator, "transcription")
    await provider.simulate_response_start(session)
    speaking = await receive_until(communicator, "speaking")
    await provider.simulate_audio(session, _pcm(2400))  # 100 ms at 24 kHz
    audio = await receive_until(communicator, "audio")
    await communicator.disconnect()

    assert partial == {"type": "transcription", "text": "hel", "role": "user", "is_final": False}
    assert final == {"type": "transcription", "text": "hello", "role": "user", "is_final": True}
    assert speaking == {"type": "speaking", "speaking": True, "who": "assistant"}
    # 24 kHz provider audio resampled to the client's 16 kHz: 100 ms is 1600 samples, less
    # what the streaming resampler holds back (under 10 ms) until more comes.
    assert 2880 <= len(base64.b64decode(audio["data"])) <= 3200


async def test_binary_audio_format_sends_raw_frames(
    world_a: TenantWorld, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    await database_sync_to_async(mock_agent_for)(world_a.tenant, world_a.room)
    path = f"/ws/rooms/{world_a.room.pk}/voice/?sample_rate=24000&audio_format=binary"
    communicator, started = await _start(path, member_a)
    provider = built_providers[0]

    await provider.simulate_response_start(session := _session(provider, started["session_id"]))
    await provider.simulate_audio(session, _pcm(480, 1234))
    frame = await communicator.receive_output(timeout=10)
    while "bytes" not in frame or frame["bytes"] is None:
        frame = await communicator.receive_output(timeout=10)
    await communicator.disconnect()

    assert started["audio_format"] == "binary"
    assert frame["bytes"] == _pcm(480, 1234)  # same rate both sides: untouched


async def test_barge_in_clears_audio_and_truncates_at_the_reported_playback(
    room_path: str, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    communicator, started = await _start(room_path, member_a)
    provider = built_providers[0]
    session = _session(provider, started["session_id"])
    await provider.simulate_response_start(session)
    for _ in range(10):
        await provider.simulate_audio(session, _pcm(4800))  # 10 × 200 ms
    await receive_until(communicator, "audio")

    await communicator.send_to(text_data=json.dumps({"type": "playback", "played_ms": 700}))
    await communicator.send_to(text_data=json.dumps({"type": "interrupt"}))
    cleared = await receive_until(communicator, "clear_audio")
    await provider.wait_until(lambda: provider.truncations)
    await communicator.disconnect()

    assert cleared == {"type": "clear_audio"}
    assert provider.truncations == [(session.id, 700)]
    assert [call.method for call in provider.calls].count("interrupt") == 1


async def test_typed_text_goes_to_the_model_and_the_timeline(
    room_path: str,
    member_a: User,
    world_a: TenantWorld,
    built_providers: list[MockRealtimeProvider],
) -> None:
    communicator, started = await _start(room_path, member_a)
    provider = built_providers[0]

    await communicator.send_to(text_data=json.dumps({"type": "text", "text": "what time is it?"}))
    echoed = await receive_until(communicator, "transcription")
    await communicator.send_to(text_data=json.dumps({"type": "end"}))
    ended = await receive_until(communicator, "session_ended")
    closed = await communicator.receive_output(timeout=10)
    events = await database_sync_to_async(
        lambda: list(RoomEvent.objects.filter(room=world_a.room, kind=EventKind.MESSAGE))
    )()
    row = await _row(started["session_id"])
    await communicator.disconnect()

    assert provider.injected_texts == [(started["session_id"], "what time is it?", "user", False)]
    assert echoed == {
        "type": "transcription",
        "text": "what time is it?",
        "role": "user",
        "is_final": True,
    }
    assert ended == {"type": "session_ended", "reason": "ended_by_caller"}
    assert closed == {"type": "websocket.close", "code": 1000}
    assert [(e.role, e.text, e.status) for e in events] == [
        ("user", "what time is it?", "delivered")
    ]
    assert (row.state, row.end_reason) == ("ended", "ended_by_caller")


async def test_tool_call_status_reaches_the_client(
    room_path: str, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    communicator, started = await _start(room_path, member_a)
    provider = built_providers[0]
    session = _session(provider, started["session_id"])

    await provider.simulate_tool_call(session, "call-1", "lookup", {"q": "x"})
    running = await receive_until(communicator, "tool_call")
    finished = await receive_until(communicator, "tool_call")
    await communicator.disconnect()

    assert running == {
        "type": "tool_call",
        "call_id": "call-1",
        "name": "lookup",
        "status": "running",
    }
    assert finished["call_id"] == "call-1"
    assert finished["status"] == "failed"  # the mock agent has no handler for it


async def test_abrupt_disconnect_ends_the_session_and_keeps_the_transcript(
    room_path: str,
    member_a: User,
    world_a: TenantWorld,
    built_providers: list[MockRealtimeProvider],
) -> None:
    communicator, started = await _start(room_path, member_a)
    provider = built_providers[0]
    session = _session(provider, started["session_id"])
    await provider.simulate_transcription(session, "first words", role="user")
    await provider.simulate_transcription(session, "an answer", role="assistant")
    await provider.simulate_usage(session, {"total_tokens": 57, "output_tokens": 40})

    await communicator.disconnect(code=1006)  # no close frame: the TCP connection died
    row = await _row(started["session_id"])
    texts = await database_sync_to_async(
        lambda: list(
            RoomEvent.objects.filter(room=world_a.room, kind=EventKind.TRANSCRIPT)
            .order_by("index")
            .values_list("role", "text")
        )
    )()

    assert (row.state, row.end_reason) == ("ended", "client_hangup")
    assert texts == [("user", "first words"), ("assistant", "an answer")]
    assert row.usage == {"total_tokens": 57, "output_tokens": 40, "responses": 1}
    assert session.id not in provider.connected


async def test_disconnect_while_the_provider_connects_starts_nothing(
    room_path: str, member_a: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fixtures.engine import GatedConnectProvider
    from voice import admission

    provider = GatedConnectProvider()
    monkeypatch.setattr(admission, "provider_for", lambda config: provider)
    communicator, connected = await ws_connect(room_path, user=member_a)
    assert connected
    async with asyncio.timeout(10):
        await provider.connect_entered.wait()

    await communicator.disconnect()
    row = await database_sync_to_async(VoiceSession.objects.get)(
        participant_id=f"user:{member_a.pk}"
    )

    assert row.state == "ended"
    assert row.end_reason == "client_hangup"
    assert provider.connected == set()


# --- sample rate negotiation -----------------------------------------------------------------


async def test_hello_sets_the_rate_when_the_query_has_none(
    world_a: TenantWorld, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    await database_sync_to_async(mock_agent_for)(world_a.tenant, world_a.room)
    communicator, connected = await ws_connect(f"/ws/rooms/{world_a.room.pk}/voice/", user=member_a)
    assert connected
    await communicator.send_to(
        text_data=json.dumps({"type": "hello", "sample_rate": 48000, "audio_format": "binary"})
    )
    started = await receive_until(communicator, "session_started")
    for _ in range(10):
        await communicator.send_to(bytes_data=_pcm(960))  # 10 × 20 ms at 48 kHz
    provider = built_providers[0]
    await provider.wait_until(lambda: sum(len(a) for _, a in provider.sent_audio) >= 5760)
    await communicator.disconnect()

    assert (started["sample_rate"], started["audio_format"]) == (48000, "binary")
    # Resampled 48 → 16 kHz for the provider: 200 ms is 3200 samples, less what the
    # streaming resampler still holds (under 20 ms).
    assert 5760 <= sum(len(a) for _, a in provider.sent_audio) <= 6400


async def test_audio_first_means_the_default_rate(
    world_a: TenantWorld, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    await database_sync_to_async(mock_agent_for)(world_a.tenant, world_a.room)
    communicator, connected = await ws_connect(f"/ws/rooms/{world_a.room.pk}/voice/", user=member_a)
    assert connected
    await communicator.send_to(bytes_data=_pcm(320))
    started = await receive_until(communicator, "session_started")
    provider = built_providers[0]
    await provider.wait_until(lambda: provider.sent_audio)
    await communicator.disconnect()

    assert started["sample_rate"] == 16000
    assert provider.sent_audio[0][1] == _pcm(320)  # audio sent before the start is kept


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"text_data": "{not json"}, "bad_json"),
        ({"text_data": "[1, 2]"}, "bad_json"),
        ({"text_data": json.dumps({"type": "dance"})}, "unknown_type"),
        ({"text_data": json.dumps({"no": "type"})}, "unknown_type"),
        ({"text_data": json.dumps({"type": "audio", "data": "!!!not base64"})}, "bad_audio"),
        (
            {"text_data": json.dumps({"type": "audio", "data": base64.b64encode(b"abc").decode()})},
            "bad_audio",
        ),
        ({"bytes_data": b"\x01\x02\x03"}, "bad_audio"),
        ({"bytes_data": b"\x00" * (64 * 1024 + 2)}, "frame_too_large"),
        ({"text_data": "x" * (96 * 1024 + 1)}, "frame_too_large"),
        ({"text_data": json.dumps({"type": "playback", "played_ms": -5})}, "bad_message"),
        ({"text_data": json.dumps({"type": "text", "text": ""})}, "bad_message"),
        ({"text_data": json.dumps({"type": "text", "text": "x" * 4001})}, "bad_message"),
        ({"text_data": json.dumps({"type": "hello", "sample_rate": 16000})}, "bad_message"),
    ],
)
async def test_bad_frames_get_an_error_and_the_session_goes_on(
    room_path: str,
    member_a: User,
    built_providers: list[MockRealtimeProvider],
    frame: dict[str, Any],
    code: str,
) -> None:
    communicator, started = await _start(room_path, member_a)
    provider = built_providers[0]

    await communicator.send_to(**frame)
    error = await receive_until(communicator, "error")
    await communicator.send_to(bytes_data=_pcm(320))
    await provider.wait_until(lambda: provider.sent_audio)
    row = await _row(started["session_id"])
    await communicator.disconnect()

    assert error["code"] == code
    assert error["message"]
    assert row.state == "active"
    assert provider.sent_audio == [(started["session_id"], _pcm(320))]


async def test_a_flood_is_rate_limited_then_closed(
    room_path: str, member_a: User, built_providers: list[MockRealtimeProvider]
) -> None:
    communicator, started = await _start(room_path, member_a)

    for _ in range(900):  # far beyond 100 frames/s with a 2 s burst
        await communicator.send_to(bytes_data=_pcm(16))
    limited = await receive_until(communicator, "error")
    flooded = await receive_until(communicator, "error")
    closed = await communicator.receive_output(timeout=10)
    while closed["type"] != "websocket.close":
        closed = await communicator.receive_output(timeout=10)
    await communicator.disconnect()
    row = await _row(started["session_id"])

    assert limited["code"] == "rate_limited"
    assert flooded["code"] == "flooded"
    assert closed["code"] == 4429
    assert (row.state, row.end_reason) == ("ended", "client_hangup")


async def test_text_before_the_session_is_live_is_refused_politely(
    room_path: str, member_a: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fixtures.engine import GatedConnectProvider
    from voice import admission

    provider = GatedConnectProvider()
    monkeypatch.setattr(admission, "provider_for", lambda config: provider)
    communicator, _ = await ws_connect(room_path, user=member_a)
    async with asyncio.timeout(10):
        await provider.connect_entered.wait()

    await communicator.send_to(text_data=json.dumps({"type": "text", "text": "hi"}))
    error = await receive_until(communicator, "error")
    provider.release_connect.set()
    await receive_until(communicator, "session_started")
    await communicator.disconnect()

    assert error["code"] == "not_live"
    assert provider.injected_texts == []


# --- authentication and isolation --------------------------------------------------------------


async def test_anonymous_caller_is_refused_before_any_provider_is_built(
    room_path: str, built_providers: list[MockRealtimeProvider]
) -> None:
    error, code = await _refusal(room_path)

    assert (error["code"], code) == ("unauthenticated", 4401)
    assert built_providers == []


async def test_other_tenants_member_cannot_find_the_room(
    room_path: str,
    world_a: TenantWorld,
    owner_b: User,
    world_b: TenantWorld,
    built_providers: list[MockRealtimeProvider],
) -> None:
    by_id, by_id_code = await _refusal(room_path, owner_b)
    # Both tenants have a "room-1": B's key resolves to B's own room, never to A's.
    await database_sync_to_async(mock_agent_for)(world_b.tenant, world_b.room)
    communicator, started = await _start("/ws/rooms/room-1/voice/?sample_rate=16000", owner_b)
    row = await _row(started["session_id"])
    await communicator.disconnect()

    assert (by_id["code"], by_id_code) == ("not_found", 4404)
    assert row.room_id == world_b.room.pk
    assert row.tenant_id == world_b.tenant.pk
    assert len(built_providers) == 1


async def test_member_of_a_reaches_a_but_not_b(
    world_a: TenantWorld, world_b: TenantWorld, member_a: User
) -> None:
    await database_sync_to_async(mock_agent_for)(world_b.tenant, world_b.room)

    error, code = await _refusal(f"/ws/rooms/{world_b.room.pk}/voice/", member_a)

    assert (error["code"], code) == ("not_found", 4404)


async def test_room_token_admits_its_participant_with_its_permissions(
    world_a: TenantWorld, built_providers: list[MockRealtimeProvider]
) -> None:
    await database_sync_to_async(mock_agent_for)(world_a.tenant, world_a.room)
    token = await database_sync_to_async(room_services.room_token_create)(
        tenant=world_a.tenant, room=world_a.room, participant_id="guest-7", permissions=["listen"]
    )
    path = f"/ws/rooms/{world_a.room.pk}/voice/?sample_rate=16000&token={token}"
    communicator, started = await _start(path, None)
    provider = built_providers[0]
    await communicator.send_to(bytes_data=_pcm(320))
    await communicator.send_to(text_data=json.dumps({"type": "text", "text": "let me talk"}))
    refused_text = await receive_until(communicator, "error")
    await communicator.disconnect()
    row = await _row(started["session_id"])

    assert row.participant_id == "guest-7"
    assert row.metrics["engine"]["inbound_dropped_access"] == 1
    assert refused_text["code"] == "message_blocked"
    # A listen-only token: the caller's audio and text never reach the model.
    assert provider.sent_audio == []
    assert provider.injected_texts == []


@pytest.mark.parametrize("problem", ["tampered", "expired", "other_room", "other_tenant"])
async def test_bad_room_tokens_are_refused(
    world_a: TenantWorld,
    world_b: TenantWorld,
    problem: str,
    built_providers: list[MockRealtimeProvider],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await database_sync_to_async(mock_agent_for)(world_a.tenant, world_a.room)
    other_room = await database_sync_to_async(room_services.room_create)(
        tenant=world_a.tenant, key="room-2"
    )
    room, tenant = (
        (world_b.room, world_b.tenant)
        if problem == "other_tenant"
        else (other_room if problem == "other_room" else world_a.room, world_a.tenant)
    )
    token = await database_sync_to_async(room_services.room_token_create)(
        tenant=tenant, room=room, participant_id="guest", ttl_seconds=60
    )
    if problem == "tampered":
        token = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    if problem == "expired":
        real_time = time.time
        monkeypatch.setattr(time, "time", lambda: real_time() + 120)

    error, code = await _refusal(f"/ws/rooms/{world_a.room.pk}/voice/?token={token}")

    expected = {
        "tampered": ("unauthenticated", 4401),
        "expired": ("unauthenticated", 4401),
        "other_room": ("forbidden", 4403),
        "other_tenant": ("not_found", 4404),
    }[problem]
    assert (error["code"], code) == expected
    assert built_providers == []


async def test_revoked_participant_cannot_join(
    room_path: str,
    member_a: User,
    world_a: TenantWorld,
    built_providers: list[MockRealtimeProvider],
) -> None:
    await database_sync_to_async(room_services.binding_attach)(
        tenant=world_a.tenant,
        room=world_a.room,
        channel_id="voice",
        participant_id=f"user:{member_a.pk}",
        access=Access.NONE,
    )

    error, code = await _refusal(room_path, member_a)

    assert (error["code"], code) == ("forbidden", 4403)
    assert built_providers == []


async def test_unavailable_provider_is_refused_with_its_reason(
    world_a: TenantWorld, member_a: User
) -> None:
    await database_sync_to_async(unbuilt_agent_for)(world_a.tenant, world_a.room)

    error, code = await _refusal(f"/ws/rooms/{world_a.room.pk}/voice/", member_a)

    assert (error["code"], code) == ("unavailable", 4409)
    assert "Google Gemini Live" in error["message"]


async def test_foreign_origin_is_refused_at_the_handshake(room_path: str, member_a: User) -> None:
    communicator, connected = await ws_connect(
        room_path, user=member_a, origin="https://evil.example"
    )
    await communicator.disconnect()

    assert connected is False


async def test_operator_mute_applies_to_the_live_session(
    room_path: str,
    member_a: User,
    world_a: TenantWorld,
    built_providers: list[MockRealtimeProvider],
) -> None:
    communicator, started = await _start(room_path, member_a)
    provider = built_providers[0]
    binding = await database_sync_to_async(ChannelBinding.objects.get)(
        room=world_a.room, participant_id=f"user:{member_a.pk}"
    )

    await database_sync_to_async(room_services.binding_set_muted)(
        tenant=world_a.tenant, binding=binding, muted=True
    )
    told = await receive_until(communicator, "access")
    await communicator.send_to(text_data=json.dumps({"type": "text", "text": "am I muted?"}))
    blocked = await receive_until(communicator, "error")
    await communicator.disconnect()

    assert told == {
        "type": "access",
        "access": "read_write",
        "muted": True,
        "output_muted": False,
        "can_speak": False,
        "can_hear": True,
    }
    assert blocked["code"] == "message_blocked"
    assert "muted" in blocked["message"]
    assert provider.injected_texts == []


async def test_operator_ends_a_live_session_through_its_host_channel(
    room_path: str, member_a: User, owner_a: User, world_a: TenantWorld
) -> None:
    from django.test import Client

    communicator, started = await _start(room_path, member_a)

    def end_as_owner() -> int:
        client = Client()
        client.force_login(owner_a)
        url = f"/rooms/{world_a.room.pk}/live/sessions/{started['session_id']}/end/"
        return int(client.post(url).status_code)

    status = await database_sync_to_async(end_as_owner)()
    ended = await receive_until(communicator, "session_ended")
    closed = await communicator.receive_output(timeout=10)
    await communicator.disconnect()  # the host finishes recording the end first
    row = await _row(started["session_id"])

    assert status == 200
    assert ended == {"type": "session_ended", "reason": "ended_by_operator"}
    assert closed == {"type": "websocket.close", "code": 1000}
    assert (row.state, row.end_reason) == ("ended", "ended_by_operator")


async def test_server_cancelling_the_connection_still_ends_and_records_the_session(
    room_path: str,
    member_a: User,
    world_a: TenantWorld,
    built_providers: list[MockRealtimeProvider],
) -> None:
    communicator, started = await _start(room_path, member_a)
    provider = built_providers[0]
    await provider.simulate_transcription(
        provider.sessions[started["session_id"]], "said before the shutdown", role="user"
    )

    communicator.future.cancel()  # what a server shutting down does to its applications
    # The application ends cancelled; channels-redis may instead surface the cancelled
    # read of its socket as redis's TimeoutError. Either way it has ended: what matters is
    # what it left behind.
    with contextlib.suppress(asyncio.CancelledError, RedisTimeoutError):
        await communicator.future
    assert communicator.future.done()
    row = await _row(started["session_id"])
    texts = await database_sync_to_async(
        lambda: list(
            RoomEvent.objects.filter(room=world_a.room, kind=EventKind.TRANSCRIPT).values_list(
                "text", flat=True
            )
        )
    )()

    assert row.state == "ended"
    assert texts == ["said before the shutdown"]
    assert provider.connected == set()


async def test_a_server_fault_while_admitting_is_answered_in_words(
    room_path: str, member_a: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voice import consumers

    def broken(admission: object, *, agent_slug: str | None) -> object:
        raise RuntimeError("the credential no longer decrypts")

    monkeypatch.setattr(consumers, "plan_voice", broken)

    error, code = await _refusal(room_path, member_a)

    assert (error["code"], code) == ("internal_error", 1011)
    assert "decrypt" not in error["message"]  # internals stay in the server's log
