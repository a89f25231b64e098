"""Integration tests of webhook endpoint management on a real PostgreSQL database:
validation, tenant and mode scoping, keyset pages, updates, deletes, test events and
delivery retries.
"""

from __future__ import annotations

import base64
import dataclasses
from datetime import timedelta

import pytest

from postfuze_imports.errors import Conflict, ValidationFailed
from postfuze_imports.webhooks import endpoints
from postfuze_imports.webhooks.records import EVENT_TYPES, DeliveryStatus, DisabledReason
from tests.webhooks_support import FakeClock, WebhookHarness, create_organization, status_reply

pytest_plugins = ["tests.webhooks_fixtures"]

URL = "https://hooks.example.com/postfuze"


def problems_of(error: pytest.ExceptionInfo[ValidationFailed]) -> list[tuple[str | None, str]]:
    return [(problem.field, problem.code) for problem in error.value.problems]


async def test_create_generates_secret_shown_once(webhooks: WebhookHarness) -> None:
    created = await endpoints.create(
        webhooks.pool,
        webhooks.secrets,
        webhooks.settings,
        webhooks.organization_id,
        False,
        url=URL,
        events=["import.completed", "import.failed", "import.completed"],
        description="CRM sync",
    )

    endpoint = created.endpoint
    assert endpoint.id.startswith("we_")
    assert endpoint.url == URL
    assert endpoint.events == ("import.completed", "import.failed")
    assert endpoint.description == "CRM sync"
    assert endpoint.enabled is True
    assert endpoint.disabled_reason is None
    assert endpoint.livemode is False
    assert created.signing_secret.startswith("whsec_")
    key = base64.b64decode(created.signing_secret.removeprefix("whsec_"))
    assert len(key) == 32
    stored = await webhooks.pool.fetchval(
        "SELECT signing_secret FROM webhook_endpoints WHERE id = $1", endpoint.id
    )
    assert created.signing_secret.encode() not in stored
    assert key not in stored
    assert endpoints.decrypt_secret(webhooks.secrets, stored) == created.signing_secret
    fetched = await endpoints.get(webhooks.pool, webhooks.organization_id, False, endpoint.id)
    assert fetched == endpoint


async def test_create_keeps_given_secret(webhooks: WebhookHarness) -> None:
    secret = "whsec_" + base64.b64encode(bytes(range(40))).decode()

    created = await endpoints.create(
        webhooks.pool,
        webhooks.secrets,
        webhooks.settings,
        webhooks.organization_id,
        True,
        url=URL,
        events=["import.failed"],
        signing_secret=secret,
    )

    assert created.signing_secret == secret
    assert created.endpoint.livemode is True


async def test_create_reports_every_problem(webhooks: WebhookHarness) -> None:
    with pytest.raises(ValidationFailed) as error:
        await endpoints.create(
            webhooks.pool,
            webhooks.secrets,
            webhooks.settings,
            webhooks.organization_id,
            False,
            url="ftp://example.com/hook",
            events=["import.completed", "import.started"],
            description="x" * (endpoints.MAX_DESCRIPTION_LENGTH + 1),
            signing_secret="not-a-secret",
        )

    assert problems_of(error) == [
        ("url", "blocked_url"),
        ("events.1", "invalid_choice"),
        ("description", "invalid_length"),
        ("signing_secret", "invalid_secret"),
    ]
    assert await webhooks.pool.fetchval("SELECT count(*) FROM webhook_endpoints") == 0


async def test_create_rejects_empty_events_and_long_url(webhooks: WebhookHarness) -> None:
    with pytest.raises(ValidationFailed) as error:
        await endpoints.create(
            webhooks.pool,
            webhooks.secrets,
            webhooks.settings,
            webhooks.organization_id,
            False,
            url="https://example.com/" + "a" * endpoints.MAX_URL_LENGTH,
            events=[],
        )

    assert problems_of(error) == [("url", "invalid_length"), ("events", "invalid_length")]


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://[::1]/hook",
        "https://169.254.169.254/latest",
        "http://hooks.example.com/plain-http",
        "https://user:secret@hooks.example.com/hook",
    ],
)
async def test_create_rejects_private_url_with_guard_on(webhooks: WebhookHarness, url: str) -> None:
    guarded = dataclasses.replace(webhooks.settings, allow_private_networks=False)

    with pytest.raises(ValidationFailed) as error:
        await endpoints.create(
            webhooks.pool,
            webhooks.secrets,
            guarded,
            webhooks.organization_id,
            False,
            url=url,
            events=["import.completed"],
        )

    assert problems_of(error) == [("url", "blocked_url")]


