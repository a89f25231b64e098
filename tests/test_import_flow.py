"""Import jobs from the API through worker processes to stored posts, in test mode."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from postfuze_imports import db
from postfuze_imports.settings import Settings
from tests.conftest import Org
from tests.support import wait_for

Client = TestClient[Any, Any]


async def create_account(client: Client, org: Org, username: str) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/social-accounts",
        json={
            "platform": "x",
            "username": username,
            "network_unique_id": f"uid-{username}",
            "credentials": {"access_token": "token"},
        },
        headers=org.test,
    )
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def start_import(client: Client, org: Org, account_id: str, **body: Any) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/social-accounts/{account_id}/imports", json=body, headers=org.test
    )
    assert response.status == 202, await response.text()
    job: dict[str, Any] = await response.json()
    return job


async def wait_finished(
    client: Client, org: Org, account_id: str, job_id: str, timeout: float = 60
) -> dict[str, Any]:
    async def finished() -> dict[str, Any] | None:
        response = await client.get(
            f"/api/v1/social-accounts/{account_id}/imports/{job_id}", headers=org.test
        )
        job: dict[str, Any] = await response.json()
        return job if job["status"] in ("completed", "failed") else None

    return await wait_for(finished, timeout=timeout, message=f"import {job_id} to finish")


async def stored_posts(pool: db.Pool, account_id: str) -> list[Any]:
    return list(
        await pool.fetch(
            "SELECT * FROM posts WHERE social_account_id = $1 ORDER BY published_at DESC",
            account_id,
        )
    )


async def test_window_import_exact(
    client: Client, org: Org, pool: db.Pool, start_worker: Any
) -> None:
    start_worker()
    account = await create_account(client, org, "window")
    job = await start_import(
        client, org, account["id"], from_date="2024-01-01", to_date="2024-12-31", limit=1000
    )

    done = await wait_finished(client, org, account["id"], job["id"])

    assert done["status"] == "completed", done
    posts = await stored_posts(pool, account["id"])
    assert done["imported_count"] == len(posts)
    assert posts, "the simulated history has posts in 2024"
    start = datetime(2024, 1, 1, tzinfo=UTC)
    end = datetime(2025, 1, 1, tzinfo=UTC)
    assert all(start <= post["published_at"] < end for post in posts)
    assert done["started_at"] is not None
    assert done["finished_at"] is not None
    assert done["error_message"] is None


async def test_no_window_takes_most_recent(
    client: Client, org: Org, pool: db.Pool, start_worker: Any
) -> None:
    start_worker()
    account = await create_account(client, org, "recent")
    job = await start_import(client, org, account["id"], limit=250)

    done = await wait_finished(client, org, account["id"], job["id"])

    assert done["status"] == "completed"
    assert done["imported_count"] == 250
    posts = await stored_posts(pool, account["id"])
    assert len(posts) == 250


async def test_repeat_import_stores_nothing_new(
    client: Client, org: Org, pool: db.Pool, start_worker: Any
) -> None:
    start_worker()
    account = await create_account(client, org, "repeat")
    first = await start_import(
        client, org, account["id"], from_date="2023-01-01", to_date="2023-06-30"
    )
    second = await start_import(
        client, org, account["id"], from_date="2023-01-01", to_date="2023-06-30"
    )

    first_done = await wait_finished(client, org, account["id"], first["id"])
    second_done = await wait_finished(client, org, account["id"], second["id"])

    assert first_done["imported_count"] == 100
    assert second_done["imported_count"] == 0
    assert second_done["status"] == "completed"
    assert len(await stored_posts(pool, account["id"])) == 100


async def test_lost_wakeup_found_by_sweep(
    client: Client, org: Org, pool: db.Pool, settings: Settings, start_worker: Any
) -> None:
    account = await create_account(client, org, "lost")
    job = await start_import(client, org, account["id"], limit=10)
    redis = Redis.from_url(settings.redis_url)
    await redis.flushdb()
    await redis.aclose()

    start_worker()
    done = await wait_finished(client, org, account["id"], job["id"])

    assert done["status"] == "completed"
    assert done["imported_count"] == 10


async def test_two_workers_many_accounts(
    client: Client, org: Org, pool: db.Pool, start_worker: Any
) -> None:
    start_worker()
    start_worker()
    jobs = []
    for index in range(6):
        account = await create_account(client, org, f"many{index}")
        for _ in range(2):
            jobs.append(
                (account["id"], (await start_import(client, org, account["id"], limit=300))["id"])
            )

    results = [
        await wait_finished(client, org, account_id, job_id, timeout=120)
        for account_id, job_id in jobs
    ]

    assert all(job["status"] == "completed" for job in results)
    duplicates = await pool.fetchval(
        "SELECT count(*) - count(DISTINCT (social_account_id, platform_post_id)) FROM posts"
    )
    assert duplicates == 0
    assert await pool.fetchval("SELECT count(*) FROM posts") == 6 * 300
    # The second job of each account runs after the first and finds everything stored.
    assert sum(job["imported_count"] for job in results) == 6 * 300
    overlapping = await pool.fetchval(
        """
        SELECT count(*) FROM import_jobs a JOIN import_jobs b
          ON a.social_account_id = b.social_account_id AND a.id < b.id
         AND a.started_at < b.finished_at AND b.started_at < a.finished_at
        """
    )
    assert overlapping == 0


async def test_failing_network_fails_job(
    client: Client, org: Org, pool: db.Pool, start_worker: Any
) -> None:
    start_worker()
    account = await create_account(client, org, "fail")
    job = await start_import(client, org, account["id"], limit=500)

    done = await wait_finished(client, org, account["id"], job["id"])

    assert done["status"] == "failed"
    assert done["error_message"]
    assert done["imported_count"] == 100
    assert done["finished_at"] is not None


async def test_metrics_report_jobs(client: Client, org: Org, start_worker: Any) -> None:
    start_worker()
    account = await create_account(client, org, "metrics")
    job = await start_import(client, org, account["id"], limit=5)
    await wait_finished(client, org, account["id"], job["id"])

    response = await client.get("/metrics")

    text = await response.text()
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert 'postfuze_import_jobs{status="completed"} 1' in text
    assert 'postfuze_http_responses_total{method="POST",status="2xx"} 2' in text
