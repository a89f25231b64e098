"""Per-organization rate limits: windows, headers, separate write limits, Redis outages."""

from __future__ import annotations

import dataclasses
import logging
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from postfuze_imports import db
from postfuze_imports.api.app import create_app
from postfuze_imports.api.ratelimit import RATE_LIMIT_CLOCK
from postfuze_imports.devstack.stack import free_port, redis_command, wait_for_port
from postfuze_imports.settings import Settings
from tests.conftest import Org

Client = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[Client]]

# A Unix time at the start of a minute, so the window ends 60 seconds after it.
MINUTE = 1_800_000_000
ACCOUNTS = "/api/v1/social-accounts"
RATE_LIMIT_LOGGER = "postfuze_imports.api.ratelimit"


class FakeClock:
    """A clock the test moves by hand, standing in for time.time."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(MINUTE + 10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A Redis server of this test alone, which the test may stop or pause."""
    port = free_port()
    process = subprocess.Popen(
        redis_command(port, tmp_path, daemonize=False),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=30, process=process)
        yield port, process
    finally:
        # A paused server must continue before it can handle SIGTERM.
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def limited_client(
    aiohttp_client: Any,
    settings: Settings,
    pool: db.Pool,
    redis_flushed: None,
    clock: FakeClock,
) -> ClientFactory:
    """Return a factory of clients whose app has the given limits and the fake clock."""

    async def create(**changes: Any) -> Client:
        app = create_app(dataclasses.replace(settings, **changes))
        now: Callable[[], float] = clock
        app[RATE_LIMIT_CLOCK] = now
        client: Client = await aiohttp_client(app)
        return client

    return create


def account_body(name: str) -> dict[str, Any]:
    return {
        "platform": "x",
        "username": name,
        "network_unique_id": f"id-{name}",
        "credentials": {"access_token": "token-123"},
    }


def limit_headers(response: Any) -> tuple[str | None, str | None, str | None]:
    return (
        response.headers.get("RateLimit-Limit"),
        response.headers.get("RateLimit-Remaining"),
        response.headers.get("RateLimit-Reset"),
    )


async def test_global_limit_rejects_with_429(limited_client: ClientFactory, org: Org) -> None:
    client = await limited_client(rate_limit_global=3)

    for remaining in ("2", "1", "0"):
        response = await client.get(ACCOUNTS, headers=org.test)
        assert response.status == 200
        assert limit_headers(response) == ("3", remaining, "50")

    response = await client.get(ACCOUNTS, headers=org.test)
    assert response.status == 429
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert body["code"] == "rate_limited"
    assert body["status"] == 429
    assert response.headers["Retry-After"] == "50"
    assert limit_headers(response) == ("3", "0", "50")
    assert response.headers["Request-Id"].startswith("req_")


async def test_rejected_requests_count(limited_client: ClientFactory, org: Org) -> None:
    client = await limited_client(rate_limit_global=2)
    missing = f"{ACCOUNTS}/00000000-0000-0000-0000-000000000000"

    first = await client.get(missing, headers=org.test)
    assert first.status == 404
    assert limit_headers(first) == ("2", "1", "50")

    second = await client.post(ACCOUNTS, json={"platform": "x"}, headers=org.test)
    assert second.status == 422
    assert limit_headers(second) == ("2", "0", "50")

    third = await client.get(ACCOUNTS, headers=org.test)
    assert third.status == 429


async def test_unknown_route_carries_headers(limited_client: ClientFactory, org: Org) -> None:
    client = await limited_client(rate_limit_global=5)

    response = await client.get("/api/v1/no-such-thing", headers=org.test)

    assert response.status == 404
    assert limit_headers(response) == ("5", "4", "50")


async def test_unauthenticated_requests_not_counted(
    limited_client: ClientFactory, org: Org
) -> None:
    client = await limited_client(rate_limit_global=1)

    for _ in range(3):
        response = await client.get(ACCOUNTS, headers={"Authorization": "Bearer nope"})
        assert response.status == 401
        assert "RateLimit-Limit" not in response.headers
    health = await client.get("/health")
    assert "RateLimit-Limit" not in health.headers

    response = await client.get(ACCOUNTS, headers=org.test)
    assert response.status == 200
    assert limit_headers(response) == ("1", "0", "50")


