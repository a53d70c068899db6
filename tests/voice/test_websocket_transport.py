"""WebSocketRealtimeTransport used the seed's way: a plain ``websockets`` server hands each
connection to ``channel.start_session`` (authenticate hook, audio both ways in both formats,
bad frames, the client hanging up, the query's sample rate, closing the transport), and
ClientLink on its own with a fake socket (early audio, the control queue, hello, the flood
guard)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from voice.channels import RealtimeVoiceChannel
from voice.mock import MockRealtimeProvider
from voice.protocol import FloodGuard
from voice.session import LiveSession, SessionState
from voice.store import BindingSnapshot, MemoryStore
from voice.transports.websocket import (
    AUDIO_RATE_FACTOR,
    ClientLink,
    WebSocketRealtimeTransport,
)

pytestmark = pytest.mark.timeout(15)

WAIT_S = 2.0
REFUSED = 4401  # what the test server closes with when start_session refuses the caller


def frame(value: int, samples: int = 320) -> bytes:
    """``samples`` PCM16 samples of constant ``value`` (default 20 ms at 16 kHz)."""
    return int(value).to_bytes(2, "little", signed=True) * samples


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def audio_message(pcm: bytes) -> str:
    return json.dumps({"type": "audio", "data": b64(pcm)})


class EndRecordingStore(MemoryStore):
    """A MemoryStore that says when a session's end was recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.ended_event = asyncio.Event()

    async def session_ended(self, session: LiveSession, reason: str, detail: str) -> None:
        await super().session_ended(session, reason, detail)
        self.ended_event.set()


@dataclass
class Served:
    """A ``websockets`` server whose handler starts a session on ``channel``."""

    channel: RealtimeVoiceChannel
    provider: MockRealtimeProvider
    transport: WebSocketRealtimeTransport
    store: EndRecordingStore
    url: str = ""
    started: asyncio.Queue[LiveSession] = field(default_factory=asyncio.Queue)
    refusals: asyncio.Queue[PermissionError] = field(default_factory=asyncio.Queue)

    async def next_session(self) -> LiveSession:
        return await asyncio.wait_for(self.started.get(), WAIT_S)

    async def next_refusal(self) -> PermissionError:
        return await asyncio.wait_for(self.refusals.get(), WAIT_S)


@contextlib.asynccontextmanager
async def served(transport: WebSocketRealtimeTransport | None = None) -> AsyncIterator[Served]:
    transport = transport if transport is not None else WebSocketRealtimeTransport()
    provider = MockRealtimeProvider()
    store = EndRecordingStore()
    # The provider speaks 16 kHz both ways, like a client without a rate: no resampling.
    channel = RealtimeVoiceChannel(
        "voice", provider=provider, transport=transport, store=store, output_sample_rate=16000
    )
    harness = Served(channel, provider, transport, store)

    async def handler(connection: ServerConnection) -> None:
        try:
            session = await channel.start_session("room-1", "caller", connection=connection)
        except PermissionError as error:
            harness.refusals.put_nowait(error)
            await connection.close(REFUSED)
            return
        harness.started.put_nowait(session)
        await connection.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        harness.url = f"ws://127.0.0.1:{port}/"
        try:
            yield harness
        finally:
            await channel.close()


