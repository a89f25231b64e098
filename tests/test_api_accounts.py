"""Social accounts: create, connect Bluesky, list with filters and pages, get, disconnect."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from postfuze_imports import db
from postfuze_imports.api.app import create_app
from postfuze_imports.crypto import Secrets
from postfuze_imports.errors import ProviderAuthError, ProviderTransientError
from postfuze_imports.settings import Settings
from tests.api_support import (
    ACCOUNTS,
    POSTS,
    TIMESTAMP,
    Client,
    JsonObject,
    account_body,
    create_account,
    field_codes,
    imports_url,
    insert_post,
    read_page,
    read_problem,
    read_validation,
    walk_pages,
)
from tests.conftest import Org


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The session settings with write limits that the listing tests stay under."""
    return dataclasses.replace(settings, rate_limit_accounts_write=1000)


ACCOUNT_FIELDS = [
    "api_base_url",
    "created_at",
    "display_name",
    "id",
    "last_synced_at",
    "livemode",
    "network_unique_id",
    "platform",
    "status",
    "tenant_id",
    "token_expires_at",
    "updated_at",
    "username",
]


# --- Create ----------------------------------------------------------------------------


async def test_create_returns_account(client: Client, org: Org) -> None:
    body = account_body("alice", display_name="Alice", tenant_id="tenant-1")

    response = await client.post(ACCOUNTS, json=body, headers=org.test)

    assert response.status == 201
    account = await response.json()
    assert sorted(account) == ACCOUNT_FIELDS
    assert uuid.UUID(account["id"])
    assert account["platform"] == "x"
    assert account["username"] == "alice"
    assert account["display_name"] == "Alice"
    assert account["tenant_id"] == "tenant-1"
    assert account["network_unique_id"] == "id-alice"
    assert account["status"] == "active"
    assert account["livemode"] is False
    assert account["token_expires_at"] is None
    assert account["last_synced_at"] is None
    assert TIMESTAMP.match(account["created_at"])
    assert TIMESTAMP.match(account["updated_at"])


async def test_create_hides_credentials(client: Client, org: Org) -> None:
    body = account_body(credentials={"access_token": "secret-access", "refresh_token": "secret-r"})

    response = await client.post(ACCOUNTS, json=body, headers=org.test)

    text = await response.text()
    assert response.status == 201
    assert "credentials" not in text
    assert "secret-access" not in text
    assert "secret-r" not in text


async def test_credentials_encrypted_at_rest(
    client: Client, org: Org, pool: db.Pool, settings: Settings
) -> None:
    credentials = {"access_token": "plain-access-token", "refresh_token": "plain-refresh-token"}
    account = await create_account(client, org.test, credentials=credentials)

    stored: bytes = await pool.fetchval(
        "SELECT credentials FROM social_accounts WHERE id = $1", uuid.UUID(account["id"])
    )

    assert b"plain-access-token" not in stored
    assert b"plain-refresh-token" not in stored
    assert Secrets(settings.secret_key).decrypt_json(stored) == credentials


async def test_create_token_expiry_in_utc(client: Client, org: Org) -> None:
    credentials = {"access_token": "t", "token_expires_at": "2030-07-01T12:00:00+02:00"}

    account = await create_account(client, org.test, credentials=credentials)

    assert account["token_expires_at"] == "2030-07-01T10:00:00.000Z"


