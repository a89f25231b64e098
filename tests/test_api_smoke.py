"""End-to-end checks of the API's main paths in test mode."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import Org

Client = TestClient[Any, Any]


async def create_test_account(client: Client, org: Org, username: str = "alice") -> dict[str, Any]:
    response = await client.post(
        "/api/v1/social-accounts",
        json={
            "platform": "x",
            "username": username,
            "network_unique_id": f"id-{username}",
            "credentials": {"access_token": "token-123"},
        },
        headers=org.test,
    )
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_import_created_pending_with_location(client: Client, org: Org) -> None:
    account = await create_test_account(client, org)
    response = await client.post(
        f"/api/v1/social-accounts/{account['id']}/imports",
        json={"from_date": "2026-01-01", "to_date": "2026-06-01", "limit": 500},
        headers=org.test,
    )
    assert response.status == 202
    job = await response.json()
    assert job["status"] == "pending"
    assert job["from_date"] == "2026-01-01"
    assert job["imported_count"] is None
    assert response.headers["Location"] == (
        f"/api/v1/social-accounts/{account['id']}/imports/{job['id']}"
    )
    assert job["id"].startswith("imp_")


async def test_validation_reports_every_field(client: Client, org: Org) -> None:
    account = await create_test_account(client, org)
    response = await client.post(
        f"/api/v1/social-accounts/{account['id']}/imports",
        json={"from_date": "yesterday", "limit": "10", "fromDate": "2026-01-01"},
        headers=org.test,
    )
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    body = await response.json()
    fields = sorted(item["field"] for item in body["errors"])
    assert fields == ["fromDate", "from_date", "limit"]
