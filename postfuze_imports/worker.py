"""The arq worker: task functions, cron sweeps, startup and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
from arq import func
from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix
from arq.worker import Worker
from redis.exceptions import RedisError

from postfuze_imports import __version__, db, queue
from postfuze_imports.crypto import Secrets
from postfuze_imports.hooks import record_import_finished
from postfuze_imports.imports.runner import JobRunner, Wakers
from postfuze_imports.outbound import create_client_session
from postfuze_imports.providers import ProviderRegistry
from postfuze_imports.settings import Settings
from postfuze_imports.webhooks.dispatcher import Dispatcher
from postfuze_imports.webhooks.listener import DeliveryListener

log = logging.getLogger(__name__)

# The sweep sends no more wake-ups while this many are already queued: the queue is
# then backed up, not lost.
SWEEP_MAX_QUEUED = 1000
SWEEP_BATCH = 200
DISPATCH_BATCH = 500
# Seconds after which a queue entry still marked in progress counts as abandoned.
ABANDONED_AFTER_SECONDS = 120
# Backoff of worker restarts after Redis became unreachable, in seconds.
RESTART_FIRST_DELAY_SECONDS = 1.0
RESTART_MAX_DELAY_SECONDS = 30.0


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    redis: ArqRedis = ctx["redis"]
    pool = await db.create_pool(settings.database_url, max_size=settings.database_pool_size)
    http = create_client_session(
        allow_private=settings.allow_private_networks,
        timeout=aiohttp.ClientTimeout(total=settings.network_timeout_seconds),
    )
    providers = ProviderRegistry(settings=settings, session=http)

    async def wake_import(job_id: str | None, delay: float) -> bool:
        return await queue.wake_import(redis, job_id, delay=delay)

    async def wake_dispatcher() -> bool:
        return await queue.wake_dispatcher(redis)

    ctx["pool"] = pool
    ctx["http"] = http
    ctx["providers"] = providers
    ctx["runner"] = JobRunner(
        pool=pool,
        settings=settings,
        secrets=Secrets(settings.secret_key),
        providers=providers,
        on_finish=record_import_finished,
        wakers=Wakers(wake_import=wake_import, wake_dispatcher=wake_dispatcher),
    )
    dispatcher = Dispatcher.create(pool, settings)
    listener = DeliveryListener(settings.database_url, dispatcher, batch=DISPATCH_BATCH)
    await listener.start()
    ctx["dispatcher"] = dispatcher
    ctx["listener"] = listener
    # The sweep runs beside arq, not as an arq cron job: a cron job waits in the same
    # queue that abandoned entries can clog, and the sweep is what clears them.
    ctx["sweeper"] = asyncio.create_task(_sweep_forever(ctx), name="sweep")
    ctx["started"] = True
    log.info(
        "worker started (version %s, %d jobs at once)", __version__, settings.worker_concurrency
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    if ctx.pop("started", None) is None:
        return
    sweeper: asyncio.Task[None] | None = ctx.get("sweeper")
    if sweeper is not None:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
    listener: DeliveryListener | None = ctx.get("listener")
    if listener is not None:
        await listener.close()
    dispatcher: Dispatcher | None = ctx.get("dispatcher")
    if dispatcher is not None:
        await dispatcher.close()
    providers: ProviderRegistry | None = ctx.get("providers")
    if providers is not None:
        await providers.aclose()
    http: aiohttp.ClientSession | None = ctx.get("http")
    if http is not None:
        await http.close()
    pool: db.Pool | None = ctx.get("pool")
    if pool is not None:
        await pool.close()
    log.info("worker stopped")


async def run_import(ctx: dict[str, Any], job_id: str | None) -> None:
    """Run the import `job_id` (any due import when None)."""
    runner: JobRunner = ctx["runner"]
    await runner.run(job_id)


async def dispatch_webhooks(ctx: dict[str, Any]) -> None:
    """Send due webhook deliveries until none is due."""
    dispatcher: Dispatcher = ctx["dispatcher"]
    while await dispatcher.dispatch_due(DISPATCH_BATCH) >= DISPATCH_BATCH:
        pass


async def _sweep_forever(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    while True:
        try:
            await sweep(ctx)
        except (RedisError, OSError, asyncpg.PostgresError) as error:
            log.warning(
                "sweep failed, trying again in %d s: %s", settings.sweep_interval_seconds, error
            )
        await asyncio.sleep(settings.sweep_interval_seconds)


async def sweep(ctx: dict[str, Any]) -> None:
    """Wake due imports whose wake-up was lost or whose worker died, and the dispatcher.

    PostgreSQL is the source of truth: Redis may have been flushed or restarted, and a
    worker killed mid-job leaves only an expired lease behind.
    """
    pool: db.Pool = ctx["pool"]
    redis: ArqRedis = ctx["redis"]
    await prune_abandoned_wakeups(redis)
    queued = await redis.zcard(queue.QUEUE_NAME)
    if queued < SWEEP_MAX_QUEUED:
        rows = await pool.fetch(db.q("due_import_jobs"), SWEEP_BATCH)
        for row in rows:
            await queue.wake_import(redis, row["id"])
        if rows:
            log.info("sweep woke %d due imports", len(rows), extra={"woken": len(rows)})
    await queue.wake_dispatcher(redis)
    listener: DeliveryListener = ctx["listener"]
    await listener.ensure_listening()
    deleted = await pool.execute(db.q("delete_expired_idempotency_keys"), SWEEP_BATCH)
    if deleted != "DELETE 0":
        log.info("sweep deleted expired idempotency keys: %s", deleted)


async def prune_abandoned_wakeups(redis: ArqRedis) -> int:
    """Drop queue entries that a worker took and never finished; return how many.

    arq keeps a taken job in the queue until it ends, so it can run it again after its
    in-progress key expires (the job timeout plus 10 s). A worker killed mid-job leaves
    such entries behind, and a worker reads only the oldest 100 entries per poll
    (arq 0.28, `queue_read_limit`): enough of them hide every newer wake-up for hours.
    PostgreSQL leases recover the jobs themselves, so these entries are not needed.
    Removing an entry of a job that is still running does not stop it.
    """
    cutoff_ms = (time.time() - ABANDONED_AFTER_SECONDS) * 1000
    pruned = 0
    for raw_id in await redis.zrangebyscore(queue.QUEUE_NAME, "-inf", cutoff_ms, start=0, num=1000):
        job_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        if await redis.exists(in_progress_key_prefix + job_id):
            pruned += await redis.zrem(queue.QUEUE_NAME, job_id)
    if pruned:
        log.info("sweep removed %d abandoned wake-ups from the queue", pruned)
    return pruned


def worker_settings(settings: Settings) -> dict[str, Any]:
    """Return the keyword arguments of arq's Worker for these settings."""
    return {
        "functions": [
            # Results are not kept: PostgreSQL holds each job's outcome, and a kept
            # result would block a later wake-up with the same arq job id. A wake-up
            # interrupted by a shutdown may run again, which is harmless.
            func(
                run_import,
                name=queue.RUN_IMPORT,
                keep_result=0,
                timeout=timedelta(hours=6),
                max_tries=3,
            ),
            func(
                dispatch_webhooks,
                name=queue.DISPATCH_WEBHOOKS,
                keep_result=0,
                timeout=timedelta(minutes=30),
                max_tries=3,
            ),
        ],
        "queue_name": queue.QUEUE_NAME,
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "max_jobs": settings.worker_concurrency + 2,
        # Entries of killed workers sit at the head of the queue until the sweep prunes
        # them; reading further keeps newer wake-ups in reach meanwhile.
        "queue_read_limit": 1000,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "ctx": {"settings": settings},
        "handle_signals": True,
        "keep_result": 0,
        "poll_delay": 0.2,
    }


def run(settings: Settings) -> None:
    """Run a worker until a signal stops it, starting it again when Redis goes away."""
    delay = RESTART_FIRST_DELAY_SECONDS
    while True:
        started = time.monotonic()
        worker = Worker(**worker_settings(settings))
        try:
            worker.run()
            return
        except asyncio.CancelledError:
            # arq 0.28 lets the cancellation of jobs running at shutdown escape; their
            # leases were released, so this is a normal stop.
            log.info("worker stopped while jobs were running; they were handed back")
            return
        except (RedisError, OSError) as error:
            # arq skips on_shutdown when Redis is gone, which would leak the database
            # pool, the listener and the HTTP sessions of every restart.
            with contextlib.suppress(Exception):
                worker.loop.run_until_complete(shutdown(worker.ctx))
            if time.monotonic() - started > RESTART_MAX_DELAY_SECONDS:
                delay = RESTART_FIRST_DELAY_SECONDS
            log.error(
                "worker lost Redis (%s: %s); starting again in %.0f s",
                type(error).__name__,
                error,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, RESTART_MAX_DELAY_SECONDS)