async def receive(client: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(client.recv(), WAIT_S)


async def receive_json(client: ClientConnection) -> dict[str, Any]:
    raw = await receive(client)
    assert isinstance(raw, str), f"expected a text frame, got {raw!r}"
    message = json.loads(raw)
    assert isinstance(message, dict)
    return message


async def receive_close(client: ClientConnection) -> None:
    """The next thing the client gets is the close: no frame comes before it."""
    with pytest.raises(ConnectionClosed):
        got = await receive(client)
        pytest.fail(f"expected the connection to close, got {got!r}")


def started_message(session: LiveSession, rate: int = 16000, fmt: str = "base64_json") -> Any:
    return {
        "type": "session_started",
        "session_id": session.id,
        "sample_rate": rate,
        "audio_format": fmt,
        "turn_detection": "provider",
    }


# -- audio in -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_client_audio_as_base64_json_and_as_binary_reaches_the_provider_in_order() -> None:
    async with served() as server, connect(server.url) as client:
        session = await server.next_session()
        assert await receive_json(client) == started_message(session)

        await client.send(audio_message(frame(1)))
        await client.send(frame(2))
        await client.send(audio_message(frame(3)))
        await server.provider.wait_until(
            lambda: len(server.provider.sent_audio) == 3, within=WAIT_S
        )

        assert server.provider.sent_audio == [
            (session.id, frame(1)),
            (session.id, frame(2)),
            (session.id, frame(3)),
        ]


# -- audio and events out -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_provider_events_reach_the_client_in_the_seeds_json_format() -> None:
    async with served() as server, connect(server.url) as client:
        session = await server.next_session()
        assert await receive_json(client) == started_message(session)

        await server.provider.simulate_transcription(session, "Hello", role="user")
        assert await receive_json(client) == {
            "type": "transcription",
            "text": "Hello",
            "role": "user",
            "is_final": True,
        }
        await server.provider.simulate_response_start(session)
        assert await receive_json(client) == {
            "type": "speaking",
            "speaking": True,
            "who": "assistant",
        }
        await server.provider.simulate_audio(session, frame(7))
        assert await receive(client) == '{"type":"audio","data":"' + b64(frame(7)) + '"}'
        await server.provider.simulate_response_end(session)
        assert await receive_json(client) == {
            "type": "speaking",
            "speaking": False,
            "who": "assistant",
        }


@pytest.mark.asyncio
async def test_audio_format_binary_sends_reply_audio_as_raw_bytes_frames() -> None:
    transport = WebSocketRealtimeTransport(audio_format="binary")
    async with served(transport) as server, connect(server.url) as client:
        session = await server.next_session()
        assert await receive_json(client) == started_message(session, fmt="binary")

        await server.provider.simulate_response_start(session)
        assert (await receive_json(client))["type"] == "speaking"
        await server.provider.simulate_audio(session, frame(5))
        await server.provider.simulate_audio(session, frame(6))
        await server.provider.simulate_transcription(session, "Hi", role="assistant")

        assert await receive(client) == frame(5)
        assert await receive(client) == frame(6)
        assert await receive_json(client) == {
            "type": "transcription",
            "text": "Hi",
            "role": "assistant",
            "is_final": True,
        }


# -- authenticate ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_authenticate_hook_gets_the_connection_and_its_dict_joins_the_metadata() -> None:
    seen: list[str] = []

    async def authenticate(connection: Any) -> dict[str, Any] | None:
        assert isinstance(connection, ServerConnection)
        seen.append(connection.request.path if connection.request else "")
        return {"user_id": "u-7", "plan": "pro"}

    transport = WebSocketRealtimeTransport(authenticate=authenticate)
    async with served(transport) as server, connect(server.url + "?token=abc") as client:
        session = await server.next_session()

        assert await receive_json(client) == started_message(session)
        assert seen == ["/?token=abc"]
        assert session.metadata == {"user_id": "u-7", "plan": "pro"}
        assert session.state is SessionState.ACTIVE
        assert server.provider.connected == {session.id}


async def refuse(connection: Any) -> dict[str, Any] | None:
    return None


async def explode(connection: Any) -> dict[str, Any] | None:
    raise RuntimeError("the user database is down")


async def not_a_dict(connection: Any) -> dict[str, Any] | None:
    return ["user-1"]  # type: ignore[return-value]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("hook", "message"),
    [
        (refuse, "Authentication rejected"),
        (explode, "Authentication failed"),
        (not_a_dict, "Authentication failed: the hook must return a dict or None"),
    ],
)
async def test_a_refusing_or_failing_authenticate_hook_stops_the_start_before_the_provider(
    hook: Callable[[Any], Any], message: str
) -> None:
    transport = WebSocketRealtimeTransport(authenticate=hook)
    async with served(transport) as server, connect(server.url) as client:
        refusal = await server.next_refusal()

        assert type(refusal) is PermissionError
        assert str(refusal) == message
        await receive_close(client)  # the transport sent nothing: no error, no session_started
        assert client.close_code == REFUSED
        [session] = server.store.sessions.values()
        assert server.store.ended == {session.id: ("connect_failed", f"PermissionError: {message}")}
        assert session.state is SessionState.ENDED
        assert "connect" not in [call.method for call in server.provider.calls]
        assert server.provider.sessions == {}
        assert server.provider.connected == set()
        assert server.channel.sessions == []
        assert server.transport._links == {}
        assert server.transport._readers == {}


