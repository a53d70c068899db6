"""Test settings: the env-driven settings, made fast and self-contained.

The same suite runs on the embedded default (no environment) and on PostgreSQL + Redis
(``DATABASE_URL`` and ``REDIS_URL`` set); nothing here changes which services are used.
"""

from roomvoice.settings import *  # noqa: F403
from roomvoice.settings import STORAGES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_AUTOREFRESH = True

# The test cast's tool handlers live in tests/fixtures.
ROOMVOICE_TOOL_HANDLER_ALLOWLIST = ["tests.fixtures."]
