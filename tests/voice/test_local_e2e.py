"""The offline provider end to end through the WebSocket transport: a caller's real speech
(espeak-ng) goes over the voice socket in 20 ms frames at real time, and the real VAD,
recogniser (Whisper tiny.en), rules brain, tool runner and synthesiser (espeak-ng) answer.
No key, no network, no fakes: what is checked is what a client of docs/protocol.md sees, and
what the session leaves in the database."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator

from rooms.models import EventKind, RoomEvent, User
from tests.fixtures.actors import TenantWorld
from tests.fixtures.speech import spoken
from tests.fixtures.voice_ws import ws_connect
from voice import services as voice_services
from voice.models import ToolCall, VoiceSession

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]


@pytest.fixture(autouse=True)
def fresh_channel_layer() -> Iterator[None]:
    """A channel layer of this test's event loop: channels-redis keeps per-loop locks, so a
    layer an earlier test used from another loop must not be reused (the PG + Redis pass)."""
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


RATE = 16000  # the client's rate, both directions
FRAME_MS = 20
FRAME_BYTES = 2 * RATE * FRAME_MS // 1000
SILENT_FRAME = bytes(FRAME_BYTES)
# Recognition runs on one thread per process, and the first utterance loads the model.
WAIT_S = 30.0
AGENT_NAME = "Robin"


@dataclass
class Caller:
    """One caller's socket: every message the server sent, in order (audio as its PCM)."""

    communicator: WebsocketCommunicator
    messages: list[dict[str, Any]] = field(default_factory=list)

    async def until(
        self, predicate: Callable[[Caller], bool], *, within: float = WAIT_S
    ) -> list[dict[str, Any]]:
        """Reads messages until ``predicate`` holds; fails after ``within`` seconds."""
        try:
            async with asyncio.timeout(within):
                while not predicate(self):
                    output = await self.communicator.receive_output(timeout=within)
                    assert output["type"] == "websocket.send", (output, self.kinds())
                    message: dict[str, Any] = json.loads(output["text"])
                    if message["type"] == "audio":
                        message = {"type": "audio", "pcm": base64.b64decode(message["data"])}
                    self.messages.append(message)
        except TimeoutError:
            pytest.fail(f"still not so after {within} s; the caller got {self.kinds()}")
        return self.messages

    def of(self, kind: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            message
            for message in self.messages
            if message["type"] == kind and all(message.get(k) == v for k, v in fields.items())
        ]

    def index(self, kind: str, **fields: Any) -> int:
        """Where the first such message is (fails when there is none)."""
        wanted = self.of(kind, **fields)
        assert wanted, (kind, fields, self.kinds())
        return next(i for i, message in enumerate(self.messages) if message is wanted[0])

    def finals(self, role: str) -> list[str]:
        return [m["text"] for m in self.of("transcription", role=role, is_final=True)]

    def reply_pcm(self) -> bytes:
        return b"".join(message["pcm"] for message in self.of("audio"))

    def kinds(self) -> list[str]:
        """The messages, audio summarised: for failure messages."""
        described = []
        for message in self.messages:
            if message["type"] == "audio":
                described.append(f"audio({len(message['pcm'])} B)")
            else:
                described.append(json.dumps(message))
        return described


def frames(pcm: bytes) -> Iterator[bytes]:
    """``pcm`` in 20 ms frames (the last one padded), then silence for ever: a microphone."""
    for offset in range(0, len(pcm), FRAME_BYTES):
        yield pcm[offset : offset + FRAME_BYTES].ljust(FRAME_BYTES, b"\0")
    yield from itertools.repeat(SILENT_FRAME)


async def _microphone(communicator: WebsocketCommunicator, pcm: bytes, *, binary: bool) -> None:
    """Sends ``pcm`` then silence, frame by frame at real time (a client's pace: the server
    rate-limits anything much faster), until cancelled."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for number, frame in enumerate(frames(pcm)):
        if binary:
            await communicator.send_to(bytes_data=frame)
        else:
            data = base64.b64encode(frame).decode()
            await communicator.send_to(text_data=json.dumps({"type": "audio", "data": data}))
        # Pacing, not waiting for something: frame n leaves at n x 20 ms.
        await asyncio.sleep(max(0.0, started + (number + 1) * FRAME_MS / 1000 - loop.time()))


@contextlib.asynccontextmanager
async def microphone(
    caller: Caller, pcm: bytes = b"", *, binary: bool = True
) -> AsyncIterator[None]:
    """The caller's microphone is on (saying ``pcm``, then silence) inside the block."""
    task = asyncio.create_task(_microphone(caller.communicator, pcm, binary=binary))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _offline_agent_for(world: TenantWorld) -> None:
    """The room's default agent becomes the offline provider's, with the tenant's
    ``get_weather`` tool (tests.fixtures.actors.get_weather: the city and 21 degrees)."""
    agent = voice_services.agent_create(
        tenant=world.tenant,
        slug="offline",
        name=AGENT_NAME,
        provider_kind="local",
        system_prompt=f"You are {AGENT_NAME}, the front desk assistant of a small hotel.",
        tools=[world.tool],
    )
    world.room.default_agent = agent
    world.room.save(update_fields=["default_agent"])


