"""``manage.py createtenant``: a tenant, optionally with an existing user as its owner."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from rooms.models import Membership, MembershipRole, Tenant, User


def _run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("createtenant", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_createtenant_creates_the_tenant_and_prints_it() -> None:
    out, _ = _run("acme", "Acme Inc.")

    tenant = Tenant.objects.get(slug="acme")
    assert tenant.name == "Acme Inc."
    assert out == f"created tenant acme (Acme Inc.)  id {tenant.pk}\n"
    assert not Membership.objects.filter(tenant=tenant).exists()


@pytest.mark.django_db
def test_createtenant_makes_an_existing_user_the_owner() -> None:
    user = User.objects.create_user(username="alice")

    out, _ = _run("acme", "Acme", "--owner", "alice")

    membership = Membership.objects.get(tenant__slug="acme", user=user)
    assert membership.role == MembershipRole.OWNER
    assert out.splitlines()[-1] == "owner    alice"


@pytest.mark.django_db
def test_createtenant_with_an_unknown_owner_creates_nothing() -> None:
    with pytest.raises(CommandError, match="no user 'nobody'") as raised:
        _run("acme", "Acme", "--owner", "nobody")

    assert raised.value.returncode == 2
    assert not Tenant.objects.filter(slug="acme").exists()


@pytest.mark.django_db
def test_createtenant_refuses_a_taken_slug() -> None:
    _run("acme", "Acme")

    with pytest.raises(CommandError, match="a tenant 'acme' already exists") as raised:
        _run("ACME", "Another Acme")

    assert raised.value.returncode == 2
    assert list(Tenant.objects.values_list("name", flat=True)) == ["Acme"]


@pytest.mark.django_db
def test_createtenant_refuses_an_invalid_slug_with_the_field_named() -> None:
    with pytest.raises(CommandError, match=r"^slug: Use 1-64 lowercase letters") as raised:
        _run("no spaces please", "Acme")

    assert raised.value.returncode == 2
    assert not Tenant.objects.exists()
