"""Migrations, named queries, settings and the operator command line."""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from postfuze_imports import db
from postfuze_imports.errors import ConfigurationError
from postfuze_imports.migrations import migration_files
from postfuze_imports.settings import Settings
from tests.support import ROOT, settings_env

QUERY_CALL = re.compile(r"""\bq\(\s*["']([a-z_0-9]+)["']\s*\)""")


def _used_query_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "postfuze_imports").rglob("*.py"):
        names.update(QUERY_CALL.findall(path.read_text(encoding="utf-8")))
    return names


def test_used_queries_exist() -> None:
    missing = _used_query_names() - set(db.queries())
    assert not missing


async def test_queries_prepare_on_schema(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        for name, sql in db.queries().items():
            try:
                await connection.prepare(sql)
            except asyncpg.PostgresError as error:
                pytest.fail(f"query {name} does not prepare: {error}")
    finally:
        await connection.close()


def test_migration_files_ordered() -> None:
    versions = [version for version, _ in migration_files()]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)


def _run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postfuze_imports", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


@pytest.fixture
def empty_database(settings: Settings) -> Iterator[str]:
    name = f"postfuze_migrate_{secrets.token_hex(4)}"
    server = settings.database_url.rsplit("/", 1)[0] + "/postgres"

    async def execute(statement: str) -> None:
        connection = await asyncpg.connect(server)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    yield settings.database_url.rsplit("/", 1)[0] + "/" + name
    asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_migrate_concurrent_processes(settings: Settings, empty_database: str) -> None:
    env = settings_env(settings) | {"DATABASE_URL": empty_database}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "postfuze_imports", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=60) for process in processes]

    assert [process.returncode for process in processes] == [0, 0, 0, 0]
    applied = [int(re.search(r"applied (\d+)", out).group(1)) for out, _ in outputs]  # type: ignore[union-attr]
    assert sorted(applied) == [0, 0, 0, len(migration_files())]
    again = _run_cli(env, "migrate")
    assert again.returncode == 0
    assert again.stdout.strip() == "applied 0 migrations"


def test_create_org_and_key_print_last(settings: Settings, empty_database: str) -> None:
    env = settings_env(settings) | {"DATABASE_URL": empty_database}
    assert _run_cli(env, "migrate").returncode == 0

    org = _run_cli(env, "create-org", "Acme Inc.")
    org_id = org.stdout.strip().splitlines()[-1]
    key = _run_cli(env, "create-key", "--org", org_id, "--test", "--scopes", "imports:write")
    bad_scope = _run_cli(env, "create-key", "--org", org_id, "--scopes", "everything")
    unknown_org = _run_cli(env, "create-key", "--org", "00000000-0000-0000-0000-000000000000")

    assert org.returncode == 0
    assert re.fullmatch(r"[0-9a-f-]{36}", org_id)
    assert key.returncode == 0
    assert key.stdout.strip().splitlines()[-1].startswith("sk_test_")
    assert bad_scope.returncode != 0
    assert "unknown scope" in bad_scope.stderr
    assert unknown_org.returncode != 0
    assert "does not exist" in unknown_org.stderr


def test_settings_missing_variables() -> None:
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        Settings.from_env({"REDIS_URL": "redis://x", "POSTFUZE_SECRET_KEY": "k" * 40})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("POSTFUZE_SECRET_KEY", "short", "at least 32"),
        ("POSTFUZE_ALLOW_PRIVATE_NETWORKS", "maybe", "true or false"),
        ("POSTFUZE_LEASE_SECONDS", "ten", "whole number"),
        ("POSTFUZE_LEASE_SECONDS", "1", "at least 5"),
        ("POSTFUZE_LOG_FORMAT", "xml", "'text' or 'json'"),
    ],
)
def test_settings_invalid_value(name: str, value: str, message: str) -> None:
    env = {
        "DATABASE_URL": "postgresql://x",
        "REDIS_URL": "redis://x",
        "POSTFUZE_SECRET_KEY": "k" * 40,
    }
    env[name] = value
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        Settings.from_env(env)


def test_settings_defaults() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://x",
            "REDIS_URL": "redis://x",
            "POSTFUZE_SECRET_KEY": "k" * 40,
        }
    )
    assert settings.allow_private_networks is False
    assert settings.rate_limit_global == 600
    assert settings.lease_seconds == 30


def test_cli_without_settings_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "postfuze_imports", "migrate"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "missing environment variables" in result.stderr
