"""Webhook rows as frozen records, built from database rows in one place."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from postfuze_imports.db import Record

# The events this service emits. `webhook.test` is sent only by the test route, to the
# one endpoint it names, whatever that endpoint subscribes to.
IMPORT_COMPLETED = "import.completed"
IMPORT_FAILED = "import.failed"
WEBHOOK_TEST = "webhook.test"
EVENT_TYPES = (IMPORT_COMPLETED, IMPORT_FAILED, WEBHOOK_TEST)

# A keyset position in a list ordered `created_at DESC, id DESC`.
Position = tuple[datetime, str]


def new_id(prefix: str) -> str:
    """Return a new identifier: the prefix (`we_`, `evt_`, `wd_`) and 24 random hex digits."""
    return prefix + secrets.token_hex(12)


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class DisabledReason(enum.StrEnum):
    # The endpoint responded with 410 Gone.
    GONE = "gone"
    # Every attempt to the endpoint failed for 5 days.
    FAILING = "failing"
    # The API consumer disabled it.
    MANUAL = "manual"


@dataclass(frozen=True, kw_only=True)
class WebhookEndpoint:
    """An endpoint as the API shows it; the signing secret stays encrypted in the row."""

    id: str
    organization_id: UUID
    livemode: bool
    url: str
    description: str | None
    events: tuple[str, ...]
    enabled: bool
    disabled_reason: DisabledReason | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Record) -> WebhookEndpoint:
        reason = row["disabled_reason"]
        return cls(
            id=row["id"],
            organization_id=row["organization_id"],
            livemode=row["livemode"],
            url=row["url"],
            description=row["description"],
            events=tuple(row["events"]),
            enabled=row["enabled"],
            disabled_reason=None if reason is None else DisabledReason(reason),
            failing_since=row["failing_since"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@dataclass(frozen=True, kw_only=True)
class CreatedEndpoint:
    """A new endpoint and its signing secret, which the API shows this one time."""

    endpoint: WebhookEndpoint
    signing_secret: str


@dataclass(frozen=True, kw_only=True)
class WebhookAttempt:
    """One HTTP request of a delivery and what came back."""

    attempt_number: int
    attempted_at: datetime
    # None when no response arrived: a timeout, a connection failure or a blocked URL.
    status_code: int | None
    duration_ms: int
    error: str | None
    # At most the first 1 KiB of the response body, decoded as UTF-8.
    response_excerpt: str | None

    @classmethod
    def from_row(cls, row: Record) -> WebhookAttempt:
        return cls(
            attempt_number=row["attempt_number"],
            attempted_at=row["attempted_at"],
            status_code=row["status_code"],
            duration_ms=row["duration_ms"],
            error=row["error"],
            response_excerpt=row["response_excerpt"],
        )


@dataclass(frozen=True, kw_only=True)
class WebhookDelivery:
    """One event on its way to one endpoint, with its attempts when they were loaded."""

    id: str
    event_id: str
    event_type: str
    endpoint_id: str
    status: DeliveryStatus
    attempt_count: int
    # When a pending delivery is due; None once it has ended.
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    attempts: tuple[WebhookAttempt, ...] = ()

    @classmethod
    def from_row(cls, row: Record, attempts: tuple[WebhookAttempt, ...] = ()) -> WebhookDelivery:
        return cls(
            id=row["id"],
            event_id=row["event_id"],
            event_type=row["event_type"],
            endpoint_id=row["endpoint_id"],
            status=DeliveryStatus(row["status"]),
            attempt_count=row["attempt_count"],
            next_attempt_at=row["next_attempt_at"],
            last_attempt_at=row["last_attempt_at"],
            last_status_code=row["last_status_code"],
            last_error=row["last_error"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            attempts=attempts,
        )
