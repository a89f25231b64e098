"""Imports under faults: canceled jobs, killed workers, a restarted Redis."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from postfuze_imports import db
from postfuze_imports.api.app import create_app
from postfuze_imports.crypto import Secrets
from postfuze_imports.devstack.stack import free_port, port_is_open, redis_command, wait_for_port
from postfuze_imports.errors import ProviderRateLimited
from postfuze_imports.imports.jobs import no_finish_hook
from postfuze_imports.imports.runner import MAX_RATE_LIMIT_WAITS, JobRunner, Wakers
from postfuze_imports.settings import Settings
from tests.conftest import Org
from tests.support import WorkerProcess, wait_for
from tests.test_import_flow import create_account, start_import, stored_posts, wait_finished

Client = TestClient[Any, Any]


async def job_row(pool: db.Pool, job_id: str) -> Any:
    return await pool.fetchrow("SELECT * FROM import_jobs WHERE id = $1", job_id)


async def wait_imported(pool: db.Pool, job_id: str, at_least: int) -> None:
    async def progressed() -> bool:
        row = await job_row(pool, job_id)
        return bool(row["imported_count"] and row["imported_count"] >= at_least)

    await wait_for(progressed, timeout=60, message=f"import {job_id} to store {at_least} posts")


async def test_cancel_running_stops_at_page(
    client: Client, org: Org, pool: db.Pool, start_worker: Any
) -> None:
    start_worker()
    account = await create_account(client, org, "slow-cancel")
    job = await start_import(client, org, account["id"], limit=1000)
    await wait_imported(pool, job["id"], 100)

    response = await client.post(
        f"/api/v1/social-accounts/{account['id']}/imports/{job['id']}/cancel", headers=org.test
    )

    assert response.status == 200
    assert (await response.json())["status"] == "running"
    done = await wait_finished(client, org, account["id"], job["id"], timeout=15)
    assert done["status"] == "failed"
    assert "canceled" in done["error_message"]
    assert 100 <= done["imported_count"] < 1000
    assert len(await stored_posts(pool, account["id"])) == done["imported_count"]
    events = await pool.fetch("SELECT type FROM webhook_events")
    assert [event["type"] for event in events] == ["import.failed"]
    again = await client.post(
        f"/api/v1/social-accounts/{account['id']}/imports/{job['id']}/cancel", headers=org.test
    )
    assert again.status == 409


async def test_cancel_during_rate_limit_wait(
    client: Client, org: Org, pool: db.Pool, start_worker: Any
) -> None:
    start_worker()
    account = await create_account(client, org, "ratelimit-cancel")
    job = await start_import(client, org, account["id"], limit=500)

    async def waiting() -> bool:
        row = await job_row(pool, job["id"])
        return row["status"] == "running" and row["lease_token"] is None

    await wait_for(waiting, timeout=30, message="the job to wait on the rate limit")
    response = await client.post(
        f"/api/v1/social-accounts/{account['id']}/imports/{job['id']}/cancel", headers=org.test
    )

    body = await response.json()
    assert response.status == 200
    assert body["status"] == "failed"
    assert "canceled" in body["error_message"]
    assert body["imported_count"] == 100


async def test_cancel_pending_ends_at_once(client: Client, org: Org, pool: db.Pool) -> None:
    account = await create_account(client, org, "pending-cancel")
    job = await start_import(client, org, account["id"], limit=10)

    response = await client.post(
        f"/api/v1/social-accounts/{account['id']}/imports/{job['id']}/cancel", headers=org.test
    )

    body = await response.json()
    assert response.status == 200
    assert body["status"] == "failed"
    assert body["finished_at"] is not None
    assert "canceled" in body["error_message"]


async def test_killed_worker_job_resumes(
    client: Client, org: Org, pool: db.Pool, start_worker: Any
) -> None:
    first = start_worker()
    account = await create_account(client, org, "slow-crash")
    job = await start_import(client, org, account["id"], limit=1000)
    await wait_imported(pool, job["id"], 200)

    first.kill()
    start_worker()
    done = await wait_finished(client, org, account["id"], job["id"], timeout=90)

    assert done["status"] == "completed", done
    assert done["imported_count"] == 1000
    assert len(await stored_posts(pool, account["id"])) == 1000
    row = await job_row(pool, job["id"])
    assert row["crash_count"] == 1
    assert row["fetched_count"] == 1000


async def test_job_fails_after_repeated_crashes(
    client: Client, org: Org, pool: db.Pool, settings: Settings, start_worker: Any
) -> None:
    account = await create_account(client, org, "slow-crashes")
    job = await start_import(client, org, account["id"], limit=1000)
    previous_token = None
    for _ in range(settings.max_job_crashes + 1):
        worker = start_worker()

        async def claimed(previous: Any = previous_token) -> Any:
            row = await job_row(pool, job["id"])
            token = row["lease_token"]
            return token if token is not None and token != previous else None

        previous_token = await wait_for(claimed, timeout=60, message="a worker to claim the job")
        worker.kill()
        # Expire the lease now rather than waiting for it to run out.
        await pool.execute(
            "UPDATE import_jobs SET lease_expires_at = clock_timestamp() WHERE id = $1",
            job["id"],
        )
    start_worker()

    done = await wait_finished(client, org, account["id"], job["id"], timeout=60)

    assert done["status"] == "failed"
    assert "worker running it exited" in done["error_message"]


class PrivateRedis:
    """A Redis server this test may kill and start again, empty, on the same port."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            redis_command(self.port, self.directory, daemonize=False),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, timeout=30, process=self.process)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    redis = PrivateRedis(tmp_path)
    redis.start()
    yield redis
    redis.kill()