@pytest.mark.asyncio
async def test_permissions_granted_by_the_authenticate_hook_cap_the_binding_from_the_start() -> (
    None
):
    # metadata["permissions"] caps the caller's binding (RealtimeVoiceChannel._effective), and
    # the Channels consumer honours the hook's "permissions": a listen-only caller admitted by
    # the hook on a plain websockets connection must not be able to speak either.
    async def listen_only(connection: Any) -> dict[str, Any] | None:
        return {"permissions": ["listen"]}

    transport = WebSocketRealtimeTransport(authenticate=listen_only)
    async with served(transport) as server, connect(server.url) as client:
        session = await server.next_session()
        assert await receive_json(client) == started_message(session)

        await client.send(frame(1))
        await client.send("not json")  # its answer means the reader has handled the audio
        assert (await receive_json(client))["code"] == "bad_json"
        await server.channel.settle(session)

        assert session.metadata == {"permissions": ["listen"]}
        assert server.provider.sent_audio == []
        assert server.channel._runtimes[session.id].stats["inbound_dropped_access"] == 1
        assert server.channel._runtimes[session.id].binding == BindingSnapshot(muted=True)


# -- the client hangs up --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_client_closing_its_socket_ends_the_session_as_client_hangup() -> None:
    async with served() as server:
        async with connect(server.url) as client:
            session = await server.next_session()
            await receive_json(client)
            reader = server.transport._readers[session.id]
            link = server.transport._links[session.id]

        await asyncio.wait_for(server.store.ended_event.wait(), WAIT_S)
        await asyncio.wait({reader}, timeout=WAIT_S)

        assert session.state is SessionState.ENDED
        assert session.end_reason == "client_hangup"
        assert server.store.ended == {session.id: ("client_hangup", "")}
        assert reader.done()
        assert not reader.cancelled()
        assert server.transport._readers == {}
        assert server.transport._links == {}
        assert link.closed
        assert link._pump is not None and link._pump.done()
        assert server.provider.connected == set()
        assert server.channel.sessions == []


@pytest.mark.asyncio
async def test_a_connection_that_dies_without_a_close_ends_the_session_as_client_hangup() -> None:
    async with served() as server, connect(server.url) as client:
        session = await server.next_session()
        await receive_json(client)
        reader = server.transport._readers[session.id]

        client.transport.abort()  # the network is gone: no closing handshake
        await asyncio.wait_for(server.store.ended_event.wait(), WAIT_S)
        await asyncio.wait({reader}, timeout=WAIT_S)

        assert server.store.ended == {session.id: ("client_hangup", "")}
        assert reader.done()
        assert server.transport._readers == {}
        assert server.channel.sessions == []


# -- the session ends from the server side --------------------------------------------------


@pytest.mark.asyncio
async def test_end_session_tells_the_client_and_closes_its_socket_with_1000() -> None:
    async with served() as server, connect(server.url) as client:
        session = await server.next_session()
        await receive_json(client)

        await server.channel.end_session(session, reason="ended_by_operator")

        assert await receive_json(client) == {
            "type": "session_ended",
            "reason": "ended_by_operator",
        }
        await receive_close(client)
        assert client.close_code == 1000
        assert server.store.ended == {session.id: ("ended_by_operator", "")}
        assert server.transport._links == {}