async def test_other_organization_or_mode_not_found(webhooks: WebhookHarness) -> None:
    created = await webhooks.add_endpoint(url=URL)
    endpoint_id = created.endpoint.id
    stranger = await create_organization(webhooks.pool, "Stranger")
    pool, settings = webhooks.pool, webhooks.settings

    for organization_id, livemode in ((stranger, False), (webhooks.organization_id, True)):
        assert await endpoints.get(pool, organization_id, livemode, endpoint_id) is None
        assert (
            await endpoints.update(
                pool, settings, organization_id, livemode, endpoint_id, description="x"
            )
            is None
        )
        assert await endpoints.delete(pool, organization_id, livemode, endpoint_id) is False
        assert await endpoints.send_test(pool, organization_id, livemode, endpoint_id) is None
        assert (
            await endpoints.list_deliveries(
                pool, organization_id, livemode, endpoint_id, after=None, limit=10
            )
            is None
        )
        listed = await endpoints.list_endpoints(
            pool, organization_id, livemode, after=None, limit=10
        )
        assert listed == []

    endpoint = await endpoints.get(pool, webhooks.organization_id, False, endpoint_id)
    assert endpoint is not None
    assert endpoint.description is None
    assert endpoint.enabled is True


async def test_list_endpoints_keyset_pages(webhooks: WebhookHarness) -> None:
    created = [(await webhooks.add_endpoint(url=f"{URL}/{index}")).endpoint for index in range(5)]
    # Two endpoints with the same created_at are ordered by id.
    await webhooks.pool.execute(
        "UPDATE webhook_endpoints SET created_at = $1 WHERE id = ANY($2::text[])",
        created[1].created_at,
        [created[1].id, created[2].id],
    )
    expected = [
        row["id"]
        for row in await webhooks.pool.fetch(
            "SELECT id FROM webhook_endpoints ORDER BY created_at DESC, id DESC"
        )
    ]

    seen: list[str] = []
    after = None
    while True:
        page = await endpoints.list_endpoints(
            webhooks.pool, webhooks.organization_id, False, after=after, limit=2
        )
        assert len(page) <= 3
        visible = page[:2]
        seen.extend(endpoint.id for endpoint in visible)
        if len(page) <= 2:
            break
        after = (visible[-1].created_at, visible[-1].id)

    assert seen == expected
    assert sorted(seen) == sorted(endpoint.id for endpoint in created)


async def test_update_fields_and_validation(webhooks: WebhookHarness) -> None:
    created = await webhooks.add_endpoint(url=URL)
    endpoint_id = created.endpoint.id

    updated = await endpoints.update(
        webhooks.pool,
        webhooks.settings,
        webhooks.organization_id,
        False,
        endpoint_id,
        url=URL + "/v2",
        events=["import.failed"],
        description="new",
    )

    assert updated is not None
    assert updated.url == URL + "/v2"
    assert updated.events == ("import.failed",)
    assert updated.description == "new"
    assert updated.updated_at > created.endpoint.updated_at
    with pytest.raises(ValidationFailed) as error:
        await endpoints.update(
            webhooks.pool,
            webhooks.settings,
            webhooks.organization_id,
            False,
            endpoint_id,
            url="javascript:alert(1)",
            events=["nope"],
        )
    assert problems_of(error) == [("url", "blocked_url"), ("events.0", "invalid_choice")]


async def test_disable_cancels_and_enable_clears(webhooks: WebhookHarness) -> None:
    created = await webhooks.add_endpoint()
    endpoint_id = created.endpoint.id
    event_id = await webhooks.record()
    await webhooks.pool.execute(
        "UPDATE webhook_endpoints SET failing_since = now() WHERE id = $1", endpoint_id
    )

    disabled = await webhooks.update_endpoint(endpoint_id, enabled=False)

    assert disabled is not None
    assert disabled.enabled is False
    assert disabled.disabled_reason is DisabledReason.MANUAL
    delivery = await webhooks.delivery_of(event_id)
    assert delivery["status"] == "canceled"
    assert delivery["last_error"] == "the endpoint was disabled"
    assert await webhooks.dispatcher().dispatch_due() == 0

    enabled = await webhooks.update_endpoint(endpoint_id, enabled=True)

    assert enabled is not None
    assert enabled.enabled is True
    assert enabled.disabled_reason is None
    assert enabled.failing_since is None
    assert (await webhooks.delivery_of(event_id))["status"] == "canceled"


