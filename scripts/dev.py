#!/usr/bin/env python3
"""The two commands: ``python3 scripts/dev.py run`` and ``python3 scripts/dev.py test``.

Standard library only, so it works on a fresh machine with nothing but Python 3.11+:
it makes ``.venv``, installs the pinned requirements (again only when they change), and then

- ``run``: migrates the embedded database, collects static files, seeds the demo data and
  serves HTTP + WebSockets with daphne on 127.0.0.1:8000;
- ``test``: lint (ruff), types (mypy), migrations check, deploy check, then the test suite
  twice: on the embedded default (SQLite, in-memory layer, eager Celery) and on PostgreSQL +
  Redis with a real Celery worker. Without those services it says so in one line and passes
  on the embedded run; with ``CI=true`` the integration run is mandatory.

Extra arguments after ``test`` go to pytest (both runs), e.g. ``test -k healthz -x``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("ROOMVOICE_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"

DEFAULT_TEST_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/roomvoice"
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/11"
# Variables that switch the settings away from the embedded default.
SERVICE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_TASK_ALWAYS_EAGER")


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def fail(message: str, code: int = 1) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def run(command: list[str], *, env: dict[str, str] | None = None, check: bool = True) -> int:
    result = subprocess.run(command, cwd=ROOT, env=env, check=False)
    if check and result.returncode != 0:
        fail(f"`{' '.join(command)}` exited with {result.returncode}", result.returncode)
    return result.returncode


def ensure_venv(requirements: str) -> None:
    """Create .venv and install ``requirements`` when the pinned files changed."""
    if sys.version_info < (3, 11):  # noqa: UP036  (this script must explain, not crash)
        fail(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        say(f"creating virtual environment in {VENV}")
        try:
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        except subprocess.CalledProcessError:
            fail("cannot create a virtual environment (Debian: apt install python3-venv)")
    digest = hashlib.sha256()
    for name in sorted({requirements, "requirements.txt"}):
        digest.update((ROOT / name).read_bytes())
    digest.update(sys.version.encode())
    stamp = VENV / f".installed-{requirements}"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return
    say(f"installing {requirements} (pinned versions)")
    quiet = ["--quiet", "--disable-pip-version-check"]
    run([str(PYTHON), "-m", "pip", "install", *quiet, "--upgrade", "pip"])
    run([str(PYTHON), "-m", "pip", "install", *quiet, "-r", str(ROOT / requirements)])
    stamp.write_text(digest.hexdigest())


def embedded_env(data_dir: Path | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in SERVICE_VARIABLES}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if data_dir is not None:
        env["ROOMVOICE_DATA_DIR"] = str(data_dir)
    return env


def manage(*args: str, env: dict[str, str] | None = None) -> None:
    run([str(PYTHON), "manage.py", *args], env=env)


# --- run ------------------------------------------------------------------------------------


def command_run(args: list[str]) -> None:
    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("PORT", "8000")
    ensure_venv("requirements.txt")
    env = dict(os.environ)
    say("migrating the database")
    manage("migrate", "--noinput", "-v", "0", env=env)
    manage("collectstatic", "--noinput", "-v", "0", env=env)
    say("seeding demo data")
    manage("seed_demo", env=env)
    say(f"serving on http://{host}:{port}/  (admin: http://{host}:{port}/admin/, Ctrl-C stops)")
    daphne = [str(BIN / "daphne"), "-b", host, "-p", port, "roomvoice.asgi:application"]
    os.chdir(ROOT)
    os.execve(daphne[0], daphne, env)


# --- test -----------------------------------------------------------------------------------


def probe_services(database_url: str, redis_url: str) -> str | None:
    """None when both answer, else a short reason."""
    probe = (
        "import sys, psycopg, redis\n"
        "problems = []\n"
        "try:\n"
        "    psycopg.connect(sys.argv[1], connect_timeout=3).close()\n"
        "except Exception as error:\n"
        "    problems.append(f'PostgreSQL ({type(error).__name__})')\n"
        "try:\n"
        "    redis.Redis.from_url(sys.argv[2], socket_connect_timeout=3).ping()\n"
        "except Exception as error:\n"
        "    problems.append(f'Redis ({type(error).__name__})')\n"
        "print(' and '.join(problems))\n"
    )
    # psycopg wants the postgresql:// spelling and a database that exists.
    admin_url = database_url.replace("postgres://", "postgresql://", 1).rsplit("/", 1)[0]
    result = subprocess.run(
        [str(PYTHON), "-c", probe, f"{admin_url}/postgres", redis_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    reason = result.stdout.strip() or result.stderr.strip()[-200:]
    return reason or None


def pytest_pass(label: str, env: dict[str, str], args: list[str]) -> None:
    say(f"tests: {label}")
    started = time.monotonic()
    code = run([str(PYTHON), "-m", "pytest", *args], env=env, check=False)
    if code == 5:
        fail(f"{label}: pytest collected no tests")
    if code != 0:
        fail(f"{label}: tests failed (exit {code})", code)
    say(f"{label}: passed in {time.monotonic() - started:.0f} s")


def command_test(args: list[str]) -> None:
    ensure_venv("requirements-dev.txt")
    in_ci = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
    with tempfile.TemporaryDirectory(prefix="roomvoice-test-") as scratch:
        env = embedded_env(Path(scratch))
        say("lint: ruff")
        run([str(BIN / "ruff"), "check", "."], env=env)
        run([str(BIN / "ruff"), "format", "--check", "--quiet", "."], env=env)
        say("types: mypy")
        run([str(BIN / "mypy"), "."], env=env)
        say("migrations are up to date")
        manage("makemigrations", "--check", "--dry-run", "-v", "0", env=env)
        say("deploy checks (production-like environment)")
        deploy_env = {
            **env,
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ROOMVOICE_HTTPS": "true",
            "ROOMVOICE_ENCRYPTION_KEYS": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "DATABASE_URL": DEFAULT_TEST_DATABASE_URL,
            "REDIS_URL": DEFAULT_TEST_REDIS_URL,
        }
        manage("check", "--deploy", "--fail-level", "WARNING", env=deploy_env)

        pytest_pass(
            "embedded default (SQLite, in-memory layer, eager Celery)",
            env,
            ["-m", "not integration", *args],
        )

        database_url = os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
        redis_url = os.environ.get("TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)
        problem = probe_services(database_url, redis_url)
        if problem:
            line = (
                f"integration run NOT done: {problem} not reachable at {database_url} / "
                f"{redis_url}; start them (README, 'Running at scale') or set "
                "TEST_DATABASE_URL and TEST_REDIS_URL, then run this again"
            )
            if in_ci:
                fail(f"CI requires the PostgreSQL + Redis run: {line}")
            print(f"!!! {line}", flush=True)
            return
        integration_env = {
            **env,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CHANNELS_PREFIX": f"roomvoice-test-{os.getpid()}",
        }
        pytest_pass(
            "PostgreSQL + Redis + Celery worker", integration_env, ["-m", "not embedded", *args]
        )


def main(argv: list[str]) -> None:
    commands = {"run": command_run, "test": command_test}
    if not argv or argv[0] not in commands:
        print(__doc__)
        raise SystemExit(2)
    commands[argv[0]](argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
