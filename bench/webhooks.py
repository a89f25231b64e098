"""Benchmark of the webhook dispatcher against a receiver on 127.0.0.1.

It measures two numbers:

- throughput: deliveries per second while one dispatcher sends `events` queued events;
- latency: the time from the commit of the transaction that records an event to the
  event's arrival at the receiver, when `dispatch_due` runs right after the commit.
  A worker woken through Redis adds the arq wake-up to this.

`run` creates a private database on the given PostgreSQL server, applies the migrations
and drops it afterwards. The receiver runs in the same process and event loop as the
dispatcher, so both share one CPU core; it responds 200 at once and verifies every
hundredth delivery with the `standardwebhooks` package.

Usage: python -m bench.webhooks [--events N] [--latency-samples N]
(the server is DATABASE_URL, or postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import time
import uuid
from typing import Any

import asyncpg
from aiohttp import web
from standardwebhooks.webhooks import Webhook
from yarl import URL

from postfuze_imports.crypto import Secrets
from postfuze_imports.db import Connection, Pool, create_pool
from postfuze_imports.migrations import migrate
from postfuze_imports.settings import Settings
from postfuze_imports.webhooks import endpoints
from postfuze_imports.webhooks.dispatcher import Dispatcher
from postfuze_imports.webhooks.events import record_event

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
# The whole run is cut off after this many seconds.
TIME_LIMIT_SECONDS = 300
MAX_EVENTS = 10_000
VERIFY_EVERY = 100


class BenchReceiver:
    """Records when each webhook id arrives; responds 200 at once."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.secret: str | None = None
        self.verified = 0
        self.arrived = asyncio.Event()
        self.expected = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        webhook_id = request.headers["webhook-id"]
        self.arrivals[webhook_id] = time.perf_counter()
        if self.secret is not None and len(self.arrivals) % VERIFY_EVERY == 1:
            # Raises on a bad signature, which the dispatcher records as a 500.
            Webhook(self.secret).verify(body, dict(request.headers))
            self.verified += 1
        if len(self.arrivals) >= self.expected:
            self.arrived.set()
        return web.Response(text="ok")


async def _record(pool: Pool, organization_id: uuid.UUID, count: int, start: int) -> list[str]:
    """Record `count` events, 100 per transaction; return their ids."""
    ids: list[str] = []
    for batch_start in range(0, count, 100):
        async with pool.acquire() as connection, connection.transaction():
            for index in range(batch_start, min(count, batch_start + 100)):
                ids.append(await _record_one(connection, organization_id, start + index))
    return ids


async def _record_one(connection: Connection, organization_id: uuid.UUID, index: int) -> str:
    data = {"id": f"imp_{index:06d}", "status": "completed", "imported_count": index}
    return await record_event(
        connection,
        organization_id=organization_id,
        livemode=False,
        event_type="import.completed",
        data=data,
    )


async def _measure(
    pool: Pool, settings: Settings, events: int, latency_samples: int
) -> dict[str, Any]:
    receiver = BenchReceiver()
    await receiver.start()
    dispatcher = Dispatcher.create(pool, settings)
    try:
        organization_id = uuid.uuid4()
        await pool.execute(
            "INSERT INTO organizations (id, name) VALUES ($1, 'Benchmark')", organization_id
        )
        created = await endpoints.create(
            pool,
            Secrets(settings.secret_key),
            settings,
            organization_id,
            False,
            url=f"http://127.0.0.1:{receiver.port}/hook",
            events=["import.completed"],
        )
        receiver.secret = created.signing_secret

        # Throughput: every event is queued before the clock starts.
        queued = await _record(pool, organization_id, events, 0)
        receiver.expected = len(queued)
        started = time.perf_counter()
        while len(receiver.arrivals) < len(queued):
            if await dispatcher.dispatch_due(limit=len(queued)) == 0:
                await asyncio.wait_for(receiver.arrived.wait(), 10)
        throughput_seconds = time.perf_counter() - started
        failed = await pool.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE status <> 'succeeded'"
        )

        # Latency: one event at a time, dispatched right after its commit.
        delays_ms: list[float] = []
        for index in range(latency_samples):
            async with pool.acquire() as connection, connection.transaction():
                event_id = await _record_one(connection, organization_id, events + index)
            committed = time.perf_counter()
            await dispatcher.dispatch_due(limit=10)
            delays_ms.append((receiver.arrivals[event_id] - committed) * 1000)
    finally:
        await dispatcher.close()
        await receiver.stop()

    result: dict[str, Any] = {
        "events": len(queued),
        "webhook_concurrency": settings.webhook_concurrency,
        "throughput_seconds": round(throughput_seconds, 3),
        "deliveries_per_second": round(len(queued) / throughput_seconds, 1),
        "deliveries_not_succeeded": failed,
        "signatures_verified": receiver.verified,
        "latency_samples": len(delays_ms),
    }
    if delays_ms:
        ordered = sorted(delays_ms)
        result["latency_ms_median"] = round(statistics.median(ordered), 2)
        p99_index = min(len(ordered) - 1, len(ordered) * 99 // 100)
        result["latency_ms_p99"] = round(ordered[p99_index], 2)
        result["latency_ms_max"] = round(ordered[-1], 2)
    return result


async def run(
    dsn: str, *, events: int = 1000, latency_samples: int = 200, concurrency: int = 50
) -> dict[str, Any]:
    """Benchmark the dispatcher on a private database created on the server at `dsn`."""
    if not 1 <= events <= MAX_EVENTS:
        raise ValueError(f"events must be between 1 and {MAX_EVENTS}, not {events}")
    if not 0 <= latency_samples <= MAX_EVENTS:
        raise ValueError(
            f"latency_samples must be between 0 and {MAX_EVENTS}, not {latency_samples}"
        )
    name = f"postfuze_webhooks_bench_{secrets.token_hex(6)}"
    database_dsn = str(URL(dsn).with_path(f"/{name}"))
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        await migrate(database_dsn)
        settings = Settings(
            database_url=database_dsn,
            redis_url="redis://127.0.0.1:6379/0",
            secret_key=secrets.token_urlsafe(32),
            allow_private_networks=True,
            webhook_concurrency=concurrency,
        )
        pool = await create_pool(database_dsn, max_size=concurrency + 2)
        try:
            async with asyncio.timeout(TIME_LIMIT_SECONDS):
                return await _measure(pool, settings, events, latency_samples)
        finally:
            await pool.close()
    finally:
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1000, help="queued events to send")
    parser.add_argument(
        "--latency-samples", type=int, default=200, help="events sent one at a time"
    )
    parser.add_argument("--concurrency", type=int, default=50, help="requests at once")
    arguments = parser.parse_args()
    dsn = os.environ.get("DATABASE_URL") or DEFAULT_SERVER
    result = asyncio.run(
        run(
            dsn,
            events=arguments.events,
            latency_samples=arguments.latency_samples,
            concurrency=arguments.concurrency,
        )
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
