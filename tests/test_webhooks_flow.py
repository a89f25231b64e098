"""Webhooks end to end: an import ends in a worker, a signed event reaches a receiver."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient
from standardwebhooks.webhooks import Webhook

from postfuze_imports.devstack.stack import free_port
from tests.conftest import Org
from tests.support import wait_for

Client = TestClient[Any, Any]


class Receiver:
    """A receiver on 127.0.0.1 that keeps each delivery with its verified body."""

    def __init__(self) -> None:
        self.secret: str | None = None
        self.events: list[dict[str, Any]] = []
        self.webhook_ids: list[str] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        assert self.secret is not None
        # Raises when the signature does not match the exact bytes received.
        Webhook(self.secret).verify(body, dict(request.headers))
        self.events.append(json.loads(body))
        self.webhook_ids.append(request.headers["webhook-id"])
        return web.Response(status=204)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver.port).start()
    yield receiver
    await runner.cleanup()


async def subscribe(client: Client, org: Org, receiver: Receiver) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/webhooks",
        json={"url": receiver.url, "events": ["import.completed", "import.failed"]},
        headers=org.test,
    )
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    receiver.secret = body["signing_secret"]
    return body


async def import_for(client: Client, org: Org, username: str) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/social-accounts",
        json={
            "platform": "threads",
            "username": username,
            "network_unique_id": username,
            "credentials": {"access_token": "t"},
        },
        headers=org.test,
    )
    account = await response.json()
    response = await client.post(
        f"/api/v1/social-accounts/{account['id']}/imports", json={"limit": 150}, headers=org.test
    )
    assert response.status == 202
    job: dict[str, Any] = await response.json()
    return job


async def test_completed_import_sends_one_event(
    client: Client, org: Org, receiver: Receiver, start_worker: Any
) -> None:
    endpoint = await subscribe(client, org, receiver)
    start_worker()

    job = await import_for(client, org, "café-東京")

    async def arrived() -> bool:
        return bool(receiver.events)

    await wait_for(arrived, timeout=60, message="the import.completed event")
    event = receiver.events[0]
    assert event["type"] == "import.completed"
    assert event["data"]["id"] == job["id"]
    assert event["data"]["status"] == "completed"
    assert event["data"]["imported_count"] == 150
    assert event["id"] == receiver.webhook_ids[0]
    assert event["id"].startswith("evt_")
    response = await client.get(f"/api/v1/webhooks/{endpoint['id']}", headers=org.test)
    assert "signing_secret" not in await response.json()
    deliveries = await (
        await client.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries", headers=org.test)
    ).json()
    assert deliveries["data"][0]["status"] == "succeeded"
    assert len(receiver.events) == 1


async def test_failed_import_sends_failed_event(
    client: Client, org: Org, receiver: Receiver, start_worker: Any
) -> None:
    await subscribe(client, org, receiver)
    start_worker()

    job = await import_for(client, org, "will-fail")

    async def arrived() -> bool:
        return bool(receiver.events)

    await wait_for(arrived, timeout=60, message="the import.failed event")
    event = receiver.events[0]
    assert event["type"] == "import.failed"
    assert event["data"]["id"] == job["id"]
    assert event["data"]["error_message"]


async def test_webhook_test_event_arrives(
    client: Client, org: Org, receiver: Receiver, start_worker: Any
) -> None:
    endpoint = await subscribe(client, org, receiver)
    start_worker()

    response = await client.post(f"/api/v1/webhooks/{endpoint['id']}/test", headers=org.test)

    assert response.status == 202

    async def arrived() -> bool:
        return bool(receiver.events)

    await wait_for(arrived, timeout=60, message="the webhook.test event")
    assert receiver.events[0]["type"] == "webhook.test"


async def test_other_org_endpoint_not_found(
    client: Client, org: Org, other_org: Org, receiver: Receiver
) -> None:
    endpoint = await subscribe(client, org, receiver)

    response = await client.get(f"/api/v1/webhooks/{endpoint['id']}", headers=other_org.test)

    assert response.status == 404


async def test_listener_sends_without_wakeup(
    client: Client, org: Org, receiver: Receiver, pool: Any, start_worker: Any
) -> None:
    from postfuze_imports.webhooks import events

    await subscribe(client, org, receiver)
    # A sweep far apart, so only the notification at commit can start the delivery soon.
    worker = start_worker({"POSTFUZE_SWEEP_INTERVAL_SECONDS": "59"})

    async def swept() -> bool:
        # arq logs "← name" when a job ends: here the dispatcher run that the startup
        # sweep woke, after which nothing wakes the dispatcher for a minute.
        return "← dispatch_webhooks" in worker.log_text()

    await wait_for(swept, timeout=30, message="the worker's first sweep")
    async with pool.acquire() as connection, connection.transaction():
        await events.record_event(
            connection,
            organization_id=org.id,
            livemode=False,
            event_type="import.completed",
            data={"id": "imp_listener"},
        )

    async def arrived() -> bool:
        return bool(receiver.events)

    await wait_for(arrived, timeout=5, message="the event sent on notification")
    assert receiver.events[0]["data"] == {"id": "imp_listener"}
