"""Shared fixtures. The cast (tests/fixtures/actors.py) is the same in every test: tenant A
with an owner and a plain member, tenant B with its own owner, and a superuser."""

pytest_plugins = [
    "tests.fixtures.actors",
    "tests.fixtures.services",
    "tests.fixtures.admin",
    "tests.fixtures.browser",
    "tests.fixtures.voice_ws",
    "tests.fixtures.api",
]
