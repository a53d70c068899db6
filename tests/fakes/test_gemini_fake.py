"""Self-tests of the fake Gemini Live server, driven by a plain websockets client. Every frame
the fake sends is checked against ``google.genai.types.LiveServerMessage``, every frame the
tests send against the client validator (tests/fakes/wire_schema.py)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from google import genai
from google.genai import types as genai_types
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.fakes.gemini_live import (
    GO_AWAY_ABORT,
    OUTPUT_MIME,
    EnergyVad,
    FakeGeminiLive,
    duration,
)
from tests.fakes.wire_schema import validate_gemini_client_message, validate_gemini_server_message

pytestmark = pytest.mark.asyncio

JSON = dict[str, Any]
KEY = "AIza-test-key"
MODEL = "models/gemini-2.5-flash-native-audio-preview-12-2025"
SETUP: JSON = {
    "setup": {
        "model": MODEL,
        "generationConfig": {
            "responseModalities": ["AUDIO"],
            "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Aoede"}}},
            "temperature": 0.7,
        },
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "inputAudioTranscription": {},
        "outputAudioTranscription": {},
        "sessionResumption": {},
    }
}


def setup_with(**changes: Any) -> JSON:
    body = json.loads(json.dumps(SETUP["setup"]))
    for name, value in changes.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return {"setup": body}


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeGeminiLive]:
    async with FakeGeminiLive(
        chunk_interval_s=0.0, client_validator=validate_gemini_client_message
    ) as server:
        yield server
        assert server.invalid_client_frames == []
        for message in server.sent:
            validate_gemini_server_message(json.dumps(message))


async def open_ws(
    fake: FakeGeminiLive, key: str | None = KEY, query: bool = False
) -> ClientConnection:
    url = fake.url + (f"?key={key}" if query and key else "")
    headers = {"x-goog-api-key": key} if key and not query else {}
    return await connect(url, additional_headers=headers)


async def send(ws: ClientConnection, message: JSON) -> None:
    await ws.send(json.dumps(message))


async def recv(ws: ClientConnection, within: float = 5) -> JSON:
    async with asyncio.timeout(within):
        message: JSON = json.loads(await ws.recv())
    return message


async def recv_until(ws: ClientConnection, done: Callable[[JSON], bool]) -> list[JSON]:
    """Frames up to and including the first for which ``done`` is true."""
    frames: list[JSON] = []
    while not frames or not done(frames[-1]):
        frames.append(await recv(ws))
    return frames


def turn_complete(message: JSON) -> bool:
    return bool(message.get("serverContent", {}).get("turnComplete"))


def kinds(frames: list[JSON]) -> list[str]:
    """Each frame's fields, ``serverContent`` ones as ``serverContent.x``, runs squeezed."""
    out: list[str] = []
    for frame in frames:
        names = [
            f"serverContent.{part}" if name == "serverContent" else name
            for name, body in frame.items()
            for part in (body if name == "serverContent" else [None])
        ]
        label = "+".join(names)
        if not out or out[-1] != label:
            out.append(label)
    return out


async def ready(fake: FakeGeminiLive, setup: JSON = SETUP, **kwargs: Any) -> ClientConnection:
    ws = await open_ws(fake, **kwargs)
    await send(ws, setup)
    assert await recv(ws) == {"setupComplete": {}}
    return ws


async def closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(5):
            while True:
                await ws.recv()
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason


