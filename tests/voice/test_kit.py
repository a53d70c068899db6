"""The public kit (voice.kit): Tool, RoomKit, the process-wide kit and hooks autodiscovery."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import voice.kit
from voice.events import ToolCallEvent
from voice.kit import (
    HookContext,
    HookExecution,
    HookResult,
    HookTrigger,
    KitChannel,
    RoomKit,
    Tool,
    autodiscover_hooks,
    kit,
)
from voice.session import LiveSession

pytestmark = pytest.mark.timeout(10)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def process_kit() -> Iterator[RoomKit]:
    """The process-wide kit, restored afterwards (hooks, channels and rooms)."""
    hooks = kit.hooks
    saved = (dict(hooks._sync), dict(hooks._async), dict(kit._channels), dict(kit._rooms))
    yield kit
    hooks._sync, hooks._async = saved[0], saved[1]
    kit._channels, kit._rooms = saved[2], saved[3]


class FakeChannel:
    def __init__(self, channel_id: str) -> None:
        self.channel_id = channel_id
        self.kit: RoomKit | None = None
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1


class SyncCloseChannel:
    def __init__(self, channel_id: str) -> None:
        self.channel_id = channel_id
        self.kit: RoomKit | None = None
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


class BrokenCloseChannel(FakeChannel):
    async def close(self) -> None:
        raise RuntimeError("socket gone")


async def get_weather(city: str) -> str:
    return json.dumps({"temperature": 72, "condition": "sunny", "city": city})


WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
    },
    "required": ["city"],
}


# -- importing -----------------------------------------------------------------------------


def test_importing_the_kit_needs_no_django() -> None:
    code = (
        "import sys, voice.kit; "
        "print(sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')))"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}

    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )

    assert completed.stdout.strip() == "[]"


def test_the_public_names_are_exported() -> None:
    assert {"RoomKit", "Tool", "HookTrigger", "HookResult", "kit"} <= set(voice.kit.__all__)
    assert isinstance(voice.kit.kit, RoomKit)


# -- Tool ------------------------------------------------------------------------------------


def test_the_seed_tool_gives_the_provider_definition() -> None:
    tool = Tool(
        name="get_weather",
        description="Get current weather for a city",
        parameters=WEATHER_PARAMETERS,
        handler=get_weather,
    )

    assert tool.definition == {
        "type": "function",
        "name": "get_weather",
        "description": "Get current weather for a city",
        "parameters": WEATHER_PARAMETERS,
    }


def test_a_definition_is_a_copy_the_caller_may_change() -> None:
    tool = Tool(name="get_weather", parameters=WEATHER_PARAMETERS, handler=get_weather)

    tool.definition["parameters"]["properties"]["city"]["type"] = "number"

    assert tool.parameters["properties"]["city"]["type"] == "string"


async def now() -> str:
    return "12:00"


def test_a_tool_without_parameters_takes_an_empty_object() -> None:
    tool = Tool(name="now", description="The time", handler=now)

    assert tool.parameters == {"type": "object", "properties": {}}
    assert tool.definition["parameters"] == {"type": "object", "properties": {}}


@pytest.mark.asyncio
async def test_a_handler_without_arguments_is_called_with_an_empty_dict() -> None:
    assert await Tool(name="now", handler=now).call({}) == "12:00"


def test_a_tool_is_built_with_keywords_and_needs_a_handler() -> None:
    with pytest.raises(TypeError):
        Tool("get_weather", "Get weather", WEATHER_PARAMETERS, get_weather)  # type: ignore[misc]
    with pytest.raises(TypeError, match="handler"):
        Tool(name="get_weather")  # type: ignore[call-arg]


@pytest.mark.asyncio
async def test_an_async_handler_is_called_with_the_arguments_as_keywords() -> None:
    tool = Tool(name="get_weather", parameters=WEATHER_PARAMETERS, handler=get_weather)

    result = await tool.call({"city": "Paris"})

    assert json.loads(result) == {"temperature": 72, "condition": "sunny", "city": "Paris"}


@pytest.mark.asyncio
async def test_a_sync_handler_runs_in_a_worker_thread() -> None:
    threads: list[int] = []

    def lookup_order(order_id: str) -> dict[str, str]:
        threads.append(threading.get_ident())
        return {"order_id": order_id, "status": "shipped"}

    tool = Tool(name="lookup_order", handler=lookup_order)

    result = await tool.call({"order_id": "A1"})

    assert result == {"order_id": "A1", "status": "shipped"}
    assert threads != [threading.get_ident()]
    assert len(threads) == 1


@pytest.mark.asyncio
async def test_an_object_with_an_async_call_method_is_awaited_in_the_loop() -> None:
    class Handler:
        async def __call__(self, city: str) -> str:
            return f"weather in {city}"

    tool = Tool(name="get_weather", handler=Handler())

    assert await tool.call({"city": "Oslo"}) == "weather in Oslo"


@pytest.mark.parametrize("name", ["", "1st", "has space", "a" * 65, "dot.name", "ünïcode"])
def test_a_tool_name_outside_the_provider_rule_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid tool name"):
        Tool(name=name, handler=now)


@pytest.mark.parametrize("name", ["_x", "get-weather", "A" * 64, "lookup_order_2"])
def test_a_tool_name_inside_the_provider_rule_is_accepted(name: str) -> None:
    assert Tool(name=name, handler=now).name == name


@pytest.mark.parametrize(
    "parameters",
    [
        {},
        {"type": "array"},
        {"type": "object", "properties": []},
        ["not", "a", "dict"],
    ],
)
def test_parameters_must_be_an_object_schema(parameters: Any) -> None:
    with pytest.raises(ValueError, match="tool t: parameters"):
        Tool(name="t", parameters=parameters, handler=now)


def test_a_handler_must_be_callable() -> None:
    with pytest.raises(TypeError, match="tool t: handler must be callable"):
        Tool(name="t", handler="module.function")  # type: ignore[arg-type]


# -- RoomKit: channels, rooms, close ---------------------------------------------------------


def test_register_channel_stores_it_and_sets_its_kit() -> None:
    room_kit = RoomKit()
    channel = FakeChannel("voice")

    room_kit.register_channel(channel)

    assert channel.kit is room_kit
    assert room_kit.get_channel("voice") is channel
    assert room_kit.channels == {"voice": channel}
    assert room_kit.get_channel("other") is None


def test_a_duplicate_channel_id_is_refused_and_the_first_channel_stays() -> None:
    room_kit = RoomKit()
    first = FakeChannel("voice")
    second = FakeChannel("voice")
    room_kit.register_channel(first)

    with pytest.raises(ValueError, match="a channel with id 'voice' is already registered"):
        room_kit.register_channel(second)

    assert room_kit.get_channel("voice") is first
    assert second.kit is None


def test_an_empty_channel_id_is_refused() -> None:
    room_kit = RoomKit()

    with pytest.raises(ValueError, match="a channel needs a non-empty channel_id"):
        room_kit.register_channel(FakeChannel(""))

    assert room_kit.channels == {}


def test_unregister_channel_detaches_it() -> None:
    room_kit = RoomKit()
    channel = FakeChannel("voice")
    room_kit.register_channel(channel)

    assert room_kit.unregister_channel("voice") is channel

    assert channel.kit is None
    assert room_kit.channels == {}


def test_the_channels_property_is_a_copy() -> None:
    room_kit = RoomKit()
    room_kit.register_channel(FakeChannel("voice"))

    room_kit.channels.clear()

    assert list(room_kit.channels) == ["voice"]


@pytest.mark.asyncio
async def test_create_room_with_an_id_and_metadata() -> None:
    room_kit = RoomKit()
    metadata = {"topic": "support"}

    room = await room_kit.create_room("room-1", metadata=metadata)
    metadata["topic"] = "changed"

    assert room.id == "room-1"
    assert room.metadata == {"topic": "support"}
    assert room.created_at.tzinfo is not None
    assert room_kit.get_room("room-1") is room
    assert room_kit.get_room("room-2") is None


@pytest.mark.asyncio
async def test_create_room_without_an_id_makes_a_uuid() -> None:
    room_kit = RoomKit()

    first = await room_kit.create_room()
    second = await room_kit.create_room()

    assert len(first.id) == 36
    assert first.id != second.id
    assert first.metadata == {}
    assert room_kit.get_room(first.id) is first


@pytest.mark.asyncio
async def test_a_duplicate_room_id_is_refused_and_the_first_room_stays() -> None:
    room_kit = RoomKit()
    room = await room_kit.create_room("room-1", metadata={"v": 1})

    with pytest.raises(ValueError, match="a room with id 'room-1' already exists"):
        await room_kit.create_room("room-1", metadata={"v": 2})

    assert room_kit.get_room("room-1") is room
    assert room.metadata == {"v": 1}


@pytest.mark.asyncio
async def test_close_closes_async_closable_channels_and_drains_hooks() -> None:
    room_kit = RoomKit()
    closable = FakeChannel("voice")
    broken = BrokenCloseChannel("broken")
    sync_close = SyncCloseChannel("sync")
    for channel in (broken, closable, sync_close):
        room_kit.register_channel(channel)
    finished: list[str] = []

    @room_kit.hook(HookTrigger.ON_SESSION_ENDED)
    async def on_ended(event: Any, ctx: HookContext) -> None:
        finished.append("ended")

    session = LiveSession(room_id="room-1", participant_id="user-1", channel_id="voice")
    room_kit.hooks.fire(
        HookTrigger.ON_SESSION_ENDED,
        session,
        HookContext(kit=room_kit, room_id="room-1", channel_id="voice", session=session),
    )

    await room_kit.close()

    assert closable.closed == 1
    assert sync_close.closed == 0
    assert finished == ["ended"]
    assert room_kit.hooks.pending == 0


@pytest.mark.asyncio
async def test_close_cancels_hooks_still_running_after_the_grace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    room_kit = RoomKit()
    never = asyncio.Event()

    @room_kit.hook(HookTrigger.ON_SESSION_ENDED, timeout=60)
    async def stuck(event: Any, ctx: HookContext) -> None:
        await never.wait()

    room_kit.hooks.fire(
        HookTrigger.ON_SESSION_ENDED,
        None,
        HookContext(kit=room_kit, room_id="room-1", channel_id="voice"),
    )

    await room_kit.close(hooks_grace=0.05)

    assert room_kit.hooks.pending == 0
    assert "hooks still running after 0.05s at close; cancelling them" in caplog.messages


# -- hooks through the kit -------------------------------------------------------------------


def test_the_hook_decorator_returns_the_function_and_passes_the_options() -> None:
    room_kit = RoomKit()

    async def on_transcription(event: Any, ctx: HookContext) -> None:
        return None

    decorated = room_kit.hook(
        HookTrigger.ON_TRANSCRIPTION,
        execution=HookExecution.ASYNC,
        priority=3,
        name="observer",
        timeout=1.5,
    )(on_transcription)

    assert decorated is on_transcription
    [registration] = room_kit.hooks.registrations(HookTrigger.ON_TRANSCRIPTION)
    assert (
        registration.fn,
        registration.execution,
        registration.priority,
        registration.name,
        registration.timeout,
    ) == (on_transcription, HookExecution.ASYNC, 3, "observer", 1.5)


def test_the_hook_decorator_refuses_sync_on_an_async_trigger() -> None:
    room_kit = RoomKit()

    with pytest.raises(ValueError, match="ON_SPEECH_START hooks run asynchronously"):

        @room_kit.hook(HookTrigger.ON_SPEECH_START, execution=HookExecution.SYNC)
        async def on_speech_start(event: Any, ctx: HookContext) -> None:
            return None

    assert room_kit.hooks.has_hooks(HookTrigger.ON_SPEECH_START) is False


@pytest.mark.asyncio
async def test_the_seed_tool_call_hook_answers_through_metadata_result(
    process_kit: RoomKit,
) -> None:
    async def fetch_weather(city: str) -> str:
        return json.dumps({"temperature": 72, "city": city})

    # The seed's example, as written.
    @process_kit.hook(HookTrigger.ON_TOOL_CALL)
    async def on_tool_call(event, ctx):  # type: ignore[no-untyped-def]
        if event.name == "get_weather":
            result = await fetch_weather(event.arguments["city"])
            return HookResult(action="allow", metadata={"result": result})
        return HookResult.allow()

    session = LiveSession(room_id="room-1", participant_id="user-1", channel_id="voice")
    ctx = HookContext(kit=process_kit, room_id="room-1", channel_id="voice", session=session)
    weather = ToolCallEvent(
        session=session, tool_call_id="c1", name="get_weather", arguments={"city": "Paris"}
    )
    other = ToolCallEvent(session=session, tool_call_id="c2", name="other", arguments={})

    answered = await process_kit.hooks.run_sync(HookTrigger.ON_TOOL_CALL, weather, ctx)
    passed = await process_kit.hooks.run_sync(HookTrigger.ON_TOOL_CALL, other, ctx)

    assert answered.allowed is True
    assert answered.metadata == {"result": '{"temperature": 72, "city": "Paris"}'}
    assert passed.allowed is True
    assert passed.metadata == {}


def test_hooks_on_the_process_wide_kit_are_restored_by_the_fixture(
    process_kit: RoomKit,
) -> None:
    before = process_kit.hooks.registrations()

    @process_kit.hook(HookTrigger.ON_ERROR, name="tests.leak_probe")
    def on_error(event: Any, ctx: HookContext) -> None:
        return None

    assert process_kit.hooks.has_hooks(HookTrigger.ON_ERROR) is True
    assert process_kit.hooks.unregister("tests.leak_probe") == 1
    assert process_kit.hooks.registrations() == before


# -- autodiscovery ---------------------------------------------------------------------------


def test_autodiscover_hooks_imports_each_apps_hooks_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, process_kit: RoomKit
) -> None:
    package = tmp_path / "kit_autodiscovery_app"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "hooks.py").write_text(
        "from voice.kit import HookTrigger, kit\n"
        "\n"
        "@kit.hook(HookTrigger.ON_SPEECH_START, name='kit_autodiscovery_app.on_speech')\n"
        "async def on_speech(event, ctx):\n"
        "    return None\n"
    )
    no_hooks = tmp_path / "kit_app_without_hooks"
    no_hooks.mkdir()
    (no_hooks / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("kit_autodiscovery_app", "kit_autodiscovery_app.hooks", "kit_app_without_hooks"):
        monkeypatch.delitem(sys.modules, name, raising=False)

    import importlib

    from django.apps import apps

    configs = [
        SimpleNamespace(name=name, module=importlib.import_module(name))
        for name in ("kit_autodiscovery_app", "kit_app_without_hooks")
    ]
    monkeypatch.setattr(apps, "get_app_configs", lambda: configs)

    autodiscover_hooks()

    assert "kit_autodiscovery_app.hooks" in sys.modules
    [registration] = process_kit.hooks.registrations(HookTrigger.ON_SPEECH_START)
    assert registration.name == "kit_autodiscovery_app.on_speech"
    for name in ("kit_autodiscovery_app", "kit_autodiscovery_app.hooks", "kit_app_without_hooks"):
        sys.modules.pop(name, None)


def test_the_voice_app_runs_hooks_autodiscovery_when_ready(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.apps import apps

    calls: list[str] = []
    monkeypatch.setattr(voice.kit, "autodiscover_hooks", lambda: calls.append("discovered"))

    apps.get_app_config("voice").ready()

    assert calls == ["discovered"]


def test_a_channel_class_satisfies_the_kit_channel_protocol() -> None:
    channel: KitChannel = FakeChannel("voice")

    assert channel.channel_id == "voice"