@pytest.mark.asyncio
async def test_an_end_message_ends_the_session_closes_with_1000_and_records_the_end() -> None:
    async with served() as server, connect(server.url) as client:
        session = await server.next_session()
        await receive_json(client)

        await client.send(json.dumps({"type": "end"}))

        assert await receive_json(client) == {"type": "session_ended", "reason": "ended_by_caller"}
        await receive_close(client)
        assert client.close_code == 1000
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.store.ended_event.wait(), WAIT_S)
        assert session.end_reason == "ended_by_caller"
        assert server.store.ended == {session.id: ("ended_by_caller", "")}
        assert server.channel.sessions == []


# -- bad frames -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_bad_frames_are_answered_with_an_error_and_the_session_goes_on() -> None:
    async with served() as server, connect(server.url) as client:
        session = await server.next_session()
        await receive_json(client)
        link = server.transport._links[session.id]

        await client.send("not json")
        assert await receive_json(client) == {
            "type": "error",
            "code": "bad_json",
            "message": "the frame is not valid JSON",
        }
        await client.send(b"\x01\x02\x03")
        assert await receive_json(client) == {
            "type": "error",
            "code": "bad_audio",
            "message": "PCM16 audio has 2 bytes per sample; got an odd 3 bytes",
        }
        await client.send(json.dumps({"type": "dance"}))
        assert await receive_json(client) == {
            "type": "error",
            "code": "unknown_type",
            "message": "unknown message type 'dance'",
        }
        await client.send(frame(4))
        await server.provider.wait_until(lambda: server.provider.sent_audio, within=WAIT_S)

        assert server.provider.sent_audio == [(session.id, frame(4))]
        assert link.stats["bad_frames"] == 3
        assert session.state is SessionState.ACTIVE
        assert server.store.ended == {}
        assert server.channel.sessions == [session]


# -- the sample rate ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_querys_sample_rate_sets_the_rate_of_that_session_only() -> None:
    async with served() as server:
        async with connect(server.url + "?sample_rate=48000") as fast:
            first = await server.next_session()
            async with connect(server.url + "?sample_rate=8000") as slow:
                second = await server.next_session()

                assert await receive_json(fast) == started_message(first, rate=48000)
                assert await receive_json(slow) == started_message(second, rate=8000)
                assert server.transport.transport_sample_rate(first) == 48000
                assert server.transport.transport_sample_rate(second) == 8000
                assert server.channel._runtimes[first.id].transport_rate == 48000
                assert server.channel._runtimes[second.id].transport_rate == 8000


@pytest.mark.asyncio
@pytest.mark.parametrize("query", ["", "?sample_rate=100", "?sample_rate=fast", "?other=1"])
async def test_without_a_valid_query_rate_the_session_runs_at_16000(query: str) -> None:
    async with served() as server, connect(server.url + query) as client:
        session = await server.next_session()

        assert await receive_json(client) == started_message(session, rate=16000)
        assert server.transport.transport_sample_rate(session) == 16000


# -- closing the transport ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_transport_close_closes_every_client_socket_with_1000() -> None:
    async with served() as server:
        async with connect(server.url) as first, connect(server.url) as second:
            await server.next_session()
            await server.next_session()
            await receive_json(first)
            await receive_json(second)

            await asyncio.wait_for(server.transport.close(), WAIT_S)

            for client in (first, second):
                with pytest.raises(ConnectionClosedOK):
                    await receive(client)
                assert client.close_code == 1000
            assert server.transport._links == {}
            assert server.transport._readers == {}


# -- the transport's own checks -------------------------------------------------------------


def test_the_transport_refuses_an_unknown_audio_format() -> None:
    with pytest.raises(ValueError, match="audio_format must be one of"):
        WebSocketRealtimeTransport(audio_format="opus")


def test_the_transport_refuses_an_authenticate_hook_that_is_not_callable() -> None:
    with pytest.raises(TypeError, match="authenticate must be an async callable"):
        WebSocketRealtimeTransport(authenticate="myapp.auth")  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_accept_refuses_a_connection_it_cannot_read() -> None:
    transport = WebSocketRealtimeTransport()
    session = LiveSession(room_id="room-1", participant_id="caller", channel_id="voice")

    with pytest.raises(TypeError, match="got str$"):
        await transport.accept(session, "not a socket")

    assert transport._links == {}
    assert transport._readers == {}


