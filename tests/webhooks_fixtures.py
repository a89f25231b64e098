"""Fixtures of the webhook tests, loaded with `pytest_plugins = ["tests.webhooks_fixtures"]`.

The database is PostgreSQL at DATABASE_URL, or at postgresql://postgres@127.0.0.1:5432/postgres
when that is unset. Each test module gets its own database with a random name, built by
the project's migrations and dropped afterwards; each test starts from empty tables.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from yarl import URL

from postfuze_imports.db import create_pool
from postfuze_imports.migrations import migrate
from tests.webhooks_support import (
    Receiver,
    WebhookHarness,
    create_organization,
    make_settings,
    server_dsn,
)


async def _create_database(admin_dsn: str, name: str) -> None:
    connection = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def _drop_database(admin_dsn: str, name: str) -> None:
    connection = await asyncpg.connect(admin_dsn)
    try:
        # FORCE ends connections left behind, such as one of a process a test killed.
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def webhook_dsn() -> Iterator[str]:
    """Create a migrated database for one test module and drop it afterwards."""
    admin_dsn = server_dsn()
    name = f"postfuze_webhooks_test_{secrets.token_hex(6)}"
    dsn = str(URL(admin_dsn).with_path(f"/{name}"))
    asyncio.run(_create_database(admin_dsn, name))
    try:
        asyncio.run(migrate(dsn))
        yield dsn
    finally:
        asyncio.run(_drop_database(admin_dsn, name))


@pytest.fixture
async def webhooks(webhook_dsn: str) -> AsyncIterator[WebhookHarness]:
    """Return a harness on emptied tables, with an organization and a running receiver."""
    pool = await create_pool(webhook_dsn, max_size=8)
    receiver = Receiver()
    try:
        await pool.execute(
            "TRUNCATE webhook_attempts, webhook_deliveries, webhook_events, "
            "webhook_endpoints, organizations CASCADE"
        )
        organization_id = await create_organization(pool)
        await receiver.start()
    except BaseException:
        await pool.close()
        raise
    harness = WebhookHarness(
        dsn=webhook_dsn,
        pool=pool,
        settings=make_settings(webhook_dsn),
        organization_id=organization_id,
        receiver=receiver,
    )
    try:
        yield harness
    finally:
        await harness.close()
