"""Input a client controls that must not break storage or the logs."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from postfuze_imports.logs import TextFormatter
from tests.api_support import (
    ACCOUNTS,
    account_body,
    create_account,
    create_import,
    field_codes,
    imports_url,
    read_problem,
    read_validation,
)
from tests.conftest import Org

Client = TestClient[Any, Any]


@pytest.mark.parametrize(
    "username",
    ["nul\u0000inside", "lone \ud800 surrogate"],
)
async def test_body_unstorable_text_rejected(client: Client, org: Org, username: str) -> None:
    body = account_body("x")
    body["username"] = username
    # json.dumps escapes both characters, so the JSON itself is valid.
    response = await client.post(ACCOUNTS, json=body, headers=org.test)

    errors = await read_validation(response)
    assert field_codes(errors) == [("username", "invalid_characters")]


async def test_nested_unstorable_text_names_path(client: Client, org: Org) -> None:
    body = account_body("x")
    body["credentials"] = {"access_token": "ok", "refresh_token": "a\u0000b"}

    response = await client.post(ACCOUNTS, json=body, headers=org.test)

    errors = await read_validation(response)
    assert field_codes(errors) == [("credentials.refresh_token", "invalid_characters")]


async def test_query_nul_rejected(client: Client, org: Org) -> None:
    response = await client.get(f"{ACCOUNTS}?tenant_id=a%00b", headers=org.test)

    errors = await read_validation(response)
    assert field_codes(errors) == [("tenant_id", "invalid_characters")]


async def test_path_nul_rejected(client: Client, org: Org) -> None:
    account = await create_account(client, org.test)

    response = await client.get(imports_url(account["id"]) + "/imp_%00", headers=org.test)

    await read_problem(response, 400, "bad_request")


async def test_path_newline_logged_escaped(
    client: Client, org: Org, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    await client.get("/api/v1/x%0aFORGED-LINE", headers=org.test)

    messages = [record.getMessage() for record in caplog.records]
    assert any("%0aforged-line" in message.lower() for message in messages)
    assert not any("\nFORGED-LINE" in message for message in messages)


def test_text_formatter_one_line() -> None:
    record = logging.LogRecord("test", logging.INFO, __file__, 1, "a\nb\r\x00c", None, None)
    record.detail = "x\ny"

    line = TextFormatter().format(record)

    assert "\n" not in line
    assert "a\\nb\\r\\x00c" in line
    assert "detail=x\\ny" in line


async def test_cancel_pending_has_no_start(client: Client, org: Org) -> None:
    account = await create_account(client, org.test)
    job = await create_import(client, org.test, account["id"])

    response = await client.post(
        imports_url(account["id"]) + f"/{job['id']}/cancel", headers=org.test
    )

    body = await response.json()
    assert body["status"] == "failed"
    assert body["started_at"] is None
    assert body["finished_at"] is not None


async def test_live_unsupported_platform_import(client: Client, org: Org) -> None:
    account = await create_account(client, org.live)

    response = await client.post(imports_url(account["id"]), json={}, headers=org.live)

    errors = await read_validation(response)
    assert field_codes(errors) == [(None, "unsupported_platform")]
    assert "test mode" in errors[0]["message"]


async def test_unknown_field_suggests_name(client: Client, org: Org) -> None:
    account = await create_account(client, org.test)

    response = await client.post(
        imports_url(account["id"]), json={"fromDate": "2026-01-01"}, headers=org.test
    )

    errors = await read_validation(response)
    assert field_codes(errors) == [("fromDate", "unknown_field")]
    assert "Did you mean 'from_date'?" in errors[0]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"to_date": "9999-12-31"},
        {"from_date": "0001-01-01T00:00:00+02:00"},
        {"from_date": "1899-12-31"},
    ],
)
async def test_window_outside_range_rejected(
    client: Client, org: Org, body: dict[str, str]
) -> None:
    account = await create_account(client, org.test)

    response = await client.post(imports_url(account["id"]), json=body, headers=org.test)

    errors = await read_validation(response)
    assert [code for _, code in field_codes(errors)] == ["invalid_format"]
    assert "between 1900-01-01 and 9999-12-30" in errors[0]["message"]


async def test_token_expiry_outside_range_rejected(client: Client, org: Org) -> None:
    body = account_body("range")
    body["credentials"] = {"access_token": "t", "token_expires_at": "0001-01-01T00:00:00+02:00"}

    response = await client.post(ACCOUNTS, json=body, headers=org.test)

    errors = await read_validation(response)
    assert field_codes(errors) == [("credentials.token_expires_at", "out_of_range")]


async def test_timestamps_keep_four_digit_year(client: Client, org: Org) -> None:
    account = await create_account(client, org.test)

    job = await create_import(
        client, org.test, account["id"], {"from_date": "1900-05-08T07:32:52.5+00:00"}
    )

    assert job["from_date"] == "1900-05-08T07:32:52.500Z"
