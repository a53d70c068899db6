"""The seed's examples (../shared/seed/realtime-voice.txt), run as written: only the import
lines are changed to our modules, and the mock provider stands in for a vendor."""

from __future__ import annotations

import json

import pytest

from voice.session import SessionState


@pytest.mark.asyncio
async def test_the_seed_testing_with_mocks_example_runs_as_written() -> None:
    from voice.channels import RealtimeVoiceChannel
    from voice.mock import MockRealtimeProvider, MockRealtimeTransport

    provider = MockRealtimeProvider()
    transport = MockRealtimeTransport()

    channel = RealtimeVoiceChannel("voice-test", provider=provider, transport=transport)

    session = await channel.start_session("room-1", "user-1")

    # Simulate provider events
    await provider.simulate_transcription(session, "Hello", role="user", is_final=True)
    await provider.simulate_audio(session, b"\x00\x01" * 100)
    await provider.simulate_tool_call(session, "call-1", "get_weather", {"city": "NYC"})

    # Assert transport received audio
    assert len(transport.sent_audio) > 0

    # And what the example implies, checked exactly:
    assert transport.sent_audio == [(session.id, b"\x00\x01" * 100)]
    assert transport.messages_of(session, "transcription") == [
        {"type": "transcription", "text": "Hello", "role": "user", "is_final": True}
    ]
    # No tool, handler or hook answers get_weather: the model gets a clear error, not silence.
    assert provider.tool_results == [
        (session.id, "call-1", json.dumps({"error": "No handler for tool 'get_weather'"}))
    ]
    await channel.end_session(session.id)


@pytest.mark.asyncio
async def test_the_seed_session_lifecycle_example_runs_as_written() -> None:
    from voice.channels import RealtimeVoiceChannel
    from voice.mock import MockRealtimeProvider, MockRealtimeTransport

    provider = MockRealtimeProvider()
    transport = MockRealtimeTransport()
    channel = RealtimeVoiceChannel("voice", provider=provider, transport=transport, voice="alloy")
    webrtc_id = "webrtc-123"
    new_tools = [
        {"type": "function", "name": "lookup", "description": "", "parameters": {"type": "object"}}
    ]

    # Start a session
    session = await channel.start_session(
        room_id="room-1",
        participant_id="user-1",
        connection=webrtc_id,  # Transport-specific connection handle
        metadata={
            "system_prompt": "Override prompt",  # Per-session override
            "voice": "echo",  # Per-session voice
        },
    )

    # Reconfigure mid-conversation
    await channel.reconfigure_session(
        session.id,
        system_prompt="New prompt",
        voice="shimmer",
        tools=new_tools,
        temperature=0.5,
    )

    # End session
    await channel.end_session(session.id)

    assert session.state is SessionState.ENDED
    connect = next(call for call in provider.calls if call.method == "connect")
    assert connect.kwargs["system_prompt"] == "Override prompt"
    assert connect.kwargs["voice"] == "echo"
    assert transport.accepted == {}
    reconfigure = next(call for call in provider.calls if call.method == "reconfigure")
    assert reconfigure.kwargs == {
        "system_prompt": "New prompt",
        "voice": "shimmer",
        "tools": new_tools,
        "temperature": 0.5,
        "provider_config": None,
    }


