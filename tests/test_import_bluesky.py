"""Imports from a real Bluesky PDS through the API and worker processes.

The PDS (`@atproto/pds` from npm) runs on 127.0.0.1 with an account holding 1,200
posts whose `createdAt` values spread over two years and were written out of order,
so record-key order and publication order disagree.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from postfuze_imports import db
from postfuze_imports.devstack.pds import start_pds
from postfuze_imports.providers.bluesky import parse_datetime
from tests.conftest import Org
from tests.support import wait_for

pytestmark = pytest.mark.pds

Client = TestClient[Any, Any]
POST_COUNT = 1200
HANDLE = "importer.test"
NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass
class PdsAccount:
    url: str
    did: str
    app_password: str
    # Every post record the PDS holds: uri, cid, value.
    records: list[dict[str, Any]]

    def published(self, record: dict[str, Any]) -> datetime:
        value = parse_datetime(record["value"]["createdAt"])
        assert value is not None
        return value

    def newest(
        self, limit: int, start: datetime | None = None, end: datetime | None = None
    ) -> list[dict[str, Any]]:
        inside = [
            record
            for record in self.records
            if (start is None or self.published(record) >= start)
            and (end is None or self.published(record) <= end)
        ]
        inside.sort(key=lambda record: (self.published(record), record["uri"]), reverse=True)
        return inside[:limit]


def _created_at(rng: random.Random) -> str:
    moment = NOW - timedelta(seconds=rng.randint(0, 730 * 86400), milliseconds=rng.randint(0, 999))
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pds_account(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PdsAccount]:
    rng = random.Random(7)
    work_dir: Path = tmp_path_factory.mktemp("pds")
    pds = await start_pds(work_dir)
    try:
        session = await pds.create_account(HANDLE, "importer-password-1", "importer@example.test")
        app_password = await pds.create_app_password(session, "postfuze-imports tests")
        posts = [
            (f"Post {index} — café 東京 🎉 #{rng.randint(0, 10**6)}", _created_at(rng))
            for index in range(POST_COUNT)
        ]
        await pds.write_posts(session, posts)
        records = await pds.list_all_posts(session["did"])
        assert len(records) == POST_COUNT
        yield PdsAccount(
            url=pds.url, did=session["did"], app_password=app_password, records=records
        )
    finally:
        await pds.stop()


async def connect(client: Client, org: Org, account: PdsAccount) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/social-accounts/bluesky/connect",
        json={
            "identifier": HANDLE,
            "app_password": account.app_password,
            "api_base_url": account.url,
        },
        headers=org.live,
    )
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def run_import(
    client: Client, org: Org, account_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/social-accounts/{account_id}/imports", json=body, headers=org.live
    )
    assert response.status == 202, await response.text()
    job = await response.json()

    async def finished() -> dict[str, Any] | None:
        current = await client.get(
            f"/api/v1/social-accounts/{account_id}/imports/{job['id']}", headers=org.live
        )
        value: dict[str, Any] = await current.json()
        return value if value["status"] in ("completed", "failed") else None

    return await wait_for(finished, timeout=180, message=f"import {job['id']}")


async def stored(pool: db.Pool, account_id: str) -> dict[str, Any]:
    rows = await pool.fetch(
        "SELECT platform_post_id, content, published_at FROM posts WHERE social_account_id = $1",
        account_id,
    )
    return {row["platform_post_id"]: row for row in rows}


def assert_matches(
    rows: dict[str, Any], expected: list[dict[str, Any]], account: PdsAccount
) -> None:
    assert set(rows) == {record["uri"] for record in expected}
    for record in expected:
        row = rows[record["uri"]]
        assert row["content"] == record["value"]["text"]
        assert row["published_at"] == account.published(record)


async def test_bluesky_connect_returns_account(
    client: Client, org: Org, pds_account: PdsAccount
) -> None:
    account = await connect(client, org, pds_account)

    assert account["platform"] == "bluesky"
    assert account["network_unique_id"] == pds_account.did
    assert account["username"] == HANDLE
    assert "credentials" not in account
    assert account["livemode"] is True


async def test_bluesky_import_without_window(
    client: Client, org: Org, pool: db.Pool, pds_account: PdsAccount, start_worker: Any
) -> None:
    start_worker()
    account = await connect(client, org, pds_account)

    job = await run_import(client, org, account["id"], {})

    assert job["status"] == "completed", job
    assert job["imported_count"] == 100
    assert_matches(await stored(pool, account["id"]), pds_account.newest(100), pds_account)


async def test_bluesky_import_window_exact(
    client: Client, org: Org, pool: db.Pool, pds_account: PdsAccount, start_worker: Any
) -> None:
    start_worker()
    account = await connect(client, org, pds_account)
    start = (NOW - timedelta(days=400)).date()
    end = (NOW - timedelta(days=300)).date()
    body = {"from_date": start.isoformat(), "to_date": end.isoformat(), "limit": 1000}

    job = await run_import(client, org, account["id"], body)
    again = await run_import(client, org, account["id"], body)

    expected = pds_account.newest(
        1000,
        datetime(start.year, start.month, start.day, tzinfo=UTC),
        datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1, microseconds=-1),
    )
    assert 0 < len(expected) < 1000
    assert job["status"] == "completed"
    assert job["imported_count"] == len(expected)
    assert job["from_date"] == start.isoformat()
    assert_matches(await stored(pool, account["id"]), expected, pds_account)
    assert again["status"] == "completed"
    assert again["imported_count"] == 0


async def test_bluesky_import_limit_1000(
    client: Client, org: Org, pool: db.Pool, pds_account: PdsAccount, start_worker: Any
) -> None:
    start_worker()
    account = await connect(client, org, pds_account)

    started = time.monotonic()
    job = await run_import(client, org, account["id"], {"limit": 1000})
    elapsed = time.monotonic() - started

    assert job["status"] == "completed", job
    assert job["imported_count"] == 1000
    assert_matches(await stored(pool, account["id"]), pds_account.newest(1000), pds_account)
    print(f"imported 1000 posts from the PDS in {elapsed:.2f} s")