async def test_create_null_optionals_omitted(client: Client, org: Org) -> None:
    body = account_body(
        display_name=None,
        tenant_id=None,
        credentials={"access_token": "t", "refresh_token": None, "token_expires_at": None},
    )

    response = await client.post(ACCOUNTS, json=body, headers=org.test)

    assert response.status == 201, await response.text()
    account = await response.json()
    assert account["display_name"] is None
    assert account["tenant_id"] is None


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"platform": "myspace"}, ("platform", "invalid_choice")),
        ({"platform": "X"}, ("platform", "invalid_choice")),
        ({"platform": None}, ("platform", "required")),
        ({"platform": 3}, ("platform", "invalid_type")),
        ({"username": ""}, ("username", "invalid_length")),
        ({"username": "u" * 256, "network_unique_id": "1"}, ("username", "invalid_length")),
        ({"username": ["alice"]}, ("username", "invalid_type")),
        ({"network_unique_id": None}, ("network_unique_id", "required")),
        ({"display_name": ""}, ("display_name", "invalid_length")),
        ({"tenant_id": 7}, ("tenant_id", "invalid_type")),
        ({"nickname": "al"}, ("nickname", "unknown_field")),
        ({"credentials": None}, ("credentials", "required")),
        ({"credentials": "token"}, ("credentials", "invalid_type")),
        ({"credentials": {}}, ("credentials.access_token", "required")),
        ({"credentials": {"access_token": None}}, ("credentials.access_token", "required")),
        ({"credentials": {"access_token": 5}}, ("credentials.access_token", "invalid_type")),
        ({"credentials": {"access_token": ""}}, ("credentials.access_token", "invalid_length")),
        (
            {"credentials": {"access_token": "t", "scope": "all"}},
            ("credentials.scope", "unknown_field"),
        ),
        (
            {"credentials": {"access_token": "t", "token_expires_at": "2030-07-01T12:00:00"}},
            ("credentials.token_expires_at", "invalid_format"),
        ),
        (
            {"credentials": {"access_token": "t", "token_expires_at": "soon"}},
            ("credentials.token_expires_at", "invalid_format"),
        ),
    ],
)
async def test_create_invalid_field(
    client: Client, org: Org, overrides: JsonObject, expected: tuple[str, str]
) -> None:
    response = await client.post(ACCOUNTS, json=account_body(**overrides), headers=org.test)

    errors = await read_validation(response)
    assert field_codes(errors) == [expected]


async def test_create_reports_every_missing_field(client: Client, org: Org) -> None:
    response = await client.post(ACCOUNTS, json={}, headers=org.test)

    errors = await read_validation(response)
    assert field_codes(errors) == [
        ("credentials", "required"),
        ("network_unique_id", "required"),
        ("platform", "required"),
        ("username", "required"),
    ]


async def test_create_without_body(client: Client, org: Org) -> None:
    response = await client.post(ACCOUNTS, headers=org.test)

    errors = await read_validation(response)
    assert field_codes(errors) == [(None, "required")]


async def test_create_malformed_json(client: Client, org: Org) -> None:
    response = await client.post(
        ACCOUNTS,
        data=b'{"platform": "x",',
        headers={**org.test, "Content-Type": "application/json"},
    )

    await read_problem(response, 400, "invalid_json")


async def test_create_form_body_unsupported(client: Client, org: Org) -> None:
    response = await client.post(ACCOUNTS, data={"platform": "x"}, headers=org.test)

    await read_problem(response, 415, "unsupported_media_type")


async def test_create_duplicate_identity_conflict(client: Client, org: Org) -> None:
    await create_account(client, org.test, "alice")

    body = account_body("alice")
    body["username"] = "renamed"

    response = await client.post(ACCOUNTS, json=body, headers=org.test)

    await read_problem(response, 409, "conflict")
    listed = await read_page(await client.get(ACCOUNTS, headers=org.test))
    assert len(listed["data"]) == 1


async def test_create_same_id_other_platform(client: Client, org: Org) -> None:
    first = await create_account(client, org.test, "alice")

    second = await create_account(client, org.test, "alice", platform="threads")

    assert first["network_unique_id"] == second["network_unique_id"]


async def test_create_after_disconnect(client: Client, org: Org) -> None:
    first = await create_account(client, org.test, "alice")
    await client.delete(f"{ACCOUNTS}/{first['id']}", headers=org.test)

    second = await create_account(client, org.test, "alice")

    assert second["id"] != first["id"]
    assert second["status"] == "active"


async def test_create_same_identity_other_org(client: Client, org: Org, other_org: Org) -> None:
    first = await create_account(client, org.test, "alice")

    second = await create_account(client, other_org.test, "alice")

    assert second["id"] != first["id"]


async def test_test_mode_ignores_base_url(client: Client, org: Org) -> None:
    account = await create_account(
        client, org.test, platform="mastodon", api_base_url="https://mastodon.example"
    )

    assert account["api_base_url"] is None


async def test_live_mode_keeps_base_url(client: Client, org: Org) -> None:
    account = await create_account(
        client, org.live, platform="mastodon", api_base_url="https://mastodon.example/"
    )

    assert account["api_base_url"] == "https://mastodon.example"


async def test_live_bluesky_default_pds(client: Client, org: Org) -> None:
    account = await create_account(client, org.live, platform="bluesky")

    assert account["api_base_url"] == "https://bsky.social"


async def test_live_base_url_blocked(client: Client, org: Org) -> None:
    body = account_body(platform="mastodon", api_base_url="ftp://mastodon.example")

    response = await client.post(ACCOUNTS, json=body, headers=org.live)

    errors = await read_validation(response)
    assert field_codes(errors) == [("api_base_url", "blocked_url")]


# --- Bluesky connect -------------------------------------------------------------------


