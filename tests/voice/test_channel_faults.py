from __future__ import annotations

import logging

import pytest

from voice.channels import RealtimeVoiceChannel
from voice.mock import MockRealtimeProvider, MockRealtimeTransport
from voice.session import LiveSession


class DeadClientTransport(MockRealtimeTransport):
    async def send_audio(self, session: LiveSession, audio: bytes) -> None:
        raise ConnectionResetError("peer gone")


@pytest.mark.asyncio
async def test_a_dead_client_is_counted_per_chunk_but_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = MockRealtimeProvider()
    channel = RealtimeVoiceChannel("voice", provider=provider, transport=DeadClientTransport())
    session = await channel.start_session("room-1", "user-1")

    with caplog.at_level(logging.WARNING, logger="voice.channels"):
        for _ in range(40):
            await provider.simulate_audio(session, b"\x01\x00" * 480)

    assert channel._runtimes[session.id].stats["outbound_send_failures"] == 40
    warnings = [r for r in caplog.records if r.getMessage().startswith("sending reply audio")]
    assert [r.getMessage() for r in warnings] == ["sending reply audio failed (1 so far)"]
    assert session.is_active  # the session lives on; the transport's disconnect will end it
    await channel.end_session(session.id)
    assert session.stats["outbound_send_failures"] == 40


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("limit", "expected"),
    [(20, "xxxxxxxxx[truncated]"), (11, "[truncated]"), (5, "")],
)
async def test_a_limit_too_small_for_the_notice_still_never_exceeds_it_or_cuts_the_notice(
    limit: int, expected: str
) -> None:
    from voice.kit import Tool

    async def big() -> str:
        return "x" * 500

    provider = MockRealtimeProvider()
    channel = RealtimeVoiceChannel(
        "voice",
        provider=provider,
        transport=MockRealtimeTransport(),
        tools=[Tool(name="big", description="", handler=big)],
        tool_result_max_length=limit,
    )
    session = await channel.start_session("room-1", "user-1")

    await provider.simulate_tool_call(session, "c1", "big", {})

    assert provider.tool_results == [(session.id, "c1", expected)]
    await channel.end_session(session.id)
