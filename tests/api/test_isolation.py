"""Tenant isolation on every API endpoint, generated from the URL configuration (not a
hand-picked list): with tenant B's write key, every URL naming one of tenant A's objects is a
404 for every method, and nothing of A's shows in B's lists. Tenant A's own key reaches
the same objects (the test would otherwise pass on a broken URL)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from rooms import services as room_services
from rooms.models import EventKind
from tests.fixtures.actors import TenantWorld
from voice import services as voice_services

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(120)]

METHODS = ("get", "post", "put", "patch", "delete")
_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>[^)]*\)")
_CONVERTER = re.compile(r"<(?:\w+:)?(?P<name>\w+)>")


def api_routes() -> Iterator[tuple[str, str]]:
    """(route template with {name} placeholders, URL name) for every /api/v1/ endpoint."""

    def walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, str]]:
        for pattern in patterns:
            text = str(pattern.pattern).lstrip("^").rstrip("$")
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + text)
            elif isinstance(pattern, URLPattern):
                route = prefix + text
                if "format" in route:  # the router's ".json" suffix variants
                    continue
                route = _GROUP.sub(lambda m: "{" + m["name"] + "}", route)
                route = _CONVERTER.sub(lambda m: "{" + m["name"] + "}", route)
                yield "/" + route, str(pattern.name)

    for route, name in walk(get_resolver().url_patterns, ""):
        if route.startswith("/api/v1/"):
            yield route, name


def _objects_of(world: TenantWorld) -> dict[str, str]:
    """The detail lookup of one object per URL basename, all in ``world``'s tenant. Names
    and slugs are made unique to it: the other tenant's own "assistant" is not a leak."""
    world.agent.slug = f"{world.tenant.slug}-agent"
    world.agent.save(update_fields=["slug"])
    world.tool.name = f"{world.tenant.slug.replace('-', '_')}_tool"
    world.tool.save(update_fields=["name"])
    session = voice_services.voice_session_create(
        tenant=world.tenant,
        room=world.room,
        participant_id="caller",
        transport="websocket",
        agent=world.agent,
    )
    event = room_services.room_event_append(
        tenant=world.tenant, room=world.room, kind=EventKind.TRANSCRIPT, role="user", text="hi"
    )
    call = voice_services.tool_call_create(
        tenant=world.tenant,
        session=session,
        call_id="c-1",
        name=world.tool.name,
        arguments={},
        tool=world.tool,
    )
    return {
        "room": str(world.room.pk),
        "room-binding": str(world.binding.pk),
        "room-event": str(event.pk),
        "session": str(session.pk),
        "agent": world.agent.slug,
        "tool": world.tool.name,
        "credential": str(world.credential.pk),
        "tool-call": str(call.pk),
    }


def _basename(url_name: str) -> str:
    for suffix in ("-list", "-detail"):
        if url_name.endswith(suffix):
            return url_name[: -len(suffix)]
    return url_name


def _fill(route: str, url_name: str, objects: dict[str, str]) -> str:
    """The route naming A's objects: ``room_pk`` is A's room, the detail key the object
    of the route's own resource."""
    basename = _basename(url_name)
    owner = next(
        (name for name in sorted(objects, key=len, reverse=True) if basename.startswith(name)),
        None,
    )
    detail = objects[owner] if owner is not None else ""
    return route.format(room_pk=objects["room"], pk=detail, slug=detail, name=detail)


def _object_routes() -> list[tuple[str, str]]:
    routes = [(route, name) for route, name in api_routes() if "{" in route]
    assert len(routes) >= 15, routes  # the walk found the API (not an empty pass)
    return routes


def test_every_url_naming_a_tenant_a_object_is_404_for_tenant_b(
    world_a: TenantWorld, world_b: TenantWorld, api_a: APIClient, api_b: APIClient
) -> None:
    objects = _objects_of(world_a)
    problems: list[str] = []
    unreachable_by_a: list[str] = []
    for route, name in _object_routes():
        url = _fill(route, name, objects)
        for method in METHODS:
            response = getattr(api_b, method)(url, {}, format="json")
            if response.status_code not in (404, 405):
                problems.append(f"{method.upper()} {url} ({name}) → {response.status_code}")
        if name.endswith(("-detail", "-list")):
            # Tenant A reaches its own objects through the same URL (or GET is not offered).
            status = api_a.get(url).status_code
            if status not in (200, 405):
                unreachable_by_a.append(f"GET {url} ({name}) → {status}")
    assert problems == []
    assert unreachable_by_a == []


def test_tenant_b_lists_show_nothing_of_tenant_a(
    world_a: TenantWorld, world_b: TenantWorld, api_b: APIClient
) -> None:
    objects = set(_objects_of(world_a).values())
    for route, name in api_routes():
        if "{" in route or not name.endswith("-list"):
            continue
        response = api_b.get(route)
        assert response.status_code == 200, (route, response.status_code)
        text = response.content.decode()
        leaked = sorted(value for value in objects if value in text and len(value) > 8)
        assert leaked == [], (route, leaked)
