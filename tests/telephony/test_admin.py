"""The telephony admin: SIP trunks, phone numbers and Twilio accounts, scoped by tenant both
ways (each owner sees and changes only their own tenant's rows, by list or by URL, and can
point a number only at their own room, agent and trunk); trunk passwords and Twilio auth
tokens are write-only (stored encrypted, shown as a masked hint, never in a page).

Staff users get their permissions from the "Tenant operators" group
(``test_operator_group_lets_owners_manage_telephony``)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.db.models import Model
from django.test import Client
from django.urls import reverse

from rooms import services as room_services
from rooms.models import User
from telephony import services
from telephony.models import PhoneNumber, SipTrunk, TwilioAccount
from tests.fixtures.actors import PASSWORD, TenantWorld
from tests.fixtures.admin import (
    INVALID_CHOICE,
    admin_url,
    form_errors,
    listed,
    message_texts,
    snapshot,
)
from voice import services as voice_services

MODELS: dict[str, type[Model]] = {
    "siptrunk": SipTrunk,
    "phonenumber": PhoneNumber,
    "twilioaccount": TwilioAccount,
}
DIRECTIONS = ["a_opens_b", "b_opens_a"]

NUMBERS = {"tenant-a": "+15550100001", "tenant-b": "+15550200002"}
SIDS = {"tenant-a": "AC" + "a1" * 16, "tenant-b": "AC" + "b2" * 16}
TRUNK_PASSWORDS = {"tenant-a": "trunk-pass-A-0123456789", "tenant-b": "trunk-pass-B-0123456789"}
AUTH_TOKENS = {
    "tenant-a": "auth-token-A-0123456789abcdef",
    "tenant-b": "auth-token-B-0123456789abcdef",
}
NEW_PASSWORD = "typed-trunk-pass-9876543210"
NEW_TOKEN = "typed-auth-token-9876543210fedcba"
NEW_SID = "AC" + "c3" * 16
SECRET_RULE = "At most 256 characters, no spaces or control characters."
OPEN_TRUNK = (
    "Name the addresses calls come from, or set a user name and password: a trunk open to "
    "anyone is refused."
)


# --- The rows -------------------------------------------------------------------------------


def changelist_url(model: str) -> str:
    return reverse(f"admin:telephony_{model}_changelist")


def add_url(model: str) -> str:
    return reverse(f"admin:telephony_{model}_add")


def make_trunk(world: TenantWorld, *, name: str = "", sources: str = "203.0.113.0/24") -> SipTrunk:
    slug = world.tenant.slug
    trunk = SipTrunk(
        tenant=world.tenant,
        name=name or f"carrier-of-{slug}",
        allowed_sources=sources,
        username=f"user-of-{slug}",
    )
    services.trunk_put_password(trunk, TRUNK_PASSWORDS[slug])
    trunk.full_clean()
    trunk.save()
    return trunk


def make_number(world: TenantWorld, trunk: SipTrunk | None = None, **fields: Any) -> PhoneNumber:
    number = PhoneNumber(
        tenant=world.tenant,
        number=NUMBERS[world.tenant.slug],
        room=world.room,
        trunk=trunk,
        **fields,
    )
    number.full_clean()
    number.save()
    return number


def make_account(world: TenantWorld) -> TwilioAccount:
    account = TwilioAccount(tenant=world.tenant, account_sid=SIDS[world.tenant.slug])
    services.twilio_put_auth_token(account, AUTH_TOKENS[world.tenant.slug])
    account.full_clean()
    account.save()
    return account


def telephony_of(world: TenantWorld) -> dict[str, Model]:
    """A trunk (addresses and credentials), a number through it, a Twilio account."""
    trunk = make_trunk(world)
    return {
        "siptrunk": trunk,
        "phonenumber": make_number(world, trunk),
        "twilioaccount": make_account(world),
    }


@pytest.fixture
def rows_a(world_a: TenantWorld, owner_a: User) -> dict[str, Model]:
    return telephony_of(world_a)


@pytest.fixture
def rows_b(world_b: TenantWorld, owner_b: User) -> dict[str, Model]:
    return telephony_of(world_b)


def stored(obj: Model) -> dict[str, Any]:
    """The row, and the secret it decrypts to."""
    values = snapshot(obj)
    fresh = type(obj)._default_manager.get(pk=obj.pk)
    if isinstance(fresh, SipTrunk):
        values["secret"] = services.trunk_reveal_password(fresh)
    if isinstance(fresh, TwilioAccount):
        values["secret"] = services.twilio_reveal_auth_token(fresh)
    return values


def secrets_of(world: TenantWorld) -> list[str]:
    """What must never appear in a page: the tenant's plaintext secrets and their ciphertext."""
    slug = world.tenant.slug
    ciphertexts = [
        *SipTrunk.objects.filter(tenant=world.tenant).values_list("encrypted_password", flat=True),
        *TwilioAccount.objects.filter(tenant=world.tenant).values_list(
            "encrypted_auth_token", flat=True
        ),
    ]
    return [TRUNK_PASSWORDS[slug], AUTH_TOKENS[slug], *filter(None, ciphertexts)]


