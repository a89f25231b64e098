"""Posts, imported and published: list with filters and pages, get, list by account."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from postfuze_imports import db
from tests.api_support import (
    ACCOUNTS,
    POSTS,
    TIMESTAMP,
    Client,
    JsonObject,
    create_account,
    create_import,
    field_codes,
    insert_post,
    read_page,
    read_problem,
    read_validation,
    walk_pages,
)
from tests.conftest import Org

POST_FIELDS = [
    "content",
    "created_at",
    "id",
    "import_id",
    "livemode",
    "media",
    "metrics",
    "platform",
    "platform_post_id",
    "platform_post_url",
    "published_at",
    "social_account_id",
    "source",
]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
async def account(client: Client, org: Org) -> JsonObject:
    return await create_account(client, org.test, "alice")


@pytest.fixture
async def other_account(client: Client, org: Org) -> JsonObject:
    return await create_account(client, org.test, "bob", platform="threads")


def ids(page: list[JsonObject]) -> list[str]:
    return [item["id"] for item in page]


async def list_ids(client: Client, org: Org, url: str = POSTS, **params: str) -> list[str]:
    page = await read_page(await client.get(url, params=params, headers=org.test))
    return ids(page["data"])


async def test_get_post_fields(
    client: Client, org: Org, account: JsonObject, pool: db.Pool
) -> None:
    job = await create_import(client, org.test, account["id"])
    post_id = await insert_post(
        pool,
        org.id,
        account,
        published_at=at("2026-03-04T05:06:07.891234Z"),
        platform_post_id="net-1",
        import_id=job["id"],
    )

    response = await client.get(f"{POSTS}/{post_id}", headers=org.test)

    assert response.status == 200
    post = await response.json()
    assert sorted(post) == POST_FIELDS
    assert post["id"] == str(post_id)
    assert post["social_account_id"] == account["id"]
    assert post["platform"] == "x"
    assert post["platform_post_id"] == "net-1"
    assert post["platform_post_url"] == "https://example.com/posts/net-1"
    assert post["content"] == "content of net-1"
    assert post["media"] == [
        {"type": "image", "url": "https://example.com/a.png", "thumbnail_url": None}
    ]
    assert post["published_at"] == "2026-03-04T05:06:07.891Z"
    assert post["source"] == "imported"
    assert post["import_id"] == job["id"]
    assert post["metrics"] == {"likes": 3, "reposts": 1}
    assert TIMESTAMP.match(post["created_at"])
    assert post["livemode"] is False


async def test_get_post_hides_raw(
    client: Client, org: Org, account: JsonObject, pool: db.Pool
) -> None:
    post_id = await insert_post(pool, org.id, account, published_at=datetime.now(UTC))

    response = await client.get(f"{POSTS}/{post_id}", headers=org.test)

    assert "kept in storage only" not in await response.text()


@pytest.mark.parametrize("post_id", [str(uuid.uuid4()), "not-a-uuid"])
async def test_get_unknown_post(client: Client, org: Org, post_id: str) -> None:
    response = await client.get(f"{POSTS}/{post_id}", headers=org.test)

    await read_problem(response, 404, "not_found")


async def test_list_newest_published_first(
    client: Client, org: Org, account: JsonObject, other_account: JsonObject, pool: db.Pool
) -> None:
    base = at("2026-01-10T12:00:00Z")
    # Published in another order than inserted, with two pairs at the same instant.
    times = [
        base,
        base + timedelta(days=2),
        base - timedelta(days=1),
        base,
        base + timedelta(days=2),
    ]
    posts = []
    for index, published in enumerate(times):
        owner = account if index % 2 == 0 else other_account
        posts.append((published, await insert_post(pool, org.id, owner, published_at=published)))
    expected = [str(post_id) for _, post_id in sorted(posts, reverse=True)]

    listed = await list_ids(client, org)

    assert listed == expected


async def test_list_pages_cover_ties(
    client: Client, org: Org, account: JsonObject, pool: db.Pool
) -> None:
    base = at("2026-01-10T12:00:00Z")
    posts = []
    for index in range(7):
        published = base + timedelta(hours=index // 3)
        posts.append((published, await insert_post(pool, org.id, account, published_at=published)))
    expected = [str(post_id) for _, post_id in sorted(posts, reverse=True)]

    for limit in (1, 2, 3, 7):
        walked = await walk_pages(client, POSTS, org.test, limit=limit)

        assert ids(walked) == expected, f"limit {limit}"


async def test_list_default_page(
    client: Client, org: Org, account: JsonObject, pool: db.Pool
) -> None:
    base = at("2026-01-10T12:00:00Z")
    for index in range(26):
        await insert_post(pool, org.id, account, published_at=base + timedelta(minutes=index))

    page = await read_page(await client.get(POSTS, headers=org.test))

    assert len(page["data"]) == 25
    assert page["next_cursor"] is not None


async def test_list_filter_account(
    client: Client, org: Org, account: JsonObject, other_account: JsonObject, pool: db.Pool
) -> None:
    mine = await insert_post(pool, org.id, account, published_at=at("2026-01-01T00:00:00Z"))
    await insert_post(pool, org.id, other_account, published_at=at("2026-01-02T00:00:00Z"))

    listed = await list_ids(client, org, social_account_id=account["id"])

    assert listed == [str(mine)]


async def test_list_filter_source(
    client: Client, org: Org, account: JsonObject, pool: db.Pool
) -> None:
    imported = await insert_post(pool, org.id, account, published_at=at("2026-01-01T00:00:00Z"))
    published = await insert_post(
        pool, org.id, account, published_at=at("2026-01-02T00:00:00Z"), source="published"
    )

    only_imported = await list_ids(client, org, source="imported")
    only_published = await list_ids(client, org, source="published")

    assert only_imported == [str(imported)]
    assert only_published == [str(published)]


@pytest.fixture
async def january(org: Org, account: JsonObject, pool: db.Pool) -> dict[str, uuid.UUID]:
    """Posts on the edges of January 2026 and just outside it, by name."""
    instants = {
        "before": "2025-12-31T23:59:59.999Z",
        "first": "2026-01-01T00:00:00Z",
        "middle": "2026-01-15T12:00:00Z",
        "last": "2026-01-31T23:59:59.999Z",
        "after": "2026-02-01T00:00:00Z",
    }
    return {
        name: await insert_post(pool, org.id, account, published_at=at(instant))
        for name, instant in instants.items()
    }


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"from": "2026-01-01", "to": "2026-01-31"}, ["last", "middle", "first"]),
        ({"from": "2026-01-01"}, ["after", "last", "middle", "first"]),
        ({"to": "2026-01-31"}, ["last", "middle", "first", "before"]),
        ({"from": "2026-01-15T12:00:00Z", "to": "2026-01-15T12:00:00Z"}, ["middle"]),
        ({"from": "2026-01-15T14:00:00+02:00", "to": "2026-01-15"}, ["middle"]),
        ({"from": "2026-01-15T12:00:00.001Z"}, ["after", "last"]),
        ({"to": "2026-01-01T00:00:00Z"}, ["first", "before"]),
        ({"from": "2026-03-01"}, []),
    ],
)
async def test_list_filter_window(
    client: Client,
    org: Org,
    january: dict[str, uuid.UUID],
    params: dict[str, str],
    names: list[str],
) -> None:
    listed = await list_ids(client, org, **params)

    assert listed == [str(january[name]) for name in names]


async def test_list_filters_combined(
    client: Client, org: Org, account: JsonObject, other_account: JsonObject, pool: db.Pool
) -> None:
    expected_post = await insert_post(
        pool, org.id, account, published_at=at("2026-01-05T00:00:00Z"), source="published"
    )
    await insert_post(pool, org.id, account, published_at=at("2026-01-06T00:00:00Z"))
    await insert_post(
        pool, org.id, account, published_at=at("2026-02-05T00:00:00Z"), source="published"
    )
    await insert_post(
        pool, org.id, other_account, published_at=at("2026-01-05T00:00:00Z"), source="published"
    )

    listed = await list_ids(
        client,
        org,
        social_account_id=account["id"],
        source="published",
        **{"from": "2026-01-01", "to": "2026-01-31"},
    )

    assert listed == [str(expected_post)]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"social_account_id": "abc"}, [("social_account_id", "invalid_format")]),
        ({"source": "draft"}, [("source", "invalid_choice")]),
        ({"from": "yesterday"}, [("from", "invalid_format")]),
        ({"to": "2026-01-01T10:00:00"}, [("to", "invalid_format")]),
        ({"from": "2026-02-01", "to": "2026-01-01"}, [("to", "invalid_range")]),
        (
            {"from": "2026-02-01", "to": "2026-01-01", "source": "x"},
            [("source", "invalid_choice"), ("to", "invalid_range")],
        ),
        ({"limit": "0"}, [("limit", "out_of_range")]),
        ({"limit": "101"}, [("limit", "out_of_range")]),
        ({"limit": "many"}, [("limit", "invalid_type")]),
        ({"platform": "x"}, [("platform", "unknown_field")]),
        ({"cursor": ""}, [("cursor", "empty")]),
        ({"social_account_id": ""}, [("social_account_id", "empty")]),
    ],
)
async def test_list_invalid_query(
    client: Client,
    org: Org,
    params: dict[str, str],
    expected: list[tuple[str, str]],
) -> None:
    response = await client.get(POSTS, params=params, headers=org.test)

    errors = await read_validation(response)
    assert field_codes(errors) == expected


async def test_list_tampered_cursor(client: Client, org: Org) -> None:
    response = await client.get(
        POSTS, params={"cursor": "W10.AAAAAAAAAAAAAAAAAAAAAA"}, headers=org.test
    )

    await read_problem(response, 400, "invalid_cursor")


# --- Posts of one account --------------------------------------------------------------


async def test_account_posts_only_its_own(
    client: Client, org: Org, account: JsonObject, other_account: JsonObject, pool: db.Pool
) -> None:
    first = await insert_post(pool, org.id, account, published_at=at("2026-01-01T00:00:00Z"))
    second = await insert_post(pool, org.id, account, published_at=at("2026-01-03T00:00:00Z"))
    await insert_post(pool, org.id, other_account, published_at=at("2026-01-02T00:00:00Z"))

    listed = await list_ids(client, org, f"{ACCOUNTS}/{account['id']}/posts")

    assert listed == [str(second), str(first)]


async def test_account_posts_filters(
    client: Client, org: Org, account: JsonObject, pool: db.Pool
) -> None:
    expected_post = await insert_post(
        pool, org.id, account, published_at=at("2026-01-05T00:00:00Z"), source="published"
    )
    await insert_post(pool, org.id, account, published_at=at("2026-01-06T00:00:00Z"))
    await insert_post(
        pool, org.id, account, published_at=at("2026-03-05T00:00:00Z"), source="published"
    )

    listed = await list_ids(
        client,
        org,
        f"{ACCOUNTS}/{account['id']}/posts",
        source="published",
        to="2026-01-31",
    )

    assert listed == [str(expected_post)]


async def test_account_posts_pages(
    client: Client, org: Org, account: JsonObject, other_account: JsonObject, pool: db.Pool
) -> None:
    base = at("2026-01-10T12:00:00Z")
    posts = []
    for index in range(5):
        published = base + timedelta(minutes=index)
        posts.append((published, await insert_post(pool, org.id, account, published_at=published)))
        await insert_post(pool, org.id, other_account, published_at=published)
    expected = [str(post_id) for _, post_id in sorted(posts, reverse=True)]

    walked = await walk_pages(client, f"{ACCOUNTS}/{account['id']}/posts", org.test, limit=2)

    assert ids(walked) == expected


async def test_account_posts_rejects_account_filter(
    client: Client, org: Org, account: JsonObject
) -> None:
    response = await client.get(
        f"{ACCOUNTS}/{account['id']}/posts",
        params={"social_account_id": account["id"]},
        headers=org.test,
    )

    errors = await read_validation(response)
    assert field_codes(errors) == [("social_account_id", "unknown_field")]


@pytest.mark.parametrize("account_id", [str(uuid.uuid4()), "not-a-uuid"])
async def test_account_posts_unknown_account(client: Client, org: Org, account_id: str) -> None:
    response = await client.get(f"{ACCOUNTS}/{account_id}/posts", headers=org.test)

    await read_problem(response, 404, "not_found")