@pytest.mark.asyncio
async def test_the_seed_tool_examples_run_as_written() -> None:
    from voice.channels import RealtimeVoiceChannel
    from voice.kit import Tool
    from voice.mock import MockRealtimeProvider, MockRealtimeTransport

    provider = MockRealtimeProvider()
    transport = MockRealtimeTransport()

    async def get_weather(city: str) -> str:
        return json.dumps({"temperature": 72, "condition": "sunny", "city": city})

    weather_tool = Tool(
        name="get_weather",
        description="Get current weather for a city",
        parameters={
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
            },
            "required": ["city"],
        },
        handler=get_weather,
    )

    channel = RealtimeVoiceChannel(
        "voice",
        provider=provider,
        transport=transport,
        tools=[weather_tool],
        mute_on_tool_call=True,  # Prevent barge-in during tool execution
    )

    async def handle_tool(name, arguments):  # type: ignore[no-untyped-def]
        if name == "get_weather":
            city = arguments.get("city", "Unknown")
            return json.dumps({"temperature": 72, "condition": "sunny", "city": city})
        return json.dumps({"error": f"Unknown tool: {name}"})

    channel_2 = RealtimeVoiceChannel(
        "voice-2",
        provider=provider,
        transport=transport,
        tools=[
            {
                "type": "function",
                "name": "get_weather",
                "description": "Get current weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string", "description": "City name"},
                    },
                    "required": ["city"],
                },
            },
        ],
        tool_handler=handle_tool,
        mute_on_tool_call=True,
    )

    first = await channel.start_session("room-1", "user-1")
    second = await channel_2.start_session("room-1", "user-2")
    await provider.simulate_tool_call(first, "c1", "get_weather", {"city": "Paris"})
    await provider.simulate_tool_call(second, "c2", "get_weather", {"city": "Oslo"})

    expected = {"temperature": 72, "condition": "sunny"}
    results = {call_id: json.loads(result) for _, call_id, result in provider.tool_results}
    assert results == {"c1": {**expected, "city": "Paris"}, "c2": {**expected, "city": "Oslo"}}
    connect = next(call for call in provider.calls if call.method == "connect")
    assert connect.kwargs["tools"] == [weather_tool.definition]
    await channel.close()
    await channel_2.close()


@pytest.mark.asyncio
async def test_the_seed_hook_examples_run_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    from voice.channels import RealtimeVoiceChannel
    from voice.kit import HookResult, HookTrigger, RoomKit
    from voice.mock import MockRealtimeProvider, MockRealtimeTransport

    kit = RoomKit()

    async def fetch_weather(city: str) -> str:
        return f"sunny in {city}"

    @kit.hook(HookTrigger.ON_TOOL_CALL)
    async def on_tool_call(event, ctx):  # type: ignore[no-untyped-def]
        if event.name == "get_weather":
            result = await fetch_weather(event.arguments["city"])
            return HookResult(action="allow", metadata={"result": result})
        return HookResult.allow()

    @kit.hook(HookTrigger.ON_TRANSCRIPTION)
    async def on_transcription(event, ctx):  # type: ignore[no-untyped-def]
        print(f"[{event.metadata['role']}] {event.content.body}")

    @kit.hook(HookTrigger.ON_SPEECH_START)
    async def on_speech_start(event, ctx):  # type: ignore[no-untyped-def]
        print("User started speaking")

    provider = MockRealtimeProvider()
    transport = MockRealtimeTransport()
    channel = RealtimeVoiceChannel("voice", provider=provider, transport=transport)
    kit.register_channel(channel)

    session = await channel.start_session("room-1", "user-1")
    await provider.simulate_speech_start(session)
    await provider.simulate_transcription(session, "What's the weather in Rome?", role="user")
    await provider.simulate_tool_call(session, "call-9", "get_weather", {"city": "Rome"})

    assert capsys.readouterr().out.splitlines() == [
        "User started speaking",
        "[user] What's the weather in Rome?",
    ]
    assert provider.tool_results == [(session.id, "call-9", "sunny in Rome")]
    await kit.close()


# --- The vendor examples, against the vendors' fake servers (base_url) -------------------------


