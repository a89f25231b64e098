"""Import jobs: start with body validation, list, get and cancel."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from postfuze_imports import db
from postfuze_imports.settings import Settings
from tests.api_support import (
    ACCOUNTS,
    TIMESTAMP,
    Client,
    JsonObject,
    create_account,
    create_import,
    field_codes,
    imports_url,
    read_page,
    read_problem,
    read_validation,
    walk_pages,
)
from tests.conftest import Org

JOB_FIELDS = [
    "created_at",
    "error_message",
    "finished_at",
    "from_date",
    "id",
    "imported_count",
    "limit",
    "livemode",
    "social_account_id",
    "started_at",
    "status",
    "tenant_id",
    "to_date",
]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The session settings with write limits that the listing tests stay under."""
    return dataclasses.replace(settings, rate_limit_accounts_write=1000)


@pytest.fixture
async def account(client: Client, org: Org) -> JsonObject:
    return await create_account(client, org.test, tenant_id="tenant-1")


async def post_raw(
    client: Client, org: Org, account: JsonObject, data: Any, content_type: str | None
) -> Any:
    headers = dict(org.test)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return await client.post(imports_url(account["id"]), data=data, headers=headers)


# --- Start -----------------------------------------------------------------------------


async def test_start_returns_pending_job(client: Client, org: Org, account: JsonObject) -> None:
    response = await client.post(
        imports_url(account["id"]),
        json={"from_date": "2026-01-01", "to_date": "2026-06-01", "limit": 500},
        headers=org.test,
    )

    assert response.status == 202
    job = await response.json()
    assert sorted(job) == JOB_FIELDS
    assert job["id"].startswith("imp_")
    assert len(job["id"]) > len("imp_") + 8
    assert job["social_account_id"] == account["id"]
    assert job["tenant_id"] == "tenant-1"
    assert job["status"] == "pending"
    assert job["from_date"] == "2026-01-01"
    assert job["to_date"] == "2026-06-01"
    assert job["limit"] == 500
    assert job["imported_count"] is None
    assert job["error_message"] is None
    assert job["started_at"] is None
    assert job["finished_at"] is None
    assert TIMESTAMP.match(job["created_at"])
    assert job["livemode"] is False


async def test_start_location_header(client: Client, org: Org, account: JsonObject) -> None:
    response = await client.post(imports_url(account["id"]), json={}, headers=org.test)
    job = await response.json()

    location = response.headers["Location"]
    fetched = await client.get(location, headers=org.test)

    assert location == f"{ACCOUNTS}/{account['id']}/imports/{job['id']}"
    assert fetched.status == 200
    assert await fetched.json() == job


async def test_start_ids_unique(client: Client, org: Org, account: JsonObject) -> None:
    first = await create_import(client, org.test, account["id"])
    second = await create_import(client, org.test, account["id"])

    assert first["id"] != second["id"]


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (None, None),
        (b"", "application/json"),
        (b"", "text/plain"),
        (b"  \n", "application/json"),
        (b"{}", "application/json"),
        (b'{"from_date": null, "to_date": null, "limit": null}', "application/json"),
    ],
)
async def test_start_without_fields_defaults(
    client: Client, org: Org, account: JsonObject, data: bytes | None, content_type: str | None
) -> None:
    response = await post_raw(client, org, account, data, content_type)

    assert response.status == 202, await response.text()
    job = await response.json()
    assert job["limit"] == 100
    assert job["from_date"] is None
    assert job["to_date"] is None


@pytest.mark.parametrize("limit", [1, 1000])
async def test_start_limit_bounds_accepted(
    client: Client, org: Org, account: JsonObject, limit: int
) -> None:
    job = await create_import(client, org.test, account["id"], {"limit": limit})

    assert job["limit"] == limit


@pytest.mark.parametrize(
    ("limit", "code"),
    [
        ("10", "invalid_type"),
        (10.5, "invalid_type"),
        (10.0, "invalid_type"),
        (True, "invalid_type"),
        (False, "invalid_type"),
        ([10], "invalid_type"),
        ({"value": 10}, "invalid_type"),
        (0, "out_of_range"),
        (-5, "out_of_range"),
        (1001, "out_of_range"),
        (10**30, "out_of_range"),
    ],
)
async def test_start_invalid_limit(
    client: Client, org: Org, account: JsonObject, limit: Any, code: str
) -> None:
    response = await client.post(
        imports_url(account["id"]), json={"limit": limit}, headers=org.test
    )

    errors = await read_validation(response)
    assert field_codes(errors) == [("limit", code)]


