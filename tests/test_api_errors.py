"""Problem Details (RFC 9457) bodies for routing errors, validation and unhandled errors."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web

from postfuze_imports import db
from postfuze_imports.api.app import create_app
from postfuze_imports.settings import Settings
from tests.api_support import (
    ACCOUNTS,
    POSTS,
    Client,
    account_body,
    read_problem,
    read_validation,
)
from tests.conftest import Org


async def test_unknown_route_not_found(client: Client) -> None:
    response = await client.get("/no-such-route")

    await read_problem(response, 404, "not_found")


async def test_unknown_api_route_not_found(client: Client, org: Org) -> None:
    response = await client.get("/api/v1/no-such-route", headers=org.test)

    await read_problem(response, 404, "not_found")


async def test_wrong_method_not_allowed(client: Client, org: Org) -> None:
    response = await client.delete(POSTS, headers=org.test)

    body = await read_problem(response, 405, "method_not_allowed")
    assert "DELETE" in body["detail"]
    assert "GET" in response.headers["Allow"]


async def test_wrong_method_outside_api(client: Client) -> None:
    response = await client.put("/health")

    await read_problem(response, 405, "method_not_allowed")


async def test_request_id_on_every_response(client: Client, org: Org) -> None:
    ok = await client.get(ACCOUNTS, headers=org.test)
    missing = await client.get("/no-such-route")

    assert ok.headers["Request-Id"].startswith("req_")
    assert missing.headers["Request-Id"].startswith("req_")
    assert ok.headers["Request-Id"] != missing.headers["Request-Id"]


async def test_request_id_in_request_logs(
    client: Client, org: Org, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    response = await client.get(ACCOUNTS, headers=org.test)

    request_id = response.headers["Request-Id"]
    stamped = [
        record for record in caplog.records if getattr(record, "request_id", None) == request_id
    ]
    assert stamped
    assert any("/api/v1/social-accounts" in record.getMessage() for record in stamped)


async def test_validation_item_per_problem(client: Client, org: Org) -> None:
    body = account_body(platform="myspace", username="", credentials={"access_token": 5})
    body["nickname"] = "al"

    response = await client.post(ACCOUNTS, json=body, headers=org.test)

    errors = await read_validation(response)
    fields = sorted(item["field"] for item in errors)
    assert fields == ["credentials.access_token", "nickname", "platform", "username"]


async def test_body_problem_field_null(client: Client, org: Org) -> None:
    response = await client.post(ACCOUNTS, json=["not", "an", "object"], headers=org.test)

    errors = await read_validation(response)
    assert [item["field"] for item in errors] == [None]
    assert errors[0]["code"] == "invalid_type"


@pytest.fixture
async def failing_client(
    aiohttp_client: Any, settings: Settings, pool: db.Pool, redis_flushed: None
) -> Client:
    """A client of an app with one extra route that raises an unexpected error."""

    async def fail(request: web.Request) -> web.Response:
        raise RuntimeError("connection to db.internal:5432 failed, password hunter2")

    app = create_app(settings)
    app.router.add_get("/test-only/fail", fail)
    result: Client = await aiohttp_client(app)
    return result


async def test_internal_error_hides_traceback(
    failing_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="postfuze_imports.api.problems"):
        response = await failing_client.get("/test-only/fail")

    body = await read_problem(response, 500, "internal_error")
    text = await response.text()
    assert "Traceback" not in text
    assert "RuntimeError" not in text
    assert "hunter2" not in text
    assert "db.internal" not in text
    assert response.headers["Request-Id"] in body["detail"]
    logged = [record for record in caplog.records if record.exc_info]
    assert len(logged) == 1
    exc_info = logged[0].exc_info
    assert exc_info is not None
    assert "hunter2" in str(exc_info[1])
