"""Idempotency-Key on POST: replays, reuse with another request, concurrency, expiry."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient

from postfuze_imports import db
from postfuze_imports.admin import create_key
from postfuze_imports.settings import Settings
from tests.conftest import Org

Client = TestClient[Any, Any]

ACCOUNTS = "/api/v1/social-accounts"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def send_post(
    client: Client, path: str, headers: dict[str, str], key: str | None, body: Any
) -> Reply:
    all_headers = dict(headers)
    if key is not None:
        all_headers["Idempotency-Key"] = key
    response = await client.post(path, json=body, headers=all_headers)
    return Reply(response.status, dict(response.headers), await response.read())


async def create_account(client: Client, org: Org, name: str = "a") -> str:
    response = await client.post(
        ACCOUNTS,
        json={
            "platform": "x",
            "username": name,
            "network_unique_id": f"{name}1",
            "credentials": {"access_token": "t"},
        },
        headers=org.test,
    )
    assert response.status == 201, await response.text()
    account_id: str = (await response.json())["id"]
    return account_id


def imports_path(account_id: str) -> str:
    return f"{ACCOUNTS}/{account_id}/imports"


async def count_jobs(pool: db.Pool, account_id: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM import_jobs WHERE social_account_id = $1", uuid.UUID(account_id)
    )
    return count


async def count_keys(pool: db.Pool, key: str) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM idempotency_keys WHERE key = $1", key)
    return count


async def test_replay_returns_stored_response(client: Client, org: Org, pool: db.Pool) -> None:
    account_id = await create_account(client, org)
    path = imports_path(account_id)

    first = await send_post(client, path, org.test, "key-1", {"limit": 10})
    replay = await send_post(client, path, org.test, "key-1", {"limit": 10})

    assert first.status == 202
    assert first.json()["limit"] == 10
    assert "Idempotent-Replayed" not in first.headers
    assert replay.status == 202
    assert replay.body == first.body
    assert replay.headers["Location"] == first.headers["Location"]
    assert replay.headers["Content-Type"] == first.headers["Content-Type"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["Request-Id"] != first.headers["Request-Id"]
    assert "RateLimit-Limit" in replay.headers
    assert await count_jobs(pool, account_id) == 1


async def test_requests_without_key_both_run(client: Client, org: Org, pool: db.Pool) -> None:
    account_id = await create_account(client, org)
    path = imports_path(account_id)

    first = await send_post(client, path, org.test, None, {"limit": 10})
    second = await send_post(client, path, org.test, None, {"limit": 10})

    assert first.status == second.status == 202
    assert first.json()["id"] != second.json()["id"]
    assert await count_jobs(pool, account_id) == 2


async def test_different_body_rejected(client: Client, org: Org, pool: db.Pool) -> None:
    account_id = await create_account(client, org)
    path = imports_path(account_id)
    await send_post(client, path, org.test, "key-1", {"limit": 10})

    reused = await send_post(client, path, org.test, "key-1", {"limit": 11})

    assert reused.status == 422
    assert reused.headers["Content-Type"].startswith("application/problem+json")
    assert reused.json()["code"] == "idempotency_key_reused"
    assert await count_jobs(pool, account_id) == 1


async def test_different_path_rejected(client: Client, org: Org, pool: db.Pool) -> None:
    first_account = await create_account(client, org, "a")
    second_account = await create_account(client, org, "b")
    await send_post(client, imports_path(first_account), org.test, "key-1", {})

    reused = await send_post(client, imports_path(second_account), org.test, "key-1", {})

    assert reused.status == 422
    assert reused.json()["code"] == "idempotency_key_reused"
    assert await count_jobs(pool, second_account) == 0


async def test_invalid_keys_rejected(client: Client, org: Org, pool: db.Pool) -> None:
    account_id = await create_account(client, org)
    path = imports_path(account_id)
    cases = [
        ("k" * 256, "invalid_length"),
        ("", "invalid_length"),
        ("has space", "invalid_format"),
        ("caf\u00e9", "invalid_format"),
    ]

    for key, code in cases:
        response = await client.post(
            path, json={}, headers={**org.test, "Idempotency-Key": key.encode().decode("latin-1")}
        )
        assert response.status == 422, key
        body = await response.json()
        assert body["code"] == "validation_failed", key
        assert len(body["errors"]) == 1, key
        assert body["errors"][0]["field"] == "Idempotency-Key", key
        assert body["errors"][0]["code"] == code, key

    assert await count_jobs(pool, account_id) == 0
    longest = await send_post(client, path, org.test, "k" * 255, {})
    assert longest.status == 202


async def test_key_scoped_per_organization(
    client: Client, org: Org, other_org: Org, pool: db.Pool
) -> None:
    first_account = await create_account(client, org)
    second_account = await create_account(client, other_org)

    first = await send_post(client, imports_path(first_account), org.test, "shared", {})
    second = await send_post(client, imports_path(second_account), other_org.test, "shared", {})

    assert first.status == 202
    assert second.status == 202
    assert "Idempotent-Replayed" not in second.headers
    assert first.json()["id"] != second.json()["id"]
    assert await count_jobs(pool, first_account) == 1
    assert await count_jobs(pool, second_account) == 1


async def test_concurrent_requests_start_one_job(client: Client, org: Org, pool: db.Pool) -> None:
    account_id = await create_account(client, org)
    path = imports_path(account_id)

    replies = await asyncio.gather(
        *(send_post(client, path, org.test, "same-key", {"limit": 5}) for _ in range(10))
    )

    originals = [r for r in replies if r.status == 202 and "Idempotent-Replayed" not in r.headers]
    replays = [r for r in replies if r.status == 202 and "Idempotent-Replayed" in r.headers]
    conflicts = [r for r in replies if r.status == 409]
    assert len(originals) == 1
    assert len(originals) + len(replays) + len(conflicts) == 10
    for replay in replays:
        assert replay.body == originals[0].body
    for conflict in conflicts:
        assert conflict.json()["code"] == "conflict"
        assert conflict.headers["Retry-After"] == "1"
    assert await count_jobs(pool, account_id) == 1


async def test_client_error_replayed(client: Client, org: Org, pool: db.Pool) -> None:
    account_id = await create_account(client, org)
    path = imports_path(account_id)

    first = await send_post(client, path, org.test, "key-1", {"limit": "10"})
    replay = await send_post(client, path, org.test, "key-1", {"limit": "10"})

    assert first.status == 422
    assert first.json()["code"] == "validation_failed"
    assert replay.status == 422
    assert replay.body == first.body
    assert replay.headers["Content-Type"] == first.headers["Content-Type"]
    assert replay.headers["Idempotent-Replayed"] == "true"


async def test_server_error_not_stored(client: Client, org: Org, pool: db.Pool) -> None:
    account_id = await create_account(client, org)
    path = imports_path(account_id)
    # A real PostgreSQL failure inside the handler, not a mock.
    await pool.execute(
        """
        CREATE FUNCTION test_fail_import_insert() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'import insert rejected by the test';
        END
        $$;
        CREATE TRIGGER test_fail_import_insert BEFORE INSERT ON import_jobs
            FOR EACH ROW EXECUTE FUNCTION test_fail_import_insert();
        """
    )
    try:
        failed = await send_post(client, path, org.test, "key-1", {"limit": 10})
    finally:
        await pool.execute(
            "DROP TRIGGER test_fail_import_insert ON import_jobs;"
            "DROP FUNCTION test_fail_import_insert();"
        )

    assert failed.status == 500
    assert "RateLimit-Limit" in failed.headers
    assert await count_keys(pool, "key-1") == 0

    retried = await send_post(client, path, org.test, "key-1", {"limit": 10})
    assert retried.status == 202
    assert "Idempotent-Replayed" not in retried.headers
    assert await count_jobs(pool, account_id) == 1


async def test_forbidden_not_stored(
    client: Client, org: Org, pool: db.Pool, settings: Settings
) -> None:
    account_id = await create_account(client, org)
    path = imports_path(account_id)
    narrow_key = await create_key(
        settings.database_url, org.id, livemode=False, scopes=["accounts:write"]
    )

    forbidden = await send_post(
        client, path, {"Authorization": f"Bearer {narrow_key}"}, "key-1", {}
    )
    allowed = await send_post(client, path, org.test, "key-1", {})

    assert forbidden.status == 403
    assert allowed.status == 202
    assert "Idempotent-Replayed" not in allowed.headers
    assert await count_jobs(pool, account_id) == 1


async def test_expired_key_replaced(client: Client, org: Org, pool: db.Pool) -> None:
    account_id = await create_account(client, org)
    path = imports_path(account_id)
    first = await send_post(client, path, org.test, "key-1", {"limit": 10})
    await pool.execute(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = $1",
        "key-1",
    )

    second = await send_post(client, path, org.test, "key-1", {"limit": 20})

    assert second.status == 202
    assert "Idempotent-Replayed" not in second.headers
    assert second.json()["id"] != first.json()["id"]
    assert await count_jobs(pool, account_id) == 2


async def test_abandoned_key_taken_over(client: Client, org: Org, pool: db.Pool) -> None:
    account_id = await create_account(client, org)
    path = imports_path(account_id)
    # What a request leaves behind when its process dies before storing the response.
    await pool.execute(
        """
        INSERT INTO idempotency_keys (
            organization_id, livemode, key, request_method, request_path,
            request_fingerprint, owner_request_id, expires_at
        )
        VALUES ($1, false, 'key-1', 'POST', $2, sha256('{}'::bytea), 'req_dead',
                now() + interval '1 day')
        """,
        org.id,
        path,
    )

    busy = await send_post(client, path, org.test, "key-1", {})
    assert busy.status == 409
    assert busy.headers["Retry-After"] == "1"

    await pool.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '1 hour' WHERE key = 'key-1'"
    )
    taken_over = await send_post(client, path, org.test, "key-1", {})
    assert taken_over.status == 202
    assert await count_jobs(pool, account_id) == 1


async def test_delete_expired_keys(client: Client, org: Org, pool: db.Pool) -> None:
    account_id = await create_account(client, org)
    path = imports_path(account_id)
    await send_post(client, path, org.test, "old", {})
    await send_post(client, path, org.test, "new", {})
    await pool.execute(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'old'"
    )

    status = await pool.execute(db.q("delete_expired_idempotency_keys"), 100)

    assert status == "DELETE 1"
    assert await count_keys(pool, "old") == 0
    assert await count_keys(pool, "new") == 1
