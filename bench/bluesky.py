"""Import rate from a real Bluesky PDS on 127.0.0.1.

Writes `POSTS` posts with `createdAt` values spread over two years to a local PDS
account. Then the worker's job runner, in this process, imports the 1,000 most recent
posts, and the rate is posts per second between the job's `started_at` and
`finished_at`. The whole collection is scanned, because record order is not
publication order.
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bench.support import create_database, drop_database
from postfuze_imports import db
from postfuze_imports.crypto import Secrets
from postfuze_imports.devstack.pds import start_pds
from postfuze_imports.imports.jobs import create_job, no_finish_hook
from postfuze_imports.imports.runner import JobRunner, Wakers
from postfuze_imports.outbound import create_client_session
from postfuze_imports.providers import ProviderRegistry
from postfuze_imports.providers.bluesky import create_session
from postfuze_imports.records import SocialAccount
from postfuze_imports.settings import Settings

POSTS = 1200
LIMIT = 1000


async def _no_wake(*_: Any) -> bool:
    return False


async def run(settings: Settings) -> dict[str, Any]:
    # The PDS listens on loopback over plain HTTP.
    settings = dataclasses.replace(settings, allow_private_networks=True)
    rng = random.Random(11)
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as work_dir:
        pds = await start_pds(Path(work_dir))
        try:
            session = await pds.create_account(
                "bench-user.test", "bench-password-1", "b@example.test"
            )
            app_password = await pds.create_app_password(session, "bench")
            posts = []
            for index in range(POSTS):
                moment = now - timedelta(seconds=rng.randint(0, 730 * 86400))
                posts.append((f"bench post {index}", moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")))
            await pds.write_posts(session, posts)
            return await _import(settings, pds.url, app_password)
        finally:
            await pds.stop()


async def _import(settings: Settings, pds_url: str, app_password: str) -> dict[str, Any]:
    dsn = await create_database(settings.database_url)
    try:
        pool = await db.create_pool(dsn, max_size=4)
        secrets = Secrets(settings.secret_key)
        http = create_client_session(allow_private=True, timeout=aiohttp.ClientTimeout(total=30))
        registry = ProviderRegistry(settings, session=http)
        try:
            credentials = await create_session(http, pds_url, "bench-user.test", app_password)
            org_id = uuid.uuid4()
            await pool.execute(db.q("insert_organization"), org_id, "bench")
            row = await pool.fetchrow(
                db.q("insert_social_account"),
                uuid.uuid4(),
                org_id,
                True,
                "bluesky",
                None,
                "bench-user.test",
                None,
                credentials["did"],
                pds_url,
                secrets.encrypt_json(credentials),
                None,
            )
            account = SocialAccount.from_row(db.required(row))
            job = await create_job(pool, account, from_bound=None, to_bound=None, limit=LIMIT)
            runner = JobRunner(
                pool=pool,
                settings=settings,
                secrets=secrets,
                providers=registry,
                on_finish=no_finish_hook,
                wakers=Wakers(wake_import=_no_wake, wake_dispatcher=_no_wake),
            )
            await runner.run(job.id)
            done = await pool.fetchrow(
                "SELECT status, imported_count,"
                " extract(epoch FROM finished_at - started_at) AS seconds"
                " FROM import_jobs WHERE id = $1",
                job.id,
            )
            if done is None or done["status"] != "completed":
                raise RuntimeError(f"the benchmark import did not complete: {done}")
            seconds = float(done["seconds"])
            return {
                "posts_in_repository": POSTS,
                "imported": done["imported_count"],
                "seconds": round(seconds, 3),
                "posts_per_second": round(done["imported_count"] / seconds),
            }
        finally:
            await registry.aclose()
            await http.close()
            await pool.close()
    finally:
        await drop_database(settings.database_url, dsn)
