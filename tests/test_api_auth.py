"""API keys: authentication, write scopes, test and live mode, organization scope."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime

import pytest

from postfuze_imports import db
from postfuze_imports.admin import create_key
from postfuze_imports.crypto import hash_api_key
from postfuze_imports.settings import Settings
from tests.api_support import (
    ACCOUNTS,
    POSTS,
    Client,
    create_account,
    create_import,
    imports_url,
    insert_post,
    read_page,
    read_problem,
)
from tests.conftest import Org
from tests.support import bearer


async def test_missing_header_unauthorized(client: Client) -> None:
    response = await client.get(ACCOUNTS)

    await read_problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    [
        "Basic dXNlcjpwYXNz",
        "Token sk_test_abcdefghijklmnopqrstuvwxyz",
        "sk_test_abcdefghijklmnopqrstuvwxyz",
        "Bearer",
        "Bearer ",
    ],
)
async def test_wrong_scheme_unauthorized(client: Client, org: Org, header: str) -> None:
    response = await client.get(ACCOUNTS, headers={"Authorization": header})

    await read_problem(response, 401, "unauthorized")


@pytest.mark.parametrize(
    "key",
    [
        "sk_prod_abcdefghijklmnopqrstuvwxyz",
        "pk_live_abcdefghijklmnopqrstuvwxyz",
        "sk_test_short",
        "sk_test_abcdefghijklmnop!",
        "sk_live_" + "a" * 129,
    ],
)
async def test_malformed_key_rejected_before_lookup(
    client: Client, org: Org, pool: db.Pool, key: str
) -> None:
    # Store the malformed key's hash: a lookup would find it, so only the format check can
    # reject the request.
    await pool.execute(
        "INSERT INTO api_keys (id, organization_id, key_hash, key_prefix, livemode, scopes)"
        " VALUES ($1, $2, $3, $4, false, ARRAY['*'])",
        uuid.uuid4(),
        org.id,
        hash_api_key(key),
        key[:12],
    )

    response = await client.get(ACCOUNTS, headers=bearer(key))

    body = await read_problem(response, 401, "unauthorized")
    assert "malformed" in body["detail"]


async def test_unknown_key_unauthorized(client: Client, org: Org) -> None:
    response = await client.get(ACCOUNTS, headers=bearer("sk_test_" + secrets.token_urlsafe(32)))

    body = await read_problem(response, 401, "unauthorized")
    assert "invalid" in body["detail"]


async def test_revoked_key_unauthorized(client: Client, org: Org, pool: db.Pool) -> None:
    await pool.execute(
        "UPDATE api_keys SET revoked_at = $1 WHERE key_hash = $2",
        datetime.now(UTC),
        hash_api_key(org.test_key),
    )

    response = await client.get(ACCOUNTS, headers=org.test)

    await read_problem(response, 401, "unauthorized")


async def test_scheme_case_insensitive(client: Client, org: Org) -> None:
    response = await client.get(ACCOUNTS, headers={"Authorization": f"bearer {org.test_key}"})

    assert response.status == 200


async def test_unknown_api_route_needs_key(client: Client) -> None:
    response = await client.get("/api/v1/no-such-route")

    await read_problem(response, 401, "unauthorized")


async def test_health_needs_no_key(client: Client) -> None:
    response = await client.get("/health")

    assert response.status == 200


# --- Write scopes ----------------------------------------------------------------------


async def test_account_write_needs_scope(client: Client, org: Org, settings: Settings) -> None:
    key = await create_key(settings.database_url, org.id, livemode=False, scopes=["imports:write"])

    response = await client.post(
        ACCOUNTS,
        json={"platform": "x", "username": "a", "network_unique_id": "1", "credentials": {}},
        headers=bearer(key),
    )

    body = await read_problem(response, 403, "insufficient_scope")
    assert body["required_scope"] == "accounts:write"


async def test_account_delete_needs_scope(client: Client, org: Org, settings: Settings) -> None:
    account = await create_account(client, org.test)
    key = await create_key(settings.database_url, org.id, livemode=False, scopes=["imports:write"])

    response = await client.delete(f"{ACCOUNTS}/{account['id']}", headers=bearer(key))

    await read_problem(response, 403, "insufficient_scope")
    unchanged = await (await client.get(f"{ACCOUNTS}/{account['id']}", headers=org.test)).json()
    assert unchanged["status"] == "active"


async def test_import_write_needs_scope(client: Client, org: Org, settings: Settings) -> None:
    account = await create_account(client, org.test)
    job = await create_import(client, org.test, account["id"])
    key = await create_key(settings.database_url, org.id, livemode=False, scopes=["accounts:write"])

    created = await client.post(imports_url(account["id"]), headers=bearer(key))
    canceled = await client.post(
        f"{imports_url(account['id'])}/{job['id']}/cancel", headers=bearer(key)
    )

    await read_problem(created, 403, "insufficient_scope")
    await read_problem(canceled, 403, "insufficient_scope")


async def test_reads_need_no_scope(client: Client, org: Org, settings: Settings) -> None:
    key = await create_key(settings.database_url, org.id, livemode=False, scopes=["webhooks:write"])

    response = await client.get(ACCOUNTS, headers=bearer(key))

    assert response.status == 200


async def test_scoped_key_can_write(client: Client, org: Org, settings: Settings) -> None:
    key = await create_key(settings.database_url, org.id, livemode=False, scopes=["accounts:write"])

    account = await create_account(client, bearer(key))

    assert account["status"] == "active"


# --- Test and live mode ----------------------------------------------------------------


async def test_objects_carry_livemode(client: Client, org: Org, pool: db.Pool) -> None:
    # Live imports need a platform with a live adapter.
    live = await create_account(client, org.live, "live-user", platform="bluesky")
    test = await create_account(client, org.test, "test-user")
    live_job = await create_import(client, org.live, live["id"])
    test_job = await create_import(client, org.test, test["id"])
    live_post = await insert_post(pool, org.id, live, published_at=datetime.now(UTC))
    test_post = await insert_post(pool, org.id, test, published_at=datetime.now(UTC))

    live_post_body = await (await client.get(f"{POSTS}/{live_post}", headers=org.live)).json()
    test_post_body = await (await client.get(f"{POSTS}/{test_post}", headers=org.test)).json()

    assert live["livemode"] is True
    assert test["livemode"] is False
    assert live_job["livemode"] is True
    assert test_job["livemode"] is False
    assert live_post_body["livemode"] is True
    assert test_post_body["livemode"] is False


@pytest.mark.parametrize(("owner", "reader"), [("live", "test"), ("test", "live")])
async def test_account_invisible_other_mode(
    client: Client, org: Org, owner: str, reader: str
) -> None:
    account = await create_account(client, getattr(org, owner))
    headers = getattr(org, reader)

    got = await client.get(f"{ACCOUNTS}/{account['id']}", headers=headers)
    deleted = await client.delete(f"{ACCOUNTS}/{account['id']}", headers=headers)
    listed = await read_page(await client.get(ACCOUNTS, headers=headers))

    await read_problem(got, 404, "not_found")
    await read_problem(deleted, 404, "not_found")
    assert listed["data"] == []


@pytest.mark.parametrize(("owner", "reader"), [("live", "test"), ("test", "live")])
async def test_import_invisible_other_mode(
    client: Client, org: Org, owner: str, reader: str
) -> None:
    account = await create_account(client, getattr(org, owner), platform="bluesky")
    job = await create_import(client, getattr(org, owner), account["id"])
    headers = getattr(org, reader)
    url = imports_url(account["id"])

    created = await client.post(url, headers=headers)
    listed = await client.get(url, headers=headers)
    got = await client.get(f"{url}/{job['id']}", headers=headers)
    canceled = await client.post(f"{url}/{job['id']}/cancel", headers=headers)

    await read_problem(created, 404, "not_found")
    await read_problem(listed, 404, "not_found")
    await read_problem(got, 404, "not_found")
    await read_problem(canceled, 404, "not_found")


@pytest.mark.parametrize(("owner", "reader"), [("live", "test"), ("test", "live")])
async def test_post_invisible_other_mode(
    client: Client, org: Org, pool: db.Pool, owner: str, reader: str
) -> None:
    account = await create_account(client, getattr(org, owner))
    post_id = await insert_post(pool, org.id, account, published_at=datetime.now(UTC))
    headers = getattr(org, reader)

    got = await client.get(f"{POSTS}/{post_id}", headers=headers)
    listed = await read_page(await client.get(POSTS, headers=headers))
    filtered = await read_page(
        await client.get(POSTS, params={"social_account_id": account["id"]}, headers=headers)
    )
    by_account = await client.get(f"{ACCOUNTS}/{account['id']}/posts", headers=headers)

    await read_problem(got, 404, "not_found")
    assert listed["data"] == []
    assert filtered["data"] == []
    await read_problem(by_account, 404, "not_found")


async def test_same_identity_in_both_modes(client: Client, org: Org) -> None:
    live = await create_account(client, org.live)
    test = await create_account(client, org.test)

    assert live["network_unique_id"] == test["network_unique_id"]
    assert live["id"] != test["id"]


# --- Organizations ---------------------------------------------------------------------


async def test_other_org_account_not_found(client: Client, org: Org, other_org: Org) -> None:
    account = await create_account(client, org.test)
    url = f"{ACCOUNTS}/{account['id']}"

    got = await client.get(url, headers=other_org.test)
    deleted = await client.delete(url, headers=other_org.test)
    listed = await read_page(await client.get(ACCOUNTS, headers=other_org.test))
    still = await (await client.get(url, headers=org.test)).json()

    await read_problem(got, 404, "not_found")
    await read_problem(deleted, 404, "not_found")
    assert listed["data"] == []
    assert still["status"] == "active"


async def test_other_org_import_not_found(client: Client, org: Org, other_org: Org) -> None:
    account = await create_account(client, org.test)
    job = await create_import(client, org.test, account["id"])
    url = imports_url(account["id"])

    created = await client.post(url, json={}, headers=other_org.test)
    listed = await client.get(url, headers=other_org.test)
    got = await client.get(f"{url}/{job['id']}", headers=other_org.test)
    canceled = await client.post(f"{url}/{job['id']}/cancel", headers=other_org.test)
    still = await (await client.get(f"{url}/{job['id']}", headers=org.test)).json()

    await read_problem(created, 404, "not_found")
    await read_problem(listed, 404, "not_found")
    await read_problem(got, 404, "not_found")
    await read_problem(canceled, 404, "not_found")
    assert still["status"] == "pending"


async def test_other_org_import_under_own_account(client: Client, org: Org, other_org: Org) -> None:
    account = await create_account(client, org.test)
    job = await create_import(client, org.test, account["id"])
    own_account = await create_account(client, other_org.test)

    # The other organization's own account id does not open the first organization's job.
    response = await client.get(
        f"{imports_url(own_account['id'])}/{job['id']}", headers=other_org.test
    )

    await read_problem(response, 404, "not_found")


async def test_other_org_post_not_found(
    client: Client, org: Org, other_org: Org, pool: db.Pool
) -> None:
    account = await create_account(client, org.test)
    post_id = await insert_post(pool, org.id, account, published_at=datetime.now(UTC))

    got = await client.get(f"{POSTS}/{post_id}", headers=other_org.test)
    listed = await read_page(await client.get(POSTS, headers=other_org.test))
    filtered = await read_page(
        await client.get(POSTS, params={"social_account_id": account["id"]}, headers=other_org.test)
    )
    by_account = await client.get(f"{ACCOUNTS}/{account['id']}/posts", headers=other_org.test)

    await read_problem(got, 404, "not_found")
    assert listed["data"] == []
    assert filtered["data"] == []
    await read_problem(by_account, 404, "not_found")