# --- Forms ----------------------------------------------------------------------------------


def trunk_form(world: TenantWorld, **changes: Any) -> dict[str, Any]:
    return {
        "tenant": world.tenant.pk,
        "name": "second-carrier",
        "enabled": "on",
        "allowed_sources": "198.51.100.0/24",
        "username": "",
        "password": "",
    } | changes


def trunk_change(trunk: SipTrunk, **changes: Any) -> dict[str, Any]:
    return {
        "name": trunk.name,
        "enabled": "on",
        "allowed_sources": trunk.allowed_sources,
        "username": trunk.username,
        "password": "",
    } | changes


def number_form(world: TenantWorld, **changes: Any) -> dict[str, Any]:
    return {
        "tenant": world.tenant.pk,
        "number": "+15550100009",
        "label": "",
        "room": world.room.pk,
        "agent": "",
        "trunk": "",
        "enabled": "on",
    } | changes


def account_form(world: TenantWorld, **changes: Any) -> dict[str, Any]:
    return {
        "tenant": world.tenant.pk,
        "account_sid": NEW_SID,
        "auth_token": NEW_TOKEN,
        "enabled": "on",
    } | changes


def change_payload(model: str, world: TenantWorld) -> dict[str, Any]:
    """A valid change of the world's row of that model (the tenant is read-only there)."""
    return {
        "siptrunk": {
            "name": "hijacked",
            "enabled": "on",
            "allowed_sources": "0.0.0.0/0",
            "username": "intruder",
            "password": "intruder-pass-0123456789",
        },
        "phonenumber": {
            "number": "+15550100099",
            "label": "hijacked",
            "room": world.room.pk,
            "agent": world.agent.pk,
            "trunk": "",
            "enabled": "on",
        },
        "twilioaccount": {"auth_token": "intruder-token-0123456789", "enabled": ""},
    }[model]


CHANGED = {
    "siptrunk": ("name", "hijacked"),
    "phonenumber": ("label", "hijacked"),
    "twilioaccount": ("enabled", False),
}


def sides(
    direction: str, world_a: TenantWorld, world_b: TenantWorld, owner_a: User, owner_b: User
) -> tuple[TenantWorld, User]:
    """The world whose rows are targeted, and the other tenant's owner who tries."""
    return (world_b, owner_a) if direction == "a_opens_b" else (world_a, owner_b)


# --- The operator group ---------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_operator_group_lets_owners_manage_telephony(client: Client, db: None, model: str) -> None:
    tenant = room_services.tenant_create(slug="tenant-a", name="Tenant A")
    owner = User.objects.create_user(username="owner", password=PASSWORD, is_staff=True)
    owner.groups.add(room_services.operator_group_sync())
    room_services.membership_set(tenant=tenant, user=owner, role="owner")
    client.force_login(owner)
    assert client.get(changelist_url(model)).status_code == 200
    assert client.get(add_url(model)).status_code == 200


# --- Isolation ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_each_owner_lists_exactly_their_own_tenants_rows(
    client: Client,
    owner_a: User,
    owner_b: User,
    rows_a: dict[str, Model],
    rows_b: dict[str, Model],
    model: str,
) -> None:
    for owner, rows in ((owner_a, rows_a), (owner_b, rows_b)):
        client.force_login(owner)
        response = client.get(changelist_url(model))
        assert response.status_code == 200
        assert listed(response) == {rows[model].pk}


