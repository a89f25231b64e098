"""GET /health, with its dependencies up and with Redis unreachable."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from postfuze_imports import db
from postfuze_imports.api.app import create_app
from postfuze_imports.devstack.stack import free_port
from postfuze_imports.settings import Settings
from tests.api_support import TIMESTAMP, Client, create_account, create_import
from tests.conftest import Org


async def test_health_ok(client: Client) -> None:
    response = await client.get("/health")

    assert response.status == 200
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["ok"] is True
    assert body["service"] == "postfuze-imports"
    assert TIMESTAMP.match(body["time"])
    assert body["checks"] == {"postgres": "ok", "redis": "ok"}


@pytest.fixture
async def client_without_redis(aiohttp_client: Any, settings: Settings, pool: db.Pool) -> Client:
    """A client of an app whose Redis URL points at a loopback port nothing listens on."""
    closed = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    result: Client = await aiohttp_client(create_app(closed))
    return result


async def test_health_redis_unreachable(client_without_redis: Client) -> None:
    response = await client_without_redis.get("/health")

    assert response.status == 503
    assert response.headers["Retry-After"].isdigit()
    body = await response.json()
    assert body["ok"] is False
    assert body["service"] == "postfuze-imports"
    assert TIMESTAMP.match(body["time"])
    assert body["checks"]["postgres"] == "ok"
    assert body["checks"]["redis"].startswith("unreachable")


async def test_import_queued_without_redis(client_without_redis: Client, org: Org) -> None:
    # The wake-up is best effort: the job is stored and the worker's sweep finds it.
    account = await create_account(client_without_redis, org.test)

    job = await create_import(client_without_redis, org.test, account["id"])

    assert job["status"] == "pending"
