"""Helpers of the webhook tests: settings, a settable clock, a receiver on 127.0.0.1 that
verifies every delivery with the `standardwebhooks` package, and the harness that the
`webhooks` fixture (tests/webhooks_fixtures.py) hands to each test.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from postfuze_imports.crypto import Secrets
from postfuze_imports.db import Pool, Record
from postfuze_imports.settings import Settings
from postfuze_imports.webhooks import endpoints
from postfuze_imports.webhooks.dispatcher import Dispatcher
from postfuze_imports.webhooks.events import record_event
from postfuze_imports.webhooks.records import (
    IMPORT_COMPLETED,
    IMPORT_FAILED,
    CreatedEndpoint,
    WebhookEndpoint,
)

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SECRET_KEY = "webhook-tests-secret-key-0123456789abcdef"
# Deadline of a wait for requests; generous, because a wait ends as soon as they arrive.
WAIT_SECONDS = 15.0


def server_dsn() -> str:
    """Return the PostgreSQL server the tests create their databases on."""
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def make_settings(dsn: str, **overrides: Any) -> Settings:
    """Return settings for tests; the loopback receivers need private networks allowed."""
    values: dict[str, Any] = {
        "database_url": dsn,
        "redis_url": "redis://127.0.0.1:6379/0",
        "secret_key": SECRET_KEY,
        "allow_private_networks": True,
        "webhook_concurrency": 10,
        "webhook_timeout_seconds": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


async def create_organization(pool: Pool, name: str = "Test organization") -> uuid.UUID:
    organization_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO organizations (id, name) VALUES ($1, $2)", organization_id, name
    )
    return organization_id


def _real_now() -> datetime:
    return datetime.now(UTC)


class FakeClock:
    """A clock that moves only when a test moves it.

    By default it starts at the next whole second, so whatever was recorded before it
    (or shortly after) is already due, and HTTP-dates derived from it are exact.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or (datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1))

    def __call__(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta

    def set(self, moment: datetime) -> None:
        self.current = moment


@dataclass
class ReceivedRequest:
    """One request the receiver got, and the verdict of the Standard Webhooks verifier."""

    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    payload: Any = None
    verification_error: str | None = None


Reply = Callable[[web.Request], Awaitable[web.StreamResponse]]


def status_reply(status: int, body: str = "", headers: dict[str, str] | None = None) -> Reply:
    async def reply(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text=body, headers=headers)

    return reply


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records and verifies every webhook it receives.

    Each request takes the next reply of `replies` (a 200 when none is left). With
    `secret` set, a request that fails verification is recorded and gets a 400.
    """

    secret: str | None = None
    replies: list[Reply] = field(default_factory=list)
    requests: list[ReceivedRequest] = field(default_factory=list)
    # Replies that block wait for this event; stopping the receiver sets it.
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        received = ReceivedRequest(
            path=request.path,
            headers={name.lower(): value for name, value in request.headers.items()},
            body=body,
            received_at=time.perf_counter(),
        )
        if self.secret is not None:
            try:
                received.payload = Webhook(self.secret).verify(body, dict(request.headers))
            except WebhookVerificationError as error:
                received.verification_error = str(error)
        async with self._arrived:
            self.requests.append(received)
            self._arrived.notify_all()
        if received.verification_error is not None:
            return web.Response(status=400, text=received.verification_error)
        reply = self.replies.pop(0) if self.replies else status_reply(200, "ok")
        return await reply(request)

    async def wait_for_requests(self, count: int) -> None:
        """Return once `count` requests have arrived; fail the test after WAIT_SECONDS."""
        async with self._arrived:
            try:
                async with asyncio.timeout(WAIT_SECONDS):
                    await self._arrived.wait_for(lambda: len(self.requests) >= count)
            except TimeoutError:
                pytest.fail(f"{len(self.requests)} of {count} requests arrived in {WAIT_SECONDS} s")

    def blocking_reply(self, then: Reply | None = None, gate: asyncio.Event | None = None) -> Reply:
        """Return a reply that waits for an event, then responds like `then`.

        The event is `gate`, or `release` when none is given; `then` defaults to a 500.
        """

        async def reply(request: web.Request) -> web.StreamResponse:
            await (gate or self.release).wait()
            return await (then or status_reply(500, "released"))(request)

        return reply


@dataclass
class WebhookHarness:
    """One test's database pool, organization, receiver and dispatchers, with shortcuts."""

    dsn: str
    pool: Pool
    settings: Settings
    organization_id: uuid.UUID
    receiver: Receiver
    secrets: Secrets = field(default_factory=lambda: Secrets(SECRET_KEY))
    dispatchers: list[Dispatcher] = field(default_factory=list)

    def dispatcher(
        self, *, clock: FakeClock | None = None, seed: int = 1, **overrides: Any
    ) -> Dispatcher:
        """Create a dispatcher on these settings changed by `overrides`; closed at the end.

        Without `clock` it runs on the real clock.
        """
        dispatcher = Dispatcher.create(
            self.pool,
            make_settings(self.dsn, **overrides),
            now=clock if clock is not None else _real_now,
            rng=random.Random(seed),
        )
        self.dispatchers.append(dispatcher)
        return dispatcher

    async def add_endpoint(
        self,
        *,
        path: str = "/hook",
        url: str | None = None,
        events: tuple[str, ...] = (IMPORT_COMPLETED, IMPORT_FAILED),
        livemode: bool = False,
        organization_id: uuid.UUID | None = None,
    ) -> CreatedEndpoint:
        """Create an endpoint of the receiver (or `url`); the receiver learns its secret."""
        created = await endpoints.create(
            self.pool,
            self.secrets,
            self.settings,
            organization_id or self.organization_id,
            livemode,
            url=url or self.receiver.url(path),
            events=list(events),
        )
        self.receiver.secret = created.signing_secret
        return created

    async def update_endpoint(self, endpoint_id: str, **changes: Any) -> WebhookEndpoint | None:
        """Call `endpoints.update` for this organization in test mode."""
        return await endpoints.update(
            self.pool, self.settings, self.organization_id, False, endpoint_id, **changes
        )

    async def record(
        self,
        data: dict[str, Any] | None = None,
        *,
        event_type: str = IMPORT_COMPLETED,
        livemode: bool = False,
        organization_id: uuid.UUID | None = None,
    ) -> str:
        """Record an event in a transaction of its own, as an import job's finish does."""
        async with self.pool.acquire() as connection, connection.transaction():
            return await record_event(
                connection,
                organization_id=organization_id or self.organization_id,
                livemode=livemode,
                event_type=event_type,
                data=data if data is not None else {"id": "imp_0001", "status": "completed"},
            )

    async def delivery_of(self, event_id: str) -> Record:
        row: Record | None = await self.pool.fetchrow(
            "SELECT * FROM webhook_deliveries WHERE event_id = $1", event_id
        )
        assert row is not None, f"no delivery of event {event_id}"
        return row

    async def attempts_of(self, delivery_id: str) -> list[Record]:
        rows: list[Record] = await self.pool.fetch(
            "SELECT * FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt_number, id",
            delivery_id,
        )
        return rows

    async def endpoint_row(self, endpoint_id: str) -> Record:
        row: Record | None = await self.pool.fetchrow(
            "SELECT * FROM webhook_endpoints WHERE id = $1", endpoint_id
        )
        assert row is not None, f"no endpoint {endpoint_id}"
        return row

    async def close(self) -> None:
        for dispatcher in self.dispatchers:
            await dispatcher.close()
        await self.receiver.stop()
        await self.pool.close()
