"""Self-tests of the fake ElevenLabs Agents server, driven by a plain websockets client. Every
frame the fake sends is checked against the AsyncAPI-derived server models, every frame the
tests send against the client validator (tests/fakes/wire_schema.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.fakes.elevenlabs_convai import AGENT_DEFAULT_CLIENT_EVENTS, FakeElevenLabs
from tests.fakes.openai_realtime import ulaw_encode
from tests.fakes.wire_schema import (
    validate_elevenlabs_client_message,
    validate_elevenlabs_server_message,
)

pytestmark = pytest.mark.asyncio

JSON = dict[str, Any]
KEY = "xi-test-key"
INIT: JSON = {
    "type": "conversation_initiation_client_data",
    "conversation_config_override": {
        "agent": {"prompt": {"prompt": "Be concise."}, "first_message": "", "language": "en"},
        "tts": {"voice_id": "21m00Tcm4TlvDq8ikWAM"},
    },
    "dynamic_variables": {"user_name": "Ada"},
    "custom_llm_extra_body": {"temperature": 0.3},
}


def init_with(**agent: Any) -> JSON:
    message: JSON = json.loads(json.dumps(INIT))
    message["conversation_config_override"]["agent"].update(agent)
    return message


def checked(**options: Any) -> FakeElevenLabs:
    options.setdefault("chunk_interval_s", 0.0)
    options.setdefault("ping_interval_s", None)
    return FakeElevenLabs(client_validator=validate_elevenlabs_client_message, **options)


def assert_valid(fake: FakeElevenLabs) -> None:
    assert fake.invalid_client_frames == []
    for message in fake.sent:
        validate_elevenlabs_server_message(json.dumps(message))


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeElevenLabs]:
    async with checked() as server:
        yield server
        assert_valid(server)


async def send(ws: ClientConnection, message: JSON) -> None:
    await ws.send(json.dumps(message))


async def recv(ws: ClientConnection, within: float = 5) -> JSON:
    async with asyncio.timeout(within):
        message: JSON = json.loads(await ws.recv())
    return message


async def recv_until(ws: ClientConnection, done: Callable[[JSON], bool]) -> list[JSON]:
    frames: list[JSON] = []
    while not frames or not done(frames[-1]):
        frames.append(await recv(ws))
    return frames


async def until_idle(ws: ClientConnection, fake: FakeElevenLabs) -> list[JSON]:
    """Frames until the agent has finished its turn and nothing more is pending (reading
    all along: a client that stops reading stalls the server's sends, as a real one would)."""
    frames: list[JSON] = []
    while True:
        try:
            frames.append(await recv(ws, within=0.1))
        except TimeoutError:
            if not fake.responding:
                return frames


def of_type(kind: str) -> Callable[[JSON], bool]:
    return lambda message: message.get("type") == kind


def squeezed(frames: list[JSON]) -> list[str]:
    out: list[str] = []
    for frame in frames:
        if not out or out[-1] != frame["type"]:
            out.append(frame["type"])
    return out


async def open_ws(url: str, key: str | None = None) -> ClientConnection:
    return await connect(url, additional_headers={"xi-api-key": key} if key else {})


async def started(fake: FakeElevenLabs, init: JSON = INIT, **kwargs: Any) -> ClientConnection:
    ws = await open_ws(fake.url, **kwargs)
    await send(ws, init)
    metadata = await recv(ws)
    assert metadata["type"] == "conversation_initiation_metadata"
    return ws


async def closed_with(ws: ClientConnection) -> tuple[list[JSON], int | None, str | None]:
    frames: list[JSON] = []
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(5):
            while True:
                frames.append(json.loads(await ws.recv()))
    return frames, ws.close_code, ws.close_reason


def http_get(url: str, key: str | None) -> tuple[int, JSON]:
    request = urllib.request.Request(url, headers={"xi-api-key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def pcm_tone(ms: int, *, rate: int = 16_000, amplitude: int = 3000) -> bytes:
    samples = np.arange(rate * ms // 1000)
    return bytes((amplitude * np.sin(2 * np.pi * 220 * samples / rate)).astype("<i2").tobytes())


def chunk(data: bytes) -> JSON:
    return {"user_audio_chunk": base64.b64encode(data).decode()}


# ------------------------------------------------------------------------------ start


async def test_initiation_is_answered_with_metadata_and_overrides_apply(
    fake: FakeElevenLabs,
) -> None:
    async with await open_ws(fake.url) as ws:
        await send(ws, init_with(first_message="Hi {{user_name}}!"))
        metadata = await recv(ws)
        assert metadata == {
            "type": "conversation_initiation_metadata",
            "conversation_initiation_metadata_event": {
                "conversation_id": fake.conversation_id,
                "agent_output_audio_format": "pcm_16000",
                "user_input_audio_format": "pcm_16000",
            },
        }
        frames = await until_idle(ws, fake)
    assert fake.conversation_id.startswith("conv_")
    assert fake.initiation == init_with(first_message="Hi {{user_name}}!")
    assert fake.transcript == [{"role": "agent", "message": "Hi Ada!"}]
    assert squeezed(frames) == ["internal_tentative_agent_response", "agent_response", "audio"]
    response = next(f for f in frames if f["type"] == "agent_response")
    assert response["agent_response_event"]["agent_response"] == "Hi Ada!"


async def test_a_client_that_skips_the_initiation_gets_the_agent_defaults(
    fake: FakeElevenLabs,
) -> None:
    async with await open_ws(fake.url) as ws:
        await send(ws, {"type": "user_activity"})
        assert (await recv(ws))["type"] == "conversation_initiation_metadata"
    assert fake.initiation is None
    assert fake.user_activity == 1


async def test_an_unknown_agent_is_closed_with_3000() -> None:
    async with checked() as fake, await open_ws(fake.url.replace("agent_test", "agent_x")) as ws:
        frames, code, reason = await closed_with(ws)
    assert (frames, code, reason) == (
        [],
        3000,
        "The AI agent you are trying to reach does not exist.",
    )


# ------------------------------------------------------------------------------ auth


async def test_a_signed_url_starts_one_private_conversation() -> None:
    async with checked(requires_auth=True) as fake:
        status, body = await asyncio.to_thread(
            http_get,
            f"{fake.base_url}/v1/convai/conversation/get-signed-url?agent_id=agent_test",
            KEY,
        )
        assert status == 200
        signed = body["signed_url"]
        assert signed.startswith(f"{fake.ws_base_url}/v1/convai/conversation?agent_id=agent_test&")
        assert "conversation_signature=" in signed
        async with await open_ws(signed) as ws:
            await send(ws, INIT)
            assert (await recv(ws))["type"] == "conversation_initiation_metadata"
        async with await open_ws(signed) as again:
            frames, code, _reason = await closed_with(again)
        assert code == 1008
        assert frames == [
            {
                "type": "error",
                "error_event": {"code": 1008, "message": "Invalid conversation signature"},
            }
        ]
        assert_valid(fake)


async def test_a_signed_url_expires() -> None:
    async with checked(requires_auth=True, signed_url_ttl_s=0.0) as fake:
        signed = fake.issue_signed_url()
        await asyncio.sleep(0.01)
        async with await open_ws(signed) as ws:
            frames, code, reason = await closed_with(ws)
        assert (code, reason) == (1008, "Conversation signature expired")
        assert frames[0]["error_event"]["code"] == 1008


async def test_a_private_agent_takes_the_api_key_header_and_refuses_anonymous_callers() -> None:
    async with checked(requires_auth=True) as fake:
        async with await started(fake, key=KEY):
            pass
        async with await open_ws(fake.url) as ws:
            frames, code, _reason = await closed_with(ws)
        assert code == 1008 and frames[0]["type"] == "error"
        assert fake.closes[-1][:2] == (1, 1008)


@pytest.mark.parametrize(
    ("query", "key", "status", "detail_status"),
    [
        ("agent_id=agent_test", None, 401, "needs_authorization"),
        ("agent_id=agent_test", "xi-wrong", 401, "invalid_api_key"),
        ("agent_id=agent_other", KEY, 404, "agent_not_found"),
    ],
    ids=["no key", "wrong key", "unknown agent"],
)
async def test_the_signed_url_endpoint_refuses(
    fake: FakeElevenLabs, query: str, key: str | None, status: int, detail_status: str
) -> None:
    url = f"{fake.base_url}/v1/convai/conversation/get-signed-url?{query}"
    got, body = await asyncio.to_thread(http_get, url, key)
    assert (got, body["detail"]["status"]) == (status, detail_status)
    assert fake.signed_urls == []


async def test_the_signed_url_endpoint_needs_an_agent_id(fake: FakeElevenLabs) -> None:
    url = f"{fake.base_url}/v1/convai/conversation/get-signed-url"
    got, body = await asyncio.to_thread(http_get, url, KEY)
    assert got == 422 and body["detail"][0]["loc"] == ["query", "agent_id"]


# ------------------------------------------------------------------------------ turns


async def test_a_user_turn_then_the_agent_reply_share_growing_event_ids(
    fake: FakeElevenLabs,
) -> None:
    fake.next_reply = "It is sunny today."
    async with await started(fake) as ws:
        await fake.user_speaks("what is the weather")
        frames = await until_idle(ws, fake)
    assert squeezed(frames) == [
        "tentative_user_transcript",
        "user_transcript",
        "internal_tentative_agent_response",
        "agent_response",
        "audio",
    ]
    user = next(f for f in frames if f["type"] == "user_transcript")["user_transcription_event"]
    response = next(f for f in frames if f["type"] == "agent_response")["agent_response_event"]
    audio = [f["audio_event"] for f in frames if f["type"] == "audio"]
    assert user["user_transcript"] == "what is the weather"
    assert response["agent_response"] == "It is sunny today."
    assert response["event_id"] > user["event_id"]
    assert {a["event_id"] for a in audio} == {response["event_id"]}
    assert sum(len(base64.b64decode(a["audio_base_64"])) for a in audio) == 600 * 16 * 2
    assert fake.transcript == [
        {"role": "user", "message": "what is the weather"},
        {"role": "agent", "message": "It is sunny today."},
    ]


async def test_barge_in_sends_interruption_then_the_correction(fake: FakeElevenLabs) -> None:
    fake.chunk_interval_s = 0.02
    fake.reply_audio_ms = 2000
    fake.next_reply = "one two three four five six seven eight nine ten"
    async with await started(fake) as ws:
        await fake.user_speaks("tell me a story")
        await fake.wait_for_sent("audio", count=5)
        await fake.user_speaks("stop")
        frames = await recv_until(ws, of_type("agent_response_correction"))
        answer = await until_idle(ws, fake)
    cut = next(f for f in frames if f["type"] == "agent_response")["agent_response_event"]
    interruption = next(f for f in frames if f["type"] == "interruption")
    correction = frames[-1]["agent_response_correction_event"]
    assert interruption == {
        "type": "interruption",
        "interruption_event": {"event_id": cut["event_id"]},
    }
    assert correction["original_agent_response"] == fake.next_reply
    assert correction["event_id"] == cut["event_id"]
    corrected = correction["corrected_agent_response"]
    assert fake.next_reply.startswith(corrected) and corrected != fake.next_reply
    assert squeezed(answer)[-4:] == [
        "user_transcript",
        "internal_tentative_agent_response",
        "agent_response",
        "audio",
    ]
    assert fake.transcript[1] == {"role": "agent", "message": corrected}
    assert fake.transcript[2] == {"role": "user", "message": "stop"}


async def test_interrupt_and_correct_controls(fake: FakeElevenLabs) -> None:
    fake.chunk_interval_s = 0.02
    fake.reply_audio_ms = 2000
    async with await started(fake) as ws:
        await fake.agent_says("a long answer that goes on")
        await fake.wait_for_sent("audio", count=3)
        await fake.interrupt()
        cut = await recv_until(ws, of_type("agent_response_correction"))
        assert cut[-2]["type"] == "interruption"
        await fake.correct_last_response("a long")
        frames = await recv_until(ws, of_type("agent_response_correction"))
    assert frames[-1]["agent_response_correction_event"]["corrected_agent_response"] == "a long"
    assert fake.transcript == [{"role": "agent", "message": "a long"}]


async def test_a_client_tool_call_waits_for_its_result(fake: FakeElevenLabs) -> None:
    fake.next_tool_call = ("open_url", {"url": "https://example.com"})
    async with await started(fake) as ws:
        await fake.user_speaks("open the site")
        frames = await recv_until(ws, of_type("client_tool_call"))
        call = frames[-1]["client_tool_call"]
        assert (call["tool_name"], call["parameters"]) == (
            "open_url",
            {"url": "https://example.com"},
        )
        await send(
            ws,
            {
                "type": "client_tool_result",
                "tool_call_id": call["tool_call_id"],
                "result": "opened",
                "is_error": False,
            },
        )
        rest = await recv_until(ws, of_type("agent_response"))
        await fake.wait_idle()
    assert rest[0] == {
        "type": "agent_tool_response",
        "agent_tool_response": {
            "tool_name": "open_url",
            "tool_call_id": call["tool_call_id"],
            "tool_type": "client",
            "is_error": False,
            "is_called": True,
            "event_id": call["event_id"],
        },
    }
    assert fake.tool_results[0]["result"] == "opened"


async def test_contextual_updates_are_kept_and_user_messages_are_answered(
    fake: FakeElevenLabs,
) -> None:
    async with await started(fake) as ws:
        await send(ws, {"type": "contextual_update", "text": "User opened pricing"})
        await send(ws, {"type": "user_message", "text": "hello"})
        frames = await recv_until(ws, of_type("agent_response"))
        await fake.wait_idle()
    assert "user_transcript" not in squeezed(frames)
    assert fake.contextual_updates == ["User opened pricing"]
    assert fake.transcript[0] == {"role": "user", "message": "hello"}


async def test_ping_pong_measures_the_round_trip() -> None:
    async with checked(ping_interval_s=0.05) as fake:
        async with await started(fake) as ws:
            first = await recv_until(ws, of_type("ping"))
            assert first[-1]["ping_event"] == {"event_id": 1, "ping_ms": None}
            await send(ws, {"type": "pong", "event_id": 1})
            second = (await recv_until(ws, of_type("ping")))[-1]["ping_event"]
            assert second["event_id"] == 2 and isinstance(second["ping_ms"], int)
            assert fake.unanswered_pings == 1
        assert_valid(fake)


async def test_mu_law_audio_both_ways() -> None:
    async with checked(
        user_input_audio_format="ulaw_8000", agent_output_audio_format="ulaw_8000"
    ) as fake:
        async with await started(fake) as ws:
            sent = pcm_tone(100, rate=8000)
            await send(ws, chunk(ulaw_encode(sent)))
            await fake.user_speaks("hi")
            frames = await until_idle(ws, fake)
        metadata = fake.sent_per_connection[0][0]["conversation_initiation_metadata_event"]
        assert metadata["user_input_audio_format"] == "ulaw_8000"
        assert metadata["agent_output_audio_format"] == "ulaw_8000"
        assert fake.input_rate() == 8000 and len(fake.input_pcm16()) == len(sent)
        audio = b"".join(
            base64.b64decode(f["audio_event"]["audio_base_64"])
            for f in frames
            if f["type"] == "audio"
        )
        assert len(audio) == 8000 * 600 // 1000
        assert_valid(fake)


async def test_auto_vad_hears_turns_and_scores_voice_activity() -> None:
    async with checked(auto_vad=True, silence_ms=300) as fake:
        fake.user_transcripts.append("hello there")
        async with await started(fake) as ws:
            speech = pcm_tone(300) + bytes(16_000 * 2 * 400 // 1000)
            for start in range(0, len(speech), 640):
                await send(ws, chunk(speech[start : start + 640]))
            frames = await until_idle(ws, fake)
        scores = [f["vad_score_event"]["vad_score"] for f in frames if f["type"] == "vad_score"]
        assert max(scores) == 1.0 and min(scores) == 0.0
        user = next(f for f in frames if f["type"] == "user_transcript")
        assert user["user_transcription_event"]["user_transcript"] == "hello there"
        assert fake.input_pcm16() == speech
        assert_valid(fake)


async def test_the_agent_default_client_events_leave_out_the_optional_ones() -> None:
    async with checked(client_events=AGENT_DEFAULT_CLIENT_EVENTS) as fake:
        async with await started(fake) as ws:
            await send(ws, chunk(pcm_tone(20)))
            await fake.user_speaks("hi there you")
            await until_idle(ws, fake)
        assert set(fake.sent_types()) == {
            "conversation_initiation_metadata",
            "tentative_user_transcript",
            "user_transcript",
            "agent_response",
            "audio",
        }


async def test_client_events_can_be_overridden(fake: FakeElevenLabs) -> None:
    init = json.loads(json.dumps(INIT))
    init["conversation_config_override"]["conversation"] = {
        "client_events": ["conversation_initiation_metadata", "audio", "agent_response"]
    }
    async with await started(fake, init) as ws:
        await fake.user_speaks("hi")
        frames = await until_idle(ws, fake)
    assert squeezed(frames) == ["agent_response", "audio"]


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("allowed", "reason"),
    [
        (
            {"agent.prompt.prompt", "agent.first_message", "agent.language"},
            "Override for field 'voice_id' is not allowed by config.",
        ),
        (
            {"tts.voice_id", "agent.first_message", "agent.language"},
            "Override for field 'prompt' is not allowed by config.",
        ),
    ],
    ids=["voice", "prompt"],
)
async def test_an_override_the_agent_does_not_allow_ends_the_conversation(
    allowed: set[str], reason: str
) -> None:
    async with checked(allowed_overrides=allowed) as fake, await open_ws(fake.url) as ws:
        await send(ws, INIT)
        frames, code, said = await closed_with(ws)
    assert (code, said) == (1008, reason)
    assert frames == [
        {
            "type": "error",
            "error_event": {"code": 1008, "message": reason, "error_type": "override_error"},
        }
    ]


async def test_a_missing_dynamic_variable_ends_the_conversation(fake: FakeElevenLabs) -> None:
    init = init_with(prompt={"prompt": "Help {{customer}} as {{system__agent_id}}."})
    async with await open_ws(fake.url) as ws:
        await send(ws, init)
        frames, code, _reason = await closed_with(ws)
    assert code == 1008
    assert frames[0]["error_event"]["error_type"] == "missing_dynamic_variable"
    assert "customer" in frames[0]["error_event"]["message"]


@pytest.mark.parametrize(
    ("frame", "error_type"),
    [
        ("not json", "invalid_message"),
        ('{"type": "user_audio", "audio": "AAAA"}', "invalid_message"),
        ('{"type": "pong"}', "missing_fields"),
    ],
    ids=["not JSON", "unknown type", "pong without event_id"],
)
async def test_a_bad_message_ends_the_conversation_with_1008(frame: str, error_type: str) -> None:
    async with FakeElevenLabs(ping_interval_s=None) as fake:
        async with await started(fake) as ws:
            await ws.send(frame)
            frames, code, _reason = await closed_with(ws)
        assert code == 1008
        assert frames[-1]["error_event"]["error_type"] == error_type


@pytest.mark.parametrize(
    ("options", "code", "error_type"),
    [
        ({"max_duration_s": 0.1}, 1000, "max_duration_exceeded"),
        ({"idle_timeout_s": 0.1}, 1002, "transport_receive_timeout"),
    ],
    ids=["max duration", "no user input"],
)
async def test_limits_end_the_conversation(options: JSON, code: int, error_type: str) -> None:
    async with checked(**options) as fake, await started(fake) as ws:
        frames, got, _reason = await closed_with(ws)
    assert got == code
    assert frames[-1]["error_event"]["code"] == code
    assert frames[-1]["error_event"]["error_type"] == error_type


async def test_send_error_and_drop_connection_controls(fake: FakeElevenLabs) -> None:
    async with await started(fake) as ws:
        await fake.send_error(1011, "unknown_websocket_crash", "boom")
        frames, code, reason = await closed_with(ws)
    assert (code, reason) == (1011, "boom")
    assert frames[-1]["error_event"] == {
        "code": 1011,
        "message": "boom",
        "error_type": "unknown_websocket_crash",
    }
    async with await started(fake) as ws:
        await fake.user_speaks("remember me")
        await fake.drop_connection()
        _frames, code, _reason = await closed_with(ws)
    assert code == 1006
    async with await started(fake):
        assert fake.transcript == []
        assert (
            fake.conversation_id
            != fake.sent_per_connection[1][0]["conversation_initiation_metadata_event"][
                "conversation_id"
            ]
        )
