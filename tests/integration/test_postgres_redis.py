"""What the embedded default cannot show: PostgreSQL under concurrent writers, every control
event through channels-redis (msgpack), and a real Celery worker answering via the layer."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import connection

from rooms import services
from rooms.broadcast import binding_changed_message, event_appended_message, room_group_name
from rooms.models import Access, EventKind, EventRole, RoomEvent
from tests.fixtures.actors import TenantWorld

pytestmark = pytest.mark.integration


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_get_gapless_unique_indexes_on_postgresql(world_a: TenantWorld) -> None:
    assert connection.vendor == "postgresql"
    start = world_a.room.last_event_index
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def writer(number: int) -> None:
        from django.db import connection as thread_connection

        try:
            barrier.wait(timeout=10)
            for count in range(25):
                services.room_event_append(
                    tenant=world_a.tenant,
                    room=world_a.room,
                    kind=EventKind.TRANSCRIPT,
                    role=EventRole.USER,
                    text=f"writer {number} line {count}",
                )
        except BaseException as error:  # collected and asserted below
            errors.append(error)
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=writer, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    indexes = list(
        RoomEvent.objects.filter(room=world_a.room, index__gt=start).values_list("index", flat=True)
    )
    assert indexes == list(range(start + 1, start + 101))
    world_a.room.refresh_from_db()
    assert world_a.room.last_event_index == start + 100


@pytest.mark.django_db(transaction=True)
def test_every_control_event_round_trips_through_the_redis_layer(
    world_a: TenantWorld, redis_layer: None
) -> None:
    event = services.room_event_append(
        tenant=world_a.tenant, room=world_a.room, kind=EventKind.SYSTEM, text="hello"
    )
    messages = [
        binding_changed_message(world_a.binding),
        binding_changed_message(world_a.binding, detached=True),
        event_appended_message(event),
    ]

    async def round_trip() -> list[dict[str, object]]:
        layer = get_channel_layer()
        assert type(layer).__name__ == "RedisChannelLayer"
        channel = await layer.new_channel()
        group = room_group_name(world_a.room.pk)
        await layer.group_add(group, channel)
        received = []
        for message in messages:
            await layer.group_send(group, message)
            received.append(await layer.receive(channel))
        await layer.group_discard(group, channel)
        return received

    assert async_to_sync(round_trip)() == messages


@pytest.mark.django_db(transaction=True)
def test_binding_change_reaches_a_listener_in_the_room_group_after_commit(
    world_a: TenantWorld, redis_layer: None
) -> None:
    """As a consumer sees it: one event loop, the write made through database_sync_to_async."""

    async def scenario() -> list[dict[str, object]]:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(room_group_name(world_a.room.pk), channel)
        await database_sync_to_async(services.binding_set_muted)(
            tenant=world_a.tenant, binding=world_a.binding, muted=True
        )
        # The system timeline event and the binding change, in commit order.
        return [await asyncio.wait_for(layer.receive(channel), timeout=10) for _ in range(2)]

    received = async_to_sync(scenario)()

    assert [message["type"] for message in received] == [
        "room.event_appended",
        "room.binding_changed",
    ]
    assert received[0]["text"] == "binding voice/caller changed: muted=True"
    assert received[1]["muted"] is True
    assert received[1]["access"] == Access.READ_WRITE
    assert received[1]["participant_id"] == "caller"


@pytest.mark.django_db(transaction=True)
def test_a_real_celery_worker_answers_through_the_channel_layer(
    celery_worker_process: object, redis_layer: None
) -> None:
    from roomvoice.celery import ping

    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    marker = uuid.uuid4().hex

    ping.apply_async(args=[channel, marker], queue="tools")

    async def receive() -> dict[str, object]:
        return await asyncio.wait_for(layer.receive(channel), timeout=30)

    assert async_to_sync(receive)() == {"type": "ping.reply", "marker": marker}


@pytest.mark.django_db(transaction=True)
def test_concurrent_attaches_of_one_binding_create_it_once(world_a: TenantWorld) -> None:
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def attach() -> None:
        from django.db import connection as thread_connection

        try:
            barrier.wait(timeout=10)
            binding, created = services.binding_attach(
                tenant=world_a.tenant, room=world_a.room, channel_id="voice", participant_id="guest"
            )
            results.append((str(binding.pk), created))
        except BaseException as error:  # collected and asserted below
            errors.append(error)
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=attach) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len({pk for pk, _ in results}) == 1
    assert sorted(created for _, created in results) == [False, False, False, True]
    assert (
        RoomEvent.objects.filter(room=world_a.room, metadata__event="binding_attached").count()
        == 2  # "caller" from the fixture and "guest" once
    )


@pytest.mark.asyncio
async def test_a_listener_idle_longer_than_the_blocking_pop_still_gets_its_message() -> None:
    """channels_redis blocks on BZPOPMIN for 5 s per receive; with redis-py's default 5 s
    read timeout the read was cut ("Timeout reading from …") and every consumer that heard
    nothing for 5 s died. A message sent after 7 s of silence must arrive."""
    layer = get_channel_layer()
    assert layer is not None and type(layer).__name__ == "RedisChannelLayer"
    channel = await layer.new_channel()
    loop = asyncio.get_running_loop()
    sender = loop.call_later(
        7.0, lambda: asyncio.ensure_future(layer.send(channel, {"type": "late.hello"}))
    )
    try:
        async with asyncio.timeout(15):
            message = await layer.receive(channel)
    finally:
        sender.cancel()

    assert message == {"type": "late.hello"}
