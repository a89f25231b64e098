"""Import throughput: test-mode imports of 1,000 posts each through worker processes.

Starts two worker processes against the database and Redis of the environment, queues
one import per account for `ACCOUNTS` simulated accounts, and reports posts stored per
second from the first claim to the last finish, as PostgreSQL recorded them.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from typing import Any

from bench.support import create_database, drop_database
from postfuze_imports import db
from postfuze_imports.crypto import Secrets
from postfuze_imports.imports.jobs import create_job
from postfuze_imports.records import SocialAccount
from postfuze_imports.settings import Settings

ACCOUNTS = 20
LIMIT = 1000
WORKERS = 2


async def run(settings: Settings) -> dict[str, Any]:
    dsn = await create_database(settings.database_url)
    pool = await db.create_pool(dsn, max_size=4)
    secrets = Secrets(settings.secret_key)
    org_id = uuid.uuid4()
    await pool.execute(db.q("insert_organization"), org_id, "bench")
    for index in range(ACCOUNTS):
        row = await pool.fetchrow(
            db.q("insert_social_account"),
            uuid.uuid4(),
            org_id,
            False,
            "x",
            None,
            f"bench{index}",
            None,
            f"bench-{index}",
            None,
            secrets.encrypt_json({"access_token": "t"}),
            None,
        )
        await create_job(
            pool,
            SocialAccount.from_row(db.required(row)),
            from_bound=None,
            to_bound=None,
            limit=LIMIT,
        )
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "POSTFUZE_LOG_LEVEL": "WARNING",
        "POSTFUZE_SWEEP_INTERVAL_SECONDS": "1",
    }
    started = time.monotonic()
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "postfuze_imports", "worker", env=env
        )
        for _ in range(WORKERS)
    ]
    try:
        while await pool.fetchval(
            "SELECT count(*) FROM import_jobs WHERE status IN ('pending', 'running')"
        ):
            if time.monotonic() - started > 600:
                raise TimeoutError("imports did not finish within 10 minutes")
            await asyncio.sleep(0.2)
        span = await pool.fetchval(
            "SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM import_jobs"
        )
        posts = await pool.fetchval("SELECT count(*) FROM posts")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            await asyncio.wait_for(worker.wait(), timeout=30)
        await pool.close()
        await drop_database(settings.database_url, dsn)
    return {
        "accounts": ACCOUNTS,
        "posts": posts,
        "seconds": round(float(span), 2),
        "posts_per_second": round(posts / float(span)),
        "workers": WORKERS,
    }
