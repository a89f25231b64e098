"""Real responses match the schemas that /openapi.json documents for them.

Each JSON body must have exactly the properties of its documented schema, at every
level, with values of the documented type. Null is allowed only where the schema sets
`nullable`. A field added to a response without documenting it, or documented without
being sent, fails here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from pytest_aiohttp import AiohttpServer

from postfuze_imports import db
from postfuze_imports.settings import Settings
from postfuze_imports.webhooks.dispatcher import Dispatcher
from postfuze_imports.webhooks.events import serialize_body
from tests.api_support import (
    ACCOUNTS,
    POSTS,
    Client,
    JsonObject,
    account_body,
    imports_url,
    insert_post,
)
from tests.conftest import Org

WEBHOOKS = "/api/v1/webhooks"
JSON = "application/json"


@pytest.fixture
async def document(client: Client) -> JsonObject:
    response = await client.get("/openapi.json")
    assert response.status == 200
    body: JsonObject = await response.json()
    return body


class Receiver:
    """A webhook receiver on 127.0.0.1 that keeps every event body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        return web.Response(status=204)


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> Receiver:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    receiver.url = f"http://127.0.0.1:{server.port}/hook"
    return receiver


def resolve(document: JsonObject, schema: JsonObject) -> JsonObject:
    """Follow `$ref`s to the schema they name."""
    while "$ref" in schema:
        reference: str = schema["$ref"]
        assert reference.startswith("#/"), reference
        target: Any = document
        for part in reference[2:].split("/"):
            target = target[part]
        schema = target
    return schema


def check_value(document: JsonObject, value: Any, schema: JsonObject, where: str) -> None:
    """Assert that `value` matches `schema`. `where` names the value in messages."""
    schema = resolve(document, schema)
    if "oneOf" in schema:
        discriminator = schema["discriminator"]
        chosen = discriminator["mapping"][value[discriminator["propertyName"]]]
        check_value(document, value, {"$ref": chosen}, where)
        return
    if value is None:
        assert schema.get("nullable") is True, f"{where} is null but not nullable"
        return
    kind = schema.get("type")
    if kind == "object":
        check_object(document, value, schema, where)
    elif kind == "array":
        assert isinstance(value, list), f"{where} is not an array: {value!r}"
        for index, item in enumerate(value):
            check_value(document, item, schema["items"], f"{where}.{index}")
    elif kind == "string":
        assert isinstance(value, str), f"{where} is not a string: {value!r}"
        if "enum" in schema:
            assert value in schema["enum"], f"{where} = {value!r} is not in {schema['enum']}"
    elif kind == "integer":
        assert isinstance(value, int), f"{where} is not an integer: {value!r}"
        assert not isinstance(value, bool), f"{where} is a boolean, not an integer"
    elif kind == "boolean":
        assert isinstance(value, bool), f"{where} is not a boolean: {value!r}"
    else:
        raise AssertionError(f"{where}: the test does not know schema type {kind!r}")


def check_object(document: JsonObject, value: Any, schema: JsonObject, where: str) -> None:
    assert isinstance(value, dict), f"{where} is not an object: {value!r}"
    properties: JsonObject | None = schema.get("properties")
    if properties is None:
        # A free-form map, such as a post's metrics or the health checks.
        values = schema.get("additionalProperties", {})
        for key, item in value.items():
            if values:
                check_value(document, item, values, f"{where}.{key}")
        return
    undocumented = sorted(set(value) - set(properties))
    missing = sorted(set(properties) - set(value))
    assert undocumented == [], f"{where} sends undocumented properties {undocumented}"
    assert missing == [], f"{where} lacks documented properties {missing}"
    for key, item in value.items():
        check_value(document, item, properties[key], f"{where}.{key}")


