from __future__ import annotations

import pytest
from django.test import Client


@pytest.mark.embedded
@pytest.mark.django_db
def test_healthz_reports_database_layer_and_eager_broker_in_the_embedded_default(
    client: Client,
) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "channel_layer", "broker"}
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["channel_layer"] == {
        "ok": True,
        "backend": "InMemoryChannelLayer",
        "latency_ms": body["checks"]["channel_layer"]["latency_ms"],
    }
    assert body["checks"]["broker"]["mode"] == "eager"
    assert response["Cache-Control"].startswith("max-age=0")


@pytest.mark.django_db
def test_healthz_is_503_and_names_the_unreachable_channel_layer(
    client: Client, settings: object
) -> None:
    from channels.layers import channel_layers

    setattr(  # noqa: B010
        settings,
        "CHANNEL_LAYERS",
        {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                # Port 1 on loopback: nothing listens, the connection is refused at once.
                "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
            }
        },
    )
    setattr(settings, "HEALTHZ_TIMEOUT_SECONDS", 2.0)  # noqa: B010
    channel_layers.backends.clear()
    try:
        response = client.get("/healthz")
    finally:
        channel_layers.backends.clear()

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["channel_layer"]["ok"] is False
    assert body["checks"]["channel_layer"]["error"]


@pytest.mark.django_db
def test_healthz_refuses_other_methods(client: Client) -> None:
    assert client.post("/healthz").status_code == 405


@pytest.mark.integration
@pytest.mark.django_db
def test_healthz_reaches_redis_layer_and_broker(client: Client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200, response.content
    checks = response.json()["checks"]
    assert checks["database"]["vendor"] == "postgresql"
    assert checks["channel_layer"]["backend"] == "RedisChannelLayer"
    assert checks["broker"]["ok"] is True
    assert checks["broker"]["transport"]