@pytest.mark.parametrize("model", MODELS)
def test_superuser_lists_both_tenants_and_outsiders_nothing(
    client: Client,
    superuser: User,
    outsider: User,
    rows_a: dict[str, Model],
    rows_b: dict[str, Model],
    model: str,
) -> None:
    client.force_login(superuser)
    assert listed(client.get(changelist_url(model))) == {rows_a[model].pk, rows_b[model].pk}
    client.force_login(outsider)
    assert listed(client.get(changelist_url(model))) == set()


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("model", MODELS)
def test_owner_opening_other_tenants_change_page_is_sent_to_the_index(
    client: Client,
    world_a: TenantWorld,
    world_b: TenantWorld,
    owner_a: User,
    owner_b: User,
    rows_a: dict[str, Model],
    rows_b: dict[str, Model],
    model: str,
    direction: str,
) -> None:
    world, intruder = sides(direction, world_a, world_b, owner_a, owner_b)
    target = (rows_a if world is world_a else rows_b)[model]
    client.force_login(intruder)
    for view in ("change", "history", "delete"):
        response = client.get(admin_url(target, view))
        assert response.status_code == 302
        assert response["Location"] == reverse("admin:index")
    assert message_texts(response)[-1] == (
        f"{target._meta.verbose_name} with ID “{target.pk}” doesn’t exist. Perhaps it was deleted?"
    )


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("model", MODELS)
def test_owner_posting_a_change_to_other_tenants_row_changes_nothing(
    client: Client,
    world_a: TenantWorld,
    world_b: TenantWorld,
    owner_a: User,
    owner_b: User,
    rows_a: dict[str, Model],
    rows_b: dict[str, Model],
    model: str,
    direction: str,
) -> None:
    world, intruder = sides(direction, world_a, world_b, owner_a, owner_b)
    target = (rows_a if world is world_a else rows_b)[model]
    before = stored(target)
    client.force_login(intruder)
    response = client.post(admin_url(target, "change"), change_payload(model, world))
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:index")
    assert stored(target) == before


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("model", MODELS)
def test_owner_cannot_delete_other_tenants_row_by_view_or_action(
    client: Client,
    world_a: TenantWorld,
    world_b: TenantWorld,
    owner_a: User,
    owner_b: User,
    rows_a: dict[str, Model],
    rows_b: dict[str, Model],
    model: str,
    direction: str,
) -> None:
    world, intruder = sides(direction, world_a, world_b, owner_a, owner_b)
    target = (rows_a if world is world_a else rows_b)[model]
    client.force_login(intruder)
    action = client.post(
        changelist_url(model),
        {"action": "delete_selected", "_selected_action": [target.pk], "post": "yes"},
    )
    assert action.status_code == 302
    assert message_texts(action) == []  # no "Successfully deleted"
    view = client.post(admin_url(target, "delete"), {"post": "yes"})
    assert view.status_code == 302
    assert view["Location"] == reverse("admin:index")
    assert MODELS[model].objects.filter(pk=target.pk).exists()


@pytest.mark.parametrize("model", MODELS)
def test_owner_saves_own_row_through_the_change_form(
    client: Client, world_b: TenantWorld, owner_b: User, rows_b: dict[str, Model], model: str
) -> None:
    target = rows_b[model]
    client.force_login(owner_b)
    response = client.post(admin_url(target, "change"), change_payload(model, world_b))
    assert response.status_code == 302
    field, value = CHANGED[model]
    assert snapshot(target)[field] == value


def test_owner_deletes_own_number_and_account_with_the_delete_action(
    client: Client, owner_a: User, rows_a: dict[str, Model], rows_b: dict[str, Model]
) -> None:
    client.force_login(owner_a)
    for model in ("phonenumber", "twilioaccount"):
        target = rows_a[model]
        client.post(
            changelist_url(model),
            {"action": "delete_selected", "_selected_action": [target.pk], "post": "yes"},
        )
        assert not MODELS[model].objects.filter(pk=target.pk).exists()
        assert MODELS[model].objects.filter(pk=rows_b[model].pk).exists()