async def check_response(
    document: JsonObject, response: ClientResponse, method: str, path: str, status: int
) -> JsonObject:
    """Check a response against the schema documented for `method path` and `status`."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == JSON
    operation = document["paths"][path][method]
    documented = operation["responses"][str(status)]
    schema = documented["content"][JSON]["schema"]
    body: JsonObject = json.loads(text)
    check_value(document, body, schema, f"{method.upper()} {path} {status}")
    return body


def event_schema(document: JsonObject) -> JsonObject:
    callback = document["paths"][WEBHOOKS]["post"]["callbacks"]["event"]
    request_body = callback["{$request.body#/url}"]["post"]["requestBody"]
    schema: JsonObject = request_body["content"][JSON]["schema"]
    return schema


async def test_health_matches(client: Client, document: JsonObject) -> None:
    response = await client.get("/health")

    body = await check_response(document, response, "get", "/health", 200)
    assert body["ok"] is True


async def test_accounts_match(client: Client, org: Org, document: JsonObject) -> None:
    created = await client.post(ACCOUNTS, json=account_body(), headers=org.live)
    account = await check_response(document, created, "post", ACCOUNTS, 201)

    fetched = await client.get(f"{ACCOUNTS}/{account['id']}", headers=org.live)
    await check_response(document, fetched, "get", f"{ACCOUNTS}/{{account_id}}", 200)

    listed = await client.get(ACCOUNTS, headers=org.live)
    page = await check_response(document, listed, "get", ACCOUNTS, 200)
    assert len(page["data"]) == 1


async def test_imports_match(client: Client, org: Org, document: JsonObject) -> None:
    created = await client.post(ACCOUNTS, json=account_body(), headers=org.test)
    account_id = (await created.json())["id"]
    jobs_path = f"{ACCOUNTS}/{{account_id}}/imports"

    response = await client.post(
        imports_url(account_id),
        json={"from_date": "2026-01-01", "to_date": "2026-01-31T12:00:00+02:00", "limit": 5},
        headers=org.test,
    )
    job = await check_response(document, response, "post", jobs_path, 202)

    fetched = await client.get(f"{imports_url(account_id)}/{job['id']}", headers=org.test)
    await check_response(document, fetched, "get", f"{jobs_path}/{{import_id}}", 200)

    listed = await client.get(imports_url(account_id), headers=org.test)
    page = await check_response(document, listed, "get", jobs_path, 200)
    assert len(page["data"]) == 1


async def test_import_event_matches(client: Client, org: Org, document: JsonObject) -> None:
    created = await client.post(ACCOUNTS, json=account_body(), headers=org.test)
    account_id = (await created.json())["id"]
    response = await client.post(imports_url(account_id), json={}, headers=org.test)
    job = await response.json()

    # Import events carry the job object that the API returns.
    for event_type in ("import.completed", "import.failed"):
        body = serialize_body("evt_0", event_type, datetime.now(UTC), job)

        check_value(document, json.loads(body), event_schema(document), event_type)


async def test_posts_match(client: Client, org: Org, pool: db.Pool, document: JsonObject) -> None:
    created = await client.post(ACCOUNTS, json=account_body(), headers=org.test)
    account = await created.json()
    post_id = await insert_post(pool, org.id, account, published_at=datetime.now(UTC))

    listed = await client.get(POSTS, headers=org.test)
    page = await check_response(document, listed, "get", POSTS, 200)
    assert len(page["data"]) == 1

    fetched = await client.get(f"{POSTS}/{post_id}", headers=org.test)
    await check_response(document, fetched, "get", f"{POSTS}/{{post_id}}", 200)

    by_account = await client.get(f"{ACCOUNTS}/{account['id']}/posts", headers=org.test)
    await check_response(document, by_account, "get", f"{ACCOUNTS}/{{account_id}}/posts", 200)


async def test_webhooks_match(
    client: Client,
    org: Org,
    pool: db.Pool,
    settings: Settings,
    receiver: Receiver,
    document: JsonObject,
) -> None:
    endpoint_path = f"{WEBHOOKS}/{{endpoint_id}}"
    deliveries_path = f"{endpoint_path}/deliveries"

    created = await client.post(
        WEBHOOKS,
        json={"url": receiver.url, "events": ["import.completed"], "description": "CRM"},
        headers=org.test,
    )
    endpoint = await check_response(document, created, "post", WEBHOOKS, 201)
    endpoint_url = f"{WEBHOOKS}/{endpoint['id']}"

    fetched = await client.get(endpoint_url, headers=org.test)
    await check_response(document, fetched, "get", endpoint_path, 200)

    updated = await client.patch(endpoint_url, json={"description": "CRM v2"}, headers=org.test)
    await check_response(document, updated, "patch", endpoint_path, 200)

    listed = await client.get(WEBHOOKS, headers=org.test)
    page = await check_response(document, listed, "get", WEBHOOKS, 200)
    assert len(page["data"]) == 1

    sent = await client.post(f"{endpoint_url}/test", headers=org.test)
    delivery = await check_response(document, sent, "post", f"{endpoint_path}/test", 202)

    dispatcher = Dispatcher.create(pool, settings)
    try:
        assert await dispatcher.dispatch_due() == 1
    finally:
        await dispatcher.close()

    assert len(receiver.bodies) == 1
    check_value(document, json.loads(receiver.bodies[0]), event_schema(document), "event")

    deliveries = await client.get(f"{endpoint_url}/deliveries", headers=org.test)
    page = await check_response(document, deliveries, "get", deliveries_path, 200)
    # The attempt list is not empty, so the attempt schema was checked too.
    assert len(page["data"]) == 1
    assert len(page["data"][0]["attempts"]) == 1

    retried = await client.post(
        f"{endpoint_url}/deliveries/{delivery['id']}/retry", headers=org.test
    )
    await check_response(document, retried, "post", f"{deliveries_path}/{{delivery_id}}/retry", 202)
