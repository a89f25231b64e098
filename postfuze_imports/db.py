"""The asyncpg pool and the named SQL queries kept in `sql/queries/*.sql`.

A query file holds blocks that each start with `-- name: <query_name>`. The comment
lines after that line describe the parameters `$1, $2…`. Files are parsed once per
process.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import TypeAlias

import asyncpg
import asyncpg.pool

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
# A plain connection, or one acquired from a pool (a proxy with the same methods).
Connection: TypeAlias = (
    "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
)
Record: TypeAlias = asyncpg.Record

_NAME_LINE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def sql_dir() -> Path:
    """Return the `sql` folder: beside the package in a checkout, inside it in a wheel."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir.parent / "sql", package_dir / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise FileNotFoundError(f"no sql folder beside or inside {package_dir}")


def parse_queries(text: str, source: str) -> dict[str, str]:
    """Split one query file into its named blocks."""
    matches = list(_NAME_LINE.finditer(text))
    queries: dict[str, str] = {}
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        name = match.group(1)
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice in {source}")
        if not body:
            raise ValueError(f"query {name!r} in {source} is empty")
        queries[name] = body
    return queries


@cache
def queries() -> dict[str, str]:
    """Return every named query of `sql/queries`, keyed by name."""
    found: dict[str, str] = {}
    for path in sorted((sql_dir() / "queries").glob("*.sql")):
        for name, body in parse_queries(path.read_text(encoding="utf-8"), path.name).items():
            if name in found:
                raise ValueError(f"query {name!r} in {path.name} is also defined elsewhere")
            found[name] = body
    return found


def q(name: str) -> str:
    """Return the SQL text of the named query."""
    try:
        return queries()[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in sql/queries") from None


async def _init_connection(connection: Connection) -> None:
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name,
            encoder=lambda value: json.dumps(value, ensure_ascii=False, separators=(",", ":")),
            decoder=json.loads,
            schema="pg_catalog",
        )


async def create_pool(dsn: str, *, max_size: int = 10, min_size: int = 1) -> Pool:
    """Open a pool whose connections encode and decode json/jsonb as Python objects."""
    pool: Pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=60,
    )
    return pool


def required(record: Record | None) -> Record:
    """Return a row that the query always returns (INSERT … RETURNING, a locked row)."""
    if record is None:
        raise LookupError("the query returned no row where one was certain")
    return record