@pytest.mark.parametrize(
    ("given", "echoed"),
    [
        ("2026-01-01", "2026-01-01"),
        ("2026-01-01T10:00:00+02:00", "2026-01-01T08:00:00.000Z"),
        ("2026-01-01T10:00:00Z", "2026-01-01T10:00:00.000Z"),
        ("2026-01-01t10:00:00z", "2026-01-01T10:00:00.000Z"),
        ("2026-01-01T10:00:00.5-01:30", "2026-01-01T11:30:00.500Z"),
        ("2026-01-01T00:30:00+01:00", "2025-12-31T23:30:00.000Z"),
    ],
)
async def test_start_date_echo(
    client: Client, org: Org, account: JsonObject, given: str, echoed: str
) -> None:
    job = await create_import(
        client, org.test, account["id"], {"from_date": given, "to_date": given}
    )

    assert job["from_date"] == echoed
    assert job["to_date"] == echoed


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("2026-01-01T10:00:00", "invalid_format"),
        ("2026-01-01 10:00:00Z", "invalid_format"),
        ("2026-01-01T10:00Z", "invalid_format"),
        ("yesterday", "invalid_format"),
        ("", "invalid_format"),
        ("2026-13-01", "invalid_format"),
        ("2026-02-30", "invalid_format"),
        ("2026-01-01T25:00:00Z", "invalid_format"),
        ("2026-01-01T10:00:00+25:00", "invalid_format"),
        ("01/02/2026", "invalid_format"),
        ("20260101", "invalid_format"),
        (20260101, "invalid_type"),
        (["2026-01-01"], "invalid_type"),
    ],
)
async def test_start_invalid_date(
    client: Client, org: Org, account: JsonObject, value: Any, code: str
) -> None:
    response = await client.post(
        imports_url(account["id"]), json={"from_date": value, "to_date": value}, headers=org.test
    )

    errors = await read_validation(response)
    assert field_codes(errors) == [("from_date", code), ("to_date", code)]


async def test_start_window_reversed(client: Client, org: Org, account: JsonObject) -> None:
    response = await client.post(
        imports_url(account["id"]),
        json={"from_date": "2026-06-01", "to_date": "2026-01-01"},
        headers=org.test,
    )

    errors = await read_validation(response)
    assert field_codes(errors) == [("to_date", "invalid_range")]


async def test_start_reversed_with_other_errors(
    client: Client, org: Org, account: JsonObject
) -> None:
    response = await client.post(
        imports_url(account["id"]),
        json={"from_date": "2026-06-01", "to_date": "2026-01-01", "limit": "10", "fromDate": "x"},
        headers=org.test,
    )

    errors = await read_validation(response)
    assert field_codes(errors) == [
        ("fromDate", "unknown_field"),
        ("limit", "invalid_type"),
        ("to_date", "invalid_range"),
    ]


async def test_start_order_needs_valid_bounds(
    client: Client, org: Org, account: JsonObject
) -> None:
    response = await client.post(
        imports_url(account["id"]),
        json={"from_date": "garbage", "to_date": "2026-01-01"},
        headers=org.test,
    )

    errors = await read_validation(response)
    assert field_codes(errors) == [("from_date", "invalid_format")]


@pytest.mark.parametrize(
    ("from_date", "to_date"),
    [
        ("2026-01-01", "2026-01-01"),
        ("2026-01-01T23:59:59Z", "2026-01-01"),
        ("2026-01-01T10:00:00+02:00", "2026-01-01T08:00:00Z"),
    ],
)
async def test_start_window_edges_valid(
    client: Client, org: Org, account: JsonObject, from_date: str, to_date: str
) -> None:
    job = await create_import(
        client, org.test, account["id"], {"from_date": from_date, "to_date": to_date}
    )

    assert job["status"] == "pending"


async def test_start_one_bound_only(client: Client, org: Org, account: JsonObject) -> None:
    only_from = await create_import(client, org.test, account["id"], {"from_date": "2026-01-01"})
    only_to = await create_import(client, org.test, account["id"], {"to_date": "2026-01-01"})

    assert only_from["to_date"] is None
    assert only_to["from_date"] is None


async def test_start_unknown_field(client: Client, org: Org, account: JsonObject) -> None:
    response = await client.post(
        imports_url(account["id"]), json={"fromDate": "2026-01-01"}, headers=org.test
    )

    errors = await read_validation(response)
    assert field_codes(errors) == [("fromDate", "unknown_field")]
    listed = await read_page(await client.get(imports_url(account["id"]), headers=org.test))
    assert listed["data"] == []


@pytest.mark.parametrize(
    "data",
    [b'{"limit": 10', b"{'limit': 10}", b"limit=10", b'{"limit": 10}}', b"\xff\xfe{}"],
)
async def test_start_malformed_json(
    client: Client, org: Org, account: JsonObject, data: bytes
) -> None:
    response = await post_raw(client, org, account, data, "application/json")

    await read_problem(response, 400, "invalid_json")