# -- ClientLink with a fake socket ----------------------------------------------------------


class FakeSender:
    """A FrameSender that keeps what it is given."""

    def __init__(self) -> None:
        self.frames: list[str | bytes] = []
        self.close_codes: list[int] = []
        self.changed = asyncio.Event()

    async def send_text(self, text: str) -> None:
        self.frames.append(text)
        self.changed.set()

    async def send_bytes(self, data: bytes) -> None:
        self.frames.append(bytes(data))
        self.changed.set()

    async def close(self, code: int) -> None:
        self.close_codes.append(code)
        self.changed.set()

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(item) for item in self.frames if isinstance(item, str)]

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1024.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Wiring:
    """What the link hands to the engine, through the transport's callbacks."""

    transport: WebSocketRealtimeTransport
    audio: list[tuple[str, bytes]] = field(default_factory=list)
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    playback: list[int] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


def wired() -> Wiring:
    wiring = Wiring(WebSocketRealtimeTransport())

    def on_audio(session: LiveSession, pcm: bytes) -> None:
        wiring.audio.append((session.id, pcm))

    async def on_message(session: LiveSession, kind: str, fields: dict[str, Any]) -> None:
        wiring.messages.append((kind, fields))
        wiring.changed.set()

    def on_playback(session: LiveSession, played_ms: int) -> None:
        wiring.playback.append(played_ms)

    wiring.transport.on_audio_received(on_audio)
    wiring.transport.on_client_message(on_message)
    wiring.transport.on_playback(on_playback)
    return wiring


def new_session() -> LiveSession:
    return LiveSession(room_id="room-1", participant_id="caller", channel_id="voice")


def error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


HELLO_TOO_LATE = error(
    "bad_message",
    "hello is only accepted as the first message, when the query has no sample_rate",
)


@pytest.mark.asyncio
@pytest.mark.parametrize(("rate", "frames", "kept"), [(16000, 60, 50), (8000, 30, 25)])
async def test_early_audio_keeps_the_newest_five_seconds_and_delivers_it_in_order_on_attach(
    rate: int, frames: int, kept: int
) -> None:
    wiring = wired()
    sender = FakeSender()
    link = wiring.transport.link(sender, sample_rate=rate)
    chunks = [frame(index, samples=1600) for index in range(frames)]  # 3200 bytes each

    for chunk in chunks:
        link.receive(data=chunk)
    assert wiring.audio == []
    session = new_session()
    link.attach(session)
    link.receive(data=frame(999))

    assert wiring.audio == [(session.id, chunk) for chunk in chunks[-kept:]] + [
        (session.id, frame(999))
    ]
    assert link.stats["early_audio_dropped"] == frames - kept
    assert sender.frames == []
    await link.shutdown()


@pytest.mark.asyncio
async def test_early_audio_within_five_seconds_is_all_kept() -> None:
    wiring = wired()
    link = wiring.transport.link(FakeSender(), sample_rate=16000)
    chunks = [frame(index, samples=1600) for index in range(50)]  # exactly 5 s

    for chunk in chunks:
        link.receive(text=audio_message(chunk))
    session = new_session()
    link.attach(session)

    assert wiring.audio == [(session.id, chunk) for chunk in chunks]
    assert link.stats["early_audio_dropped"] == 0
    await link.shutdown()


@pytest.mark.asyncio
async def test_control_messages_queue_until_attach_then_flow_in_order() -> None:
    wiring = wired()
    link = wiring.transport.link(FakeSender(), sample_rate=16000)
    link.receive(text=json.dumps({"type": "text", "text": "first"}))
    link.receive(text=json.dumps({"type": "interrupt"}))
    link.receive(text=json.dumps({"type": "end"}))
    assert wiring.messages == []

    link.attach(new_session())
    await wiring.wait_until(lambda: len(wiring.messages) == 3)

    assert wiring.messages == [("text", {"text": "first"}), ("interrupt", {}), ("end", {})]
    await link.shutdown()


