"""Fixtures: a private database and Redis server per session, the app, keys, workers."""

from __future__ import annotations

import os
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from postfuze_imports import db
from postfuze_imports.admin import create_key, create_org
from postfuze_imports.api.app import create_app
from postfuze_imports.devstack.stack import free_port, redis_command, wait_for_port
from postfuze_imports.migrations import migrate
from postfuze_imports.settings import Settings
from tests.support import WorkerProcess

TABLES = (
    "webhook_attempts",
    "webhook_deliveries",
    "webhook_events",
    "webhook_endpoints",
    "posts",
    "import_jobs",
    "social_accounts",
    "api_keys",
    "organizations",
)


def _server_url() -> str:
    return os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database with every migration applied, dropped after the session."""
    import asyncio

    name = f"postfuze_test_{secrets.token_hex(4)}"
    server = _server_url()

    async def create() -> None:
        connection = await asyncpg.connect(server)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        await migrate(_with_database(server, name))

    async def drop() -> None:
        connection = await asyncpg.connect(server)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    asyncio.run(create())
    yield _with_database(server, name)
    asyncio.run(drop())


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Redis server for the session, so tests can flush it freely."""
    directory = tmp_path_factory.mktemp("redis")
    port = free_port()
    process = subprocess.Popen(
        redis_command(port, directory, daemonize=False),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, timeout=30, process=process)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def settings(database_url: str, redis_server: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_server,
        secret_key="test-secret-key-" + "x" * 32,
        allow_private_networks=True,
        lease_seconds=5,
        sweep_interval_seconds=1,
        worker_concurrency=4,
        network_timeout_seconds=10,
    )


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[db.Pool]:
    pool = await db.create_pool(settings.database_url, max_size=5)
    yield pool
    async with pool.acquire() as connection:
        existing = {
            row["tablename"]
            for row in await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        tables = ", ".join(table for table in TABLES if table in existing)
        await connection.execute(f"TRUNCATE {tables} CASCADE")
    await pool.close()


@pytest.fixture
async def redis_flushed(settings: Settings) -> AsyncIterator[None]:
    from redis.asyncio import Redis

    client = Redis.from_url(settings.redis_url)
    await client.flushdb()
    yield
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def client(
    aiohttp_client: Any, settings: Settings, pool: db.Pool, redis_flushed: None
) -> TestClient[Any, Any]:
    result: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return result


class Org:
    """An organization with a live and a test key."""

    def __init__(self, org_id: uuid.UUID, live_key: str, test_key: str) -> None:
        self.id = org_id
        self.live_key = live_key
        self.test_key = test_key

    @property
    def live(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.live_key}"}

    @property
    def test(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.test_key}"}


@pytest.fixture
async def org(settings: Settings, pool: db.Pool) -> Org:
    org_id = await create_org(settings.database_url, "Acme")
    live = await create_key(settings.database_url, org_id, livemode=True, scopes=["*"])
    test = await create_key(settings.database_url, org_id, livemode=False, scopes=["*"])
    return Org(org_id, live, test)


@pytest.fixture
async def other_org(settings: Settings, pool: db.Pool) -> Org:
    org_id = await create_org(settings.database_url, "Globex")
    live = await create_key(settings.database_url, org_id, livemode=True, scopes=["*"])
    test = await create_key(settings.database_url, org_id, livemode=False, scopes=["*"])
    return Org(org_id, live, test)


@pytest.fixture
def start_worker(
    settings: Settings, tmp_path: Path, pool: db.Pool, redis_flushed: None
) -> Iterator[Any]:
    """Start worker subprocesses on demand; all are stopped after the test."""
    started: list[WorkerProcess] = []

    def start(extra_env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(started)}.log", extra_env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
