from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from tests.fixtures.actors import TenantWorld
from voice import services
from voice.models import Tool
from voice.validation import python_handler_allowed, validate_tool_handler


@pytest.mark.parametrize(
    ("allowlist", "path", "allowed"),
    [
        (["myapp.tools."], "myapp.tools.weather.lookup", True),
        (["myapp.tools."], "myapp.toolsx.lookup", False),
        (["myapp.tools.lookup"], "myapp.tools.lookup", True),
        (["myapp.tools.lookup"], "myapp.tools.lookup_all", False),
        ([], "myapp.tools.lookup", False),
        (["myapp.tools."], "os.system", False),
    ],
)
def test_python_handler_allow_list_matches_exact_paths_and_module_prefixes(
    settings: object, allowlist: list[str], path: str, allowed: bool
) -> None:
    setattr(settings, "ROOMVOICE_TOOL_HANDLER_ALLOWLIST", allowlist)  # noqa: B010

    assert python_handler_allowed(path) is allowed


def test_a_handler_outside_the_allow_list_is_refused_with_the_setting_named(
    settings: object,
) -> None:
    setattr(settings, "ROOMVOICE_TOOL_HANDLER_ALLOWLIST", ["myapp.tools."])  # noqa: B010

    with pytest.raises(ValueError, match="ROOMVOICE_TOOL_HANDLER_ALLOWLIST"):
        validate_tool_handler("python", "os.system")


@pytest.mark.django_db
def test_tool_create_refuses_an_unlisted_callable_and_saves_nothing(world_a: TenantWorld) -> None:
    before = Tool.objects.count()

    with pytest.raises(ValidationError) as raised:
        services.tool_create(tenant=world_a.tenant, name="shell", handler="subprocess.run")

    assert "handler" in raised.value.message_dict
    assert Tool.objects.count() == before


@pytest.mark.django_db
def test_a_repeated_provider_call_id_in_one_session_is_a_validation_error(
    world_a: TenantWorld,
) -> None:
    session = services.voice_session_create(
        tenant=world_a.tenant,
        room=world_a.room,
        participant_id="caller",
        transport="mock",
        agent=world_a.agent,
    )
    services.tool_call_create(
        tenant=world_a.tenant,
        session=session,
        call_id="call-1",
        name="get_weather",
        arguments={"city": "Paris"},
    )

    with pytest.raises(ValidationError) as raised:
        services.tool_call_create(
            tenant=world_a.tenant,
            session=session,
            call_id="call-1",
            name="get_weather",
            arguments={"city": "Rome"},
        )

    assert "call_id" in raised.value.message_dict
    assert session.tool_calls.get().arguments == {"city": "Paris"}