async def test_disable_keeps_automatic_reason(webhooks: WebhookHarness) -> None:
    created = await webhooks.add_endpoint()
    await webhooks.pool.execute(
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = 'gone' WHERE id = $1",
        created.endpoint.id,
    )

    again = await webhooks.update_endpoint(created.endpoint.id, enabled=False)

    assert again is not None
    assert again.disabled_reason is DisabledReason.GONE


async def test_delete_is_soft_and_cancels_pending(webhooks: WebhookHarness) -> None:
    created = await webhooks.add_endpoint()
    endpoint_id = created.endpoint.id
    event_id = await webhooks.record()

    assert await endpoints.delete(webhooks.pool, webhooks.organization_id, False, endpoint_id)

    assert await endpoints.get(webhooks.pool, webhooks.organization_id, False, endpoint_id) is None
    assert not await endpoints.delete(webhooks.pool, webhooks.organization_id, False, endpoint_id)
    row = await webhooks.endpoint_row(endpoint_id)
    assert row["deleted_at"] is not None
    delivery = await webhooks.delivery_of(event_id)
    assert delivery["status"] == "canceled"
    assert delivery["last_error"] == "the endpoint was deleted"
    assert await webhooks.dispatcher().dispatch_due() == 0
    assert webhooks.receiver.requests == []


async def test_send_test_reaches_only_that_endpoint(webhooks: WebhookHarness) -> None:
    target = await webhooks.add_endpoint(events=("import.completed",))
    other = await webhooks.add_endpoint(path="/other", events=("import.completed",))
    webhooks.receiver.secret = target.signing_secret

    delivery = await endpoints.send_test(
        webhooks.pool, webhooks.organization_id, False, target.endpoint.id
    )

    assert delivery is not None
    assert delivery.endpoint_id == target.endpoint.id
    assert delivery.event_type == "webhook.test"
    assert delivery.status is DeliveryStatus.PENDING
    assert await webhooks.dispatcher().dispatch_due() == 1
    [request] = webhooks.receiver.requests
    assert request.path == "/hook"
    assert request.verification_error is None
    assert request.payload["type"] == "webhook.test"
    assert request.payload["data"] == {"webhook_endpoint_id": target.endpoint.id}
    assert request.headers["webhook-id"] == delivery.event_id
    other_count = await webhooks.pool.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1", other.endpoint.id
    )
    assert other_count == 0


async def test_send_test_to_disabled_endpoint_conflicts(webhooks: WebhookHarness) -> None:
    created = await webhooks.add_endpoint()
    await webhooks.update_endpoint(created.endpoint.id, enabled=False)

    with pytest.raises(Conflict, match="is disabled"):
        await endpoints.send_test(
            webhooks.pool, webhooks.organization_id, False, created.endpoint.id
        )


async def test_list_deliveries_with_attempts(webhooks: WebhookHarness) -> None:
    created = await webhooks.add_endpoint()
    endpoint_id = created.endpoint.id
    webhooks.receiver.replies = [status_reply(500, "boom")]
    clock = FakeClock()
    dispatcher = webhooks.dispatcher(clock=clock, webhook_concurrency=1)
    first = await webhooks.record({"n": 1})
    await dispatcher.dispatch_due()
    clock.advance(timedelta(minutes=1))
    await dispatcher.dispatch_due()
    second = await webhooks.record({"n": 2})
    third = await webhooks.record({"n": 3})

    page = await endpoints.list_deliveries(
        webhooks.pool, webhooks.organization_id, False, endpoint_id, after=None, limit=2
    )

    assert page is not None
    assert [delivery.event_id for delivery in page] == [third, second, first]
    oldest = page[2]
    assert oldest.status is DeliveryStatus.SUCCEEDED
    assert [attempt.status_code for attempt in oldest.attempts] == [500, 200]
    assert oldest.attempts[0].response_excerpt == "boom"
    assert oldest.attempts[0].error == "HTTP 500: expected a 2xx status"
    assert page[0].attempts == ()
    rest = await endpoints.list_deliveries(
        webhooks.pool,
        webhooks.organization_id,
        False,
        endpoint_id,
        after=(page[1].created_at, page[1].id),
        limit=2,
    )
    assert rest is not None
    assert [delivery.event_id for delivery in rest] == [first]
    single = await endpoints.get_delivery(
        webhooks.pool, webhooks.organization_id, False, endpoint_id, oldest.id
    )
    assert single == oldest
    stranger = await create_organization(webhooks.pool, "Stranger")
    assert (
        await endpoints.get_delivery(webhooks.pool, stranger, False, endpoint_id, oldest.id) is None
    )