@pytest.mark.asyncio
async def test_the_seed_openai_examples_run_against_the_fake_server() -> None:
    from providers.openai import OpenAIRealtimeProvider
    from tests.fakes.openai_realtime import FakeOpenAIRealtime
    from voice.channels import RealtimeVoiceChannel
    from voice.kit import RoomKit
    from voice.mock import MockRealtimeTransport

    async with FakeOpenAIRealtime(api_key="sk-...") as fake:
        provider = OpenAIRealtimeProvider(
            api_key="sk-...",
            model="gpt-4o-realtime-preview",
            base_url=fake.base_url,  # Custom endpoint (optional): here, the fake
        )

        transport = MockRealtimeTransport()

        channel = RealtimeVoiceChannel(
            "voice-realtime",
            provider=provider,
            transport=transport,
            system_prompt="You are a helpful voice assistant.",
            voice="alloy",
            input_sample_rate=16000,
            output_sample_rate=24000,
            emit_transcription_events=True,
        )

        kit = RoomKit()
        kit.register_channel(channel)

        # Server VAD (default)
        server_vad = RealtimeVoiceChannel(
            "voice",
            provider=provider,
            transport=transport,
            provider_config={
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "silence_duration_ms": 800,
                    "prefix_padding_ms": 300,
                    "interrupt_response": True,
                    "create_response": True,
                },
            },
        )
        # Semantic VAD (understands conversation flow)
        semantic = RealtimeVoiceChannel(
            "voice",
            provider=provider,
            transport=transport,
            provider_config={
                "turn_detection": {
                    "type": "semantic_vad",
                    "eagerness": "high",  # low, medium, high, auto
                },
            },
        )
        # Manual turn management (no automatic VAD)
        manual = RealtimeVoiceChannel(
            "voice",
            provider=provider,
            transport=transport,
            provider_config={"turn_detection": None},
        )
        # Configure which model transcribes user input
        stt = RealtimeVoiceChannel(
            "voice",
            provider=provider,
            transport=transport,
            provider_config={"stt_model": "gpt-4o-transcribe"},
        )

        session = await channel.start_session("room-1", "user-1")
        await fake.user_speaks("hello")
        await fake.wait_idle()
        await channel.settle(session)
        for other in (server_vad, semantic, manual, stt):
            await other.start_session("room-1", "user-1")
        sessions = [
            event["session"] for event in fake.received if event["type"] == "session.update"
        ]
        texts = [
            (message["role"], message["text"])
            for message in transport.messages_of(session, "transcription")
            if message["is_final"]
        ]
        for open_channel in (channel, server_vad, semantic, manual, stt):
            await open_channel.close()

    assert fake.request_paths[0] == "/v1/realtime?model=gpt-4o-realtime-preview"
    assert sessions[0]["instructions"] == "You are a helpful voice assistant."
    assert sessions[0]["audio"]["output"]["voice"] == "alloy"
    assert texts == [("user", "hello"), ("assistant", fake.next_reply)]
    turn = [s["audio"]["input"]["turn_detection"] for s in sessions[1:4]]
    assert turn[0]["silence_duration_ms"] == 800
    assert turn[1] == {"type": "semantic_vad", "eagerness": "high"}
    assert turn[2] is None
    assert sessions[4]["audio"]["input"]["transcription"]["model"] == "gpt-4o-transcribe"


