"""Database constraints of the rooms app, proven by writing past Python validation
(``update()`` / ``bulk_create``), and the ``clean()`` checks that span models."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import DataError, IntegrityError, transaction
from django.utils import timezone

from rooms.models import (
    ApiKey,
    ChannelBinding,
    Membership,
    Room,
    RoomEvent,
    User,
    normalize_visibility,
)
from rooms.services import api_key_create, room_create
from tests.fixtures.actors import TenantWorld

# --- Rooms ----------------------------------------------------------------------------------


def test_room_key_is_unique_per_tenant_in_the_database(world_a: TenantWorld) -> None:
    other = room_create(tenant=world_a.tenant, key="room-2")

    with pytest.raises(IntegrityError), transaction.atomic():
        Room.objects.filter(pk=other.pk).update(key="room-1")

    other.refresh_from_db()
    assert other.key == "room-2"


def test_room_key_may_repeat_in_another_tenant(world_a: TenantWorld, world_b: TenantWorld) -> None:
    other = room_create(tenant=world_b.tenant, key="room-2")

    Room.objects.filter(pk=other.pk).update(key="room-3")
    Room.objects.bulk_create([Room(tenant=world_a.tenant, key="room-3")])

    assert sorted(Room.objects.filter(key="room-3").values_list("tenant__slug", flat=True)) == [
        "tenant-a",
        "tenant-b",
    ]


def test_room_status_outside_the_enum_is_refused_by_the_database(world_a: TenantWorld) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        Room.objects.filter(pk=world_a.room.pk).update(status="deleted")

    world_a.room.refresh_from_db()
    assert world_a.room.status == "active"


def test_room_clean_refuses_a_default_agent_of_another_tenant(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    room = Room(tenant=world_a.tenant, key="room-2", default_agent=world_b.agent)

    with pytest.raises(ValidationError) as error:
        room.full_clean()

    assert error.value.message_dict == {"default_agent": ["The agent belongs to another tenant."]}
    assert not Room.objects.filter(key="room-2").exists()


def test_room_clean_accepts_a_default_agent_of_its_own_tenant(world_a: TenantWorld) -> None:
    room = Room(tenant=world_a.tenant, key="room-2", default_agent=world_a.agent)

    room.full_clean()  # raises on failure


def test_room_clean_refuses_metadata_that_is_not_an_object(world_a: TenantWorld) -> None:
    room = Room(tenant=world_a.tenant, key="room-2", metadata=["a"])

    with pytest.raises(ValidationError) as error:
        room.full_clean()

    assert error.value.message_dict == {"metadata": ["Metadata must be a JSON object."]}


# --- Memberships and API keys -------------------------------------------------------------


def test_membership_role_outside_the_enum_is_refused_by_the_database(member_a: User) -> None:
    membership = Membership.objects.get(user=member_a)

    with pytest.raises(IntegrityError), transaction.atomic():
        Membership.objects.filter(pk=membership.pk).update(role="superadmin")

    membership.refresh_from_db()
    assert membership.role == "member"


def test_api_key_scope_outside_the_enum_is_refused_by_the_database(world_a: TenantWorld) -> None:
    api_key, _token = api_key_create(tenant=world_a.tenant, name="ci")

    with pytest.raises(IntegrityError), transaction.atomic():
        ApiKey.objects.filter(pk=api_key.pk).update(scope="admin")

    api_key.refresh_from_db()
    assert api_key.scope == "read"


@pytest.mark.parametrize("secret_hash", ["", "ab" * 31 + "a", "ab" * 32 + "a"])
def test_api_key_hash_of_the_wrong_length_is_refused_by_the_database(
    world_a: TenantWorld, secret_hash: str
) -> None:
    api_key, _token = api_key_create(tenant=world_a.tenant, name="ci")
    stored = api_key.secret_hash

    # A CHECK violation (IntegrityError), or on PostgreSQL the varchar(64) limit (DataError).
    with pytest.raises((IntegrityError, DataError)), transaction.atomic():
        ApiKey.objects.filter(pk=api_key.pk).update(secret_hash=secret_hash)

    api_key.refresh_from_db()
    assert api_key.secret_hash == stored


def test_api_key_hash_of_64_characters_is_accepted_by_the_database(world_a: TenantWorld) -> None:
    api_key, _token = api_key_create(tenant=world_a.tenant, name="ci")

    ApiKey.objects.filter(pk=api_key.pk).update(secret_hash="f" * 64)

    api_key.refresh_from_db()
    assert api_key.secret_hash == "f" * 64


# --- Channel bindings ---------------------------------------------------------------------


def test_binding_access_outside_the_enum_is_refused_by_the_database(world_a: TenantWorld) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        ChannelBinding.objects.filter(pk=world_a.binding.pk).update(access="admin")

    world_a.binding.refresh_from_db()
    assert world_a.binding.access == "read_write"


def test_binding_is_unique_per_room_channel_and_participant(world_a: TenantWorld) -> None:
    duplicate = ChannelBinding(
        tenant=world_a.tenant, room=world_a.room, channel_id="voice", participant_id="caller"
    )

    with pytest.raises(IntegrityError), transaction.atomic():
        ChannelBinding.objects.bulk_create([duplicate])

    assert ChannelBinding.objects.filter(room=world_a.room).count() == 1


def test_binding_for_another_participant_or_channel_is_allowed(world_a: TenantWorld) -> None:
    ChannelBinding.objects.bulk_create(
        [
            ChannelBinding(
                tenant=world_a.tenant, room=world_a.room, channel_id="voice", participant_id=""
            ),
            ChannelBinding(
                tenant=world_a.tenant, room=world_a.room, channel_id="text", participant_id="caller"
            ),
        ]
    )

    assert sorted(
        ChannelBinding.objects.filter(room=world_a.room).values_list("channel_id", "participant_id")
    ) == [("text", "caller"), ("voice", ""), ("voice", "caller")]


def test_binding_with_empty_visibility_is_refused_by_the_database(world_a: TenantWorld) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        ChannelBinding.objects.filter(pk=world_a.binding.pk).update(visibility="")

    world_a.binding.refresh_from_db()
    assert world_a.binding.visibility == "all"


def test_binding_clean_refuses_a_room_of_another_tenant(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    binding = ChannelBinding(tenant=world_a.tenant, room=world_b.room, channel_id="text")

    with pytest.raises(ValidationError) as error:
        binding.full_clean()

    assert error.value.message_dict == {"room": ["The room belongs to another tenant."]}


def test_binding_clean_normalises_visibility(world_a: TenantWorld) -> None:
    binding = ChannelBinding(
        tenant=world_a.tenant, room=world_a.room, channel_id="text", visibility=" voice , text "
    )

    binding.full_clean()

    assert binding.visibility == "voice,text"


def test_binding_clean_reports_a_bad_channel_id_in_visibility_on_the_field(
    world_a: TenantWorld,
) -> None:
    binding = ChannelBinding(
        tenant=world_a.tenant, room=world_a.room, channel_id="text", visibility="voice,Bad Id"
    )

    with pytest.raises(ValidationError) as error:
        binding.full_clean()

    assert error.value.message_dict == {"visibility": ["'Bad Id' is not a channel id."]}


# --- Visibility -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("all", "all"),
        ("none", "none"),
        ("transport", "transport"),
        ("intelligence", "intelligence"),
        ("  intelligence\n", "intelligence"),
        ("voice", "voice"),
        ("voice,text", "voice,text"),
        (" voice ,  text ", "voice,text"),
        ("text,voice", "text,voice"),
        ("voice,text,voice,text", "voice,text"),
        ("sip_1,web-2", "sip_1,web-2"),
    ],
)
def test_normalize_visibility_tidies_keywords_and_channel_lists(raw: str, expected: str) -> None:
    assert normalize_visibility(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "without empty items"),
        ("   ", "without empty items"),
        ("voice,", "without empty items"),
        (",voice", "without empty items"),
        ("voice,,text", "without empty items"),
        ("all,voice", "'all' cannot be combined with channel ids."),
        ("voice,none", "'none' cannot be combined with channel ids."),
        ("ALL", "'ALL' is not a channel id."),
        ("voice,Text", "'Text' is not a channel id."),
        ("voice text", "'voice text' is not a channel id."),
        ("-voice", "'-voice' is not a channel id."),
        ("v" * 65, f"'{'v' * 65}' is not a channel id."),
    ],
)
def test_normalize_visibility_refuses_bad_input_with_value_error(raw: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        normalize_visibility(raw)

    assert type(error.value) is ValueError
    assert message in str(error.value)


# --- Room events ----------------------------------------------------------------------------


def _event(world: TenantWorld, index: int, **fields: object) -> RoomEvent:
    values: dict[str, object] = {
        "tenant": world.tenant,
        "room": world.room,
        "index": index,
        "kind": "message",
        "role": "user",
        "text": "hello",
        "occurred_at": timezone.now(),
        **fields,
    }
    return RoomEvent(**values)


def _events_of(world: TenantWorld) -> list[tuple[int, str]]:
    return list(
        RoomEvent.objects.filter(room=world.room).order_by("index").values_list("index", "text")
    )


def test_room_event_index_is_unique_per_room(world_a: TenantWorld) -> None:
    before = _events_of(world_a)

    with pytest.raises(IntegrityError), transaction.atomic():
        RoomEvent.objects.bulk_create([_event(world_a, 1, text="duplicate")])

    assert _events_of(world_a) == before


def test_room_event_index_may_repeat_in_another_room(
    world_a: TenantWorld, world_b: TenantWorld
) -> None:
    RoomEvent.objects.bulk_create([_event(world_a, 7), _event(world_b, 7)])

    assert RoomEvent.objects.filter(index=7).count() == 2


def test_room_event_index_zero_is_refused_by_the_database(world_a: TenantWorld) -> None:
    before = _events_of(world_a)

    with pytest.raises(IntegrityError), transaction.atomic():
        RoomEvent.objects.bulk_create([_event(world_a, 0)])

    assert _events_of(world_a) == before


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "email"},
        {"kind": ""},
        {"role": "operator"},
        {"status": "pending"},
        {"status": ""},
    ],
    ids=["kind", "empty-kind", "role", "status", "empty-status"],
)
def test_room_event_enums_are_checked_by_the_database(
    world_a: TenantWorld, fields: dict[str, str]
) -> None:
    before = _events_of(world_a)

    with pytest.raises(IntegrityError), transaction.atomic():
        RoomEvent.objects.bulk_create([_event(world_a, 99, **fields)])

    assert _events_of(world_a) == before


def test_room_event_role_may_be_empty(world_a: TenantWorld) -> None:
    RoomEvent.objects.bulk_create([_event(world_a, 99, role="", kind="system")])

    assert RoomEvent.objects.get(room=world_a.room, index=99).role == ""


def test_room_event_blocked_by_on_a_delivered_event_is_refused_by_the_database(
    world_a: TenantWorld,
) -> None:
    before = _events_of(world_a)

    with pytest.raises(IntegrityError), transaction.atomic():
        RoomEvent.objects.bulk_create(
            [_event(world_a, 99, status="delivered", blocked_by="moderation")]
        )

    assert _events_of(world_a) == before


def test_room_event_blocked_by_cannot_be_added_to_a_delivered_event_later(
    world_a: TenantWorld,
) -> None:
    event = RoomEvent.objects.get(room=world_a.room, index=1)

    with pytest.raises(IntegrityError), transaction.atomic():
        RoomEvent.objects.filter(pk=event.pk).update(blocked_by="moderation")

    event.refresh_from_db()
    assert (event.status, event.blocked_by) == ("delivered", "")


def test_room_event_blocked_event_may_name_what_blocked_it(world_a: TenantWorld) -> None:
    RoomEvent.objects.bulk_create(
        [
            _event(world_a, 98, status="blocked", blocked_by="moderation"),
            _event(world_a, 99, status="blocked", blocked_by=""),
        ]
    )

    assert list(
        RoomEvent.objects.filter(room=world_a.room, index__gte=98).values_list(
            "status", "blocked_by"
        )
    ) == [("blocked", "moderation"), ("blocked", "")]