@contextlib.asynccontextmanager
async def call(world: TenantWorld, user: User) -> AsyncIterator[tuple[Caller, str]]:
    """A live session with the offline agent (the caller and the session id), disconnected
    at the end of the block whatever happened."""
    await database_sync_to_async(_offline_agent_for)(world)
    communicator, connected = await ws_connect(
        f"/ws/rooms/{world.room.pk}/voice/?sample_rate={RATE}", user=user
    )
    try:
        assert connected
        caller = Caller(communicator)
        await caller.until(lambda c: bool(c.of("session_started")))
        [started] = caller.of("session_started")
        assert (started["sample_rate"], started["turn_detection"]) == (RATE, "provider")
        yield caller, str(started["session_id"])
    finally:
        await communicator.disconnect()


async def hang_up(caller: Caller) -> None:
    """``end``: the server says the session is over and closes the socket normally."""
    await caller.communicator.send_to(text_data=json.dumps({"type": "end"}))
    await caller.until(lambda c: bool(c.of("session_ended")))
    assert caller.of("session_ended") == [{"type": "session_ended", "reason": "ended_by_caller"}]
    closed = await caller.communicator.receive_output(timeout=WAIT_S)
    assert closed == {"type": "websocket.close", "code": 1000}


def _timeline(session_id: str) -> list[tuple[str, str, str]]:
    return list(
        RoomEvent.objects.filter(session_id=uuid.UUID(session_id))
        .order_by("index")
        .values_list("kind", "role", "text")
    )


