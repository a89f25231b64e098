"""The webhook dispatcher: claims due deliveries, signs and sends them, records each attempt.

Several dispatchers, in one process or many, can run at once. A claim is one `UPDATE …
WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)` that pushes the delivery's due time to
the end of a short claim lease, so a delivery whose dispatcher died is due again once
that lease has passed. Writes after the claim check the claim token, so a dispatcher
that lost its claim cannot overwrite the new owner's outcome.

Receivers see each event at least once: a dispatcher that dies after the receiver
responded but before the outcome was written sends the event again. The `webhook-id`
header carries the event id on every attempt, for receivers to deduplicate on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from postfuze_imports import __version__
from postfuze_imports.crypto import Secrets
from postfuze_imports.db import Pool, Record, q
from postfuze_imports.errors import OutboundBlocked
from postfuze_imports.outbound import create_client_session, is_blocked_connection, validate_url
from postfuze_imports.settings import Settings
from postfuze_imports.webhooks.endpoints import decrypt_secret
from postfuze_imports.webhooks.records import DeliveryStatus, DisabledReason
from postfuze_imports.webhooks.schedule import (
    FAILING_DISABLE_AFTER,
    MAX_ATTEMPTS,
    parse_retry_after,
    retry_delay,
)
from postfuze_imports.webhooks.signing import sign

log = logging.getLogger(__name__)

USER_AGENT = f"postfuze-imports/{__version__}"
# Bytes of a response body kept with an attempt, for the API consumer to debug with.
EXCERPT_BYTES = 1024
# Time beyond the request timeout that a claim lease leaves for writing the outcome.
CLAIM_LEASE_MARGIN = timedelta(seconds=30)
# Statuses whose Retry-After header replaces the retry schedule.
RETRY_AFTER_STATUSES = frozenset({429, 503})
# The longest Location value copied into the error of a redirect.
MAX_LOCATION_IN_ERROR = 200

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class ClaimedDelivery:
    """A delivery this dispatcher has claimed, with the data needed to send it."""

    id: str
    event_id: str
    event_type: str
    endpoint_id: str
    # 1 for the first attempt.
    attempt_number: int
    body: str
    url: str
    encrypted_secret: bytes
    # False when the endpoint was disabled or deleted after the delivery was queued.
    endpoint_active: bool
    claim_token: uuid.UUID

    @classmethod
    def from_row(cls, row: Record, claim_token: uuid.UUID) -> ClaimedDelivery:
        return cls(
            id=row["id"],
            event_id=row["event_id"],
            event_type=row["event_type"],
            endpoint_id=row["endpoint_id"],
            attempt_number=row["attempt_count"] + 1,
            body=row["body"],
            url=row["url"],
            encrypted_secret=row["signing_secret"],
            endpoint_active=row["endpoint_active"],
            claim_token=claim_token,
        )


@dataclass(frozen=True, kw_only=True)
class AttemptResult:
    """The outcome of one HTTP request of a delivery."""

    attempted_at: datetime
    duration_ms: int
    # None when no response arrived.
    status_code: int | None = None
    error: str | None = None
    response_excerpt: str | None = None
    # The wait that a 429 or 503 response requested in its Retry-After header.
    retry_after: timedelta | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Dispatcher:
    """Sends due webhook deliveries. Create one per worker process and reuse it.

    `now` is the clock that decides which deliveries are due and when the next attempt
    is. Tests replace it to step through the retry schedule without waiting. The
    `webhook-timestamp` header always carries the real time of sending, because
    receivers compare it with their own clock. `rng` draws the retry jitter.
    """

    def __init__(
        self,
        pool: Pool,
        settings: Settings,
        session: aiohttp.ClientSession,
        *,
        secrets: Secrets | None = None,
        now: Clock = _utc_now,
        rng: random.Random | None = None,
        claim_lease: timedelta | None = None,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._session = session
        self._owns_session = False
        self._secrets = secrets or Secrets(settings.secret_key)
        self._now = now
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter, not a secret
        self._timeout = aiohttp.ClientTimeout(total=settings.webhook_timeout_seconds)
        # Shared by concurrent dispatch_due calls, so that together they send at most
        # settings.webhook_concurrency requests at once.
        self._slots = asyncio.Semaphore(settings.webhook_concurrency)
        self._claim_lease = (
            claim_lease
            if claim_lease is not None
            else (timedelta(seconds=settings.webhook_timeout_seconds) + CLAIM_LEASE_MARGIN)
        )

    @classmethod
    def create(
        cls,
        pool: Pool,
        settings: Settings,
        *,
        now: Clock = _utc_now,
        rng: random.Random | None = None,
        claim_lease: timedelta | None = None,
    ) -> Dispatcher:
        """Create a dispatcher with its own guarded session; call inside the event loop.

        The session's connection limits equal `settings.webhook_concurrency`, the maximum
        number of requests the dispatcher sends at once, so a claimed delivery does not
        wait for a free connection while its claim lease runs.
        """
        timeout = aiohttp.ClientTimeout(total=settings.webhook_timeout_seconds)
        session = create_client_session(
            allow_private=settings.allow_private_networks,
            timeout=timeout,
            limit=settings.webhook_concurrency,
            limit_per_host=settings.webhook_concurrency,
        )
        dispatcher = cls(pool, settings, session, now=now, rng=rng, claim_lease=claim_lease)
        dispatcher._owns_session = True
        return dispatcher

    async def close(self) -> None:
        """Close the session when this dispatcher created it."""
        if self._owns_session:
            await self._session.close()

    async def dispatch_due(self, limit: int = 1000) -> int:
        """Send up to `limit` due deliveries; return how many were claimed.

        At most `settings.webhook_concurrency` requests run at once, across all calls
        on this dispatcher. Deliveries are claimed as slots free up, never ahead of them,
        so no claim lease runs out while its delivery waits for a slot. Returns when
        nothing more is due or `limit` is reached, after every claimed delivery has been
        recorded.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        claimed = 0
        running: set[asyncio.Task[None]] = set()
        try:
            while claimed < limit:
                room = await self._take_slots(limit - claimed)
                deliveries: list[ClaimedDelivery] = []
                try:
                    deliveries = await self._claim(room)
                finally:
                    # Give back the slots the claim did not fill, all of them if it raised.
                    for _ in range(room - len(deliveries)):
                        self._slots.release()
                if not deliveries:
                    break
                claimed += len(deliveries)
                for delivery in deliveries:
                    task = asyncio.create_task(self._deliver_in_slot(delivery))
                    running.add(task)
                    task.add_done_callback(running.discard)
        finally:
            if running:
                await asyncio.gather(*running)
        return claimed

    async def _take_slots(self, maximum: int) -> int:
        """Wait for a free slot, then take up to `maximum` free slots; return how many."""
        await self._slots.acquire()
        count = 1
        while count < maximum and not self._slots.locked():
            await self._slots.acquire()
            count += 1
        return count

    async def _deliver_in_slot(self, delivery: ClaimedDelivery) -> None:
        try:
            await self._deliver(delivery)
        finally:
            self._slots.release()

    async def _claim(self, count: int) -> list[ClaimedDelivery]:
        now = self._now()
        token = uuid.uuid4()
        rows = await self._pool.fetch(
            q("claim_webhook_deliveries"), now, count, now + self._claim_lease, token
        )
        return [ClaimedDelivery.from_row(row, token) for row in rows]

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        """Send one claimed delivery and record the attempt; log instead of raising.

        Any failure here leaves the claim to expire, after which the delivery is due again.
        """
        try:
            if not delivery.endpoint_active:
                await self._cancel(delivery)
                return
            result = await self._send(delivery)
            await self._record(delivery, result)
        except Exception:
            log.exception(
                "webhook delivery %s of event %s to endpoint %s failed inside the "
                "dispatcher; it is due again when its claim lease expires",
                delivery.id,
                delivery.event_id,
                delivery.endpoint_id,
                extra=_log_fields(delivery),
            )

    async def _cancel(self, delivery: ClaimedDelivery) -> None:
        await self._pool.execute(
            q("cancel_claimed_webhook_delivery"),
            delivery.id,
            delivery.claim_token,
            "the endpoint was disabled or deleted before the delivery was sent",
            self._now(),
        )
        log.info(
            "canceled webhook delivery %s of event %s: endpoint %s is disabled or deleted",
            delivery.id,
            delivery.event_id,
            delivery.endpoint_id,
            extra=_log_fields(delivery),
        )

    async def _send(self, delivery: ClaimedDelivery) -> AttemptResult:
        """Send one request; turn every way it can fail into a failed AttemptResult."""
        attempted_at = self._now()
        started = time.monotonic()

        def failed(error: str) -> AttemptResult:
            return AttemptResult(
                attempted_at=attempted_at, duration_ms=_elapsed_ms(started), error=error
            )

        try:
            validate_url(delivery.url, allow_private=self._settings.allow_private_networks)
        except OutboundBlocked as error:
            return failed(f"the URL is blocked by the outbound guard: {error}")

        body = delivery.body.encode("utf-8")
        # Standard Webhooks: the timestamp is when this attempt is sent, in Unix seconds.
        timestamp = int(time.time())
        secret = decrypt_secret(self._secrets, delivery.encrypted_secret)
        headers = {
            "webhook-id": delivery.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, delivery.event_id, timestamp, body),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        try:
            async with self._session.post(
                delivery.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                status = response.status
                excerpt = await _read_excerpt(response)
                retry_after = None
                if status in RETRY_AFTER_STATUSES:
                    retry_after = parse_retry_after(
                        response.headers.get("Retry-After"), self._now()
                    )
                status_error = _status_error(status, response.headers.get("Location"), retry_after)
        except TimeoutError:
            limit = self._settings.webhook_timeout_seconds
            return failed(f"no response within {limit:g} s")
        except OutboundBlocked as blocked:
            return failed(f"the URL is blocked by the outbound guard: {blocked}")
        except aiohttp.ClientError as client_error:
            if is_blocked_connection(client_error):
                return failed(
                    "the connection is blocked by the outbound guard: the host resolves to "
                    "a private, loopback or otherwise non-public address"
                )
            return failed(f"the request failed: {type(client_error).__name__}: {client_error}")
        return AttemptResult(
            attempted_at=attempted_at,
            duration_ms=_elapsed_ms(started),
            status_code=status,
            error=status_error,
            response_excerpt=excerpt,
            retry_after=retry_after,
        )

    async def _record(self, delivery: ClaimedDelivery, result: AttemptResult) -> None:
        """Write the attempt, the delivery's new state and the endpoint's health at once."""
        now = self._now()
        disable: DisabledReason | None = None
        status = DeliveryStatus.SUCCEEDED
        next_attempt_at: datetime | None = None
        async with self._pool.acquire() as connection, connection.transaction():
            # The endpoint row is locked before the delivery rows; see sql/queries/webhooks.sql.
            if result.succeeded:
                await connection.execute(
                    q("clear_webhook_endpoint_failing"), delivery.endpoint_id, now
                )
            else:
                failing_since = await connection.fetchval(
                    q("mark_webhook_endpoint_failing"), delivery.endpoint_id, result.attempted_at
                )
                if result.status_code == 410:
                    disable = DisabledReason.GONE
                elif failing_since is not None and now - failing_since >= FAILING_DISABLE_AFTER:
                    disable = DisabledReason.FAILING
                status = DeliveryStatus.FAILED
                if disable is None and delivery.attempt_number < MAX_ATTEMPTS:
                    delay = result.retry_after
                    if delay is None:
                        delay = retry_delay(delivery.attempt_number, self._rng)
                    if delay is not None:
                        status = DeliveryStatus.PENDING
                        next_attempt_at = now + delay
            kept_claim = await connection.fetchval(
                q("finish_webhook_attempt"),
                delivery.id,
                delivery.claim_token,
                status.value,
                next_attempt_at,
                result.attempted_at,
                result.status_code,
                result.error,
                now,
            )
            await connection.execute(
                q("insert_webhook_attempt"),
                delivery.id,
                delivery.attempt_number,
                result.attempted_at,
                result.status_code,
                result.duration_ms,
                result.error,
                result.response_excerpt,
            )
            disabled_now = False
            if disable is not None:
                disabled_now = (
                    await connection.fetchval(
                        q("disable_webhook_endpoint"), delivery.endpoint_id, disable.value, now
                    )
                    is not None
                )
                if disabled_now:
                    await connection.execute(
                        q("end_pending_webhook_deliveries"),
                        delivery.endpoint_id,
                        DeliveryStatus.FAILED.value,
                        _disabled_message(disable),
                        now,
                    )
        self._log_attempt(delivery, result, status, next_attempt_at, lost=kept_claim is None)
        if disabled_now and disable is not None:
            log.warning(
                "disabled webhook endpoint %s: %s",
                delivery.endpoint_id,
                _disabled_message(disable),
                extra={**_log_fields(delivery), "disabled_reason": disable.value},
            )

    def _log_attempt(
        self,
        delivery: ClaimedDelivery,
        result: AttemptResult,
        status: DeliveryStatus,
        next_attempt_at: datetime | None,
        *,
        lost: bool,
    ) -> None:
        fields = {
            **_log_fields(delivery),
            "status_code": result.status_code,
            "duration_ms": result.duration_ms,
        }
        outcome = f"HTTP {result.status_code}" if result.status_code else "no response"
        if lost:
            log.warning(
                "webhook delivery %s attempt %d ended (%s) after its claim was lost; "
                "the attempt is recorded, the delivery's state was left to its new owner",
                delivery.id,
                delivery.attempt_number,
                outcome,
                extra=fields,
            )
        elif result.succeeded:
            log.info(
                "webhook delivery %s of event %s to endpoint %s succeeded on attempt %d: "
                "%s in %d ms",
                delivery.id,
                delivery.event_id,
                delivery.endpoint_id,
                delivery.attempt_number,
                outcome,
                result.duration_ms,
                extra=fields,
            )
        elif status is DeliveryStatus.PENDING and next_attempt_at is not None:
            log.warning(
                "webhook delivery %s of event %s to endpoint %s failed on attempt %d: %s; "
                "next attempt at %s",
                delivery.id,
                delivery.event_id,
                delivery.endpoint_id,
                delivery.attempt_number,
                result.error,
                next_attempt_at.isoformat(),
                extra=fields,
            )
        else:
            log.error(
                "webhook delivery %s of event %s to endpoint %s failed on attempt %d: %s; "
                "no attempts remain",
                delivery.id,
                delivery.event_id,
                delivery.endpoint_id,
                delivery.attempt_number,
                result.error,
                extra=fields,
            )


def _elapsed_ms(started: float) -> int:
    return max(0, round((time.monotonic() - started) * 1000))


async def _read_excerpt(response: aiohttp.ClientResponse) -> str | None:
    """Return up to EXCERPT_BYTES of the body as text, or None for an empty body.

    The status alone decides the outcome, so a body that stalls or breaks off only
    shortens the excerpt.
    """
    received = bytearray()
    with contextlib.suppress(TimeoutError, aiohttp.ClientError):
        while len(received) < EXCERPT_BYTES:
            chunk = await response.content.read(EXCERPT_BYTES - len(received))
            if not chunk:
                break
            received += chunk
    if not received:
        return None
    # A cut may split a UTF-8 sequence, and PostgreSQL text cannot contain NUL.
    return received.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def _status_error(status: int, location: str | None, retry_after: timedelta | None) -> str | None:
    """Return the error text of a response status, or None for a 2xx."""
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        target = ""
        if location:
            target = f" to {location[:MAX_LOCATION_IN_ERROR]}"
        return (
            f"HTTP {status}: a redirect{target}, which is not followed; "
            "set the endpoint URL to the final address"
        )
    if status == 410:
        return "HTTP 410 Gone: the receiver asked to stop deliveries, so the endpoint is disabled"
    error = f"HTTP {status}: expected a 2xx status"
    if retry_after is not None:
        error += f"; Retry-After asked for {retry_after.total_seconds():g} s"
    return error


def _disabled_message(reason: DisabledReason) -> str:
    if reason is DisabledReason.GONE:
        return "the endpoint was disabled because it answered 410 Gone"
    days = FAILING_DISABLE_AFTER.days
    return f"the endpoint was disabled because its deliveries failed for {days} days"


def _log_fields(delivery: ClaimedDelivery) -> dict[str, Any]:
    return {
        "action": "webhook_attempt",
        "delivery_id": delivery.id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "endpoint_id": delivery.endpoint_id,
        "attempt": delivery.attempt_number,
    }