@pytest.mark.asyncio
async def test_more_than_sixteen_waiting_control_messages_are_answered_busy() -> None:
    wiring = wired()
    sender = FakeSender()
    link = wiring.transport.link(sender, sample_rate=16000)

    for index in range(17):
        link.receive(text=json.dumps({"type": "text", "text": f"m{index}"}))
    await sender.wait_until(lambda: len(sender.frames) == 1)

    assert sender.messages() == [
        error("busy", "too many messages waiting; this text message was dropped")
    ]
    assert link.stats["busy"] == 1
    assert link.stats["bad_frames"] == 1
    link.attach(new_session())
    await wiring.wait_until(lambda: len(wiring.messages) == 16)
    link.receive(text=json.dumps({"type": "interrupt"}))  # room again once the engine caught up
    await wiring.wait_until(lambda: len(wiring.messages) == 17)

    assert wiring.messages == [("text", {"text": f"m{index}"}) for index in range(16)] + [
        ("interrupt", {})
    ]
    assert len(sender.frames) == 1
    await link.shutdown()


@pytest.mark.asyncio
async def test_playback_reports_go_to_the_engine_only_once_attached() -> None:
    wiring = wired()
    link = wiring.transport.link(FakeSender(), sample_rate=16000)

    link.receive(text=json.dumps({"type": "playback", "played_ms": 100}))
    link.attach(new_session())
    link.receive(text=json.dumps({"type": "playback", "played_ms": 250}))

    assert wiring.playback == [250]
    assert wiring.messages == []
    await link.shutdown()


@pytest.mark.asyncio
async def test_a_first_hello_sets_the_rate_and_the_audio_format() -> None:
    wiring = wired()
    sender = FakeSender()
    link = wiring.transport.link(sender, sample_rate=None)
    assert not link.rate_known.is_set()

    link.receive(text=json.dumps({"type": "hello", "sample_rate": 48000, "audio_format": "binary"}))
    link.attach(new_session())
    await link.send_audio(frame(3))

    assert link.rate_known.is_set()
    assert (link.sample_rate, link.audio_format) == (48000, "binary")
    assert sender.frames == [frame(3)]  # no error, and audio goes out as bytes
    await link.shutdown()


@pytest.mark.asyncio
async def test_a_hello_without_fields_means_16000() -> None:
    link = wired().transport.link(FakeSender(), sample_rate=None)

    link.receive(text=json.dumps({"type": "hello"}))

    assert (link.sample_rate, link.audio_format) == (16000, "base64_json")
    assert link.rate_known.is_set()
    await link.shutdown()


@pytest.mark.asyncio
async def test_a_second_hello_is_refused_and_changes_nothing() -> None:
    sender = FakeSender()
    link = wired().transport.link(sender, sample_rate=None)
    link.receive(text=json.dumps({"type": "hello", "sample_rate": 48000}))

    link.receive(text=json.dumps({"type": "hello", "sample_rate": 8000, "audio_format": "binary"}))
    await sender.wait_until(lambda: len(sender.frames) == 1)

    assert sender.messages() == [HELLO_TOO_LATE]
    assert (link.sample_rate, link.audio_format) == (48000, "base64_json")
    await link.shutdown()


@pytest.mark.asyncio
async def test_a_hello_after_audio_is_refused_and_the_rate_stays_the_default() -> None:
    sender = FakeSender()
    link = wired().transport.link(sender, sample_rate=None)
    link.receive(data=frame(1))
    assert link.sample_rate == 16000

    link.receive(text=json.dumps({"type": "hello", "sample_rate": 48000}))
    await sender.wait_until(lambda: len(sender.frames) == 1)

    assert sender.messages() == [HELLO_TOO_LATE]
    assert link.sample_rate == 16000
    await link.shutdown()


