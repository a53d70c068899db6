"""The engine on the database: an Agent row becomes a channel; sessions, transcripts and
tool calls land in VoiceSession, RoomEvent and ToolCall rows; bindings gate audio."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from rooms import services as room_services
from rooms.models import Access, ChannelBinding, EventKind, RoomEvent
from tests.fixtures.actors import TenantWorld
from voice import services as voice_services
from voice.agents import ProviderUnavailable, agent_config_load, channel_for_agent, provider_for
from voice.channels import RealtimeVoiceChannel
from voice.django_store import DjangoStore
from voice.mock import MockRealtimeProvider, MockRealtimeTransport
from voice.models import Agent, SessionState, ToolCall, ToolCallStatus, VoiceSession

FRAME = b"\x10\x00" * 320  # 20 ms at 16 kHz


@database_sync_to_async
def _mock_agent(world: TenantWorld) -> Agent:
    return voice_services.agent_create(
        tenant=world.tenant,
        slug="mock",
        name="Mock agent",
        provider_kind="mock",
        system_prompt="Be brief.",
        tools=[world.tool],
    )


async def _channel(
    world: TenantWorld, agent: Agent
) -> tuple[RealtimeVoiceChannel, MockRealtimeTransport]:
    config = await database_sync_to_async(agent_config_load)(tenant=world.tenant, agent=agent)
    transport = MockRealtimeTransport()
    store = DjangoStore(tenant=world.tenant, agent=agent, transport="mock")
    return channel_for_agent(config, transport=transport, store=store), transport


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_an_agent_row_runs_a_whole_session_into_the_database(world_a: TenantWorld) -> None:
    agent = await _mock_agent(world_a)
    channel, transport = await _channel(world_a, agent)
    provider = channel.provider
    assert isinstance(provider, MockRealtimeProvider)

    session = await channel.start_session("room-1", "caller")
    row = await VoiceSession.objects.aget(pk=session.id)
    assert (row.state, row.agent_id, row.provider_kind) == (SessionState.ACTIVE, agent.pk, "mock")
    connect = next(call for call in provider.calls if call.method == "connect")
    assert connect.kwargs["system_prompt"] == "Be brief."
    assert [tool["name"] for tool in connect.kwargs["tools"]] == ["get_weather"]

    await provider.simulate_speech_start(session)
    await provider.simulate_transcription(session, "Weather in Paris?", role="user")
    await provider.simulate_tool_call(session, "call-1", "get_weather", {"city": "Paris"})
    await provider.simulate_transcription(session, "It is 21 degrees.", role="assistant")
    assert await channel.end_session(session.id, reason="client_hangup") is True

    row = await VoiceSession.objects.aget(pk=session.id)
    assert (row.state, row.end_reason) == (SessionState.ENDED, "client_hangup")
    events = [
        (event.role, event.text, event.status)
        async for event in RoomEvent.objects.filter(
            session_id=session.id, kind=EventKind.TRANSCRIPT
        ).order_by("index")
    ]
    assert events == [
        ("user", "Weather in Paris?", "delivered"),
        ("assistant", "It is 21 degrees.", "delivered"),
    ]
    timeline = [
        (event.kind, event.role, event.text)
        async for event in RoomEvent.objects.filter(session_id=session.id).order_by("index")
    ]
    assert timeline == [
        ("transcript", "user", "Weather in Paris?"),
        ("tool_call", "tool", 'get_weather({"city": "Paris"})'),
        ("transcript", "assistant", "It is 21 degrees."),
    ]
    assert row.metrics["engine"]["inbound_dropped_access"] == 0
    assert set(row.metrics["engine"]) >= {"inbound_dropped_overflow", "outbound_dropped_stale"}
    call = await ToolCall.objects.aget(session_id=session.id)
    assert (call.name, call.status, call.arguments) == (
        "get_weather",
        ToolCallStatus.SUCCEEDED,
        {"city": "Paris"},
    )
    assert json.loads(call.result) == {"city": "Paris", "temperature": 21}
    assert call.tool_id == world_a.tool.pk
    assert provider.tool_results == [(session.id, "call-1", call.result)]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_failed_connect_leaves_an_ended_row_with_the_reason(world_a: TenantWorld) -> None:
    agent = await _mock_agent(world_a)
    channel, transport = await _channel(world_a, agent)
    assert isinstance(channel.provider, MockRealtimeProvider)
    channel.provider.fail_connect = ConnectionError("vendor down")

    with pytest.raises(ConnectionError):
        await channel.start_session("room-1", "caller")

    row = await VoiceSession.objects.aget(participant_id="caller")
    assert (row.state, row.end_reason) == (SessionState.ENDED, "connect_failed")
    assert "vendor down" in row.end_detail
    assert channel.sessions == []


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_muted_binding_in_the_database_stops_caller_audio(world_a: TenantWorld) -> None:
    await database_sync_to_async(room_services.binding_set_muted)(
        tenant=world_a.tenant, binding=world_a.binding, muted=True
    )
    agent = await _mock_agent(world_a)
    channel, transport = await _channel(world_a, agent)
    session = await channel.start_session("room-1", "caller")

    await transport.simulate_client_audio(session, FRAME)

    assert isinstance(channel.provider, MockRealtimeProvider)
    assert channel.provider.sent_audio == []
    await channel.end_session(session.id)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_new_participant_gets_their_own_read_write_binding(world_a: TenantWorld) -> None:
    agent = await _mock_agent(world_a)
    channel, transport = await _channel(world_a, agent)

    session = await channel.start_session("room-1", "newcomer")
    await transport.simulate_client_audio(session, FRAME)

    binding = await ChannelBinding.objects.aget(room=world_a.room, participant_id="newcomer")
    assert (binding.channel_id, binding.access) == ("voice", Access.READ_WRITE)
    assert isinstance(channel.provider, MockRealtimeProvider)
    assert channel.provider.sent_audio == [(session.id, FRAME)]
    await channel.end_session(session.id)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_another_tenants_room_cannot_host_a_session(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    agent = await _mock_agent(world_b)
    channel, transport = await _channel(world_b, agent)

    with pytest.raises(Exception, match="does not exist"):
        await channel.start_session(str(world_a.room.pk), "intruder")

    assert await VoiceSession.objects.filter(room=world_a.room).acount() == 0
    assert (
        await ChannelBinding.objects.filter(room=world_a.room, participant_id="intruder").acount()
        == 0
    )
    assert channel.sessions == []


@pytest.mark.django_db
def test_an_openai_agent_gets_its_provider_with_the_decrypted_key(world_a: TenantWorld) -> None:
    from providers.openai import OpenAIRealtimeProvider

    config = agent_config_load(tenant=world_a.tenant, agent=world_a.agent)
    provider = provider_for(config)

    assert "sk-" not in repr(config)
    assert isinstance(provider, OpenAIRealtimeProvider)
    assert provider._api_key == "sk-tenant-a-0123456789abcdefXYZ"
    assert "sk-" not in repr(provider)


@pytest.mark.django_db
def test_an_agent_whose_provider_is_not_in_this_build_says_so(
    world_a: TenantWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from providers import registry
    from providers import services as provider_services
    from voice import services as voice_services

    missing = replace(registry.PROVIDERS["gemini"], client_path="providers.gemini.gone:Missing")
    monkeypatch.setitem(registry.PROVIDERS, "gemini", missing)
    credential = provider_services.credential_create(
        tenant=world_a.tenant, name="gemini-main", kind="gemini", secret="AIza-0123456789abcdef"
    )
    agent = voice_services.agent_create(
        tenant=world_a.tenant,
        slug="gemini",
        name="Gemini",
        provider_kind="gemini",
        credential=credential,
    )
    config = agent_config_load(tenant=world_a.tenant, agent=agent)

    with pytest.raises(ProviderUnavailable, match="Google Gemini Live provider is not available"):
        provider_for(config)


@pytest.mark.django_db
def test_an_agent_without_a_credential_says_so(world_a: TenantWorld) -> None:
    from voice import services as voice_services

    agent = voice_services.agent_create(
        tenant=world_a.tenant, slug="gemini", name="Gemini", provider_kind="gemini"
    )
    config = agent_config_load(tenant=world_a.tenant, agent=agent)

    with pytest.raises(ProviderUnavailable, match="has no Google Gemini Live credential"):
        provider_for(config)


@pytest.mark.django_db
def test_loading_another_tenants_agent_is_refused(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    with pytest.raises(PermissionError):
        agent_config_load(tenant=world_b.tenant, agent=world_a.agent)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_transcripts_written_while_the_session_ends_are_not_lost(
    world_a: TenantWorld,
) -> None:
    agent = await _mock_agent(world_a)
    channel, transport = await _channel(world_a, agent)
    session = await channel.start_session("room-1", "caller")
    assert isinstance(channel.provider, MockRealtimeProvider)

    for number in range(45):  # more than two writer batches
        channel.provider._callbacks["transcription"][0](
            session, f"line {number}", "assistant", True
        )
    await asyncio.wait_for(channel.end_session(session.id), timeout=30)

    texts = [
        text
        async for text in RoomEvent.objects.filter(session_id=session.id)
        .order_by("index")
        .values_list("text", flat=True)
    ]
    assert texts == [f"line {number}" for number in range(45)]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_hooks_on_the_process_wide_kit_fire_for_agent_channels(world_a: TenantWorld) -> None:
    from voice.kit import HookResult, HookTrigger, kit

    seen: list[str] = []

    async def shout(event, ctx):  # type: ignore[no-untyped-def]
        seen.append(event.text)
        return HookResult.modify(event.text.upper())

    kit.hooks.register(HookTrigger.ON_TRANSCRIPTION, shout, name="test-shout")
    try:
        agent = await _mock_agent(world_a)
        channel, transport = await _channel(world_a, agent)
        session = await channel.start_session("room-1", "caller")
        assert isinstance(channel.provider, MockRealtimeProvider)
        await channel.provider.simulate_transcription(session, "hello there", role="user")
        await channel.end_session(session.id)
    finally:
        kit.hooks.unregister("test-shout")

    assert seen == ["hello there"]
    texts = [
        text
        async for text in RoomEvent.objects.filter(session_id=session.id).values_list(
            "text", flat=True
        )
    ]
    assert texts == ["HELLO THERE"]


@pytest.mark.django_db
def test_an_xai_agent_gets_its_provider_with_the_key_and_the_credentials_endpoint(
    world_a: TenantWorld,
) -> None:
    from providers import services as provider_services
    from providers.xai import XAIRealtimeProvider

    credential = provider_services.credential_create(
        tenant=world_a.tenant,
        name="xai-gateway",
        kind="xai",
        secret="xai-0123456789abcdef",
        base_url="wss://gateway.example.com/xai/v1",
    )
    agent = voice_services.agent_create(
        tenant=world_a.tenant,
        slug="grok",
        name="Grok",
        provider_kind="xai",
        model="grok-voice-latest",
        credential=credential,
    )
    provider = provider_for(agent_config_load(tenant=world_a.tenant, agent=agent))

    assert isinstance(provider, XAIRealtimeProvider)
    assert provider._api_key == "xai-0123456789abcdef"
    assert provider.model == "grok-voice-latest"
    assert provider._url() == "wss://gateway.example.com/xai/v1/realtime?model=grok-voice-latest"


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_provider_reconnect_is_recorded_on_the_session_and_the_timeline(
    world_a: TenantWorld,
) -> None:
    from providers.models import ProviderCredential
    from tests.fakes.openai_realtime import FakeOpenAIRealtime

    async with FakeOpenAIRealtime(api_key="sk-tenant-a-0123456789abcdefXYZ") as fake:
        await ProviderCredential.objects.filter(pk=world_a.agent.credential_id).aupdate(
            base_url=fake.base_url
        )
        channel, transport = await _channel(world_a, world_a.agent)
        reconnected = asyncio.Event()
        channel.provider.on_reconnect(lambda session, info: reconnected.set())
        session = await channel.start_session("room-1", "caller")
        await fake.user_speaks("hello")
        await fake.wait_idle()
        await channel.settle(session)

        await fake.drop_connection()
        await fake.wait_for_connections(2)
        async with asyncio.timeout(10):
            await reconnected.wait()
        row = await VoiceSession.objects.aget(pk=session.id)
        live_count = row.reconnects
        await channel.end_session(session.id, reason="client_hangup")

    row = await VoiceSession.objects.aget(pk=session.id)
    assert live_count == 1  # counted while the session was live
    assert row.reconnects == 1
    assert [r["reason"] for r in row.metrics["reconnects"]] == ["connection_lost"]
    created = [event["session"]["id"] for event in fake.sent if event["type"] == "session.created"]
    assert row.provider_session_id == created[1]  # the new vendor session's id
    system = [
        event
        async for event in RoomEvent.objects.filter(
            session_id=session.id, kind=EventKind.SYSTEM
        ).order_by("index")
    ]
    assert len(system) == 1
    assert system[0].text.startswith("The provider connection was restored (connection_lost")
    assert system[0].metadata["reconnect"]["attempts"] == 1
    assert transport.messages_of(session, "error") == []


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_gemini_resumption_handle_is_persisted_on_the_session(world_a: TenantWorld) -> None:
    from providers import services as provider_services
    from tests.fakes.gemini_live import FakeGeminiLive

    async with FakeGeminiLive(api_key="AIza-0123456789abcdef") as fake:
        credential = await database_sync_to_async(provider_services.credential_create)(
            tenant=world_a.tenant,
            name="gemini-fake",
            kind="gemini",
            secret="AIza-0123456789abcdef",
            base_url=fake.base_url,
        )
        agent = await database_sync_to_async(voice_services.agent_create)(
            tenant=world_a.tenant,
            slug="gemini",
            name="Gemini",
            provider_kind="gemini",
            credential=credential,
        )
        channel, _ = await _channel(world_a, agent)
        seen = asyncio.Event()
        channel.provider.on_resumption(lambda session, handle: seen.set())
        session = await channel.start_session("room-1", "caller")
        handle = await fake.send_resumption_update()
        async with asyncio.timeout(5):
            await seen.wait()
        await channel.settle(session)
        row = await VoiceSession.objects.aget(pk=session.id)
        await channel.end_session(session.id, reason="client_hangup")

    assert handle and row.resumption_handle == handle


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_an_elevenlabs_correction_fixes_the_stored_transcript(world_a: TenantWorld) -> None:
    from providers import services as provider_services
    from tests.fakes.elevenlabs_convai import FakeElevenLabs

    story = "Once upon a time there was a very long story that went on and on."
    async with FakeElevenLabs(
        api_key="xi-0123456789abcdef", next_reply=story, reply_audio_ms=4000, chunk_interval_s=0.02
    ) as fake:
        credential = await database_sync_to_async(provider_services.credential_create)(
            tenant=world_a.tenant,
            name="elevenlabs-fake",
            kind="elevenlabs",
            secret="xi-0123456789abcdef",
            base_url=fake.ws_base_url,
        )
        agent = await database_sync_to_async(voice_services.agent_create)(
            tenant=world_a.tenant,
            slug="eleven",
            name="ElevenLabs",
            provider_kind="elevenlabs",
            model=fake.agent_id,
            credential=credential,
        )
        channel, transport = await _channel(world_a, agent)
        session = await channel.start_session("room-1", "caller")
        await fake.user_speaks("tell me a story")
        await transport.wait_until(lambda: len(transport.sent_audio) >= 3)
        await fake.interrupt()
        await transport.wait_until(lambda: transport.messages_of(session, "transcript_corrected"))
        (corrected,) = transport.messages_of(session, "transcript_corrected")
        await channel.end_session(session.id, reason="client_hangup")

    rows = [
        event
        async for event in RoomEvent.objects.filter(
            session_id=session.id, kind=EventKind.TRANSCRIPT, role="assistant"
        )
    ]
    assert [row.text for row in rows] == [corrected["text"]]
    assert rows[0].metadata["original_text"] == story