@pytest.mark.asyncio
async def test_the_seed_xai_examples_run_against_the_fake_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from providers.xai import XAIRealtimeConfig, XAIRealtimeProvider
    from tests.fakes.xai_realtime import FakeXAIRealtime
    from voice.channels import RealtimeVoiceChannel
    from voice.kit import Tool
    from voice.mock import MockRealtimeTransport

    async def get_weather(city: str) -> str:
        return json.dumps({"temperature": 72, "condition": "sunny", "city": city})

    weather_tool = Tool(
        name="get_weather",
        description="Get current weather for a city",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
        handler=get_weather,
    )

    async with FakeXAIRealtime(api_key="xai-...") as fake:
        provider = XAIRealtimeProvider(
            XAIRealtimeConfig(
                api_key="xai-...",
                model="grok-3-fast",  # Default model
                voice="eve",  # Default voice
                transcription_model="grok-2-audio",  # Input transcription model
                base_url=fake.base_url,  # (not in the seed: the fake's address)
            )
        )

        # Or with keyword arguments:
        provider_2 = XAIRealtimeProvider(
            api_key="xai-...",
            model="grok-3-fast",
            base_url=fake.base_url,
        )

        transport = MockRealtimeTransport()
        channel = RealtimeVoiceChannel(
            "voice",
            provider=provider,
            transport=transport,
            provider_config={
                "turn_detection_type": "server_vad",  # server_vad (default)
                "threshold": 0.5,
                "silence_duration_ms": 800,
                "prefix_padding_ms": 300,
            },
        )
        tools_channel = RealtimeVoiceChannel(
            "voice",
            provider=provider_2,
            transport=transport,
            tools=[
                {"type": "web_search"},  # Search the web
                {"type": "x_search"},  # Search X (Twitter)
                weather_tool,  # Standard function tool
            ],
        )
        stt_channel = RealtimeVoiceChannel(
            "voice",
            provider=provider_2,
            transport=transport,
            # Override transcription model via provider_config
            provider_config={
                "transcription_model": "grok-2-audio",
            },
        )

        session = await channel.start_session("room-1", "user-1")
        await fake.user_speaks("hello")
        await fake.wait_idle()
        await channel.settle(session)
        await tools_channel.start_session("room-1", "user-2")
        await stt_channel.start_session("room-1", "user-3")
        sessions = [
            event["session"] for event in fake.received if event["type"] == "session.update"
        ]
        texts = [
            (message["role"], message["text"])
            for message in transport.messages_of(session, "transcription")
            if message["is_final"]
        ]
        for open_channel in (channel, tools_channel, stt_channel):
            await open_channel.close()

    # Environment variables (example): XAI_API_KEY, XAI_MODEL, XAI_VOICE.
    monkeypatch.setenv("XAI_API_KEY", "xai-from-env")
    monkeypatch.setenv("XAI_MODEL", "grok-voice-latest")
    monkeypatch.setenv("XAI_VOICE", "ara")
    from_env = XAIRealtimeProvider(XAIRealtimeConfig.from_env())

    assert fake.request_paths[0] == "/v1/realtime?model=grok-3-fast"
    assert sessions[0]["voice"] == "eve"
    assert sessions[0]["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.5,
        "silence_duration_ms": 800,
        "prefix_padding_ms": 300,
    }
    assert sessions[0]["audio"]["input"]["transcription"] == {"model": "grok-2-audio"}
    assert texts == [("user", "hello"), ("assistant", fake.next_reply)]
    assert [tool["type"] for tool in sessions[1]["tools"]] == ["web_search", "x_search", "function"]
    assert sessions[2]["audio"]["input"]["transcription"] == {"model": "grok-2-audio"}
    assert (from_env.model, from_env.default_voice, from_env._api_key) == (
        "grok-voice-latest",
        "ara",
        "xai-from-env",
    )


@pytest.mark.asyncio
async def test_the_seed_gemini_examples_run_against_the_fake_server() -> None:
    from providers.gemini import GeminiLiveProvider
    from tests.fakes.gemini_live import FakeGeminiLive
    from voice.channels import RealtimeVoiceChannel
    from voice.mock import MockRealtimeTransport

    billing_tools = [
        {
            "type": "function",
            "name": "refund",
            "description": "Refund an order",
            "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
        }
    ]
    async with FakeGeminiLive(api_key="your-gemini-key") as fake:
        provider = GeminiLiveProvider(
            api_key="your-gemini-key",
            model="gemini-2.5-flash-native-audio-preview-12-2025",
            base_url=fake.base_url,  # (not in the seed: the fake's address)
        )
        transport = MockRealtimeTransport()
        channel = RealtimeVoiceChannel(
            "voice",
            provider=provider,
            transport=transport,
            voice="Aoede",
            provider_config={
                # VAD sensitivity
                "start_of_speech_sensitivity": "HIGH",  # LOW, MEDIUM, HIGH
                "end_of_speech_sensitivity": "MEDIUM",
                "silence_duration_ms": 500,
                # Proactive audio (AI speaks without prompt)
                "proactive_audio": True,
                # Affective dialog (emotional responses)
                "enable_affective_dialog": True,
                # Extended thinking
                "thinking_budget": 1024,
                # Generation parameters
                "top_p": 0.8,
                "top_k": 40,
                "max_output_tokens": 2048,
                # Non-interruptible mode
                "activity_handling": "NO_INTERRUPTION",
                # Language
                "language_code": "en-US",
            },
        )
        room_id, participant_id = "room-1", "user-1"

        # Start with general assistant
        session = await channel.start_session(room_id, participant_id)
        await fake.user_speaks("I have a billing question")
        await fake.wait_idle()
        await channel.settle(session)
        handle = fake.issued_handles[-1]

        # Hand off to specialist — context is preserved
        await channel.reconfigure_session(
            session.id,
            system_prompt="You are a billing specialist.",
            voice="Kore",
            tools=billing_tools,
        )
        resumed = fake.setups[1]
        conversation = fake.conversation
        await channel.close()

    first = fake.setups[0]
    assert first["generationConfig"]["speechConfig"]["voiceConfig"] == {
        "prebuiltVoiceConfig": {"voiceName": "Aoede"}
    }
    detection = first["realtimeInputConfig"]["automaticActivityDetection"]
    assert detection["startOfSpeechSensitivity"] == "START_SENSITIVITY_HIGH"
    assert "endOfSpeechSensitivity" not in detection  # MEDIUM: Gemini has no such level
    assert first["realtimeInputConfig"]["activityHandling"] == "NO_INTERRUPTION"
    assert resumed["sessionResumption"] == {"handle": handle}
    assert resumed["systemInstruction"] == {"parts": [{"text": "You are a billing specialist."}]}
    assert resumed["proactivity"] == {"proactiveAudio": True}
    # The specialist's session holds the conversation so far.
    assert conversation[0]["parts"][0]["text"] == "I have a billing question"