async def test_accounts_write_limit_separate(limited_client: ClientFactory, org: Org) -> None:
    client = await limited_client(rate_limit_global=10, rate_limit_accounts_write=2)

    created = []
    for name, remaining in (("alice", "1"), ("bob", "0")):
        response = await client.post(ACCOUNTS, json=account_body(name), headers=org.test)
        assert response.status == 201
        assert limit_headers(response) == ("2", remaining, "50")
        created.append(await response.json())

    rejected = await client.post(ACCOUNTS, json=account_body("carol"), headers=org.test)
    assert rejected.status == 429
    assert (await rejected.json())["rate_limit"] == "accounts_write"
    assert limit_headers(rejected) == ("2", "0", "50")

    imports = await client.post(f"{ACCOUNTS}/{created[0]['id']}/imports", json={}, headers=org.test)
    assert imports.status == 429
    deleted = await client.delete(f"{ACCOUNTS}/{created[0]['id']}", headers=org.test)
    assert deleted.status == 429

    # Reads count against the global limit only: 5 writes and this read so far.
    read = await client.get(ACCOUNTS, headers=org.test)
    assert read.status == 200
    assert limit_headers(read) == ("10", "4", "50")


async def test_webhooks_write_limit(limited_client: ClientFactory, org: Org) -> None:
    client = await limited_client(rate_limit_global=10, rate_limit_webhooks_write=1)

    first = await client.post("/api/v1/webhooks", json={}, headers=org.test)
    assert first.status != 429
    assert limit_headers(first)[:2] == ("1", "0")

    second = await client.patch("/api/v1/webhooks/wh_1", json={}, headers=org.test)
    assert second.status == 429
    assert (await second.json())["rate_limit"] == "webhooks_write"

    read = await client.get("/api/v1/webhooks", headers=org.test)
    assert read.status != 429
    assert limit_headers(read)[:2] == ("10", "7")


async def test_other_organization_unaffected(
    limited_client: ClientFactory, org: Org, other_org: Org
) -> None:
    client = await limited_client(rate_limit_global=1)

    assert (await client.get(ACCOUNTS, headers=org.test)).status == 200
    assert (await client.get(ACCOUNTS, headers=org.live)).status == 429

    response = await client.get(ACCOUNTS, headers=other_org.test)
    assert response.status == 200
    assert limit_headers(response) == ("1", "0", "50")


async def test_counters_reset_next_window(
    limited_client: ClientFactory, org: Org, clock: FakeClock
) -> None:
    client = await limited_client(rate_limit_global=1)
    assert (await client.get(ACCOUNTS, headers=org.test)).status == 200

    clock.now = MINUTE + 59.5
    rejected = await client.get(ACCOUNTS, headers=org.test)
    assert rejected.status == 429
    assert rejected.headers["Retry-After"] == "1"
    assert limit_headers(rejected) == ("1", "0", "1")

    clock.now = MINUTE + 60
    response = await client.get(ACCOUNTS, headers=org.test)
    assert response.status == 200
    assert limit_headers(response) == ("1", "0", "60")


async def test_redis_unreachable_fails_open(
    limited_client: ClientFactory,
    org: Org,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=RATE_LIMIT_LOGGER)
    # Nothing listens on a port free_port has just returned.
    client = await limited_client(
        rate_limit_global=1, redis_url=f"redis://127.0.0.1:{free_port()}/0"
    )

    for _ in range(5):
        response = await client.get(ACCOUNTS, headers=org.test)
        assert response.status == 200
        assert "RateLimit-Limit" not in response.headers
    outage_lines = [r for r in caplog.records if r.name == RATE_LIMIT_LOGGER]
    assert len(outage_lines) == 1
    assert "Redis" in outage_lines[0].getMessage()

    clock.now += 60
    assert (await client.get(ACCOUNTS, headers=org.test)).status == 200
    outage_lines = [r for r in caplog.records if r.name == RATE_LIMIT_LOGGER]
    assert len(outage_lines) == 2


async def test_hung_redis_does_not_hang_requests(
    limited_client: ClientFactory,
    org: Org,
    private_redis: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, process = private_redis
    client = await limited_client(redis_url=f"redis://127.0.0.1:{port}/0")
    before = await client.get(ACCOUNTS, headers=org.test)
    assert before.headers.get("RateLimit-Remaining") == "599"

    # A stopped process keeps its socket open but never responds.
    process.send_signal(signal.SIGSTOP)
    started = time.monotonic()
    response = await client.get(ACCOUNTS, headers=org.test)
    elapsed = time.monotonic() - started

    assert response.status == 200
    assert "RateLimit-Limit" not in response.headers
    assert elapsed < 3
