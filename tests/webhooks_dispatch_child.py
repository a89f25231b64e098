"""Run one webhook dispatcher pass in a process of its own.

The dispatcher test that kills a dispatcher mid-delivery starts this script, waits until
the request reaches the receiver, and ends the process with SIGKILL.

Usage: python tests/webhooks_dispatch_child.py DSN SECRET_KEY CLAIM_LEASE_SECONDS
"""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import timedelta

from postfuze_imports.db import create_pool
from postfuze_imports.settings import Settings
from postfuze_imports.webhooks.dispatcher import Dispatcher


async def dispatch_once(dsn: str, secret_key: str, claim_lease_seconds: float) -> int:
    settings = Settings(
        database_url=dsn,
        redis_url="redis://127.0.0.1:6379/0",
        secret_key=secret_key,
        allow_private_networks=True,
        webhook_timeout_seconds=120.0,
    )
    pool = await create_pool(dsn, max_size=2)
    dispatcher = Dispatcher.create(
        pool, settings, claim_lease=timedelta(seconds=claim_lease_seconds)
    )
    try:
        return await dispatcher.dispatch_due(limit=1)
    finally:
        await dispatcher.close()
        await pool.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    dsn, secret_key, claim_lease = sys.argv[1:4]
    claimed = asyncio.run(dispatch_once(dsn, secret_key, float(claim_lease)))
    print(f"claimed {claimed}", flush=True)


if __name__ == "__main__":
    main()
