"""A private, migrated database per benchmark, so a run leaves the server as it was."""

from __future__ import annotations

import uuid

import asyncpg

from postfuze_imports.migrations import migrate


def _server_dsn(dsn: str, database: str) -> str:
    return dsn.rsplit("/", 1)[0] + "/" + database


async def create_database(server_dsn: str) -> str:
    """Create and migrate a new database on the server of `server_dsn`; return its DSN."""
    name = f"postfuze_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = _server_dsn(server_dsn, name)
    try:
        await migrate(dsn)
    except BaseException:
        await drop_database(server_dsn, dsn)
        raise
    return dsn


async def drop_database(server_dsn: str, dsn: str) -> None:
    """Drop a database made by `create_database`, closing its open connections."""
    name = dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
