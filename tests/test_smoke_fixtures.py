import pytest

from tests.fixtures.actors import TenantWorld


@pytest.mark.django_db
def test_the_two_tenants_hold_separate_worlds(world_a: TenantWorld, world_b: TenantWorld) -> None:
    assert world_a.room.tenant_id == world_a.tenant.pk
    assert world_b.room.tenant_id == world_b.tenant.pk
    assert world_a.room.key == world_b.room.key == "room-1"
    assert world_a.room.pk != world_b.room.pk
