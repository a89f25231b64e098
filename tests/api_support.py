"""Helpers of the API contract tests: creating objects, inserting posts, reading problems."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from postfuze_imports import db

Client = TestClient[Any, Any]
JsonObject = dict[str, Any]

ACCOUNTS = "/api/v1/social-accounts"
POSTS = "/api/v1/posts"
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def imports_url(account_id: str) -> str:
    return f"{ACCOUNTS}/{account_id}/imports"


def account_body(username: str = "alice", **overrides: Any) -> JsonObject:
    """Return a valid create-account body for the `x` platform."""
    body: JsonObject = {
        "platform": "x",
        "username": username,
        "network_unique_id": f"id-{username}",
        "credentials": {"access_token": f"token-{username}"},
    }
    body.update(overrides)
    return body


async def create_account(
    client: Client, headers: dict[str, str], username: str = "alice", **overrides: Any
) -> JsonObject:
    response = await client.post(
        ACCOUNTS, json=account_body(username, **overrides), headers=headers
    )
    assert response.status == 201, await response.text()
    body: JsonObject = await response.json()
    return body


async def create_import(
    client: Client, headers: dict[str, str], account_id: str, body: JsonObject | None = None
) -> JsonObject:
    response = await client.post(imports_url(account_id), json=body or {}, headers=headers)
    assert response.status == 202, await response.text()
    job: JsonObject = await response.json()
    return job


async def read_page(response: ClientResponse) -> JsonObject:
    """Read a 200 list body and check it has exactly `data` and `next_cursor`."""
    assert response.status == 200, await response.text()
    body: JsonObject = await response.json()
    assert sorted(body) == ["data", "next_cursor"]
    return body


async def walk_pages(
    client: Client, url: str, headers: dict[str, str], *, limit: int, **params: str
) -> list[JsonObject]:
    """Follow next_cursor from the first page to the last and return every item in order."""
    items: list[JsonObject] = []
    cursor: str | None = None
    for _ in range(1000):
        query: dict[str, str] = {**params, "limit": str(limit)}
        if cursor is not None:
            query["cursor"] = cursor
        page = await read_page(await client.get(url, params=query, headers=headers))
        assert len(page["data"]) <= limit
        items.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert len(page["data"]) == limit
    raise AssertionError(f"{url} returned more than 1000 pages")


async def read_problem(response: ClientResponse, status: int, code: str) -> JsonObject:
    """Check an RFC 9457 problem body with the project's `code` and return it."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/problem+json"
    body: JsonObject = json.loads(text)
    assert body["type"] == "about:blank"
    # The title is the status phrase, as in the response's status line.
    assert response.reason
    assert body["title"] == response.reason
    assert body["status"] == status
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert body["code"] == code
    return body


async def read_validation(response: ClientResponse) -> list[JsonObject]:
    """Check a 422 validation problem and return its `errors` items."""
    body = await read_problem(response, 422, "validation_failed")
    errors: list[JsonObject] = body["errors"]
    assert errors
    for item in errors:
        assert sorted(item) == ["code", "field", "message"]
        assert isinstance(item["message"], str)
        assert item["message"]
    return errors


def field_codes(errors: list[JsonObject]) -> list[tuple[str | None, str]]:
    """Return (field, code) of each 422 item, sorted, with None first."""
    return sorted(((item["field"], item["code"]) for item in errors), key=lambda p: str(p))


async def insert_post(
    pool: db.Pool,
    organization_id: uuid.UUID,
    account: JsonObject,
    *,
    published_at: datetime,
    source: str = "imported",
    platform_post_id: str | None = None,
    import_id: str | None = None,
    post_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Store a post for `account` directly, as an import or a publication would."""
    identifier = post_id or uuid.uuid4()
    network_id = platform_post_id or f"net-{identifier.hex[:12]}"
    await pool.execute(
        """
        INSERT INTO posts (
            id, organization_id, livemode, social_account_id, platform, platform_post_id,
            platform_post_url, content, media, published_at, source, import_id, metrics, raw
        )
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        """,
        identifier,
        organization_id,
        account["livemode"],
        uuid.UUID(account["id"]),
        account["platform"],
        network_id,
        f"https://example.com/posts/{network_id}",
        f"content of {network_id}",
        [{"type": "image", "url": "https://example.com/a.png", "thumbnail_url": None}],
        published_at,
        source,
        import_id,
        {"likes": 3, "reposts": 1},
        {"raw_field": "kept in storage only"},
    )
    return identifier
