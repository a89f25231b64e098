"""Webhook endpoints as the API manages them: create, read, list, update, delete, test,
and the deliveries of an endpoint with their attempts.

Every function is scoped by organization and mode: an endpoint of another organization,
or of the other mode, is not found (None or False), exactly like one that never existed.
Validation failures raise `ValidationFailed` with one problem per invalid field; an
action that the endpoint's state forbids raises `Conflict`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

from postfuze_imports.crypto import Secrets
from postfuze_imports.db import Connection, Pool, Record, q
from postfuze_imports.errors import Conflict, FieldProblem, OutboundBlocked, ValidationFailed
from postfuze_imports.outbound import UnresolvableHost, resolve_and_check
from postfuze_imports.settings import Settings
from postfuze_imports.webhooks import events as webhook_events
from postfuze_imports.webhooks.records import (
    EVENT_TYPES,
    WEBHOOK_TEST,
    CreatedEndpoint,
    DeliveryStatus,
    Position,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    new_id,
)
from postfuze_imports.webhooks.signing import generate_secret, secret_key

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 500
# The key under which the signing secret is stored in the encrypted JSON object.
_SECRET_FIELD = "signing_secret"


def encrypt_secret(secrets: Secrets, signing_secret: str) -> bytes:
    return secrets.encrypt_json({_SECRET_FIELD: signing_secret})


def decrypt_secret(secrets: Secrets, token: bytes) -> str:
    value = secrets.decrypt_json(token)[_SECRET_FIELD]
    if not isinstance(value, str):
        raise ValueError("the stored signing secret is not a string")
    return value


def _returned(row: Record | None, query: str) -> Record:
    """Return the row of a query that returns one by construction."""
    if row is None:
        raise RuntimeError(f"query {query} returned no row")
    return row


async def _url_problems(url: str, settings: Settings) -> list[FieldProblem]:
    if len(url) > MAX_URL_LENGTH:
        return [
            FieldProblem(
                "url", f"The URL must be at most {MAX_URL_LENGTH} characters.", "invalid_length"
            )
        ]
    try:
        await resolve_and_check(url, allow_private=settings.allow_private_networks)
    except UnresolvableHost as error:
        return [FieldProblem("url", f"{error}.", "unresolvable_url")]
    except OutboundBlocked as error:
        return [FieldProblem("url", f"{error}.", "blocked_url")]
    return []


def _events_problems(event_types: Sequence[str]) -> list[FieldProblem]:
    if not event_types:
        return [FieldProblem("events", "Subscribe to at least one event type.", "invalid_length")]
    allowed = ", ".join(EVENT_TYPES)
    return [
        FieldProblem(
            f"events.{index}",
            f"Unknown event type {event_type!r}; use one of {allowed}.",
            "invalid_choice",
        )
        for index, event_type in enumerate(event_types)
        if event_type not in EVENT_TYPES
    ]


def _description_problems(description: str | None) -> list[FieldProblem]:
    if description is not None and len(description) > MAX_DESCRIPTION_LENGTH:
        message = f"The description must be at most {MAX_DESCRIPTION_LENGTH} characters."
        return [FieldProblem("description", message, "invalid_length")]
    return []


def _unique(event_types: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(event_types))


async def create(
    pool: Pool,
    secrets: Secrets,
    settings: Settings,
    organization_id: UUID,
    livemode: bool,
    *,
    url: str,
    events: Sequence[str],
    description: str | None = None,
    signing_secret: str | None = None,
) -> CreatedEndpoint:
    """Create an enabled endpoint; generate its signing secret unless one is given.

    The URL must pass the outbound guard's checks (`https`, no userinfo, a host name that
    resolves only to public addresses, unless `settings.allow_private_networks`). Host
    names are checked again each time a delivery connects.
    """
    problems = await _url_problems(url, settings) + _events_problems(events)
    problems += _description_problems(description)
    if signing_secret is not None:
        try:
            secret_key(signing_secret)
        except ValueError as error:
            problems.append(FieldProblem("signing_secret", f"{error}.", "invalid_secret"))
    if problems:
        raise ValidationFailed(problems)

    secret = signing_secret if signing_secret is not None else generate_secret()
    row = await pool.fetchrow(
        q("insert_webhook_endpoint"),
        new_id("we_"),
        organization_id,
        livemode,
        url,
        description,
        _unique(events),
        encrypt_secret(secrets, secret),
    )
    endpoint = WebhookEndpoint.from_row(_returned(row, "insert_webhook_endpoint"))
    log.info(
        "created webhook endpoint %s for events %s",
        endpoint.id,
        ", ".join(endpoint.events),
        extra={
            "action": "webhook_endpoint_created",
            "endpoint_id": endpoint.id,
            "organization_id": str(organization_id),
        },
    )
    return CreatedEndpoint(endpoint=endpoint, signing_secret=secret)


async def get(
    pool: Pool, organization_id: UUID, livemode: bool, endpoint_id: str
) -> WebhookEndpoint | None:
    row = await pool.fetchrow(q("get_webhook_endpoint"), organization_id, livemode, endpoint_id)
    return None if row is None else WebhookEndpoint.from_row(row)


async def list_endpoints(
    pool: Pool,
    organization_id: UUID,
    livemode: bool,
    *,
    after: Position | None,
    limit: int,
) -> list[WebhookEndpoint]:
    """Return up to `limit + 1` endpoints newest first, after the keyset position `after`."""
    rows = await pool.fetch(
        q("list_webhook_endpoints"),
        organization_id,
        livemode,
        after[0] if after else None,
        after[1] if after else None,
        limit + 1,
    )
    return [WebhookEndpoint.from_row(row) for row in rows]


async def update(
    pool: Pool,
    settings: Settings,
    organization_id: UUID,
    livemode: bool,
    endpoint_id: str,
    *,
    url: str | None = None,
    events: Sequence[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
) -> WebhookEndpoint | None:
    """Change the given fields (None keeps a field); return None when not found.

    Disabling an endpoint cancels its pending deliveries. Enabling a disabled one clears
    `disabled_reason` and `failing_since`; deliveries that ended meanwhile stay ended.
    """
    problems = [] if url is None else await _url_problems(url, settings)
    problems += [] if events is None else _events_problems(events)
    problems += _description_problems(description)
    if problems:
        raise ValidationFailed(problems)

    async with pool.acquire() as connection, connection.transaction():
        before = await connection.fetchrow(
            q("lock_webhook_endpoint"), organization_id, livemode, endpoint_id
        )
        if before is None:
            return None
        row = await connection.fetchrow(
            q("update_webhook_endpoint"),
            endpoint_id,
            url,
            None if events is None else _unique(events),
            description,
            enabled,
        )
        # The row lock taken above keeps the endpoint from being deleted meanwhile.
        endpoint = WebhookEndpoint.from_row(_returned(row, "update_webhook_endpoint"))
        if before["enabled"] and not endpoint.enabled:
            await _end_pending(connection, endpoint_id, "the endpoint was disabled")
    if before["enabled"] != endpoint.enabled:
        log.info(
            "webhook endpoint %s was %s through the API",
            endpoint_id,
            "enabled" if endpoint.enabled else "disabled",
            extra={"action": "webhook_endpoint_updated", "endpoint_id": endpoint_id},
        )
    return endpoint


async def delete(pool: Pool, organization_id: UUID, livemode: bool, endpoint_id: str) -> bool:
    """Delete an endpoint and cancel its pending deliveries; return False when not found."""
    async with pool.acquire() as connection, connection.transaction():
        deleted = await connection.fetchval(
            q("delete_webhook_endpoint"), organization_id, livemode, endpoint_id
        )
        if deleted is None:
            return False
        await _end_pending(connection, endpoint_id, "the endpoint was deleted")
    log.info(
        "deleted webhook endpoint %s",
        endpoint_id,
        extra={"action": "webhook_endpoint_deleted", "endpoint_id": endpoint_id},
    )
    return True


async def _end_pending(connection: Connection, endpoint_id: str, reason: str) -> None:
    await connection.execute(
        q("end_pending_webhook_deliveries"),
        endpoint_id,
        DeliveryStatus.CANCELED.value,
        reason,
        datetime.now(UTC),
    )


async def send_test(
    pool: Pool, organization_id: UUID, livemode: bool, endpoint_id: str
) -> WebhookDelivery | None:
    """Record a `webhook.test` event for this endpoint alone; return its delivery.

    Returns None when the endpoint is not found; raises Conflict when it is disabled.
    The caller wakes the dispatcher afterwards.
    """
    async with pool.acquire() as connection, connection.transaction():
        row = await connection.fetchrow(
            q("get_webhook_endpoint"), organization_id, livemode, endpoint_id
        )
        if row is None:
            return None
        endpoint = WebhookEndpoint.from_row(row)
        if not endpoint.enabled:
            raise Conflict(f"webhook endpoint {endpoint_id} is disabled; enable it first")
        _, delivery_ids = await webhook_events.insert_event(
            connection,
            organization_id=organization_id,
            livemode=livemode,
            event_type=WEBHOOK_TEST,
            data={"webhook_endpoint_id": endpoint_id},
            endpoint_ids=[endpoint_id],
        )
        await webhook_events.notify_new_deliveries(connection)
        delivery = await connection.fetchrow(
            q("get_webhook_delivery"), endpoint_id, delivery_ids[0]
        )
    return WebhookDelivery.from_row(_returned(delivery, "get_webhook_delivery"))


async def list_deliveries(
    pool: Pool,
    organization_id: UUID,
    livemode: bool,
    endpoint_id: str,
    *,
    after: Position | None,
    limit: int,
) -> list[WebhookDelivery] | None:
    """Return up to `limit + 1` deliveries newest first, each with its attempts.

    Returns None when the endpoint is not found.
    """
    async with pool.acquire() as connection:
        found = await connection.fetchval(
            q("get_webhook_endpoint"), organization_id, livemode, endpoint_id
        )
        if found is None:
            return None
        rows = await connection.fetch(
            q("list_webhook_deliveries"),
            endpoint_id,
            after[0] if after else None,
            after[1] if after else None,
            limit + 1,
        )
        attempts = await _attempts_of(connection, [row["id"] for row in rows])
    return [WebhookDelivery.from_row(row, attempts.get(row["id"], ())) for row in rows]


async def get_delivery(
    pool: Pool, organization_id: UUID, livemode: bool, endpoint_id: str, delivery_id: str
) -> WebhookDelivery | None:
    """Return one delivery of an endpoint with its attempts, or None when not found."""
    async with pool.acquire() as connection:
        found = await connection.fetchval(
            q("get_webhook_endpoint"), organization_id, livemode, endpoint_id
        )
        if found is None:
            return None
        row = await connection.fetchrow(q("get_webhook_delivery"), endpoint_id, delivery_id)
        if row is None:
            return None
        attempts = await _attempts_of(connection, [delivery_id])
    return WebhookDelivery.from_row(row, attempts.get(delivery_id, ()))


async def _attempts_of(
    connection: Connection, delivery_ids: list[str]
) -> dict[str, tuple[WebhookAttempt, ...]]:
    if not delivery_ids:
        return {}
    grouped: dict[str, list[WebhookAttempt]] = {}
    for row in await connection.fetch(q("list_webhook_attempts"), delivery_ids):
        grouped.setdefault(row["delivery_id"], []).append(WebhookAttempt.from_row(row))
    return {delivery_id: tuple(items) for delivery_id, items in grouped.items()}


async def retry_delivery(
    pool: Pool, organization_id: UUID, livemode: bool, endpoint_id: str, delivery_id: str
) -> WebhookDelivery | None:
    """Send a delivery's event to its endpoint again, as soon as a dispatcher runs.

    A pending delivery is made due now and returned; one a dispatcher is sending right now
    is returned unchanged. An ended delivery (succeeded, failed or canceled) stays as it
    is, with its attempts, and a new pending delivery of the same event is returned: it
    carries the same `webhook-id` and a fresh retry schedule. Returns None when the
    endpoint or the delivery is not found; raises Conflict when the endpoint is disabled.
    The caller wakes the dispatcher afterwards.
    """
    async with pool.acquire() as connection, connection.transaction():
        endpoint_row = await connection.fetchrow(
            q("lock_webhook_endpoint"), organization_id, livemode, endpoint_id
        )
        if endpoint_row is None:
            return None
        row = await connection.fetchrow(q("lock_webhook_delivery"), endpoint_id, delivery_id)
        if row is None:
            return None
        if not endpoint_row["enabled"]:
            raise Conflict(f"webhook endpoint {endpoint_id} is disabled; enable it first")
        now = datetime.now(UTC)
        target_id = delivery_id
        if row["status"] == DeliveryStatus.PENDING.value:
            await connection.execute(q("make_webhook_delivery_due"), delivery_id, now)
        else:
            target_id = new_id("wd_")
            await connection.execute(
                q("insert_webhook_deliveries"), [target_id], row["event_id"], [endpoint_id], now
            )
        await webhook_events.notify_new_deliveries(connection)
        delivery = await connection.fetchrow(q("get_webhook_delivery"), endpoint_id, target_id)
        attempts = await _attempts_of(connection, [target_id])
    log.info(
        "queued webhook delivery %s of event %s to endpoint %s again",
        target_id,
        row["event_id"],
        endpoint_id,
        extra={
            "action": "webhook_delivery_retried",
            "delivery_id": target_id,
            "event_id": row["event_id"],
            "endpoint_id": endpoint_id,
        },
    )
    found = _returned(delivery, "get_webhook_delivery")
    return WebhookDelivery.from_row(found, attempts.get(target_id, ()))