async def test_redis_restart_loses_no_job(
    aiohttp_client: Any,
    settings: Settings,
    org: Org,
    pool: db.Pool,
    tmp_path: Path,
    private_redis: PrivateRedis,
) -> None:
    local = replace(settings, redis_url=f"redis://127.0.0.1:{private_redis.port}/0")
    client: Client = await aiohttp_client(create_app(local))
    worker = WorkerProcess(local, tmp_path / "worker.log")
    try:
        account = await create_account(client, org, "redis-restart")
        first = await start_import(client, org, account["id"], limit=50)
        await wait_finished(client, org, account["id"], first["id"])

        # Redis restarts empty: queued wake-ups are gone and connections break.
        private_redis.kill()
        assert not port_is_open(private_redis.port)
        second = await start_import(client, org, account["id"], limit=60)
        private_redis.start()

        done = await wait_finished(client, org, account["id"], second["id"], timeout=60)
        assert done["status"] == "completed", worker.log_text()[-3000:]
        assert done["imported_count"] == 10
        assert worker.process.poll() is None, "the worker exited when Redis went away"
    finally:
        worker.stop()


async def test_abandoned_wakeups_do_not_stall(
    client: Client, org: Org, pool: db.Pool, settings: Settings, start_worker: Any
) -> None:
    from redis.asyncio import Redis

    from postfuze_imports import queue

    # Wake-ups taken by workers that were killed: still queued, marked in progress, and
    # older than anything new. More of them than a worker reads per poll (1000).
    redis = Redis.from_url(settings.redis_url)
    hour_ago_ms = (time.time() - 3600) * 1000
    async with redis.pipeline(transaction=False) as pipe:
        for index in range(1100):
            job_id = f"run_import:abandoned:{index}"
            pipe.zadd(queue.QUEUE_NAME, {job_id: hour_ago_ms + index})
            pipe.set(f"arq:in-progress:{job_id}", b"1", ex=3600)
        await pipe.execute()
    await redis.aclose()
    account = await create_account(client, org, "after-abandoned")
    job = await start_import(client, org, account["id"], limit=20)

    start_worker()
    done = await wait_finished(client, org, account["id"], job["id"], timeout=30)

    assert done["status"] == "completed"


class _AlwaysRateLimited:
    """A network that returns 429 with a short Retry-After to every request."""

    async def fetch(self, account: Any, window: Any, checkpoint: Any) -> Any:
        raise ProviderRateLimited("429 Too Many Requests", retry_after=0)
        yield  # makes this an async generator, as Provider.fetch is


class _OneProvider:
    def get(self, platform: str, *, livemode: bool) -> Any:
        return _AlwaysRateLimited()


async def test_endless_rate_limit_fails_job(
    client: Client, org: Org, pool: db.Pool, settings: Settings
) -> None:
    account = await create_account(client, org, "endless-429")
    job = await start_import(client, org, account["id"], limit=10)

    async def no_wake(*_: Any) -> bool:
        return False

    runner = JobRunner(
        pool=pool,
        settings=settings,
        secrets=Secrets(settings.secret_key),
        providers=_OneProvider(),
        on_finish=no_finish_hook,
        wakers=Wakers(wake_import=no_wake, wake_dispatcher=no_wake),
    )
    for _ in range(MAX_RATE_LIMIT_WAITS + 1):
        await pool.execute(
            "UPDATE import_jobs SET run_after = clock_timestamp() WHERE id = $1", job["id"]
        )
        assert await runner.run(job["id"]) == job["id"]

    row = await job_row(pool, job["id"])
    assert row["status"] == "failed"
    assert row["wait_count"] == MAX_RATE_LIMIT_WAITS
    assert "asked to wait" in row["error_message"]