CONNECT = f"{ACCOUNTS}/bluesky/connect"


async def test_connect_test_mode_simulated(client: Client, org: Org) -> None:
    response = await client.post(
        CONNECT,
        json={"identifier": "alice.example.com", "app_password": "abcd-efgh-ijkl-mnop"},
        headers=org.test,
    )

    assert response.status == 201, await response.text()
    account = await response.json()
    assert account["platform"] == "bluesky"
    assert account["username"] == "alice.example.com"
    assert account["network_unique_id"].startswith("did:plc:")
    assert account["livemode"] is False
    assert "abcd-efgh" not in await response.text()


async def test_connect_invalid_body(client: Client, org: Org) -> None:
    response = await client.post(CONNECT, json={"identifier": "", "pass": "x"}, headers=org.test)

    errors = await read_validation(response)
    assert field_codes(errors) == [
        ("app_password", "required"),
        ("identifier", "invalid_length"),
        ("pass", "unknown_field"),
    ]


class FakePds:
    """A fake of `providers.bluesky.create_session` that records its calls."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[tuple[str, str, str]] = []

    async def __call__(
        self, session: Any, api_base_url: str, identifier: str, app_password: str
    ) -> JsonObject:
        self.calls.append((api_base_url, identifier, app_password))
        if self.error is not None:
            raise self.error
        return {
            "access_token": "pds-access",
            "refresh_token": "pds-refresh",
            "did": "did:plc:abc123",
            "handle": "alice.bsky.example",
            "token_expires_at": "2030-01-01T00:00:00Z",
        }


async def connect_client(aiohttp_client: Any, settings: Settings, pds: FakePds) -> Client:
    result: Client = await aiohttp_client(create_app(settings, connect_bluesky=pds))
    return result


async def test_connect_live_opens_session(
    aiohttp_client: Any, settings: Settings, pool: db.Pool, redis_flushed: None, org: Org
) -> None:
    pds = FakePds()
    client = await connect_client(aiohttp_client, settings, pds)

    response = await client.post(
        CONNECT,
        json={
            "identifier": "alice.bsky.example",
            "app_password": "abcd-efgh-ijkl-mnop",
            "api_base_url": "https://pds.example/",
            "tenant_id": "t1",
        },
        headers=org.live,
    )

    assert response.status == 201, await response.text()
    account = await response.json()
    assert pds.calls == [("https://pds.example", "alice.bsky.example", "abcd-efgh-ijkl-mnop")]
    assert account["network_unique_id"] == "did:plc:abc123"
    assert account["username"] == "alice.bsky.example"
    assert account["api_base_url"] == "https://pds.example"
    assert account["tenant_id"] == "t1"
    assert account["token_expires_at"] == "2030-01-01T00:00:00.000Z"
    stored: bytes = await pool.fetchval(
        "SELECT credentials FROM social_accounts WHERE id = $1", uuid.UUID(account["id"])
    )
    assert b"abcd-efgh-ijkl-mnop" not in stored
    credentials = Secrets(settings.secret_key).decrypt_json(stored)
    assert credentials["app_password"] == "abcd-efgh-ijkl-mnop"
    assert credentials["refresh_token"] == "pds-refresh"


async def test_connect_live_rejected_password(
    aiohttp_client: Any, settings: Settings, pool: db.Pool, redis_flushed: None, org: Org
) -> None:
    client = await connect_client(
        aiohttp_client, settings, FakePds(ProviderAuthError("Invalid identifier or password"))
    )

    response = await client.post(
        CONNECT, json={"identifier": "alice", "app_password": "wrong"}, headers=org.live
    )

    errors = await read_validation(response)
    assert field_codes(errors) == [("app_password", "invalid_credentials")]


async def test_connect_live_pds_unreachable(
    aiohttp_client: Any, settings: Settings, pool: db.Pool, redis_flushed: None, org: Org
) -> None:
    client = await connect_client(
        aiohttp_client, settings, FakePds(ProviderTransientError("connection refused"))
    )

    response = await client.post(
        CONNECT, json={"identifier": "alice", "app_password": "pw"}, headers=org.live
    )

    await read_problem(response, 503, "service_unavailable")
    assert response.headers["Retry-After"].isdigit()


# --- List ------------------------------------------------------------------------------


async def test_list_newest_first(client: Client, org: Org) -> None:
    created = [await create_account(client, org.test, f"user{index}") for index in range(3)]

    page = await read_page(await client.get(ACCOUNTS, headers=org.test))

    assert [item["id"] for item in page["data"]] == [item["id"] for item in reversed(created)]
    assert page["next_cursor"] is None
    assert page["data"][0] == created[-1]


async def test_list_filters_platform(client: Client, org: Org) -> None:
    await create_account(client, org.test, "on-x")
    threads = await create_account(client, org.test, "on-threads", platform="threads")

    page = await read_page(
        await client.get(ACCOUNTS, params={"platform": "threads"}, headers=org.test)
    )

    assert [item["id"] for item in page["data"]] == [threads["id"]]


async def test_list_filters_tenant(client: Client, org: Org) -> None:
    first = await create_account(client, org.test, "a", tenant_id="tenant-a")
    await create_account(client, org.test, "b", tenant_id="tenant-b")
    await create_account(client, org.test, "c")

    page = await read_page(
        await client.get(ACCOUNTS, params={"tenant_id": "tenant-a"}, headers=org.test)
    )

    assert [item["id"] for item in page["data"]] == [first["id"]]


async def test_list_filters_combined(client: Client, org: Org) -> None:
    await create_account(client, org.test, "a", tenant_id="t")
    expected_account = await create_account(client, org.test, "b", tenant_id="t", platform="reddit")
    await create_account(client, org.test, "c", tenant_id="u", platform="reddit")

    page = await read_page(
        await client.get(
            ACCOUNTS, params={"tenant_id": "t", "platform": "reddit"}, headers=org.test
        )
    )

    assert [item["id"] for item in page["data"]] == [expected_account["id"]]


async def test_list_default_limit(client: Client, org: Org) -> None:
    for index in range(26):
        await create_account(client, org.test, f"user{index:02d}")

    page = await read_page(await client.get(ACCOUNTS, headers=org.test))

    assert len(page["data"]) == 25
    assert page["next_cursor"] is not None


async def test_list_max_limit(client: Client, org: Org) -> None:
    for index in range(3):
        await create_account(client, org.test, f"user{index}")

    page = await read_page(await client.get(ACCOUNTS, params={"limit": "100"}, headers=org.test))

    assert len(page["data"]) == 3
    assert page["next_cursor"] is None


async def test_list_pages_cover_all(client: Client, org: Org) -> None:
    created = [await create_account(client, org.test, f"user{index}") for index in range(7)]

    for limit in (1, 2, 3, 7):
        walked = await walk_pages(client, ACCOUNTS, org.test, limit=limit)

        ids = [item["id"] for item in walked]
        assert ids == [item["id"] for item in reversed(created)], f"limit {limit}"


async def test_list_pages_with_filter(client: Client, org: Org) -> None:
    reddit_accounts = []
    for index in range(5):
        reddit = await create_account(client, org.test, f"r{index}", platform="reddit")
        reddit_accounts.append(reddit)
        await create_account(client, org.test, f"x{index}")

    walked = await walk_pages(client, ACCOUNTS, org.test, limit=2, platform="reddit")

    assert [item["id"] for item in walked] == [item["id"] for item in reversed(reddit_accounts)]


async def test_list_pages_equal_timestamps(client: Client, org: Org, pool: db.Pool) -> None:
    created = [await create_account(client, org.test, f"user{index}") for index in range(5)]
    # Give every account the same created_at, so only the id orders them.
    await pool.execute("UPDATE social_accounts SET created_at = '2026-01-01T00:00:00Z'")
    expected = sorted((item["id"] for item in created), key=uuid.UUID, reverse=True)

    walked = await walk_pages(client, ACCOUNTS, org.test, limit=2)

    assert [item["id"] for item in walked] == expected


@pytest.mark.parametrize(
    ("limit", "code"),
    [
        ("0", "out_of_range"),
        ("101", "out_of_range"),
        ("-1", "out_of_range"),
        ("abc", "invalid_type"),
        ("1.5", "invalid_type"),
        ("--1", "invalid_type"),
        ("²", "invalid_type"),
        ("1e2", "invalid_type"),
    ],
)
async def test_list_invalid_limit(client: Client, org: Org, limit: str, code: str) -> None:
    response = await client.get(ACCOUNTS, params={"limit": limit}, headers=org.test)

    errors = await read_validation(response)
    assert field_codes(errors) == [("limit", code)]


async def test_list_repeated_parameter(client: Client, org: Org) -> None:
    response = await client.get(f"{ACCOUNTS}?limit=1&limit=2", headers=org.test)

    errors = await read_validation(response)
    assert field_codes(errors) == [("limit", "duplicate")]


async def test_list_invalid_filters(client: Client, org: Org) -> None:
    response = await client.get(
        ACCOUNTS, params={"platform": "myspace", "tenant": "a", "limit": "0"}, headers=org.test
    )

    errors = await read_validation(response)
    assert field_codes(errors) == [
        ("limit", "out_of_range"),
        ("platform", "invalid_choice"),
        ("tenant", "unknown_field"),
    ]


def _flip_middle(text: str) -> str:
    # The middle, not the end: the last base64 character may carry only padding bits.
    middle = len(text) // 2
    replacement = "A" if text[middle] != "A" else "B"
    return text[:middle] + replacement + text[middle + 1 :]


async def test_list_tampered_cursor(client: Client, org: Org) -> None:
    for index in range(3):
        await create_account(client, org.test, f"user{index}")
    page = await read_page(await client.get(ACCOUNTS, params={"limit": "1"}, headers=org.test))
    cursor: str = page["next_cursor"]
    body, _, mac = cursor.partition(".")
    tampered = [
        _flip_middle(body) + "." + mac,
        body + "." + _flip_middle(mac),
        body,
        "not-a-cursor",
        "é",
    ]

    for value in tampered:
        response = await client.get(ACCOUNTS, params={"cursor": value}, headers=org.test)

        await read_problem(response, 400, "invalid_cursor")


async def test_list_cursor_of_other_list(client: Client, org: Org) -> None:
    account = await create_account(client, org.test)
    for _ in range(2):
        await client.post(imports_url(account["id"]), headers=org.test)
    page = await read_page(
        await client.get(imports_url(account["id"]), params={"limit": "1"}, headers=org.test)
    )

    response = await client.get(ACCOUNTS, params={"cursor": page["next_cursor"]}, headers=org.test)

    await read_problem(response, 400, "invalid_cursor")


async def test_list_cursor_of_other_secret(client: Client, org: Org, settings: Settings) -> None:
    forged = Secrets("another-secret-key-" + "y" * 32).sign_cursor(
        ["accounts", datetime.now(UTC).isoformat(), str(uuid.uuid4())]
    )

    response = await client.get(ACCOUNTS, params={"cursor": forged}, headers=org.test)

    await read_problem(response, 400, "invalid_cursor")


# --- Get and disconnect ----------------------------------------------------------------


async def test_get_account(client: Client, org: Org) -> None:
    account = await create_account(client, org.test)

    response = await client.get(f"{ACCOUNTS}/{account['id']}", headers=org.test)

    assert response.status == 200
    assert await response.json() == account


@pytest.mark.parametrize("account_id", [str(uuid.uuid4()), "not-a-uuid", "bluesky"])
async def test_get_unknown_account(client: Client, org: Org, account_id: str) -> None:
    response = await client.get(f"{ACCOUNTS}/{account_id}", headers=org.test)

    await read_problem(response, 404, "not_found")


async def test_delete_disconnects(client: Client, org: Org) -> None:
    account = await create_account(client, org.test)

    response = await client.delete(f"{ACCOUNTS}/{account['id']}", headers=org.test)

    assert response.status == 200
    deleted = await response.json()
    assert deleted["id"] == account["id"]
    assert deleted["status"] == "disconnected"
    fetched = await (await client.get(f"{ACCOUNTS}/{account['id']}", headers=org.test)).json()
    assert fetched["status"] == "disconnected"


async def test_delete_keeps_posts(client: Client, org: Org, pool: db.Pool) -> None:
    account = await create_account(client, org.test)
    post_id = await insert_post(pool, org.id, account, published_at=datetime.now(UTC))

    await client.delete(f"{ACCOUNTS}/{account['id']}", headers=org.test)

    got = await client.get(f"{POSTS}/{post_id}", headers=org.test)
    by_account = await read_page(
        await client.get(f"{ACCOUNTS}/{account['id']}/posts", headers=org.test)
    )
    assert got.status == 200
    assert [item["id"] for item in by_account["data"]] == [str(post_id)]


async def test_delete_unknown_account(client: Client, org: Org) -> None:
    response = await client.delete(f"{ACCOUNTS}/{uuid.uuid4()}", headers=org.test)

    await read_problem(response, 404, "not_found")


async def test_import_on_disconnected_conflict(client: Client, org: Org) -> None:
    account = await create_account(client, org.test)
    await client.delete(f"{ACCOUNTS}/{account['id']}", headers=org.test)

    response = await client.post(imports_url(account["id"]), json={}, headers=org.test)

    await read_problem(response, 409, "conflict")
    listed = await read_page(await client.get(imports_url(account["id"]), headers=org.test))
    assert listed["data"] == []