@pytest.mark.parametrize("page", ["changelist", "add"])
@pytest.mark.parametrize("model", MODELS)
def test_no_page_of_owner_a_names_tenant_bs_rows(
    client: Client,
    world_b: TenantWorld,
    owner_a: User,
    rows_a: dict[str, Model],
    rows_b: dict[str, Model],
    model: str,
    page: str,
) -> None:
    client.force_login(owner_a)
    url = changelist_url(model) if page == "changelist" else add_url(model)
    html = client.get(url).content.decode()
    theirs = [
        str(world_b.room.pk),
        str(world_b.agent.pk),
        *(str(row.pk) for row in rows_b.values()),
        rows_b["siptrunk"].name,
        NUMBERS["tenant-b"],
        SIDS["tenant-b"],
        *secrets_of(world_b),
    ]
    assert [text for text in theirs if text in html] == []


@pytest.mark.parametrize("model", MODELS)
def test_changelist_tenant_filter_offers_only_own_tenant(
    client: Client,
    world_a: TenantWorld,
    world_b: TenantWorld,
    owner_a: User,
    rows_a: dict[str, Model],
    rows_b: dict[str, Model],
    model: str,
) -> None:
    client.force_login(owner_a)
    response = client.get(changelist_url(model))
    html = response.content.decode()
    assert world_b.tenant.name not in html
    assert str(world_b.tenant.pk) not in html


# --- Add forms: choices and refusals --------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ("siptrunk", "tenant"),
        ("phonenumber", "tenant"),
        ("phonenumber", "room"),
        ("phonenumber", "agent"),
        ("phonenumber", "trunk"),
        ("twilioaccount", "tenant"),
    ],
)
def test_add_form_offers_only_own_tenants_choices(
    client: Client,
    world_a: TenantWorld,
    owner_a: User,
    rows_a: dict[str, Model],
    rows_b: dict[str, Model],
    model: str,
    field: str,
) -> None:
    expected = {
        "tenant": world_a.tenant,
        "room": world_a.room,
        "agent": world_a.agent,
        "trunk": rows_a["siptrunk"],
    }[field]
    client.force_login(owner_a)
    response = client.get(add_url(model))
    assert response.status_code == 200
    queryset = response.context["adminform"].form.fields[field].queryset
    assert [obj.pk for obj in queryset] == [expected.pk]


@pytest.mark.parametrize(
    ("model", "form"), [("siptrunk", trunk_form), ("twilioaccount", account_form)]
)
def test_owner_cannot_add_a_trunk_or_account_in_other_tenant(
    client: Client,
    world_b: TenantWorld,
    owner_a: User,
    rows_b: dict[str, Model],
    model: str,
    form: Any,
) -> None:
    count = MODELS[model].objects.count()
    client.force_login(owner_a)
    response = client.post(add_url(model), form(world_b))
    assert response.status_code == 200
    assert form_errors(response) == {"tenant": [INVALID_CHOICE]}
    assert MODELS[model].objects.count() == count


def test_owner_cannot_add_a_number_in_other_tenant(
    client: Client, world_b: TenantWorld, owner_a: User, rows_b: dict[str, Model]
) -> None:
    count = PhoneNumber.objects.count()
    client.force_login(owner_a)
    response = client.post(
        add_url("phonenumber"),
        number_form(world_b, agent=world_b.agent.pk, trunk=rows_b["siptrunk"].pk),
    )
    assert response.status_code == 200
    assert form_errors(response) == {
        "tenant": [INVALID_CHOICE],
        "room": [INVALID_CHOICE],
        "agent": [INVALID_CHOICE],
        "trunk": [INVALID_CHOICE],
    }
    assert PhoneNumber.objects.count() == count