def pcm_tone(ms: int, *, rate: int = 16_000, amplitude: int = 3000) -> bytes:
    samples = np.arange(rate * ms // 1000)
    return bytes((amplitude * np.sin(2 * np.pi * 220 * samples / rate)).astype("<i2").tobytes())


def audio_frame(pcm: bytes, rate: int = 16_000) -> JSON:
    return {
        "realtimeInput": {
            "audio": {"data": base64.b64encode(pcm).decode(), "mimeType": f"audio/pcm;rate={rate}"}
        }
    }


# ------------------------------------------------------------------------------ connection


@pytest.mark.parametrize("query", [False, True], ids=["x-goog-api-key header", "?key="])
async def test_setup_is_answered_with_setup_complete(fake: FakeGeminiLive, query: bool) -> None:
    async with await ready(fake, query=query):
        await fake.wait_for_connections(1)
        assert fake.setup == SETUP["setup"]
        assert fake.received_kinds() == ["setup"]
        assert fake.conversation == []


async def test_a_wrong_key_closes_with_1007_api_key_not_valid(fake: FakeGeminiLive) -> None:
    async with await open_ws(fake, key="AIza-wrong") as ws:
        await send(ws, SETUP)
        assert await closed_with(ws) == (1007, "API key not valid. Please pass a valid API key.")
    assert fake.sent == []


async def test_no_key_closes_with_1008_unregistered_callers(fake: FakeGeminiLive) -> None:
    async with await open_ws(fake, key=None) as ws:
        await send(ws, SETUP)
        code, reason = await closed_with(ws)
    assert code == 1008
    assert reason is not None and reason.startswith("Method doesn't allow unregistered callers")
    assert len(reason.encode()) == 123


async def test_an_unknown_path_is_not_found(fake: FakeGeminiLive) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{fake.base_url}/ws/other", additional_headers={"x-goog-api-key": KEY})
    assert refused.value.response.status_code == 404


async def test_an_unknown_model_closes_with_1008_not_found(fake: FakeGeminiLive) -> None:
    async with await open_ws(fake) as ws:
        await send(ws, setup_with(model="models/gemini-9"))
        assert await closed_with(ws) == (
            1008,
            "models/gemini-9 is not found for API version v1beta, or is not supported for "
            "bidiGenerateContent.",
        )


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([{"realtimeInput": {"text": "hi"}}], "Request contains an invalid argument."),
        ([SETUP, SETUP], "Request contains an invalid argument."),
        (
            [{"setup": SETUP["setup"], "realtimeInput": {"text": "hi"}}],
            "Request contains an invalid argument.",
        ),
        (
            [setup_with(speechConfig={})],
            "Invalid JSON payload received. Unknown name \"speechConfig\" at 'setup': "
            "Cannot find field.",
        ),
        (
            [setup_with(generationConfig={"responseModalities": ["AUDIO", "TEXT"]})],
            "Request contains an invalid argument.",
        ),
        (
            [
                setup_with(
                    generationConfig={
                        "speechConfig": {
                            "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Bob"}}
                        }
                    }
                )
            ],
            "Request contains an invalid argument.",
        ),
        (
            [
                SETUP,
                {"realtimeInput": {"mediaChunks": [{"mimeType": "audio/pcm", "data": "AAAA"}]}},
            ],
            "realtime_input.media_chunks is deprecated. Use audio, video, or text instead.",
        ),
        (
            [SETUP, {"realtimeInput": {"activityStart": {}}}],
            "Request contains an invalid argument.",
        ),
    ],
    ids=[
        "first frame not setup",
        "second setup",
        "two top-level fields",
        "speechConfig outside generationConfig",
        "two response modalities",
        "not a prebuilt voice",
        "mediaChunks",
        "activityStart with automatic detection on",
    ],
)
async def test_client_mistakes_close_with_1007(frames: list[JSON], reason: str) -> None:
    async with FakeGeminiLive() as fake, await open_ws(fake) as ws:
        for frame in frames:
            await send(ws, frame)
        code, said = await closed_with(ws)
    assert (code, said) == (1007, reason)
    assert fake.closes == [(0, 1007, reason)]


async def test_media_chunks_are_heard_when_the_model_still_takes_them() -> None:
    async with FakeGeminiLive(accept_media_chunks=True) as fake, await ready(fake) as ws:
        chunk = {
            "mimeType": "audio/pcm;rate=16000",
            "data": base64.b64encode(b"\x01\x00" * 80).decode(),
        }
        await send(ws, {"realtimeInput": {"mediaChunks": [chunk]}})
        await fake.wait_for("realtimeInput")
        await asyncio.sleep(0.05)
        assert fake.input_pcm16() == b"\x01\x00" * 80
        assert fake.closes == []


