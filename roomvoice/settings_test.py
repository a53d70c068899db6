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

# The embedded default's test database is a file, as in production (WAL, IMMEDIATE
# transactions, a busy timeout), not Django's shared-cache in-memory SQLite: there, two
# connections writing at once fail at once with "database table is locked" (the busy
# timeout does not apply to shared-cache table locks), so tests of concurrent writers
# failed now and then for a reason production never has. One file per test process.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    import os
    import tempfile
    from pathlib import Path

    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": str(Path(tempfile.gettempdir()) / f"roomvoice-test-{os.getpid()}.sqlite3")
    }