async def test_retry_failed_delivery_creates_new_one(webhooks: WebhookHarness) -> None:
    created = await webhooks.add_endpoint()
    endpoint_id = created.endpoint.id
    webhooks.receiver.replies = [status_reply(400)]
    event_id = await webhooks.record()
    # The 400 is the final attempt when the schedule is exhausted; force that state.
    await webhooks.pool.execute("UPDATE webhook_deliveries SET attempt_count = 7")
    assert await webhooks.dispatcher().dispatch_due() == 1
    original = await webhooks.delivery_of(event_id)
    assert original["status"] == "failed"

    retried = await endpoints.retry_delivery(
        webhooks.pool, webhooks.organization_id, False, endpoint_id, original["id"]
    )

    assert retried is not None
    assert retried.id != original["id"]
    assert retried.event_id == event_id
    assert retried.status is DeliveryStatus.PENDING
    assert retried.attempt_count == 0
    assert await webhooks.dispatcher().dispatch_due() == 1
    ids = [request.headers["webhook-id"] for request in webhooks.receiver.requests]
    assert ids == [event_id, event_id]
    kept = await webhooks.attempts_of(original["id"])
    assert [attempt["status_code"] for attempt in kept] == [400]
    statuses = await webhooks.pool.fetch(
        "SELECT status FROM webhook_deliveries WHERE event_id = $1 ORDER BY created_at", event_id
    )
    assert [row["status"] for row in statuses] == ["failed", "succeeded"]


async def test_retry_pending_delivery_makes_it_due(webhooks: WebhookHarness) -> None:
    created = await webhooks.add_endpoint()
    webhooks.receiver.replies = [status_reply(500)]
    event_id = await webhooks.record()
    assert await webhooks.dispatcher().dispatch_due() == 1
    pending = await webhooks.delivery_of(event_id)
    assert pending["status"] == "pending"
    # Not due for a few seconds on the real clock.
    assert await webhooks.dispatcher().dispatch_due() == 0

    retried = await endpoints.retry_delivery(
        webhooks.pool, webhooks.organization_id, False, created.endpoint.id, pending["id"]
    )

    assert retried is not None
    assert retried.id == pending["id"]
    assert [attempt.status_code for attempt in retried.attempts] == [500]
    assert await webhooks.dispatcher().dispatch_due() == 1
    assert (await webhooks.delivery_of(event_id))["status"] == "succeeded"


async def test_retry_scoped_and_checked(webhooks: WebhookHarness) -> None:
    created = await webhooks.add_endpoint()
    endpoint_id = created.endpoint.id
    event_id = await webhooks.record()
    delivery_id = (await webhooks.delivery_of(event_id))["id"]
    stranger = await create_organization(webhooks.pool, "Stranger")

    assert (
        await endpoints.retry_delivery(webhooks.pool, stranger, False, endpoint_id, delivery_id)
        is None
    )
    assert (
        await endpoints.retry_delivery(
            webhooks.pool, webhooks.organization_id, False, endpoint_id, "wd_missing"
        )
        is None
    )
    await webhooks.update_endpoint(endpoint_id, enabled=False)
    with pytest.raises(Conflict, match="is disabled"):
        await endpoints.retry_delivery(
            webhooks.pool, webhooks.organization_id, False, endpoint_id, delivery_id
        )


def test_event_types() -> None:
    assert EVENT_TYPES == ("import.completed", "import.failed", "webhook.test")


async def test_record_event_ids_are_unique(webhooks: WebhookHarness) -> None:
    ids = {await webhooks.record() for _ in range(20)}
    assert len(ids) == 20
    assert all(event_id.startswith("evt_") for event_id in ids)