@pytest.mark.asyncio
async def test_a_hello_is_refused_when_the_query_gave_the_rate() -> None:
    sender = FakeSender()
    link = wired().transport.link(sender, sample_rate=24000)

    link.receive(text=json.dumps({"type": "hello", "sample_rate": 48000}))
    await sender.wait_until(lambda: len(sender.frames) == 1)

    assert sender.messages() == [HELLO_TOO_LATE]
    assert link.sample_rate == 24000
    await link.shutdown()


@pytest.mark.asyncio
async def test_a_flood_is_told_once_then_closed_with_4429_and_later_frames_are_ignored() -> None:
    wiring = wired()
    sender = FakeSender()
    link = wiring.transport.link(sender, sample_rate=16000)
    link.guard = FloodGuard(bytes_per_s=AUDIO_RATE_FACTOR * 2 * 16000, clock=FakeClock())
    link.attach(new_session())

    for _ in range(200 + 500):  # the burst, then 500 drops: the limit, not yet a flood
        link.receive(data=b"\x00\x00")
    assert link.closed is False
    link.receive(data=b"\x00\x00")  # the 501st drop within the window
    await sender.wait_until(lambda: sender.close_codes != [])
    link.receive(data=b"\x00\x00")

    assert sender.close_codes == [4429]
    assert (link.closed, link.close_code) == (True, 4429)
    assert sender.messages() == [
        error("rate_limited", "sending faster than the rate limit: frames were dropped"),
        error("flooded", "too many frames"),
    ]
    assert len(wiring.audio) == 200
    assert link.stats["frames"] == 701
    assert link.stats["rate_limited"] == 500
    assert link.guard.dropped == 501
    await link.shutdown()


@pytest.mark.asyncio
async def test_rate_limit_errors_are_sent_at_most_once_a_second() -> None:
    sender = FakeSender()
    clock = FakeClock()
    link = wired().transport.link(sender, sample_rate=16000)
    # 20 bytes of burst: every 20 ms frame is over the byte rate and dropped.
    link.guard = FloodGuard(bytes_per_s=10.0, clock=clock)

    for step in (0.0, 0.0, 0.4, 0.4, 0.3, 0.5):  # drops at 0, 0, .4, .8, 1.1 and 1.6 s
        clock.now += step
        link.receive(data=frame(1))
    await sender.wait_until(lambda: len(sender.frames) == 2)

    assert (
        sender.messages()
        == [error("rate_limited", "sending faster than the rate limit: frames were dropped")] * 2
    )
    assert link.stats["rate_limited"] == 6
    assert link.closed is False
    await link.shutdown()


@pytest.mark.asyncio
async def test_a_burst_of_bad_frames_gets_at_most_thirty_two_answers_in_flight() -> None:
    sender = FakeSender()
    link = wired().transport.link(sender, sample_rate=16000)

    for _ in range(40):
        link.receive(text="not json")
    pending = list(link._replies)
    await asyncio.wait_for(asyncio.gather(*pending), WAIT_S)

    assert len(pending) == 32
    assert sender.messages() == [error("bad_json", "the frame is not valid JSON")] * 32
    assert link.stats["bad_frames"] == 40
    await link.shutdown()


@pytest.mark.asyncio
async def test_a_closed_link_sends_nothing_and_ignores_frames() -> None:
    wiring = wired()
    sender = FakeSender()
    link = wiring.transport.link(sender, sample_rate=16000)
    link.attach(new_session())

    await link.close()
    await link.close()
    link.receive(data=frame(1))
    await link.send_json({"type": "clear_audio"})
    await link.send_audio(frame(2))

    assert sender.close_codes == [1000]
    assert sender.frames == []
    assert wiring.audio == []
    assert link.stats["frames"] == 0
    await link.shutdown()


def test_a_link_refuses_an_unknown_audio_format() -> None:
    transport = WebSocketRealtimeTransport()

    with pytest.raises(ValueError, match="audio_format must be one of"):
        ClientLink(transport, FakeSender(), sample_rate=16000, audio_format="opus")
