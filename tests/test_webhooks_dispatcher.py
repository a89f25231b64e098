"""Integration tests of the webhook dispatcher: real PostgreSQL, real HTTP receivers on
127.0.0.1 that verify every delivery with the `standardwebhooks` package.

Time-dependent behavior (retry schedule, Retry-After, the 5-day rule, claim leases) runs
on a settable clock, so no test waits for a delay to pass.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from aiohttp import web

from postfuze_imports.webhooks import endpoints
from postfuze_imports.webhooks.dispatcher import EXCERPT_BYTES, USER_AGENT
from postfuze_imports.webhooks.events import record_event
from postfuze_imports.webhooks.schedule import JITTER, MAX_ATTEMPTS, RETRY_DELAYS
from tests.webhooks_support import (
    SECRET_KEY,
    FakeClock,
    WebhookHarness,
    create_organization,
    status_reply,
)

pytest_plugins = ["tests.webhooks_fixtures"]


async def test_event_arrives_once_with_valid_signature(webhooks: WebhookHarness) -> None:
    receiver = webhooks.receiver
    await webhooks.add_endpoint()
    event_id = await webhooks.record({"id": "imp_0001", "imported_count": 3})
    stored_body = await webhooks.pool.fetchval(
        "SELECT body FROM webhook_events WHERE id = $1", event_id
    )
    dispatcher = webhooks.dispatcher()

    sent_after = int(time.time())
    assert await dispatcher.dispatch_due() == 1
    assert await dispatcher.dispatch_due() == 0

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.verification_error is None
    assert request.body == stored_body.encode("utf-8")
    assert request.headers["webhook-id"] == event_id
    assert sent_after <= int(request.headers["webhook-timestamp"]) <= int(time.time())
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert list(request.payload) == ["id", "type", "created_at", "data"]
    assert request.payload["id"] == event_id
    assert request.payload["type"] == "import.completed"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", request.payload["created_at"])
    assert request.payload["data"] == {"id": "imp_0001", "imported_count": 3}

    delivery = await webhooks.delivery_of(event_id)
    assert delivery["status"] == "succeeded"
    assert delivery["attempt_count"] == 1
    assert delivery["last_status_code"] == 200
    assert delivery["next_attempt_at"] is None
    assert delivery["claim_token"] is None
    attempts = await webhooks.attempts_of(delivery["id"])
    assert [attempt["status_code"] for attempt in attempts] == [200]
    assert attempts[0]["response_excerpt"] == "ok"
    assert attempts[0]["error"] is None


async def test_non_ascii_body_signed_byte_exact(webhooks: WebhookHarness) -> None:
    await webhooks.add_endpoint()
    text = "Café 東京 🎉"
    event_id = await webhooks.record({"note": text, "nested": {"k": [text]}})

    assert await webhooks.dispatcher().dispatch_due() == 1

    request = webhooks.receiver.requests[0]
    assert request.verification_error is None
    # Sent as UTF-8, not as \u escapes.
    assert text.encode("utf-8") in request.body
    assert b"\\u" not in request.body
    assert request.payload["data"] == {"note": text, "nested": {"k": [text]}}
    stored = await webhooks.pool.fetchval("SELECT body FROM webhook_events WHERE id = $1", event_id)
    assert request.body == stored.encode("utf-8")


async def test_receiver_500_then_200_retries_same_id(webhooks: WebhookHarness) -> None:
    receiver = webhooks.receiver
    created = await webhooks.add_endpoint()
    receiver.replies = [status_reply(500, "database down"), status_reply(204)]
    event_id = await webhooks.record()
    clock = FakeClock()
    dispatcher = webhooks.dispatcher(clock=clock)

    assert await dispatcher.dispatch_due() == 1
    delivery = await webhooks.delivery_of(event_id)
    assert delivery["status"] == "pending"
    assert delivery["attempt_count"] == 1
    assert delivery["last_status_code"] == 500
    assert delivery["last_error"] == "HTTP 500: expected a 2xx status"
    first_delay = delivery["next_attempt_at"] - clock()
    assert RETRY_DELAYS[0] * (1 - JITTER) <= first_delay <= RETRY_DELAYS[0] * (1 + JITTER)
    assert (await webhooks.endpoint_row(created.endpoint.id))["failing_since"] == clock()
    # Not due yet: nothing is claimed.
    assert await dispatcher.dispatch_due() == 0

    clock.set(delivery["next_attempt_at"])
    assert await dispatcher.dispatch_due() == 1

    assert len(receiver.requests) == 2
    assert [request.verification_error for request in receiver.requests] == [None, None]
    assert [request.headers["webhook-id"] for request in receiver.requests] == [event_id] * 2
    assert receiver.requests[0].body == receiver.requests[1].body
    delivery = await webhooks.delivery_of(event_id)
    assert delivery["status"] == "succeeded"
    assert delivery["attempt_count"] == 2
    attempts = await webhooks.attempts_of(delivery["id"])
    assert [attempt["attempt_number"] for attempt in attempts] == [1, 2]
    assert [attempt["status_code"] for attempt in attempts] == [500, 204]
    assert attempts[0]["response_excerpt"] == "database down"
    assert (await webhooks.endpoint_row(created.endpoint.id))["failing_since"] is None


async def test_hanging_receiver_times_out(webhooks: WebhookHarness) -> None:
    await webhooks.add_endpoint()
    webhooks.receiver.replies = [webhooks.receiver.blocking_reply()]
    event_id = await webhooks.record()
    dispatcher = webhooks.dispatcher(webhook_timeout_seconds=0.5)

    started = time.monotonic()
    assert await dispatcher.dispatch_due() == 1
    assert time.monotonic() - started < 5

    delivery = await webhooks.delivery_of(event_id)
    assert delivery["status"] == "pending"
    assert delivery["last_status_code"] is None
    assert delivery["last_error"] == "no response within 0.5 s"
    attempts = await webhooks.attempts_of(delivery["id"])
    assert len(attempts) == 1
    assert attempts[0]["status_code"] is None
    assert 500 <= attempts[0]["duration_ms"] < 5000


async def test_410_disables_endpoint(webhooks: WebhookHarness) -> None:
    receiver = webhooks.receiver
    created = await webhooks.add_endpoint()
    receiver.replies = [status_reply(410, "gone")]
    first = await webhooks.record()
    second = await webhooks.record()
    # One at a time, so the second delivery is still queued when the 410 arrives.
    dispatcher = webhooks.dispatcher(webhook_concurrency=1)

    assert await dispatcher.dispatch_due() == 1

    assert [request.headers["webhook-id"] for request in receiver.requests] == [first]
    endpoint = await webhooks.endpoint_row(created.endpoint.id)
    assert endpoint["enabled"] is False
    assert endpoint["disabled_reason"] == "gone"
    sent = await webhooks.delivery_of(first)
    assert sent["status"] == "failed"
    assert sent["last_status_code"] == 410
    queued = await webhooks.delivery_of(second)
    assert queued["status"] == "failed"
    assert queued["attempt_count"] == 0
    assert queued["last_error"] == "the endpoint was disabled because it answered 410 Gone"
    # A disabled endpoint receives no new events.
    third = await webhooks.record()
    count = await webhooks.pool.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE event_id = $1", third
    )
    assert count == 0


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_retry_after_sets_next_attempt(
    webhooks: WebhookHarness, status: int, form: str
) -> None:
    await webhooks.add_endpoint()
    clock = FakeClock()
    wait = timedelta(seconds=137)
    value = "137" if form == "seconds" else format_datetime(clock() + wait, usegmt=True)
    webhooks.receiver.replies = [status_reply(status, "slow down", {"Retry-After": value})]
    event_id = await webhooks.record()

    assert await webhooks.dispatcher(clock=clock).dispatch_due() == 1

    delivery = await webhooks.delivery_of(event_id)
    assert delivery["status"] == "pending"
    assert delivery["next_attempt_at"] == clock() + wait
    expected = f"HTTP {status}: expected a 2xx status; Retry-After asked for 137 s"
    assert delivery["last_error"] == expected


async def test_retry_after_capped_at_a_day(webhooks: WebhookHarness) -> None:
    await webhooks.add_endpoint()
    webhooks.receiver.replies = [status_reply(429, headers={"Retry-After": "31536000"})]
    event_id = await webhooks.record()
    clock = FakeClock()

    assert await webhooks.dispatcher(clock=clock).dispatch_due() == 1

    delivery = await webhooks.delivery_of(event_id)
    assert delivery["next_attempt_at"] == clock() + timedelta(hours=24)


async def test_redirect_is_failure_and_not_followed(webhooks: WebhookHarness) -> None:
    receiver = webhooks.receiver
    await webhooks.add_endpoint()
    target = receiver.url("/moved-here")
    receiver.replies = [status_reply(307, headers={"Location": target})]
    event_id = await webhooks.record()

    assert await webhooks.dispatcher().dispatch_due() == 1

    assert [request.path for request in receiver.requests] == ["/hook"]
    delivery = await webhooks.delivery_of(event_id)
    assert delivery["status"] == "pending"
    assert delivery["last_status_code"] == 307
    assert f"a redirect to {target}, which is not followed" in delivery["last_error"]


async def test_retry_schedule_then_failed(webhooks: WebhookHarness) -> None:
    receiver = webhooks.receiver
    await webhooks.add_endpoint()
    receiver.replies = [status_reply(500) for _ in range(MAX_ATTEMPTS)]
    event_id = await webhooks.record()
    clock = FakeClock()
    dispatcher = webhooks.dispatcher(clock=clock, seed=42)
    factors = []

    for attempt_number in range(1, MAX_ATTEMPTS):
        assert await dispatcher.dispatch_due() == 1
        delivery = await webhooks.delivery_of(event_id)
        assert delivery["status"] == "pending"
        assert delivery["attempt_count"] == attempt_number
        delay = delivery["next_attempt_at"] - clock()
        expected = RETRY_DELAYS[attempt_number - 1]
        assert expected * (1 - JITTER) <= delay <= expected * (1 + JITTER)
        factors.append(delay / expected)
        # One microsecond early, the delivery is not due.
        clock.set(delivery["next_attempt_at"] - timedelta(microseconds=1))
        assert await dispatcher.dispatch_due() == 0
        clock.set(delivery["next_attempt_at"])

    assert await dispatcher.dispatch_due() == 1
    delivery = await webhooks.delivery_of(event_id)
    assert delivery["status"] == "failed"
    assert delivery["attempt_count"] == MAX_ATTEMPTS
    assert delivery["next_attempt_at"] is None
    assert len(await webhooks.attempts_of(delivery["id"])) == MAX_ATTEMPTS
    assert len(receiver.requests) == MAX_ATTEMPTS
    assert all(request.verification_error is None for request in receiver.requests)
    assert {request.headers["webhook-id"] for request in receiver.requests} == {event_id}
    # Jitter varies each delay instead of scaling them all alike.
    assert len(set(factors)) == len(factors)


async def test_failing_for_five_days_disables_endpoint(webhooks: WebhookHarness) -> None:
    created = await webhooks.add_endpoint()
    webhooks.receiver.replies = [status_reply(500) for _ in range(10)]
    clock = FakeClock()
    started = clock()
    dispatcher = webhooks.dispatcher(clock=clock)

    await webhooks.record()
    assert await dispatcher.dispatch_due() == 1
    assert (await webhooks.endpoint_row(created.endpoint.id))["failing_since"] == started

    clock.advance(timedelta(days=4, hours=23))
    await webhooks.record()
    assert await dispatcher.dispatch_due() == 2
    endpoint = await webhooks.endpoint_row(created.endpoint.id)
    assert endpoint["enabled"] is True
    assert endpoint["failing_since"] == started

    clock.set(started + timedelta(days=5))
    last = await webhooks.record()
    assert await dispatcher.dispatch_due() == 3
    endpoint = await webhooks.endpoint_row(created.endpoint.id)
    assert endpoint["enabled"] is False
    assert endpoint["disabled_reason"] == "failing"
    assert (await webhooks.delivery_of(last))["status"] == "failed"
    pending = await webhooks.pool.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'"
    )
    assert pending == 0


async def test_success_restarts_failing_period(webhooks: WebhookHarness) -> None:
    created = await webhooks.add_endpoint()
    webhooks.receiver.replies = [status_reply(500), status_reply(200)] + [
        status_reply(500) for _ in range(3)
    ]
    clock = FakeClock()
    started = clock()
    dispatcher = webhooks.dispatcher(clock=clock, webhook_concurrency=1)

    await webhooks.record()
    assert await dispatcher.dispatch_due() == 1
    clock.advance(timedelta(days=4))
    await webhooks.record()
    # The new delivery (due first) succeeds, then the first one's retry fails again.
    assert await dispatcher.dispatch_due() == 2
    endpoint = await webhooks.endpoint_row(created.endpoint.id)
    assert endpoint["failing_since"] == started + timedelta(days=4)

    # Six days after the first failure, but only two after the success.
    clock.advance(timedelta(days=2))
    await webhooks.record()
    assert await dispatcher.dispatch_due() == 2
    endpoint = await webhooks.endpoint_row(created.endpoint.id)
    assert endpoint["enabled"] is True
    assert endpoint["failing_since"] == started + timedelta(days=4)


@pytest.mark.parametrize(
    ("host", "error"),
    [
        # An IP literal is rejected before any connection.
        ("127.0.0.1", "the URL is blocked by the outbound guard"),
        # A name is resolved, then rejected when the socket would connect.
        ("localhost", "the connection is blocked by the outbound guard"),
    ],
)
async def test_private_url_blocked_with_guard_on(
    webhooks: WebhookHarness, host: str, error: str
) -> None:
    # Created while private networks were allowed, sent with the guard on.
    await webhooks.add_endpoint(url=f"https://{host}:{webhooks.receiver.port}/hook")
    event_id = await webhooks.record()

    assert await webhooks.dispatcher(allow_private_networks=False).dispatch_due() == 1

    assert webhooks.receiver.requests == []
    delivery = await webhooks.delivery_of(event_id)
    assert delivery["status"] == "pending"
    assert delivery["last_status_code"] is None
    assert delivery["last_error"].startswith(error)
    attempts = await webhooks.attempts_of(delivery["id"])
    assert len(attempts) == 1
    assert attempts[0]["error"].startswith(error)


async def test_url_with_userinfo_blocked_at_send(webhooks: WebhookHarness) -> None:
    created = await webhooks.add_endpoint()
    # As if stored without the create-time check. aiohttp would send it as a header.
    await webhooks.pool.execute(
        "UPDATE webhook_endpoints SET url = $2 WHERE id = $1",
        created.endpoint.id,
        f"http://user:s3cr3t-pw@127.0.0.1:{webhooks.receiver.port}/hook",
    )
    event_id = await webhooks.record()

    assert await webhooks.dispatcher().dispatch_due() == 1

    assert webhooks.receiver.requests == []
    delivery = await webhooks.delivery_of(event_id)
    assert delivery["last_error"].startswith("the URL is blocked by the outbound guard")
    assert "s3cr3t-pw" not in delivery["last_error"]


async def test_response_excerpt_bounded_and_decoded(webhooks: WebhookHarness) -> None:
    await webhooks.add_endpoint()

    async def binary_reply(request: web.Request) -> web.StreamResponse:
        # 1023 ASCII bytes, then a 4-byte character cut by the limit, NUL bytes and more.
        body = b"x" * (EXCERPT_BYTES - 1) + "🎉".encode() + b"\x00" * 10 + b"y" * 5000
        return web.Response(status=500, body=body)

    webhooks.receiver.replies = [binary_reply]
    event_id = await webhooks.record()

    assert await webhooks.dispatcher().dispatch_due() == 1

    delivery = await webhooks.delivery_of(event_id)
    excerpt = (await webhooks.attempts_of(delivery["id"]))[0]["response_excerpt"]
    assert excerpt == "x" * (EXCERPT_BYTES - 1) + "\ufffd"


async def test_response_excerpt_nul_replaced(webhooks: WebhookHarness) -> None:
    await webhooks.add_endpoint()

    async def nul_reply(request: web.Request) -> web.StreamResponse:
        return web.Response(status=200, body=b"a\x00b\xffc")

    webhooks.receiver.replies = [nul_reply]
    event_id = await webhooks.record()

    assert await webhooks.dispatcher().dispatch_due() == 1

    delivery = await webhooks.delivery_of(event_id)
    excerpt = (await webhooks.attempts_of(delivery["id"]))[0]["response_excerpt"]
    assert excerpt == "a\ufffdb\ufffdc"


async def test_delivery_of_disabled_endpoint_canceled(webhooks: WebhookHarness) -> None:
    created = await webhooks.add_endpoint()
    event_id = await webhooks.record()
    # As if a transaction disabled the endpoint without seeing the new delivery.
    await webhooks.pool.execute(
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = 'manual' WHERE id = $1",
        created.endpoint.id,
    )

    assert await webhooks.dispatcher().dispatch_due() == 1

    assert webhooks.receiver.requests == []
    delivery = await webhooks.delivery_of(event_id)
    assert delivery["status"] == "canceled"
    assert delivery["attempt_count"] == 0
    assert await webhooks.attempts_of(delivery["id"]) == []


async def test_concurrent_dispatchers_send_each_once(webhooks: WebhookHarness) -> None:
    await webhooks.add_endpoint()
    event_ids = [await webhooks.record({"n": index}) for index in range(60)]
    dispatchers = [webhooks.dispatcher(webhook_concurrency=4) for _ in range(3)]

    claimed = await asyncio.gather(*(dispatcher.dispatch_due() for dispatcher in dispatchers))

    assert sum(claimed) == 60
    received = [request.headers["webhook-id"] for request in webhooks.receiver.requests]
    assert sorted(received) == sorted(event_ids)
    assert all(request.verification_error is None for request in webhooks.receiver.requests)
    succeeded = await webhooks.pool.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'"
    )
    assert succeeded == 60


async def test_concurrent_calls_share_concurrency(webhooks: WebhookHarness) -> None:
    receiver = webhooks.receiver
    await webhooks.add_endpoint()
    gate = asyncio.Event()
    receiver.replies = [receiver.blocking_reply(status_reply(200), gate) for _ in range(4)]
    for index in range(4):
        await webhooks.record({"n": index})
    dispatcher = webhooks.dispatcher(webhook_concurrency=2)

    first = asyncio.create_task(dispatcher.dispatch_due())
    await receiver.wait_for_requests(2)
    second = asyncio.create_task(dispatcher.dispatch_due())
    # An observation window, not a synchronization: without the shared limit the
    # second call would claim and send the other two deliveries within it.
    done, _ = await asyncio.wait({second}, timeout=0.5)
    assert done == set()
    assert len(receiver.requests) == 2
    claimed = await webhooks.pool.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE claim_token IS NOT NULL"
    )
    assert claimed == 2

    gate.set()
    assert await first + await second == 4
    assert len(receiver.requests) == 4


async def test_limit_bounds_one_run(webhooks: WebhookHarness) -> None:
    await webhooks.add_endpoint()
    for index in range(5):
        await webhooks.record({"n": index})
    dispatcher = webhooks.dispatcher(webhook_concurrency=2)

    assert await dispatcher.dispatch_due(limit=3) == 3
    assert await dispatcher.dispatch_due(limit=3) == 2
    assert len(webhooks.receiver.requests) == 5
    with pytest.raises(ValueError, match="limit must be at least 1"):
        await dispatcher.dispatch_due(limit=0)


async def test_lost_claim_cannot_overwrite_new_owner(webhooks: WebhookHarness) -> None:
    receiver = webhooks.receiver
    await webhooks.add_endpoint()
    first_gate, second_gate = asyncio.Event(), asyncio.Event()
    receiver.replies = [
        receiver.blocking_reply(then=status_reply(500), gate=first_gate),
        receiver.blocking_reply(then=status_reply(200), gate=second_gate),
    ]
    event_id = await webhooks.record()
    clock = FakeClock()
    slow = webhooks.dispatcher(clock=clock, webhook_timeout_seconds=60.0)
    slow_run = asyncio.create_task(slow.dispatch_due())
    await receiver.wait_for_requests(1)
    # The slow dispatcher's claim lease (60 s timeout + 30 s) has passed for this one.
    later = FakeClock(clock() + timedelta(seconds=91))
    new_owner = webhooks.dispatcher(clock=later, webhook_timeout_seconds=60.0)
    new_owner_run = asyncio.create_task(new_owner.dispatch_due())
    await receiver.wait_for_requests(2)
    claimed = await webhooks.delivery_of(event_id)

    # The slow dispatcher's response arrives while the new owner's claim is active.
    first_gate.set()
    assert await slow_run == 1
    delivery = await webhooks.delivery_of(event_id)
    assert delivery["status"] == "pending"
    assert delivery["attempt_count"] == 0
    assert delivery["claim_token"] == claimed["claim_token"]

    second_gate.set()
    assert await new_owner_run == 1
    delivery = await webhooks.delivery_of(event_id)
    assert delivery["status"] == "succeeded"
    assert delivery["attempt_count"] == 1
    assert delivery["last_status_code"] == 200
    attempts = await webhooks.attempts_of(delivery["id"])
    assert sorted(attempt["status_code"] for attempt in attempts) == [200, 500]


async def test_killed_dispatcher_delivery_resumes_after_lease(
    webhooks: WebhookHarness, tmp_path: Path
) -> None:
    receiver = webhooks.receiver
    await webhooks.add_endpoint()
    receiver.replies = [receiver.blocking_reply()]
    event_id = await webhooks.record()
    child_log = tmp_path / "child.log"
    script = Path(__file__).with_name("webhooks_dispatch_child.py")
    with child_log.open("wb") as log_file:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            webhooks.dsn,
            SECRET_KEY,
            "60",
            stdout=log_file,
            stderr=log_file,
        )
        try:
            await receiver.wait_for_requests(1)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            await child.wait()
    assert child.returncode == -signal.SIGKILL, child_log.read_text()

    delivery = await webhooks.delivery_of(event_id)
    assert delivery["status"] == "pending"
    assert delivery["attempt_count"] == 0
    assert delivery["claim_token"] is not None
    assert await webhooks.attempts_of(delivery["id"]) == []
    # The claim lease still holds the delivery.
    assert await webhooks.dispatcher().dispatch_due() == 0

    after_lease = FakeClock(delivery["claimed_until"])
    assert await webhooks.dispatcher(clock=after_lease).dispatch_due() == 1

    assert len(receiver.requests) == 2
    assert [request.verification_error for request in receiver.requests] == [None, None]
    assert [request.headers["webhook-id"] for request in receiver.requests] == [event_id] * 2
    assert receiver.requests[0].body == receiver.requests[1].body
    delivery = await webhooks.delivery_of(event_id)
    assert delivery["status"] == "succeeded"
    assert delivery["attempt_count"] == 1
    attempts = await webhooks.attempts_of(delivery["id"])
    assert [attempt["status_code"] for attempt in attempts] == [200]


async def test_record_event_rolled_back_stores_nothing(webhooks: WebhookHarness) -> None:
    await webhooks.add_endpoint()

    async def record_then_fail() -> None:
        async with webhooks.pool.acquire() as connection, connection.transaction():
            await record_event(
                connection,
                organization_id=webhooks.organization_id,
                livemode=False,
                event_type="import.failed",
                data={"id": "imp_1"},
            )
            raise RuntimeError("job write failed")

    with pytest.raises(RuntimeError, match="job write failed"):
        await record_then_fail()

    assert await webhooks.pool.fetchval("SELECT count(*) FROM webhook_events") == 0
    assert await webhooks.pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 0


async def test_record_event_picks_subscribers(webhooks: WebhookHarness) -> None:
    other_organization = await create_organization(webhooks.pool, "Other")
    url = "http://127.0.0.1:9/never-called"
    completed = await webhooks.add_endpoint(url=url, events=("import.completed",))
    await webhooks.add_endpoint(url=url, events=("import.failed",))
    await webhooks.add_endpoint(url=url, livemode=True)
    await webhooks.add_endpoint(url=url, organization_id=other_organization)
    deleted = await webhooks.add_endpoint(url=url)
    await endpoints.delete(webhooks.pool, webhooks.organization_id, False, deleted.endpoint.id)
    disabled = await webhooks.add_endpoint(url=url)
    await webhooks.update_endpoint(disabled.endpoint.id, enabled=False)

    event_id = await webhooks.record(event_type="import.completed")
    unheard = await webhooks.record(event_type="webhook.test")

    rows = await webhooks.pool.fetch(
        "SELECT endpoint_id FROM webhook_deliveries WHERE event_id = $1", event_id
    )
    assert [row["endpoint_id"] for row in rows] == [completed.endpoint.id]
    # An event without subscribers is still stored.
    event_type = await webhooks.pool.fetchval(
        "SELECT type FROM webhook_events WHERE id = $1", unheard
    )
    assert event_type == "webhook.test"
    count = await webhooks.pool.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE event_id = $1", unheard
    )
    assert count == 0