@pytest.mark.parametrize("field", ["room", "agent", "trunk"])
def test_own_number_pointing_at_other_tenants_room_agent_or_trunk_is_refused(
    client: Client,
    world_a: TenantWorld,
    world_b: TenantWorld,
    owner_a: User,
    rows_a: dict[str, Model],
    rows_b: dict[str, Model],
    field: str,
) -> None:
    theirs = {"room": world_b.room, "agent": world_b.agent, "trunk": rows_b["siptrunk"]}[field]
    number = rows_a["phonenumber"]
    before, count = snapshot(number), PhoneNumber.objects.count()
    client.force_login(owner_a)
    added = client.post(add_url("phonenumber"), number_form(world_a, **{field: theirs.pk}))
    changed = client.post(
        admin_url(number, "change"),
        number_form(world_a, number=NUMBERS["tenant-a"], **{field: theirs.pk}),
    )
    assert form_errors(added) == {field: [INVALID_CHOICE]}
    assert form_errors(changed) == {field: [INVALID_CHOICE]}
    assert (snapshot(number), PhoneNumber.objects.count()) == (before, count)


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("room", "The room belongs to another tenant."),
        ("agent", "The agent belongs to another tenant."),
        ("trunk", "The trunk belongs to another tenant."),
    ],
)
def test_superuser_cannot_route_a_number_to_another_tenants_room_agent_or_trunk(
    client: Client,
    world_a: TenantWorld,
    world_b: TenantWorld,
    superuser: User,
    rows_b: dict[str, Model],
    field: str,
    message: str,
) -> None:
    # The superuser's choices are not limited: the model's own check refuses the mix.
    theirs = {"room": world_b.room, "agent": world_b.agent, "trunk": rows_b["siptrunk"]}[field]
    count = PhoneNumber.objects.count()
    client.force_login(superuser)
    response = client.post(add_url("phonenumber"), number_form(world_a, **{field: theirs.pk}))
    assert form_errors(response) == {field: [message]}
    assert PhoneNumber.objects.count() == count


def test_superuser_cannot_move_a_row_to_another_tenant(
    client: Client,
    world_a: TenantWorld,
    world_b: TenantWorld,
    superuser: User,
    rows_a: dict[str, Model],
) -> None:
    client.force_login(superuser)
    for model, target in rows_a.items():
        payload = change_payload(model, world_a) | {"tenant": world_b.tenant.pk}
        response = client.post(admin_url(target, "change"), payload)
        assert response.status_code == 302
        assert snapshot(target)["tenant_id"] == world_a.tenant.pk


# --- Roles ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_member_views_own_rows_but_cannot_add_change_or_delete(
    client: Client, world_a: TenantWorld, member_a: User, rows_a: dict[str, Model], model: str
) -> None:
    target = rows_a[model]
    before = stored(target)
    client.force_login(member_a)
    page = client.get(admin_url(target, "change"))
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert client.get(add_url(model)).status_code == 403
    assert (
        client.post(admin_url(target, "change"), change_payload(model, world_a)).status_code == 403
    )
    assert client.post(admin_url(target, "delete"), {"post": "yes"}).status_code == 403
    assert stored(target) == before


# --- Phone numbers --------------------------------------------------------------------------


def test_owner_adds_a_number_stored_normalised(
    client: Client, world_a: TenantWorld, owner_a: User, rows_a: dict[str, Model]
) -> None:
    client.force_login(owner_a)
    response = client.post(
        add_url("phonenumber"),
        number_form(world_a, number="+1-555-010-0009", trunk=rows_a["siptrunk"].pk),
    )
    assert response.status_code == 302
    number = PhoneNumber.objects.get(number="+15550100009")
    assert (number.tenant, number.room, number.agent, number.trunk) == (
        world_a.tenant,
        world_a.room,
        None,
        rows_a["siptrunk"],
    )


def test_number_taken_by_another_tenant_is_refused(
    client: Client, world_a: TenantWorld, owner_a: User, rows_b: dict[str, Model]
) -> None:
    client.force_login(owner_a)
    response = client.post(add_url("phonenumber"), number_form(world_a, number=NUMBERS["tenant-b"]))
    assert form_errors(response) == {"number": ["Phone number with this Number already exists."]}
    assert PhoneNumber.objects.filter(tenant=world_a.tenant).count() == 0


