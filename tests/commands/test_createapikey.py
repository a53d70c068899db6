"""``manage.py createapikey``: the key alone on stdout, once; the details on stderr."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from rooms.models import ApiKey, ApiKeyScope, Tenant
from rooms.services import api_key_authenticate


def _run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("createapikey", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_createapikey_prints_a_working_key_alone_on_stdout(tenant_a: Tenant) -> None:
    out, err = _run("--tenant", "tenant-a", "--name", "billing sync")

    key = out.removesuffix("\n")
    assert out == key + "\n" and "\n" not in key and key.startswith("rv_")
    api_key = api_key_authenticate(token=key)
    assert api_key is not None
    assert (api_key.tenant, api_key.name, api_key.scope) == (tenant_a, "billing sync", "read")
    assert api_key.expires_at is None
    # The details, masked: the secret itself is never on stderr.
    assert api_key.masked in err and "scope read, expires never" in err
    assert key not in err and key.rsplit("_", 1)[1] not in err


@pytest.mark.django_db
def test_createapikey_sets_scope_and_expiry(tenant_a: Tenant) -> None:
    before = timezone.now()

    out, err = _run(
        "--tenant", "tenant-a", "--name", "deploys", "--scope", "write", "--expires-in-days", "30"
    )

    api_key = ApiKey.objects.get(tenant=tenant_a, name="deploys")
    assert api_key.scope == ApiKeyScope.WRITE
    assert api_key.expires_at is not None
    assert before + timedelta(days=30) <= api_key.expires_at <= timezone.now() + timedelta(days=30)
    assert f"expires {api_key.expires_at.isoformat(timespec='seconds')}" in err


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tenant", "nope", "--name", "x"], "no tenant 'nope'"),
        (["--tenant", "tenant-a", "--name", "x", "--expires-in-days", "0"], "between 1 and"),
        (["--tenant", "tenant-a", "--name", "   "], "--name cannot be blank"),
    ],
)
def test_createapikey_refuses_bad_input_and_creates_no_key(
    tenant_a: Tenant, args: list[str], message: str
) -> None:
    with pytest.raises(CommandError, match=message) as raised:
        _run(*args)

    assert raised.value.returncode == 2
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_createapikey_refuses_an_unknown_scope(tenant_a: Tenant) -> None:
    with pytest.raises(CommandError, match="invalid choice: 'admin'"):
        _run("--tenant", "tenant-a", "--name", "x", "--scope", "admin")

    assert not ApiKey.objects.exists()
