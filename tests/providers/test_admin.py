"""The provider credential admin: tenant-scoped, and the secret goes in encrypted and never
comes back out (not in the page, not as ciphertext)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from providers import services
from providers.models import ProviderCredential
from rooms import services as room_services
from rooms.models import User
from tests.fixtures.actors import PASSWORD, TenantWorld

SECRET = "sk-admin-typed-0123456789abcdefSECRET"
INVALID_CHOICE = "Select a valid choice. That choice is not one of the available choices."


def spare(world: TenantWorld) -> ProviderCredential:
    """A second credential no agent uses (the fixture's one is PROTECTed by the agent)."""
    return services.credential_create(
        tenant=world.tenant, name="spare", kind="xai", secret=f"xai-{world.tenant.slug}-spare-key"
    )


@pytest.fixture
def spare_a(world_a: TenantWorld) -> ProviderCredential:
    return spare(world_a)


@pytest.fixture
def spare_b(world_b: TenantWorld) -> ProviderCredential:
    return spare(world_b)


def changelist_url() -> str:
    return reverse("admin:providers_providercredential_changelist")


def add_url() -> str:
    return reverse("admin:providers_providercredential_add")


def admin_url(credential: ProviderCredential, view: str) -> str:
    return reverse(f"admin:providers_providercredential_{view}", args=[credential.pk])


def listed(response: Any) -> set[Any]:
    return {obj.pk for obj in response.context["cl"].result_list}


def snapshot(credential: ProviderCredential) -> dict[str, Any]:
    return ProviderCredential.objects.filter(pk=credential.pk).values().get()


def form_errors(response: Any) -> dict[str, list[str]]:
    return dict(response.context["adminform"].form.errors)


def add_form(world: TenantWorld, **changes: Any) -> dict[str, Any]:
    return {"tenant": world.tenant.pk, "name": "new", "kind": "openai", "secret": SECRET} | changes


def reveal(credential: ProviderCredential) -> str:
    fresh = ProviderCredential.objects.get(pk=credential.pk)
    return services.credential_reveal(tenant=credential.tenant, credential=fresh)


# --- Isolation ------------------------------------------------------------------------------


def test_each_owner_lists_exactly_their_own_credentials(
    client: Client,
    world_a: TenantWorld,
    world_b: TenantWorld,
    owner_a: User,
    owner_b: User,
    spare_a: ProviderCredential,
    spare_b: ProviderCredential,
) -> None:
    for owner, world, extra in ((owner_a, world_a, spare_a), (owner_b, world_b, spare_b)):
        client.force_login(owner)
        response = client.get(changelist_url())
        assert response.status_code == 200
        assert listed(response) == {world.credential.pk, extra.pk}


def test_owner_opening_other_tenants_credential_is_sent_to_the_index(
    client: Client, world_b: TenantWorld, owner_a: User
) -> None:
    credential = world_b.credential
    client.force_login(owner_a)
    response = client.get(admin_url(credential, "change"))
    assert response["Location"] == reverse("admin:index")
    assert [str(message) for message in get_messages(response.wsgi_request)] == [
        f"provider credential with ID “{credential.pk}” doesn’t exist. Perhaps it was deleted?"
    ]


def test_owner_posting_a_change_to_other_tenants_credential_changes_nothing(
    client: Client, world_b: TenantWorld, owner_a: User
) -> None:
    credential = world_b.credential
    before = snapshot(credential)
    client.force_login(owner_a)
    response = client.post(
        admin_url(credential, "change"),
        {"name": "hijacked", "secret": "sk-attacker-key-0123456789"},
    )
    assert response["Location"] == reverse("admin:index")
    assert snapshot(credential) == before
    assert reveal(credential) == "sk-tenant-b-0123456789abcdefXYZ"


def test_owner_cannot_delete_other_tenants_credential(
    client: Client, owner_a: User, spare_b: ProviderCredential
) -> None:
    client.force_login(owner_a)
    delete_view = client.post(admin_url(spare_b, "delete"), {"post": "yes"})
    client.post(
        changelist_url(),
        {"action": "delete_selected", "_selected_action": [spare_b.pk], "post": "yes"},
    )
    assert delete_view["Location"] == reverse("admin:index")
    assert ProviderCredential.objects.filter(pk=spare_b.pk).exists()


def test_owner_deletes_own_unused_credential_with_the_delete_action(
    client: Client, owner_b: User, spare_b: ProviderCredential
) -> None:
    client.force_login(owner_b)
    client.post(
        changelist_url(),
        {"action": "delete_selected", "_selected_action": [spare_b.pk], "post": "yes"},
    )
    assert not ProviderCredential.objects.filter(pk=spare_b.pk).exists()


def test_owner_cannot_add_a_credential_in_other_tenant(
    client: Client, world_b: TenantWorld, owner_a: User
) -> None:
    before = ProviderCredential.objects.count()
    client.force_login(owner_a)
    response = client.post(add_url(), add_form(world_b))
    assert response.status_code == 200
    assert form_errors(response) == {"tenant": [INVALID_CHOICE]}
    assert ProviderCredential.objects.count() == before


def test_add_form_offers_only_own_tenant(
    client: Client, world_a: TenantWorld, world_b: TenantWorld, owner_a: User
) -> None:
    client.force_login(owner_a)
    response = client.get(add_url())
    assert list(response.context["adminform"].form.fields["tenant"].queryset) == [world_a.tenant]


# --- Roles and outsiders --------------------------------------------------------------------


def test_member_views_credentials_but_cannot_change_or_delete_them(
    client: Client, world_a: TenantWorld, member_a: User, spare_a: ProviderCredential
) -> None:
    before = snapshot(spare_a)
    client.force_login(member_a)
    changelist = client.get(changelist_url())
    change_page = client.get(admin_url(spare_a, "change"))
    change = client.post(admin_url(spare_a, "change"), {"name": "renamed", "secret": SECRET})
    delete = client.post(admin_url(spare_a, "delete"), {"post": "yes"})
    add = client.get(add_url())
    assert listed(changelist) == {world_a.credential.pk, spare_a.pk}
    assert change_page.status_code == 200
    assert b'name="_save"' not in change_page.content
    assert (change.status_code, delete.status_code, add.status_code) == (403, 403, 403)
    assert snapshot(spare_a) == before


def test_superuser_lists_both_tenants_credentials(
    client: Client, world_a: TenantWorld, world_b: TenantWorld, superuser: User
) -> None:
    client.force_login(superuser)
    response = client.get(changelist_url())
    assert listed(response) == {world_a.credential.pk, world_b.credential.pk}


def test_staff_without_membership_sees_no_credentials(
    client: Client, world_a: TenantWorld, world_b: TenantWorld
) -> None:
    outsider = User.objects.create_user(username="outsider", password=PASSWORD, is_staff=True)
    outsider.groups.add(room_services.operator_group_sync())
    client.force_login(outsider)
    changelist = client.get(changelist_url())
    change_pages = [client.get(admin_url(w.credential, "change")) for w in (world_a, world_b)]
    assert listed(changelist) == set()
    assert [page["Location"] for page in change_pages] == [reverse("admin:index")] * 2


# --- The secret -----------------------------------------------------------------------------


def test_added_secret_is_stored_encrypted_and_never_shown(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    client.force_login(owner_a)
    response = client.post(add_url(), add_form(world_a))
    assert response.status_code == 302
    credential = ProviderCredential.objects.get(tenant=world_a.tenant, name="new")
    row = snapshot(credential)
    assert [column for column, value in row.items() if SECRET in str(value)] == []
    assert reveal(credential) == SECRET
    assert credential.secret_hint == "sk-…CRET"
    page = client.get(admin_url(credential, "change")).content.decode()
    changelist = client.get(changelist_url()).content.decode()
    assert SECRET not in page
    assert row["encrypted_secret"] not in page
    assert "sk-…CRET" in page
    assert SECRET not in changelist
    assert row["encrypted_secret"] not in changelist


def test_new_credential_without_secret_is_refused(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    before = ProviderCredential.objects.count()
    client.force_login(owner_a)
    response = client.post(add_url(), add_form(world_a, secret=""))
    assert form_errors(response) == {"secret": ["A new credential needs its secret."]}
    assert ProviderCredential.objects.count() == before


@pytest.mark.parametrize(
    ("secret", "error"),
    [
        ("sk-two words", "The secret contains whitespace; paste the key alone."),
        ("k" * 4097, "The secret is longer than 4096 characters."),
    ],
)
def test_unusable_secret_is_a_form_error_on_add_and_edit(
    client: Client, world_a: TenantWorld, owner_a: User, secret: str, error: str
) -> None:
    credential = world_a.credential
    before, count = snapshot(credential), ProviderCredential.objects.count()
    client.force_login(owner_a)
    add = client.post(add_url(), add_form(world_a, secret=secret))
    edit = client.post(admin_url(credential, "change"), {"name": "openai-main", "secret": secret})
    assert form_errors(add) == {"secret": [error]}
    assert form_errors(edit) == {"secret": [error]}
    assert (snapshot(credential), ProviderCredential.objects.count()) == (before, count)


def test_editing_with_blank_secret_keeps_the_old_one(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    credential = world_a.credential
    before = snapshot(credential)
    client.force_login(owner_a)
    response = client.post(admin_url(credential, "change"), {"name": "renamed", "secret": ""})
    assert response.status_code == 302
    after = snapshot(credential)
    assert after["name"] == "renamed"
    assert [after[key] for key in ("encrypted_secret", "secret_hint", "secret_updated_at")] == [
        before[key] for key in ("encrypted_secret", "secret_hint", "secret_updated_at")
    ]
    assert reveal(credential) == "sk-tenant-a-0123456789abcdefXYZ"


def test_editing_with_a_new_secret_replaces_it(
    client: Client, world_a: TenantWorld, owner_a: User
) -> None:
    credential = world_a.credential
    before = snapshot(credential)
    client.force_login(owner_a)
    response = client.post(
        admin_url(credential, "change"), {"name": "openai-main", "secret": SECRET}
    )
    assert response.status_code == 302
    after = snapshot(credential)
    assert reveal(credential) == SECRET
    assert after["secret_hint"] == "sk-…CRET"
    assert after["secret_updated_at"] > before["secret_updated_at"]


def test_kind_and_tenant_are_fixed_after_creation(
    client: Client, world_a: TenantWorld, world_b: TenantWorld, superuser: User
) -> None:
    credential = world_a.credential
    client.force_login(superuser)
    client.post(
        admin_url(credential, "change"),
        {"name": "openai-main", "kind": "xai", "tenant": world_b.tenant.pk, "secret": ""},
    )
    assert ProviderCredential.objects.values_list("kind", "tenant_id").get(pk=credential.pk) == (
        "openai",
        world_a.tenant.pk,
    )