async def test_start_deeply_nested_json(client: Client, org: Org, account: JsonObject) -> None:
    data = b'{"limit": ' + b"[" * 5000 + b"]" * 5000 + b"}"

    response = await post_raw(client, org, account, data, "application/json")

    await read_problem(response, 400, "invalid_json")


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", None],
)
async def test_start_non_json_body(
    client: Client, org: Org, account: JsonObject, content_type: str | None
) -> None:
    response = await post_raw(client, org, account, b'{"limit": 10}', content_type)

    await read_problem(response, 415, "unsupported_media_type")


async def test_start_json_charset_accepted(client: Client, org: Org, account: JsonObject) -> None:
    response = await post_raw(
        client, org, account, b'{"limit": 7}', "application/json; charset=utf-8"
    )

    assert response.status == 202
    job = await response.json()
    assert job["limit"] == 7


@pytest.mark.parametrize("document", [[], [{"limit": 10}], "limit", 10, True])
async def test_start_body_not_object(
    client: Client, org: Org, account: JsonObject, document: Any
) -> None:
    response = await post_raw(client, org, account, json.dumps(document), "application/json")

    errors = await read_validation(response)
    assert field_codes(errors) == [(None, "invalid_type")]


def _padded(size: int) -> bytes:
    """Return a valid body of exactly `size` bytes, padded with JSON whitespace."""
    head, tail = b'{"limit": 10', b"}"
    return head + b" " * (size - len(head) - len(tail)) + tail


async def test_start_body_at_limit(client: Client, org: Org, account: JsonObject) -> None:
    response = await post_raw(client, org, account, _padded(64 * 1024), "application/json")

    assert response.status == 202, await response.text()
    job = await response.json()
    assert job["limit"] == 10


async def test_start_body_over_limit(client: Client, org: Org, account: JsonObject) -> None:
    response = await post_raw(client, org, account, _padded(64 * 1024 + 1), "application/json")

    await read_problem(response, 413, "payload_too_large")


@pytest.mark.parametrize("size", [64 * 1024 + 1, 2 * 1024 * 1024])
async def test_start_chunked_over_limit(
    client: Client, org: Org, account: JsonObject, size: int
) -> None:
    body = _padded(size)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    response = await post_raw(client, org, account, chunks(), "application/json")

    await read_problem(response, 413, "payload_too_large")


async def test_start_unknown_account(client: Client, org: Org) -> None:
    response = await client.post(
        imports_url("0b0e4b58-0000-4000-8000-000000000000"), json={}, headers=org.test
    )

    await read_problem(response, 404, "not_found")


async def test_start_disconnected_account(client: Client, org: Org, account: JsonObject) -> None:
    await client.delete(f"{ACCOUNTS}/{account['id']}", headers=org.test)

    response = await client.post(imports_url(account["id"]), json={}, headers=org.test)

    body = await read_problem(response, 409, "conflict")
    assert "disconnected" in body["detail"]


# --- List and get ----------------------------------------------------------------------


async def test_list_newest_first(client: Client, org: Org, account: JsonObject) -> None:
    created = [await create_import(client, org.test, account["id"]) for _ in range(3)]

    page = await read_page(await client.get(imports_url(account["id"]), headers=org.test))

    assert page["data"] == list(reversed(created))
    assert page["next_cursor"] is None


async def test_list_only_this_account(client: Client, org: Org, account: JsonObject) -> None:
    other = await create_account(client, org.test, "bob")
    mine = await create_import(client, org.test, account["id"])
    await create_import(client, org.test, other["id"])

    page = await read_page(await client.get(imports_url(account["id"]), headers=org.test))

    assert [job["id"] for job in page["data"]] == [mine["id"]]


async def test_list_pages_cover_all(client: Client, org: Org, account: JsonObject) -> None:
    created = [await create_import(client, org.test, account["id"]) for _ in range(5)]

    for limit in (1, 2, 5):
        walked = await walk_pages(client, imports_url(account["id"]), org.test, limit=limit)

        assert [job["id"] for job in walked] == [job["id"] for job in reversed(created)]


async def test_list_pages_equal_timestamps(
    client: Client, org: Org, account: JsonObject, pool: db.Pool
) -> None:
    created = [await create_import(client, org.test, account["id"]) for _ in range(5)]
    # Give every job the same created_at, so only the id orders them.
    await pool.execute("UPDATE import_jobs SET created_at = '2026-01-01T00:00:00Z'")

    walked = await walk_pages(client, imports_url(account["id"]), org.test, limit=2)

    assert [job["id"] for job in walked] == sorted((job["id"] for job in created), reverse=True)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"limit": "0"}, [("limit", "out_of_range")]),
        ({"limit": "101"}, [("limit", "out_of_range")]),
        ({"limit": "ten"}, [("limit", "invalid_type")]),
        ({"status": "pending"}, [("status", "unknown_field")]),
    ],
)
async def test_list_invalid_query(
    client: Client,
    org: Org,
    account: JsonObject,
    params: dict[str, str],
    expected: list[tuple[str, str]],
) -> None:
    response = await client.get(imports_url(account["id"]), params=params, headers=org.test)

    errors = await read_validation(response)
    assert field_codes(errors) == expected


