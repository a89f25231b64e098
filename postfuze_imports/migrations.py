"""Apply the ordered migrations of `sql/migrations`, once each.

Migrations run under a PostgreSQL advisory lock, so several processes may call
`migrate` at once: the first applies what is missing and the others find it applied.
"""

from __future__ import annotations

import logging
import re

import asyncpg

from postfuze_imports.db import sql_dir

log = logging.getLogger(__name__)

# An arbitrary constant shared by every process that migrates this schema.
_ADVISORY_LOCK_KEY = 7_311_402_219
_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migration_files() -> list[tuple[str, str]]:
    """Return (version, SQL) for every migration file, in order."""
    found = []
    for path in sorted((sql_dir() / "migrations").glob("*.sql")):
        if not _FILE_NAME.match(path.name):
            raise ValueError(f"migration file name {path.name!r} is not NNNN_name.sql")
        found.append((path.stem, path.read_text(encoding="utf-8")))
    return found


async def migrate(dsn: str) -> list[str]:
    """Apply missing migrations; return the versions applied by this call."""
    connection = await asyncpg.connect(dsn)
    applied_now: list[str] = []
    try:
        await connection.execute("SELECT pg_advisory_lock($1)", _ADVISORY_LOCK_KEY)
        try:
            await connection.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version     text PRIMARY KEY,
                    applied_at  timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            rows = await connection.fetch("SELECT version FROM schema_migrations")
            done = {row["version"] for row in rows}
            for version, sql in migration_files():
                if version in done:
                    continue
                async with connection.transaction():
                    await connection.execute(sql)
                    await connection.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)", version
                    )
                log.info("applied migration %s", version, extra={"migration": version})
                applied_now.append(version)
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", _ADVISORY_LOCK_KEY)
    finally:
        await connection.close()
    return applied_now