def test_number_to_a_room_without_default_agent_needs_an_agent(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    room = room_services.room_create(tenant=world_a.tenant, key="no-agent")
    client.force_login(owner_a)
    refused = client.post(add_url("phonenumber"), number_form(world_a, room=room.pk))
    assert form_errors(refused) == {"agent": ["The room has no default agent: choose one."]}
    added = client.post(
        add_url("phonenumber"), number_form(world_a, room=room.pk, agent=world_a.agent.pk)
    )
    assert added.status_code == 302
    assert PhoneNumber.objects.get(room=room).agent == world_a.agent


def test_number_list_shows_which_agent_answers(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    phone_agent = voice_services.agent_create(
        tenant=world_a.tenant, slug="phone", name="Phone agent", provider_kind="mock"
    )
    by_default = make_number(world_a)
    chosen = PhoneNumber(
        tenant=world_a.tenant, number="+15550100002", room=world_a.room, agent=phone_agent
    )
    chosen.full_clean()
    chosen.save()
    orphan_room = room_services.room_create(
        tenant=world_a.tenant, key="orphan", default_agent=world_a.agent
    )
    orphan = PhoneNumber(tenant=world_a.tenant, number="+15550100003", room=orphan_room)
    orphan.full_clean()
    orphan.save()
    room_services.room_update(tenant=world_a.tenant, room=orphan_room, default_agent=None)
    client.force_login(owner_a)
    response = client.get(changelist_url("phonenumber"))
    admin = response.context["cl"].model_admin
    shown = {row.pk: admin.agent_used(row) for row in response.context["cl"].result_list}
    openai_label = world_a.agent.get_provider_kind_display()
    assert shown == {
        by_default.pk: f"Assistant tenant-a · {openai_label} (room default)",
        chosen.pk: f"Phone agent · {phone_agent.get_provider_kind_display()}",
        orphan.pk: "— (none: calls are refused)",
    }
    assert "— (none: calls are refused)" in response.content.decode()


# --- SIP trunks: the write-only password ----------------------------------------------------


def test_trunk_added_with_a_password_stores_it_encrypted_and_shows_only_its_hint(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    client.force_login(owner_a)
    response = client.post(
        add_url("siptrunk"),
        trunk_form(world_a, allowed_sources="", username="carrier", password=NEW_PASSWORD),
    )
    assert response.status_code == 302
    trunk = SipTrunk.objects.get(tenant=world_a.tenant, name="second-carrier")
    row = snapshot(trunk)
    assert [column for column, value in row.items() if NEW_PASSWORD in str(value)] == []
    assert services.trunk_reveal_password(trunk) == NEW_PASSWORD
    assert (trunk.username, trunk.password_hint, trunk.requires_auth) == ("carrier", "typ…10", True)
    pages = [
        client.get(url).content.decode()
        for url in (
            admin_url(trunk, "change"),
            admin_url(trunk, "history"),
            changelist_url("siptrunk"),
        )
    ]
    assert [NEW_PASSWORD in page or row["encrypted_password"] in page for page in pages] == [
        False
    ] * 3
    assert "typ…10" in pages[0]
    assert "typ…10" in pages[2]
    assert [NEW_PASSWORD in entry.change_message for entry in LogEntry.objects.all()] == [False]


def test_editing_a_trunk_with_a_blank_password_keeps_the_stored_one(
    client: Client, owner_a: User, rows_a: dict[str, Model]
) -> None:
    trunk = rows_a["siptrunk"]
    assert isinstance(trunk, SipTrunk)
    before = snapshot(trunk)
    client.force_login(owner_a)
    response = client.post(admin_url(trunk, "change"), trunk_change(trunk, name="renamed"))
    assert response.status_code == 302
    after = snapshot(trunk)
    assert after["name"] == "renamed"
    assert (after["encrypted_password"], after["password_hint"]) == (
        before["encrypted_password"],
        before["password_hint"],
    )
    assert stored(trunk)["secret"] == TRUNK_PASSWORDS["tenant-a"]


def test_editing_a_trunk_with_a_new_password_replaces_it(
    client: Client, owner_a: User, rows_a: dict[str, Model]
) -> None:
    trunk = rows_a["siptrunk"]
    assert isinstance(trunk, SipTrunk)
    client.force_login(owner_a)
    response = client.post(admin_url(trunk, "change"), trunk_change(trunk, password=NEW_PASSWORD))
    assert response.status_code == 302
    assert stored(trunk)["secret"] == NEW_PASSWORD
    assert snapshot(trunk)["password_hint"] == "typ…10"
    assert NEW_PASSWORD not in client.get(admin_url(trunk, "change")).content.decode()


def test_clearing_a_trunks_password_removes_its_credentials(
    client: Client, owner_a: User, rows_a: dict[str, Model]
) -> None:
    trunk = rows_a["siptrunk"]
    assert isinstance(trunk, SipTrunk)
    client.force_login(owner_a)
    response = client.post(admin_url(trunk, "change"), trunk_change(trunk, clear_password="on"))
    assert response.status_code == 302
    after = SipTrunk.objects.get(pk=trunk.pk)
    assert (after.username, after.encrypted_password, after.password_hint) == ("", "", "")
    assert after.requires_auth is False
    assert after.allowed_sources == "203.0.113.0/24"


def test_clearing_the_password_of_a_trunk_without_addresses_is_refused(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    trunk = make_trunk(world_a, name="auth-only", sources="")
    before = stored(trunk)
    client.force_login(owner_a)
    response = client.post(admin_url(trunk, "change"), trunk_change(trunk, clear_password="on"))
    assert form_errors(response) == {"allowed_sources": [OPEN_TRUNK]}
    assert stored(trunk) == before


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        ({"allowed_sources": ""}, {"allowed_sources": [OPEN_TRUNK]}),
        ({"username": "carrier"}, {"username": ["A user name needs a password."]}),
        (
            {"allowed_sources": "203.0.113.0/33"},
            {
                "allowed_sources": [
                    "Not an address or network: '203.0.113.0/33' does not appear to be an IPv4 "
                    "or IPv6 network. Write one per line, e.g. 203.0.113.0/24."
                ]
            },
        ),
    ],
    ids=["open-to-anyone", "user-without-password", "bad-network"],
)
def test_trunk_that_breaks_a_rule_is_a_form_error_and_nothing_is_stored(
    client: Client,
    world_a: TenantWorld,
    owner_a: User,
    changes: dict[str, str],
    errors: dict[str, list[str]],
) -> None:
    client.force_login(owner_a)
    response = client.post(add_url("siptrunk"), trunk_form(world_a, **changes))
    assert response.status_code == 200
    assert form_errors(response) == errors
    assert not SipTrunk.objects.exists()


@pytest.mark.parametrize("password", ["two words-0123456789", "x" * 257])
def test_unusable_trunk_password_is_a_form_error_and_never_echoed(
    client: Client, world_a: TenantWorld, owner_a: User, rows_a: dict[str, Model], password: str
) -> None:
    trunk = rows_a["siptrunk"]
    assert isinstance(trunk, SipTrunk)
    before = stored(trunk)
    client.force_login(owner_a)
    added = client.post(
        add_url("siptrunk"), trunk_form(world_a, username="carrier", password=password)
    )
    changed = client.post(admin_url(trunk, "change"), trunk_change(trunk, password=password))
    for response in (added, changed):
        assert form_errors(response)["password"] == [SECRET_RULE]
        assert password not in response.content.decode()
    assert SipTrunk.objects.count() == 1
    assert stored(trunk) == before


def test_a_rejected_trunk_form_never_echoes_the_typed_password(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    client.force_login(owner_a)
    response = client.post(
        add_url("siptrunk"),
        trunk_form(
            world_a, allowed_sources="not-a-network", username="carrier", password=NEW_PASSWORD
        ),
    )
    assert response.status_code == 200
    assert set(form_errors(response)) == {"allowed_sources"}
    assert NEW_PASSWORD not in response.content.decode()
    assert not SipTrunk.objects.exists()


# --- Twilio accounts: the write-only auth token ---------------------------------------------


def test_account_added_with_a_token_stores_it_encrypted_and_shows_only_its_hint(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    client.force_login(owner_a)
    response = client.post(add_url("twilioaccount"), account_form(world_a))
    assert response.status_code == 302
    account = TwilioAccount.objects.get(account_sid=NEW_SID)
    row = snapshot(account)
    assert account.tenant == world_a.tenant
    assert [column for column, value in row.items() if NEW_TOKEN in str(value)] == []
    assert services.twilio_reveal_auth_token(account) == NEW_TOKEN
    assert account.auth_token_hint == "typ…dcba"
    pages = [
        client.get(url).content.decode()
        for url in (admin_url(account, "change"), changelist_url("twilioaccount"))
    ]
    assert [NEW_TOKEN in page or row["encrypted_auth_token"] in page for page in pages] == [
        False,
        False,
    ]
    assert ["typ…dcba" in page for page in pages] == [True, True]
    assert [NEW_TOKEN in entry.change_message for entry in LogEntry.objects.all()] == [False]


def test_account_added_without_a_token_is_refused(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    client.force_login(owner_a)
    response = client.post(add_url("twilioaccount"), account_form(world_a, auth_token=""))
    assert form_errors(response) == {"auth_token": ["Enter the account's auth token."]}
    assert not TwilioAccount.objects.exists()


@pytest.mark.parametrize("sid", ["AC" + "0" * 31, "PN" + "0" * 32, "AC" + "A" * 32])
def test_account_with_a_malformed_sid_is_refused_and_its_token_never_echoed(
    client: Client, world_a: TenantWorld, owner_a: User, sid: str
) -> None:
    client.force_login(owner_a)
    response = client.post(add_url("twilioaccount"), account_form(world_a, account_sid=sid))
    assert form_errors(response) == {"account_sid": ["An account SID is AC and 32 hex digits."]}
    assert NEW_TOKEN not in response.content.decode()
    assert not TwilioAccount.objects.exists()


def test_account_sid_cannot_be_changed_after_creation(
    client: Client, owner_a: User, rows_a: dict[str, Model]
) -> None:
    account = rows_a["twilioaccount"]
    client.force_login(owner_a)
    page = client.get(admin_url(account, "change"))
    assert "account_sid" not in page.context["adminform"].form.fields
    assert SIDS["tenant-a"] in page.content.decode()
    response = client.post(
        admin_url(account, "change"), {"account_sid": NEW_SID, "auth_token": "", "enabled": "on"}
    )
    assert response.status_code == 302
    assert snapshot(account)["account_sid"] == SIDS["tenant-a"]


def test_editing_an_account_with_a_blank_token_keeps_it_and_a_new_one_replaces_it(
    client: Client, owner_a: User, rows_a: dict[str, Model]
) -> None:
    account = rows_a["twilioaccount"]
    before = snapshot(account)
    client.force_login(owner_a)
    kept = client.post(admin_url(account, "change"), {"auth_token": "", "enabled": ""})
    assert kept.status_code == 302
    after = snapshot(account)
    assert after["enabled"] is False
    assert after["encrypted_auth_token"] == before["encrypted_auth_token"]
    assert stored(account)["secret"] == AUTH_TOKENS["tenant-a"]
    replaced = client.post(admin_url(account, "change"), {"auth_token": NEW_TOKEN, "enabled": "on"})
    assert replaced.status_code == 302
    assert stored(account)["secret"] == NEW_TOKEN
    assert snapshot(account)["auth_token_hint"] == "typ…dcba"


def test_unusable_auth_token_is_a_form_error_and_never_echoed(
    client: Client, owner_a: User, rows_a: dict[str, Model]
) -> None:
    account = rows_a["twilioaccount"]
    before = stored(account)
    client.force_login(owner_a)
    token = "two words-0123456789abcdef"
    response = client.post(admin_url(account, "change"), {"auth_token": token, "enabled": "on"})
    assert form_errors(response) == {"auth_token": [SECRET_RULE]}
    assert token not in response.content.decode()
    assert stored(account) == before


# --- Secrets never in a page ----------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_no_admin_page_of_a_row_shows_a_secret_or_its_ciphertext(
    client: Client,
    world_a: TenantWorld,
    owner_a: User,
    superuser: User,
    rows_a: dict[str, Model],
    model: str,
) -> None:
    target = rows_a[model]
    forbidden = secrets_of(world_a)
    for user in (owner_a, superuser):
        client.force_login(user)
        for url in (
            changelist_url(model),
            admin_url(target, "change"),
            admin_url(target, "history"),
            admin_url(target, "delete"),
        ):
            response = client.get(url)
            assert response.status_code == 200
            html = response.content.decode()
            assert [secret for secret in forbidden if secret in html] == []
