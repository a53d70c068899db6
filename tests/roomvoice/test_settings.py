"""The settings module read in a fresh interpreter with a controlled environment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json
from django.conf import settings
print(json.dumps({
    "engine": settings.DATABASES["default"]["ENGINE"],
    "db_name": str(settings.DATABASES["default"]["NAME"]),
    "db_host": settings.DATABASES["default"].get("HOST", ""),
    "layer": settings.CHANNEL_LAYERS["default"]["BACKEND"],
    "layer_hosts": settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("hosts"),
    "eager": settings.CELERY_TASK_ALWAYS_EAGER,
    "broker": settings.CELERY_BROKER_URL,
    "debug": settings.DEBUG,
    "allowed_hosts": settings.ALLOWED_HOSTS,
    "csrf_trusted_origins": settings.CSRF_TRUSTED_ORIGINS,
    "secret_key_length": len(settings.SECRET_KEY),
    "secure_cookies": settings.SESSION_COOKIE_SECURE,
    "hsts": settings.SECURE_HSTS_SECONDS,
}))
"""


def _load(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "roomvoice.settings",
        "ROOMVOICE_DATA_DIR": str(tmp_path / "data"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {PROBE}"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _settings(tmp_path: Path, **env: str) -> dict[str, object]:
    result = _load(tmp_path, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_no_environment_gives_the_embedded_default(tmp_path: Path) -> None:
    values = _settings(tmp_path)

    assert values["engine"] == "django.db.backends.sqlite3"
    assert values["db_name"] == str(tmp_path / "data" / "db.sqlite3")
    assert values["layer"] == "channels.layers.InMemoryChannelLayer"
    assert values["eager"] is True
    assert values["broker"] == "memory://"
    assert values["debug"] is False
    assert values["allowed_hosts"] == ["localhost", "127.0.0.1", "[::1]"]
    assert values["csrf_trusted_origins"] == []
    assert values["secure_cookies"] is False


def test_local_secret_key_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    _settings(tmp_path)
    key_file = tmp_path / "data" / "secret_key"
    first = key_file.read_text()

    _settings(tmp_path)

    assert key_file.read_text() == first
    assert len(first) >= 50
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_database_and_redis_urls_switch_to_postgresql_redis_layer_and_broker(
    tmp_path: Path,
) -> None:
    values = _settings(
        tmp_path,
        DATABASE_URL="postgres://app@db.internal:5432/roomvoice",
        REDIS_URL="redis://cache.internal:6379/2",
    )

    assert values["engine"] == "django.db.backends.postgresql"
    assert values["db_name"] == "roomvoice"
    assert values["db_host"] == "db.internal"
    assert values["layer"] == "channels_redis.core.RedisChannelLayer"
    # The read timeout outlasts the layer's 5 s blocking pop (channels_redis#422).
    assert values["layer_hosts"] == [
        {
            "address": "redis://cache.internal:6379/2",
            "socket_timeout": None,
            "socket_keepalive": True,
            "socket_connect_timeout": 5,
        }
    ]
    assert values["eager"] is False
    assert values["broker"] == "redis://cache.internal:6379/2"


def test_https_mode_turns_on_secure_cookies_and_hsts(tmp_path: Path) -> None:
    values = _settings(tmp_path, ROOMVOICE_HTTPS="true")

    assert values["secure_cookies"] is True
    assert values["hsts"] == 31_536_000


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DEBUG", "ture", "DEBUG='ture' is invalid"),
        ("DATABASE_URL", "mysql://x@h/db", "DATABASE_URL='mysql://x@h/db' is invalid"),
        ("REDIS_URL", "localhost:6379", "REDIS_URL='localhost:6379' is invalid"),
        ("ALLOWED_HOSTS", "a.example,,b.example", "ALLOWED_HOSTS='a.example,,b.example'"),
        ("CSRF_TRUSTED_ORIGINS", "example.com", "CSRF_TRUSTED_ORIGINS='example.com'"),
        ("SECRET_KEY", "short", "SECRET_KEY='***' is invalid"),
        ("CHANNELS_CAPACITY", "0", "CHANNELS_CAPACITY='0' is invalid"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL='LOUD' is invalid"),
        ("CELERY_TASK_SOFT_TIME_LIMIT", "500", "CELERY_TASK_SOFT_TIME_LIMIT='500' is invalid"),
    ],
)
def test_bad_environment_values_stop_start_up_naming_the_variable(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    result = _load(tmp_path, **{variable: value})

    assert result.returncode != 0
    assert expected in result.stderr


def test_database_password_is_masked_in_the_error(tmp_path: Path) -> None:
    result = _load(tmp_path, DATABASE_URL="mysql://app:hunter2secret@db/x")

    assert result.returncode != 0
    assert "hunter2secret" not in result.stderr
    assert "mysql://app:***@db/x" in result.stderr