def _rms_dbfs(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    return float(20 * np.log10(np.sqrt(np.mean(samples**2)) + 1e-12))


def _reply_done(caller: Caller, *, min_audio_s: float) -> bool:
    """The reply is over for the caller: its final transcript, its end, and its audio."""
    return (
        bool(caller.finals("assistant"))
        and bool(caller.of("speaking", who="assistant", speaking=False))
        and len(caller.reply_pcm()) >= 2 * RATE * min_audio_s
    )


# --- speech in, speech out ---------------------------------------------------------------------


async def test_spoken_words_are_heard_transcribed_and_answered_aloud(
    world_a: TenantWorld, member_a: User
) -> None:
    async with call(world_a, member_a) as (caller, session_id):
        pcm = spoken("Purple elephants dance on the moon.")
        async with microphone(caller, pcm, binary=True):
            await caller.until(lambda c: _reply_done(c, min_audio_s=1.0))
        await hang_up(caller)

    # The turn, in the order a client sees it: the caller starts and stops speaking; their
    # words come back, then the reply's; the reply starts speaking, then its audio comes.
    # (Transcripts and speaking events take different paths through the engine: the user's
    # transcript and the reply's start are not ordered with respect to each other.)
    speech_started = caller.index("speaking", who="user", speaking=True)
    speech_stopped = caller.index("speaking", who="user", speaking=False)
    heard = caller.index("transcription", role="user", is_final=True)
    answered = caller.index("transcription", role="assistant", is_final=True)
    reply_started = caller.index("speaking", who="assistant", speaking=True)
    first_audio = caller.index("audio")
    assert speech_started < speech_stopped < heard < answered
    assert speech_stopped < reply_started < first_audio
    assert len(caller.of("speaking", who="user", speaking=True)) == 1  # one utterance
    [user_text] = caller.finals("user")
    assert "purple" in user_text.lower() and "elephant" in user_text.lower(), user_text
    # No rule or tool matches: the brain says what it heard.
    [assistant_text] = caller.finals("assistant")
    assert assistant_text.startswith("I heard:"), assistant_text
    assert user_text.strip(" .") in assistant_text, (user_text, assistant_text)
    # The reply is espeak-ng's speech at the client's rate: about as long as the sentence
    # takes to say, and loud (the silence-only microphone frames were not speech).
    reply = caller.reply_pcm()
    assert 1.0 <= len(reply) / 2 / RATE <= 10.0
    assert _rms_dbfs(reply) > -40.0
    assert caller.of("error") == [] and caller.of("clear_audio") == []

    row = await database_sync_to_async(VoiceSession.objects.get)(pk=session_id)
    timeline = await database_sync_to_async(_timeline)(session_id)
    assert (row.state, row.end_reason, row.transport) == ("ended", "ended_by_caller", "websocket")
    assert row.provider_session_id.startswith("local-")
    assert timeline == [
        (EventKind.TRANSCRIPT, "user", user_text),
        (EventKind.TRANSCRIPT, "assistant", assistant_text),
    ]


async def test_a_spoken_weather_question_calls_the_tool_and_its_result_is_said(
    world_a: TenantWorld, member_a: User
) -> None:
    async with call(world_a, member_a) as (caller, session_id):
        pcm = spoken("What is the weather in Paris?")
        async with microphone(caller, pcm, binary=False):  # base64 JSON audio messages
            await caller.until(lambda c: _reply_done(c, min_audio_s=1.0))
        await hang_up(caller)

    [user_text] = caller.finals("user")
    assert "weather" in user_text.lower() and "paris" in user_text.lower(), user_text
    running = caller.index("tool_call", status="running")
    succeeded = caller.index("tool_call", status="succeeded")
    [call_running] = caller.of("tool_call", status="running")
    [call_succeeded] = caller.of("tool_call", status="succeeded")
    assert call_running["name"] == call_succeeded["name"] == "get_weather"
    assert call_running["call_id"] == call_succeeded["call_id"]
    assert call_running["call_id"].startswith("local_")
    # Nothing is said before the call; then its result is put into words. (The engine hands
    # the result to the provider before it reports "succeeded": either may reach us first.)
    assert caller.index("transcription", role="user", is_final=True) < running < succeeded
    assert running < caller.index("speaking", who="assistant", speaking=True)
    [assistant_text] = caller.finals("assistant")
    assert "Paris" in assistant_text and "21" in assistant_text, assistant_text
    assert _rms_dbfs(caller.reply_pcm()) > -40.0
    assert caller.of("error") == []

    def recorded() -> tuple[list[ToolCall], list[tuple[str, str, str]]]:
        calls = ToolCall.objects.filter(session_id=uuid.UUID(session_id))
        return list(calls), _timeline(session_id)

    [call_row], timeline = await database_sync_to_async(recorded)()
    assert (call_row.call_id, call_row.name, call_row.arguments) == (
        call_running["call_id"],
        "get_weather",
        {"city": "Paris"},
    )
    assert call_row.tool_id == world_a.tool.pk
    assert (call_row.status, call_row.error) == ("succeeded", "")
    assert json.loads(call_row.result) == {"city": "Paris", "temperature": 21}
    assert call_row.delivered_at is not None
    assert timeline == [
        (EventKind.TRANSCRIPT, "user", user_text),
        (EventKind.TOOL_CALL, "tool", 'get_weather({"city": "Paris"})'),
        (EventKind.TRANSCRIPT, "assistant", assistant_text),
    ]


async def test_a_typed_question_is_answered_aloud_while_the_microphone_hears_silence(
    world_a: TenantWorld, member_a: User
) -> None:
    async with call(world_a, member_a) as (caller, session_id):
        async with microphone(caller):  # an open microphone in a quiet room
            await caller.communicator.send_to(
                text_data=json.dumps({"type": "text", "text": "What is your name?"})
            )
            await caller.until(lambda c: _reply_done(c, min_audio_s=0.3))
        await hang_up(caller)

    assert caller.finals("user") == ["What is your name?"]  # the typed text, echoed
    [assistant_text] = caller.finals("assistant")
    assert AGENT_NAME in assistant_text, assistant_text  # "You are Robin" in the prompt
    assert _rms_dbfs(caller.reply_pcm()) > -40.0
    # Silence is not speech: no turn was detected, nothing was barged in on.
    assert caller.of("speaking", who="user") == []
    assert caller.of("clear_audio") == [] and caller.of("error") == []

    timeline = await database_sync_to_async(_timeline)(session_id)
    assert timeline == [
        (EventKind.MESSAGE, "user", "What is your name?"),
        (EventKind.TRANSCRIPT, "assistant", assistant_text),
    ]
