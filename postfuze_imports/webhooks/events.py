"""Recording webhook events and their deliveries, the outbox the dispatcher sends from.

An event is recorded inside the transaction that makes it true (an import job's final
state), so the event and its deliveries commit or roll back with it. Nothing is sent
from here: after the commit the caller wakes the dispatcher, and the dispatcher's
periodic run finds whatever a lost wake-up left behind.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from postfuze_imports.db import Connection, q
from postfuze_imports.timestamps import format_timestamp
from postfuze_imports.webhooks.records import new_id

log = logging.getLogger(__name__)

# Workers LISTEN on this channel to send new deliveries at once (see listener.py).
NOTIFY_CHANNEL = "postfuze_webhook_deliveries"


async def notify_new_deliveries(connection: Connection) -> None:
    """Tell listening workers that deliveries are due; PostgreSQL sends it at commit."""
    await connection.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)


def serialize_body(event_id: str, event_type: str, created_at: datetime, data: Any) -> str:
    """Return the JSON body of an event, the exact text that is sent and signed.

    `data` must be JSON-ready (strings, numbers, booleans, None, lists, dicts); anything
    else, NaN and infinities included, raises ValueError or TypeError.
    """
    body = {
        "id": event_id,
        "type": event_type,
        "created_at": format_timestamp(created_at),
        "data": data,
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


async def record_event(
    connection: Connection,
    *,
    organization_id: UUID,
    livemode: bool,
    event_type: str,
    data: dict[str, Any],
) -> str:
    """Store an event and one pending delivery per subscribed endpoint; return the event id.

    Call it inside the caller's transaction. The subscribers are the enabled, not deleted
    endpoints of the organization in the same mode whose `events` contain `event_type`.
    The event is stored even when no endpoint subscribes, so it can be looked up later.
    """
    rows = await connection.fetch(q("webhook_subscribers"), organization_id, livemode, event_type)
    endpoint_ids = [row["id"] for row in rows]
    event_id, _ = await insert_event(
        connection,
        organization_id=organization_id,
        livemode=livemode,
        event_type=event_type,
        data=data,
        endpoint_ids=endpoint_ids,
    )
    if endpoint_ids:
        await notify_new_deliveries(connection)
    log.info(
        "recorded webhook event %s (%s) for %d endpoints",
        event_id,
        event_type,
        len(endpoint_ids),
        extra={
            "action": "webhook_event_recorded",
            "event_id": event_id,
            "event_type": event_type,
            "organization_id": str(organization_id),
            "endpoint_count": len(endpoint_ids),
        },
    )
    return event_id


async def insert_event(
    connection: Connection,
    *,
    organization_id: UUID,
    livemode: bool,
    event_type: str,
    data: dict[str, Any],
    endpoint_ids: Sequence[str],
) -> tuple[str, list[str]]:
    """Insert an event and a pending delivery to each given endpoint, due at once.

    Returns the event id and the delivery ids, in the order of `endpoint_ids`.
    """
    event_id = new_id("evt_")
    now = datetime.now(UTC)
    # Milliseconds only, so the stored instant equals the one the body shows.
    created_at = now.replace(microsecond=now.microsecond // 1000 * 1000)
    body = serialize_body(event_id, event_type, created_at, data)
    await connection.execute(
        q("insert_webhook_event"),
        event_id,
        organization_id,
        livemode,
        event_type,
        body,
        created_at,
    )
    delivery_ids = [new_id("wd_") for _ in endpoint_ids]
    if delivery_ids:
        await connection.execute(
            q("insert_webhook_deliveries"),
            delivery_ids,
            event_id,
            list(endpoint_ids),
            created_at,
        )
    return event_id, delivery_ids