@pytest.mark.asyncio
async def test_the_seed_elevenlabs_examples_run_against_the_fake_server() -> None:
    from providers.elevenlabs import ElevenLabsRealtimeProvider
    from providers.elevenlabs.config import ElevenLabsRealtimeConfig
    from tests.fakes.elevenlabs_convai import FakeElevenLabs
    from voice.channels import RealtimeVoiceChannel
    from voice.mock import MockRealtimeTransport

    async with (
        FakeElevenLabs(api_key="xi-...", agent_id="agent_abc123") as fake,
        FakeElevenLabs(api_key="xi-...", agent_id="agent_abc123", requires_auth=True) as private,
    ):
        config = ElevenLabsRealtimeConfig(
            api_key="xi-...",
            agent_id="agent_abc123",  # From ElevenLabs dashboard
            base_url=fake.ws_base_url,  # (not in the seed: the fake's address)
        )
        provider = ElevenLabsRealtimeProvider(config)
        transport = MockRealtimeTransport()

        async def handle_tool(name: str, arguments: dict) -> str:  # type: ignore[type-arg]
            if name == "check_order":
                return json.dumps({"status": "shipped", "eta": "Tomorrow"})
            return json.dumps({"error": f"Unknown tool: {name}"})

        channel = RealtimeVoiceChannel(
            "voice",
            provider=provider,
            transport=transport,
            system_prompt="You are a helpful assistant.",  # Override agent prompt
            voice="voice-id-from-elevenlabs",  # Override agent voice
            temperature=0.7,  # Override LLM temperature
            tool_handler=handle_tool,
        )

        # Provider-specific overrides via session metadata
        session = await channel.start_session(
            room_id="room-1",
            participant_id="user-1",
            metadata={
                "provider_config": {
                    "language": "fr",  # Language code
                    "first_message": "Bonjour!",  # Agent's opening message
                    "dynamic_variables": {  # Template variables for the prompt
                        "user_name": "Alice",
                        "account_id": "12345",
                    },
                },
            },
        )
        fake.next_tool_call = ("check_order", {"order_id": "A1"})
        await fake.user_speaks("where is my order")
        await fake.wait_for("client_tool_result")
        await channel.settle(session)

        # Signed URL (client-facing deployments)
        signed = ElevenLabsRealtimeConfig(
            api_key="xi-...",
            agent_id="agent_abc123",
            requires_auth=True,  # Fetches signed URL
            base_url=private.ws_base_url,
        )
        private_channel = RealtimeVoiceChannel(
            "voice", provider=ElevenLabsRealtimeProvider(signed), transport=transport
        )
        await private_channel.start_session("room-1", "user-2")
        initiation = fake.initiation
        for open_channel in (channel, private_channel):
            await open_channel.close()

    assert initiation is not None
    override = initiation["conversation_config_override"]
    assert override["agent"]["first_message"] == "Bonjour!"
    assert override["agent"]["language"] == "fr"
    assert override["tts"] == {"voice_id": "voice-id-from-elevenlabs"}
    assert initiation["dynamic_variables"] == {"user_name": "Alice", "account_id": "12345"}
    assert json.loads(fake.tool_results[0]["result"]) == {"status": "shipped", "eta": "Tomorrow"}
    assert "conversation_signature=" in private.request_paths[0]
