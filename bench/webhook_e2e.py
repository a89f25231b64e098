"""Delay from an import's end to its webhook's arrival, through real worker processes.

Queues `JOBS` one-post test-mode imports on as many accounts, subscribes one endpoint
on a receiver in this process, then starts two worker processes. For every event the
delay is the receiver's arrival time minus the job's `finished_at`, which PostgreSQL
set in the transaction that also wrote the event. It includes the wake-up through
Redis and arq, the dispatcher's claim and the HTTP request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import statistics
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from bench.support import create_database, drop_database
from postfuze_imports import db
from postfuze_imports.crypto import Secrets
from postfuze_imports.devstack.stack import free_port
from postfuze_imports.imports.jobs import create_job
from postfuze_imports.records import SocialAccount
from postfuze_imports.settings import Settings
from postfuze_imports.webhooks import endpoints

JOBS = 1000
WORKERS = 2
TIME_LIMIT_SECONDS = 300


async def run(settings: Settings) -> dict[str, Any]:
    dsn = await create_database(settings.database_url)
    try:
        return await _measure(settings, dsn)
    finally:
        await drop_database(settings.database_url, dsn)


async def _measure(settings: Settings, dsn: str) -> dict[str, Any]:
    arrivals: dict[str, datetime] = {}
    done = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        event = json.loads(await request.read())
        arrivals[event["data"]["id"]] = datetime.now(UTC)
        if len(arrivals) >= JOBS:
            done.set()
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", receive)
    runner = web.AppRunner(receiver, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()

    pool = await db.create_pool(dsn, max_size=4)
    secrets = Secrets(settings.secret_key)
    local = dataclasses.replace(settings, database_url=dsn, allow_private_networks=True)
    workers: list[asyncio.subprocess.Process] = []
    try:
        org_id = uuid.uuid4()
        await pool.execute(db.q("insert_organization"), org_id, "bench")
        await endpoints.create(
            pool,
            secrets,
            local,
            org_id,
            False,
            url=f"http://127.0.0.1:{port}/hook",
            events=["import.completed"],
        )
        for index in range(JOBS):
            row = await pool.fetchrow(
                db.q("insert_social_account"),
                uuid.uuid4(),
                org_id,
                False,
                "x",
                None,
                f"latency{index}",
                None,
                f"latency-{index}",
                None,
                secrets.encrypt_json({"access_token": "t"}),
                None,
            )
            account = SocialAccount.from_row(db.required(row))
            await create_job(pool, account, from_bound=None, to_bound=None, limit=1)
        env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "POSTFUZE_LOG_LEVEL": "WARNING",
            "POSTFUZE_ALLOW_PRIVATE_NETWORKS": "true",
        }
        for _ in range(WORKERS):
            workers.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "postfuze_imports", "worker", env=env
                )
            )
        await asyncio.wait_for(done.wait(), TIME_LIMIT_SECONDS)
        rows = await pool.fetch("SELECT id, finished_at FROM import_jobs")
        delays = sorted(
            (arrivals[row["id"]] - row["finished_at"]).total_seconds() * 1000 for row in rows
        )
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            await asyncio.wait_for(worker.wait(), timeout=30)
        await pool.close()
        await runner.cleanup()
    return {
        "events": len(delays),
        "workers": WORKERS,
        "delay_ms_median": round(statistics.median(delays), 1),
        "delay_ms_p99": round(delays[int(len(delays) * 0.99) - 1], 1),
        "delay_ms_max": round(delays[-1], 1),
    }
