"""The README's first command, minus the install: a real daphne serving the embedded default."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {key: value for key, value in os.environ.items() if key not in SERVICE_VARIABLES}
    env["ROOMVOICE_DATA_DIR"] = str(tmp_path_factory.mktemp("server-data"))
    for command in (["migrate", "--noinput"], ["collectstatic", "--noinput"], ["seed_demo"]):
        subprocess.run(
            [sys.executable, "manage.py", *command, "-v", "0"]
            if command[0] != "seed_demo"
            else [sys.executable, "manage.py", *command],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "roomvoice.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(f"{base}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"daphne exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise TimeoutError("daphne did not serve /healthz within 60 s")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_served_healthz_reports_the_database(server: str) -> None:
    status, body = _get(f"{server}/healthz")

    assert status == 200
    assert '"database": {"ok": true, "vendor": "sqlite"' in body


def test_served_admin_login_page_and_its_stylesheet(server: str) -> None:
    status, body = _get(f"{server}/admin/login/")

    assert status == 200
    assert "csrfmiddlewaretoken" in body
    stylesheet = re.search(r'href="(/static/admin/css/base[^"]*\.css)"', body)
    assert stylesheet is not None
    css_status, css = _get(f"{server}{stylesheet.group(1)}")
    assert css_status == 200
    assert "body" in css


def test_served_admin_index_redirects_anonymous_users_to_login(server: str) -> None:
    request = urllib.request.Request(f"{server}/admin/")
    opener = urllib.request.build_opener(_NoRedirect())
    try:
        opener.open(request, timeout=5)
        status, location = 200, ""
    except urllib.error.HTTPError as error:
        status, location = error.code, error.headers.get("Location", "")

    assert status == 302
    assert location.startswith("/admin/login/")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None