async def test_snake_case_frames_are_understood(fake: FakeGeminiLive) -> None:
    async with await ready(fake) as ws:
        pcm = pcm_tone(20)
        await send(
            ws,
            {
                "realtime_input": {
                    "audio": {
                        "data": base64.b64encode(pcm).decode(),
                        "mime_type": "audio/pcm;rate=16000",
                    }
                }
            },
        )
        await fake.wait_for("realtimeInput")
        await asyncio.sleep(0.05)
        assert fake.input_pcm16() == pcm
        assert fake.input_rate() == 16_000


# ------------------------------------------------------------------------------ turns


async def test_a_user_turn_gets_transcripts_audio_usage_and_a_resumption_handle(
    fake: FakeGeminiLive,
) -> None:
    fake.next_reply = "Sunny and warm today."
    async with await ready(fake) as ws:
        await fake.user_speaks("what's the weather?")
        frames = await recv_until(ws, lambda m: "sessionResumptionUpdate" in m)
    assert kinds(frames) == [
        "serverContent.inputTranscription",
        *["serverContent.modelTurn", "serverContent.outputTranscription"] * 4,
        "serverContent.modelTurn",
        "serverContent.generationComplete",
        "serverContent.turnComplete+usageMetadata",
        "sessionResumptionUpdate",
    ]
    heard = "".join(
        f["serverContent"]["inputTranscription"]["text"]
        for f in frames
        if "inputTranscription" in f.get("serverContent", {})
    )
    said = "".join(
        f["serverContent"]["outputTranscription"]["text"]
        for f in frames
        if "outputTranscription" in f.get("serverContent", {})
    )
    audio = b"".join(
        base64.b64decode(part["inlineData"]["data"])
        for f in frames
        for part in f.get("serverContent", {}).get("modelTurn", {}).get("parts", [])
    )
    mimes = {
        part["inlineData"]["mimeType"]
        for f in frames
        for part in f.get("serverContent", {}).get("modelTurn", {}).get("parts", [])
    }
    assert (heard, said, mimes) == ("what's the weather?", "Sunny and warm today.", {OUTPUT_MIME})
    assert len(audio) == 600 * 24_000 // 1000 * 2
    usage = frames[-2]["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["responseTokenCount"]
    update = frames[-1]["sessionResumptionUpdate"]
    assert update["resumable"] is True and update["newHandle"] == fake.issued_handles[-1]
    assert fake.conversation == [
        {"role": "user", "parts": [{"text": "what's the weather?"}]},
        {"role": "model", "parts": [{"text": "Sunny and warm today."}]},
    ]


async def test_no_transcripts_or_handles_unless_the_setup_asks(fake: FakeGeminiLive) -> None:
    plain = setup_with(
        inputAudioTranscription=None, outputAudioTranscription=None, sessionResumption=None
    )
    async with await ready(fake, plain) as ws:
        await fake.user_speaks("hello")
        frames = await recv_until(ws, turn_complete)
        await fake.wait_idle()
    assert kinds(frames) == [
        "serverContent.modelTurn",
        "serverContent.generationComplete",
        "serverContent.turnComplete+usageMetadata",
    ]
    assert "sessionResumptionUpdate" not in fake.sent_kinds()


async def test_text_modality_streams_text_parts(fake: FakeGeminiLive) -> None:
    setup = setup_with(generationConfig={"responseModalities": ["TEXT"]})
    async with await ready(fake, setup) as ws:
        await send(ws, {"realtimeInput": {"text": "hi"}})
        frames = await recv_until(ws, turn_complete)
    text = "".join(
        part["text"]
        for f in frames
        for part in f.get("serverContent", {}).get("modelTurn", {}).get("parts", [])
    )
    assert text == fake.next_reply
    assert not any("inputTranscription" in f.get("serverContent", {}) for f in frames)


async def test_client_content_turns_extend_the_history_and_complete_turns_are_answered(
    fake: FakeGeminiLive,
) -> None:
    async with await ready(fake) as ws:
        await send(
            ws,
            {"clientContent": {"turns": [{"role": "user", "parts": [{"text": "Note: VIP."}]}]}},
        )
        await send(
            ws,
            {
                "clientContent": {
                    "turns": [{"role": "user", "parts": [{"text": "Greet me."}]}],
                    "turnComplete": True,
                }
            },
        )
        await recv_until(ws, turn_complete)
    assert [turn["parts"][0]["text"] for turn in fake.conversation] == [
        "Note: VIP.",
        "Greet me.",
        fake.next_reply,
    ]
    assert fake.sent_kinds().count("serverContent.turnComplete") == 1


async def test_a_tool_call_waits_for_the_response_then_the_model_speaks(
    fake: FakeGeminiLive,
) -> None:
    fake.next_tool_call = ("get_weather", {"city": "Paris"})
    async with await ready(fake) as ws:
        await fake.user_speaks("weather in Paris?")
        frames = await recv_until(ws, lambda m: "toolCall" in m)
        (call,) = frames[-1]["toolCall"]["functionCalls"]
        assert (call["name"], call["args"]) == ("get_weather", {"city": "Paris"})
        assert await recv(ws) == {"sessionResumptionUpdate": {}}  # not resumable meanwhile
        await send(
            ws,
            {
                "toolResponse": {
                    "functionResponses": [
                        {"id": call["id"], "name": "get_weather", "response": {"result": "sunny"}}
                    ]
                }
            },
        )
        rest = await recv_until(ws, turn_complete)
    assert kinds(rest)[0] == "serverContent.modelTurn"
    assert [list(turn["parts"][0]) for turn in fake.conversation] == [
        ["text"],
        ["functionCall"],
        ["functionResponse"],
        ["text"],
    ]
    assert fake.tool_responses[0]["id"] == call["id"]


async def test_barge_in_during_a_tool_call_cancels_it(fake: FakeGeminiLive) -> None:
    fake.next_tool_call = ("get_weather", {"city": "Paris"})
    async with await ready(fake) as ws:
        await fake.user_speaks("weather in Paris?")
        frames = await recv_until(ws, lambda m: "toolCall" in m)
        call_id = frames[-1]["toolCall"]["functionCalls"][0]["id"]
        await recv(ws)  # the not-resumable update
        await fake.user_speaks("never mind")
        cut = await recv_until(ws, turn_complete)
        await send(
            ws,
            {
                "toolResponse": {
                    "functionResponses": [{"id": call_id, "name": "get_weather", "response": {}}]
                }
            },
        )
        await recv_until(ws, turn_complete)  # the answer to "never mind"
        await fake.wait_idle()
    assert cut == [
        {"serverContent": {"interrupted": True}},
        {"toolCallCancellation": {"ids": [call_id]}},
        {"serverContent": {"turnComplete": True}},
    ]
    assert fake.cancelled_tool_calls == [call_id]
    assert [r["id"] for r in fake.unmatched_tool_responses] == [call_id]


async def test_barge_in_during_audio_interrupts_without_generation_complete() -> None:
    async with FakeGeminiLive(chunk_interval_s=0.02, reply_audio_ms=2000) as fake:
        fake.next_reply = "one two three four five six seven eight nine ten"
        async with await ready(fake) as ws:
            await fake.user_speaks("tell me a story")
            await fake.wait_for_sent("serverContent.modelTurn", count=3)
            await fake.user_speaks("stop")
            frames = await recv_until(ws, lambda m: m == {"serverContent": {"interrupted": True}})
            after = await recv(ws)
            await recv_until(ws, turn_complete)  # the answer to "stop"
    assert "serverContent.generationComplete" not in kinds(frames)
    assert after == {"serverContent": {"turnComplete": True}}
    model_turns = [t for t in fake.conversation if t["role"] == "model"]
    partial = model_turns[0]["parts"][0]["text"]
    assert partial and fake.next_reply.startswith(partial) and partial != fake.next_reply


async def test_speech_during_assumed_playback_still_interrupts() -> None:
    async with FakeGeminiLive(chunk_interval_s=0.0, reply_audio_ms=3000) as fake:
        async with await ready(fake) as ws:
            await fake.user_speaks("hello")
            await recv_until(ws, lambda m: "sessionResumptionUpdate" in m)
            await fake.wait_idle()
            await fake.user_speaks("wait")
            frames = await recv_until(ws, turn_complete)
    assert kinds(frames)[:2] == ["serverContent.interrupted", "serverContent.inputTranscription"]


async def test_no_interruption_lets_the_model_finish(fake: FakeGeminiLive) -> None:
    setup = setup_with(realtimeInputConfig={"activityHandling": "NO_INTERRUPTION"})
    fake.chunk_interval_s = 0.01
    async with await ready(fake, setup) as ws:
        await fake.user_speaks("first")
        await fake.wait_for_sent("serverContent.modelTurn")
        await fake.user_speaks("second")
        await recv_until(ws, turn_complete)
        await recv_until(ws, turn_complete)
        await fake.wait_idle()
    assert "serverContent.interrupted" not in fake.sent_kinds()
    assert [t["role"] for t in fake.conversation] == ["user", "user", "model", "model"]


# ------------------------------------------------------------------------------ voice activity


async def test_auto_vad_finds_turns_in_the_audio() -> None:
    async with FakeGeminiLive(chunk_interval_s=0.0, auto_vad=True) as fake:
        fake.user_transcripts.append("hello there")
        setup = setup_with(
            realtimeInputConfig={"automaticActivityDetection": {"silenceDurationMs": 300}}
        )
        async with await ready(fake, setup) as ws:
            speech = pcm_tone(400) + bytes(16_000 * 2 * 400 // 1000)
            for start in range(0, len(speech), 640):
                await send(ws, audio_frame(speech[start : start + 640]))
            frames = await recv_until(ws, turn_complete)
    assert frames[0] == {"serverContent": {"inputTranscription": {"text": "hello "}}}
    assert fake.input_pcm16() == speech
    assert fake.conversation[0] == {"role": "user", "parts": [{"text": "hello there"}]}


async def test_auto_vad_speech_barges_in_on_the_model() -> None:
    async with FakeGeminiLive(chunk_interval_s=0.02, reply_audio_ms=2000, auto_vad=True) as fake:
        async with await ready(fake) as ws:
            await fake.user_speaks("tell me a story")
            await fake.wait_for_sent("serverContent.modelTurn", count=3)
            await send(ws, audio_frame(pcm_tone(200)))
            frames = await recv_until(ws, lambda m: m == {"serverContent": {"interrupted": True}})
            assert await recv(ws) == {"serverContent": {"turnComplete": True}}
            await send(ws, audio_frame(bytes(16_000 * 2 * 900 // 1000)))  # silence: turn ends
            answer = await recv_until(ws, turn_complete)
    assert "serverContent.generationComplete" not in kinds(frames)
    assert kinds(answer)[:2] == ["serverContent.inputTranscription", "serverContent.modelTurn"]


async def test_audio_stream_end_closes_the_turn_in_progress() -> None:
    async with FakeGeminiLive(chunk_interval_s=0.0, auto_vad=True) as fake:
        async with await ready(fake) as ws:
            await send(ws, audio_frame(pcm_tone(300)))
            await send(ws, {"realtimeInput": {"audioStreamEnd": True}})
            frames = await recv_until(ws, turn_complete)
    assert frames[0]["serverContent"]["inputTranscription"]["text"] == "(unintelligible)"


async def test_manual_activity_marks_turns_when_detection_is_disabled(fake: FakeGeminiLive) -> None:
    setup = setup_with(realtimeInputConfig={"automaticActivityDetection": {"disabled": True}})
    fake.user_transcripts.append("manual turn")
    async with await ready(fake, setup) as ws:
        await send(ws, {"realtimeInput": {"activityStart": {}}})
        await send(ws, audio_frame(pcm_tone(100)))
        await send(ws, {"realtimeInput": {"activityEnd": {}}})
        await recv_until(ws, turn_complete)
        with pytest.raises(RuntimeError):
            await fake.user_speaks("not possible")
    assert fake.conversation[0]["parts"][0]["text"] == "manual turn"


async def test_energy_vad_reports_start_and_stop_positions() -> None:
    vad = EnergyVad(rate=16_000, threshold=300.0, silence_ms=200)
    events = vad.feed(bytes(3200) + pcm_tone(300) + bytes(16_000 * 2 * 300 // 1000))
    assert events == [("start", 100.0), ("stop", 600.0)]


# ------------------------------------------------------------------------ goAway, resumption


async def test_go_away_then_the_connection_is_aborted_if_the_client_stays(
    fake: FakeGeminiLive,
) -> None:
    async with await ready(fake) as ws:
        await fake.go_away(0.2)
        assert await recv(ws) == {"goAway": {"timeLeft": "0.200s"}}
        code, reason = await closed_with(ws)
    assert code == 1008
    assert reason == GO_AWAY_ABORT[:123]
    assert reason.endswith("once the session durat")


async def test_go_away_does_nothing_more_once_the_client_has_left(fake: FakeGeminiLive) -> None:
    async with await ready(fake) as ws:
        await fake.go_away(0.1)
        await recv(ws)
    await asyncio.sleep(0.2)
    assert fake.closes == []


async def test_resumption_restores_the_conversation_as_of_the_handle(fake: FakeGeminiLive) -> None:
    async with await ready(fake) as ws:
        await fake.user_speaks("first")
        await recv_until(ws, lambda m: "sessionResumptionUpdate" in m)
        handle = fake.issued_handles[-1]
        await fake.user_speaks("second")
        await recv_until(ws, lambda m: "sessionResumptionUpdate" in m)
    resumed = setup_with(
        sessionResumption={"handle": handle},
        systemInstruction={"parts": [{"text": "New prompt."}]},
    )
    async with await ready(fake, resumed) as ws:
        assert [t["parts"][0]["text"] for t in fake.conversation] == ["first", fake.next_reply]
        assert fake.session is fake.sessions[0] and fake.session.resumptions == 1
        assert fake.setup["systemInstruction"] == {"parts": [{"text": "New prompt."}]}
    assert len(fake.sessions) == 1


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("unknown", (1007, "Request contains an invalid argument.")),
        ("expired", (1008, "BidiGenerateContent session expired")),
        ("other model", (1007, "Request contains an invalid argument.")),
    ],
)
async def test_a_bad_handle_is_refused(change: str, expected: tuple[int, str]) -> None:
    async with FakeGeminiLive(chunk_interval_s=0.0) as fake:
        async with await ready(fake) as ws:
            handle = await fake.send_resumption_update()
            await recv(ws)
        if change == "expired":
            fake.expire_handles()
        setup = setup_with(sessionResumption={"handle": "nope" if change == "unknown" else handle})
        if change == "other model":
            setup["setup"]["model"] = "models/gemini-live-2.5-flash-preview"
        async with await open_ws(fake) as ws:
            await send(ws, setup)
            assert await closed_with(ws) == expected


async def test_a_resume_while_the_old_connection_is_open_can_be_refused() -> None:
    async with FakeGeminiLive(refuse_resume_while_open=True) as fake:
        async with await ready(fake) as old:
            handle = await fake.send_resumption_update()
            await recv(old)
            async with await open_ws(fake) as new:
                await send(new, setup_with(sessionResumption={"handle": handle}))
                assert await closed_with(new) == (1011, "Internal error encountered.")


async def test_drop_connection_closes_with_the_given_code(fake: FakeGeminiLive) -> None:
    async with await ready(fake) as ws:
        await fake.drop_connection(code=1011, reason="Internal error encountered.")
        assert await closed_with(ws) == (1011, "Internal error encountered.")
        assert fake.connection_closed_with(0) == (1011, "Internal error encountered.")


async def test_drop_connection_without_a_code_aborts(fake: FakeGeminiLive) -> None:
    async with await ready(fake) as ws:
        await fake.drop_connection()
        code, _reason = await closed_with(ws)
    assert code == 1006


async def test_durations_are_protobuf_json() -> None:
    assert [duration(s) for s in (50, 0.5, 1.00025, 9.5e-9)] == [
        "50s",
        "0.500s",
        "1.000250s",
        "0.000000010s",
    ]


# ------------------------------------------------------------------------ the official SDK


async def test_the_official_sdk_talks_to_the_fake() -> None:
    """google-genai's own Live client against the fake: its setup converter, its frames
    (snake_case in places), its parser of our server frames. Every frame it sends passes the
    client validator. The SDK always dials wss:// on Google's host; two private attributes
    point it at the fake instead (test-only, google-genai 3.4.0)."""
    async with FakeGeminiLive(
        chunk_interval_s=0.0, client_validator=validate_gemini_client_message
    ) as fake:
        client = genai.Client(
            api_key=KEY, http_options=genai_types.HttpOptions(api_version="v1beta")
        )
        client._api_client._websocket_base_url = lambda http_options=None: fake.base_url  # type: ignore[method-assign]
        client._api_client._websocket_ssl_ctx = {}
        config = genai_types.LiveConnectConfig(
            response_modalities=[genai_types.Modality.AUDIO],
            speech_config=genai_types.SpeechConfig(
                voice_config=genai_types.VoiceConfig(
                    prebuilt_voice_config=genai_types.PrebuiltVoiceConfig(voice_name="Kore")
                ),
                language_code="en-US",
            ),
            temperature=0.7,
            system_instruction="Be brief.",
            tools=[
                genai_types.Tool(
                    function_declarations=[
                        genai_types.FunctionDeclaration(
                            name="get_weather",
                            description="Current weather for a city.",
                            parameters=genai_types.Schema(
                                type=genai_types.Type.OBJECT,
                                properties={
                                    "city": genai_types.Schema(type=genai_types.Type.STRING)
                                },
                            ),
                        )
                    ]
                )
            ],
            realtime_input_config=genai_types.RealtimeInputConfig(
                automatic_activity_detection=genai_types.AutomaticActivityDetection(
                    silence_duration_ms=300
                ),
                activity_handling=genai_types.ActivityHandling.START_OF_ACTIVITY_INTERRUPTS,
            ),
            input_audio_transcription=genai_types.AudioTranscriptionConfig(),
            output_audio_transcription=genai_types.AudioTranscriptionConfig(),
            session_resumption=genai_types.SessionResumptionConfig(),
            context_window_compression=genai_types.ContextWindowCompressionConfig(
                sliding_window=genai_types.SlidingWindow()
            ),
            proactivity=genai_types.ProactivityConfig(proactive_audio=True),
            enable_affective_dialog=True,
            thinking_config=genai_types.ThinkingConfig(thinking_budget=0),
        )
        messages: list[genai_types.LiveServerMessage] = []
        async with client.aio.live.connect(model=MODEL, config=config) as session:
            pcm = pcm_tone(40)
            await session.send_realtime_input(
                audio=genai_types.Blob(data=pcm, mime_type="audio/pcm;rate=16000")
            )
            await session.send_client_content(
                turns=[
                    genai_types.Content(role="user", parts=[genai_types.Part(text="Note: VIP.")])
                ],
                turn_complete=False,
            )
            await fake.wait_for("clientContent")
            fake.next_tool_call = ("get_weather", {"city": "Paris"})
            await fake.user_speaks("weather in Paris?")
            async for message in session.receive():  # ends at turnComplete
                messages.append(message)
                if message.tool_call and message.tool_call.function_calls:
                    call = message.tool_call.function_calls[0]
                    await session.send_tool_response(
                        function_responses=[
                            genai_types.FunctionResponse(
                                id=call.id, name=call.name, response={"result": "sunny"}
                            )
                        ]
                    )
    assert fake.invalid_client_frames == []
    assert fake.received_kinds() == ["setup", "realtimeInput", "clientContent", "toolResponse"]
    # The SDK writes nested config in snake_case, which the service's proto-JSON parser
    # (and the fake) read as well as camelCase.
    assert fake.setups[0]["realtimeInputConfig"] == {
        "automatic_activity_detection": {"silence_duration_ms": 300},
        "activity_handling": "START_OF_ACTIVITY_INTERRUPTS",
    }
    assert fake.setups[0]["generationConfig"]["speechConfig"]["voice_config"] == {
        "prebuilt_voice_config": {"voice_name": "Kore"}
    }
    assert fake.input_pcm16(0) == pcm
    audio = b"".join(
        part.inline_data.data
        for m in messages
        if m.server_content and m.server_content.model_turn
        for part in m.server_content.model_turn.parts or []
        if part.inline_data and part.inline_data.data
    )
    assert len(audio) == 600 * 24_000 // 1000 * 2
    assert messages[-1].server_content is not None and messages[-1].server_content.turn_complete
    assert messages[-1].usage_metadata is not None
