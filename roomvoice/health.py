"""``/healthz``: is this process able to serve?

Checks the database (a ``SELECT 1``), the channel layer (a message round trip on a fresh
channel) and the Celery broker (a connection), each under a timeout. Answers 200 with every
check's result, or 503 naming the failed check. The in-memory layer and eager Celery are
reported as such (nothing to reach).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from roomvoice.celery import app as celery_app
from roomvoice.lib.logging import redact

Check = Callable[[], Awaitable[dict[str, Any]]]


def _database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


async def check_database() -> dict[str, Any]:
    return await sync_to_async(_database)()


async def check_channel_layer() -> dict[str, Any]:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    channel = await layer.new_channel("healthz.")
    await layer.send(channel, {"type": "healthz.ping"})
    message = await layer.receive(channel)
    if message.get("type") != "healthz.ping":
        raise RuntimeError("channel layer returned an unexpected message")
    return {"backend": type(layer).__name__}


def _broker() -> dict[str, Any]:
    with celery_app.connection_for_write() as broker:
        broker.ensure_connection(max_retries=1, timeout=settings.HEALTHZ_TIMEOUT_SECONDS)
        return {"transport": broker.transport_cls}


async def check_broker() -> dict[str, Any]:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return {"mode": "eager"}
    return await sync_to_async(_broker, thread_sensitive=False)()


CHECKS: dict[str, Check] = {
    "database": check_database,
    "channel_layer": check_channel_layer,
    "broker": check_broker,
}


async def _run(check: Check) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(check(), timeout=settings.HEALTHZ_TIMEOUT_SECONDS)
    except TimeoutError:
        result = {"ok": False, "error": f"timed out after {settings.HEALTHZ_TIMEOUT_SECONDS}s"}
    except Exception as error:  # a health check reports every failure, it never raises
        result = {"ok": False, "error": redact(f"{type(error).__name__}: {error}")[:300]}
    else:
        result = {"ok": True, **result}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


@never_cache
@require_GET
async def healthz(request: HttpRequest) -> JsonResponse:
    names = list(CHECKS)
    results = await asyncio.gather(*(_run(CHECKS[name]) for name in names))
    checks = dict(zip(names, results, strict=True))
    healthy = all(result["ok"] for result in results)
    return JsonResponse(
        {"status": "ok" if healthy else "error", "checks": checks},
        status=200 if healthy else 503,
    )
