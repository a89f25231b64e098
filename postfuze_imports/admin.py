"""Operator actions: organizations and API keys, used by the command line and the demo."""

from __future__ import annotations

import uuid

import asyncpg

from postfuze_imports.crypto import generate_api_key, hash_api_key
from postfuze_imports.db import q, required
from postfuze_imports.errors import ConfigurationError


async def create_org(dsn: str, name: str) -> uuid.UUID:
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(q("insert_organization"), uuid.uuid4(), name)
    finally:
        await connection.close()
    org_id: uuid.UUID = required(row)["id"]
    return org_id


async def create_key(dsn: str, org_id: uuid.UUID, *, livemode: bool, scopes: list[str]) -> str:
    key = generate_api_key(livemode=livemode)
    connection = await asyncpg.connect(dsn)
    try:
        if await connection.fetchrow(q("get_organization"), org_id) is None:
            raise ConfigurationError(
                f"organization {org_id} does not exist; create it with create-org"
            )
        await connection.execute(
            q("insert_api_key"), uuid.uuid4(), org_id, hash_api_key(key), key[:12], livemode, scopes
        )
    finally:
        await connection.close()
    return key