async def test_list_tampered_cursor(client: Client, org: Org, account: JsonObject) -> None:
    response = await client.get(
        imports_url(account["id"]), params={"cursor": "eyJ4IjoxfQ.AAAA"}, headers=org.test
    )

    await read_problem(response, 400, "invalid_cursor")


async def test_list_unknown_account(client: Client, org: Org) -> None:
    response = await client.get(
        imports_url("0b0e4b58-0000-4000-8000-000000000000"), headers=org.test
    )

    await read_problem(response, 404, "not_found")


async def test_get_unknown_import(client: Client, org: Org, account: JsonObject) -> None:
    response = await client.get(f"{imports_url(account['id'])}/imp_missing", headers=org.test)

    await read_problem(response, 404, "not_found")


async def test_get_import_other_account(client: Client, org: Org, account: JsonObject) -> None:
    job = await create_import(client, org.test, account["id"])
    other = await create_account(client, org.test, "bob")

    response = await client.get(f"{imports_url(other['id'])}/{job['id']}", headers=org.test)

    await read_problem(response, 404, "not_found")


# --- Cancel ----------------------------------------------------------------------------


async def test_cancel_pending_fails_job(
    client: Client, org: Org, account: JsonObject, pool: db.Pool
) -> None:
    job = await create_import(client, org.test, account["id"])

    response = await client.post(
        f"{imports_url(account['id'])}/{job['id']}/cancel", headers=org.test
    )

    assert response.status == 200
    canceled = await response.json()
    assert canceled["id"] == job["id"]
    assert canceled["status"] == "failed"
    assert "canceled" in canceled["error_message"]
    assert TIMESTAMP.match(canceled["finished_at"])
    fetched = await (
        await client.get(f"{imports_url(account['id'])}/{job['id']}", headers=org.test)
    ).json()
    assert fetched == canceled


async def test_cancel_records_failed_event(
    client: Client, org: Org, account: JsonObject, pool: db.Pool
) -> None:
    job = await create_import(client, org.test, account["id"])

    await client.post(f"{imports_url(account['id'])}/{job['id']}/cancel", headers=org.test)

    rows = await pool.fetch("SELECT type, body FROM webhook_events")
    assert [row["type"] for row in rows] == ["import.failed"]
    event = json.loads(rows[0]["body"])
    assert event["data"]["id"] == job["id"]
    assert event["data"]["status"] == "failed"


async def test_cancel_finished_conflict(client: Client, org: Org, account: JsonObject) -> None:
    job = await create_import(client, org.test, account["id"])
    url = f"{imports_url(account['id'])}/{job['id']}/cancel"
    await client.post(url, headers=org.test)

    response = await client.post(url, headers=org.test)

    await read_problem(response, 409, "conflict")


async def test_cancel_completed_conflict(
    client: Client, org: Org, account: JsonObject, pool: db.Pool
) -> None:
    job = await create_import(client, org.test, account["id"])
    await pool.execute(
        "UPDATE import_jobs SET status = 'completed', imported_count = 0,"
        " started_at = now(), finished_at = now() WHERE id = $1",
        job["id"],
    )

    response = await client.post(
        f"{imports_url(account['id'])}/{job['id']}/cancel", headers=org.test
    )

    await read_problem(response, 409, "conflict")
    fetched = await (
        await client.get(f"{imports_url(account['id'])}/{job['id']}", headers=org.test)
    ).json()
    assert fetched["status"] == "completed"


async def test_cancel_unknown_import(client: Client, org: Org, account: JsonObject) -> None:
    response = await client.post(
        f"{imports_url(account['id'])}/imp_missing/cancel", headers=org.test
    )

    await read_problem(response, 404, "not_found")


async def test_cancel_other_account_import(client: Client, org: Org, account: JsonObject) -> None:
    job = await create_import(client, org.test, account["id"])
    other = await create_account(client, org.test, "bob")

    response = await client.post(f"{imports_url(other['id'])}/{job['id']}/cancel", headers=org.test)

    await read_problem(response, 404, "not_found")
    fetched = await (
        await client.get(f"{imports_url(account['id'])}/{job['id']}", headers=org.test)
    ).json()
    assert fetched["status"] == "pending"
