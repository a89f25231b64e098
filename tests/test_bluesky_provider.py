"""Tests of the Bluesky adapter against a real local PDS.

They run `@atproto/pds` on 127.0.0.1 through `postfuze_imports.devstack.pds`, which
installs it from npm on first use.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from postfuze_imports.devstack.pds import PdsServer, start_pds
from postfuze_imports.errors import ProviderAuthError
from postfuze_imports.outbound import create_client_session
from postfuze_imports.providers.base import AccountContext, JsonObject, NormalizedPost, Page, Window
from postfuze_imports.providers.bluesky import (
    BlueskyProvider,
    create_session,
    parse_datetime,
)

FIRST_CREATED_AT = datetime(2023, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=730)
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30)
EVERYTHING = Window(start=None, end=None, limit=1000)
# A 1x1 transparent PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@dataclass
class Connected:
    """A PDS account connected the way the API connects one."""

    pds: PdsServer
    did: str
    handle: str
    app_password: str
    credentials: JsonObject
    saved: list[JsonObject] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    async def save(self, credentials: JsonObject) -> None:
        self.events.append("save")
        self.saved.append(dict(credentials))
        self.credentials = dict(credentials)

    def context(self) -> AccountContext:
        return AccountContext(
            account_id="00000000-0000-0000-0000-00000000b5c7",
            platform="bluesky",
            username=self.handle,
            network_unique_id=self.did,
            api_base_url=self.pds.url,
            credentials=dict(self.credentials),
            save_credentials=self.save,
        )


# One PDS serves every test of this module (each test creates its own accounts), so
# the module's tests share one event loop with it.
pytestmark = [pytest.mark.pds, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pds(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PdsServer]:
    server = await start_pds(tmp_path_factory.mktemp("pds"))
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with create_client_session(allow_private=True, timeout=HTTP_TIMEOUT) as session:
        yield session


def make_provider(http: aiohttp.ClientSession, pds: PdsServer) -> BlueskyProvider:
    return BlueskyProvider(session=http, default_pds=pds.url, allow_private=True, timeout=30.0)


async def connect(pds: PdsServer, http: aiohttp.ClientSession, name: str) -> Connected:
    handle = f"{name}.test"
    account = await pds.create_account(handle, f"{name}-password", f"{name}@example.com")
    app_password = await pds.create_app_password(account, "postfuze-imports")
    credentials = await create_session(http, pds.url, handle, app_password)
    return Connected(pds, account["did"], handle, app_password, credentials)


async def write(connected: Connected, posts: list[tuple[str, str]]) -> list[str]:
    session = await connected.pds.create_session(
        connected.handle, f"{connected.handle[:-5]}-password"
    )
    return await connected.pds.write_posts(session, posts)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def scattered_posts(count: int, *, label: str = "post") -> list[tuple[str, str]]:
    """Posts whose createdAt values cover two years in an order unrelated to write order."""
    posts = []
    for index in range(count):
        # 7919 is prime, so index * 7919 mod count visits every slot once, out of order.
        slot = (index * 7919) % count
        created_at = FIRST_CREATED_AT + SPAN * slot / count
        posts.append((f"{label} {index} café ☕ 🦋", iso(created_at)))
    return posts


def newest_first(posts: list[tuple[str, str]], uris: list[str]) -> list[tuple[datetime, str]]:
    """Return (createdAt, at-uri) pairs sorted as the adapter must emit them."""
    keyed = []
    for (_, created_at), uri in zip(posts, uris, strict=True):
        moment = parse_datetime(created_at)
        assert moment is not None
        keyed.append((moment, uri.rsplit("/", 1)[-1], uri))
    keyed.sort(reverse=True)
    return [(moment, uri) for moment, _, uri in keyed]


async def collect(
    provider: BlueskyProvider,
    connected: Connected,
    window: Window,
    checkpoint: JsonObject | None = None,
) -> list[Page]:
    pages = []
    async for page in provider.fetch(connected.context(), window, checkpoint):
        connected.events.append("page")
        pages.append(page)
    return pages


def posts_of(pages: list[Page]) -> list[NormalizedPost]:
    return [post for page in pages for post in page.posts]


async def test_create_session_returns_credentials(
    pds: PdsServer, http: aiohttp.ClientSession
) -> None:
    connected = await connect(pds, http, "alice")
    credentials = connected.credentials
    assert credentials["did"] == connected.did
    assert credentials["handle"] == "alice.test"
    assert credentials["app_password"] == connected.app_password
    assert credentials["access_token"].count(".") == 2
    assert credentials["refresh_token"] != credentials["access_token"]
    expires_at = datetime.fromisoformat(credentials["token_expires_at"])
    # The reference PDS issues access tokens for 120 minutes.
    assert timedelta(minutes=110) < expires_at - datetime.now(UTC) <= timedelta(minutes=121)


async def test_create_session_rejects_wrong_password(
    pds: PdsServer, http: aiohttp.ClientSession
) -> None:
    await pds.create_account("bob.test", "bob-password", "bob@example.com")
    with pytest.raises(ProviderAuthError, match="invalid identifier or app password"):
        await create_session(http, pds.url, "bob.test", "aaaa-bbbb-cccc-dddd")


async def test_create_session_rejects_account_password(
    pds: PdsServer, http: aiohttp.ClientSession
) -> None:
    await pds.create_account("carol.test", "carol-password", "carol@example.com")
    with pytest.raises(ProviderAuthError, match="account password, not an app password"):
        await create_session(http, pds.url, "carol.test", "carol-password")


async def test_window_is_exact_with_backdated_posts(
    pds: PdsServer, http: aiohttp.ClientSession
) -> None:
    connected = await connect(pds, http, "dana")
    posts = scattered_posts(250)
    # Equal createdAt values must come out in record key order, newest key first.
    tie = iso(FIRST_CREATED_AT + SPAN / 2 + timedelta(seconds=1))
    posts += [(f"tie {index}", tie) for index in range(5)]
    uris = await write(connected, posts)
    expected = newest_first(posts, uris)
    provider = make_provider(http, pds)

    start = FIRST_CREATED_AT + SPAN / 4
    end = FIRST_CREATED_AT + SPAN * 3 / 4
    window = Window(start=start, end=end, limit=1000)
    pages = await collect(provider, connected, window)
    got = [(post.published_at, post.platform_post_id) for post in posts_of(pages)]
    assert got == [pair for pair in expected if start <= pair[0] <= end]
    assert any(post.content.startswith("tie") for post in posts_of(pages))

    recent = await collect(provider, connected, Window(start=None, end=None, limit=30))
    assert [post.platform_post_id for post in posts_of(recent)] == [uri for _, uri in expected[:30]]


async def test_window_boundaries_are_inclusive(pds: PdsServer, http: aiohttp.ClientSession) -> None:
    connected = await connect(pds, http, "erin")
    posts = scattered_posts(40)
    uris = await write(connected, posts)
    expected = newest_first(posts, uris)
    end, start = expected[5][0], expected[20][0]
    pages = await collect(
        make_provider(http, pds), connected, Window(start=start, end=end, limit=1000)
    )
    assert [post.platform_post_id for post in posts_of(pages)] == [uri for _, uri in expected[5:21]]


async def test_many_pages_heartbeats_and_resume(
    pds: PdsServer, http: aiohttp.ClientSession
) -> None:
    connected = await connect(pds, http, "frank")
    posts = scattered_posts(450)
    uris = await write(connected, posts)
    expected = [uri for _, uri in newest_first(posts, uris)]
    provider = make_provider(http, pds)
    window = Window(start=None, end=None, limit=250)

    pages = await collect(provider, connected, window)
    # Six listRecords calls: four full pages, one of 50 records and the empty page that
    # ends paging, because the reference PDS returns a cursor with every non-empty page.
    heartbeats = [page for page in pages if not page.posts]
    assert len(heartbeats) == 6
    assert all(page.checkpoint == {"emitted": 0} for page in heartbeats)
    assert pages[:6] == heartbeats
    assert [len(page.posts) for page in pages[6:]] == [100, 100, 50]
    assert [post.platform_post_id for post in posts_of(pages)] == expected[:250]
    assert [page.checkpoint["emitted"] for page in pages[6:] if page.checkpoint] == [100, 200, 250]

    # Newer posts written between the runs must not shift what the resumed run emits.
    await write(connected, [("written later", iso(datetime.now(UTC)))])
    resumed = await collect(provider, connected, window, pages[6].checkpoint)
    assert [post.platform_post_id for post in posts_of(resumed)] == expected[100:250]
    assert posts_of(resumed)[0].platform_post_id != posts_of(pages)[99].platform_post_id

    bare = await collect(
        provider, connected, Window(start=None, end=None, limit=250), {"emitted": 240}
    )
    assert len(posts_of(bare)) == 10


async def test_empty_repository_yields_only_heartbeat(
    pds: PdsServer, http: aiohttp.ClientSession
) -> None:
    connected = await connect(pds, http, "gina")
    pages = await collect(make_provider(http, pds), connected, EVERYTHING)
    assert pages == [Page(posts=(), checkpoint={"emitted": 0})]
    assert connected.saved == []


async def test_invalid_access_token_is_refreshed(
    pds: PdsServer, http: aiohttp.ClientSession
) -> None:
    connected = await connect(pds, http, "hank")
    await write(connected, scattered_posts(3))
    old_refresh = connected.credentials["refresh_token"]
    connected.credentials["access_token"] = "not-a-jwt"

    pages = await collect(make_provider(http, pds), connected, EVERYTHING)
    assert len(posts_of(pages)) == 3
    assert len(connected.saved) == 1
    saved = connected.saved[0]
    assert saved["access_token"] != "not-a-jwt"
    assert saved["refresh_token"] != old_refresh
    assert saved["app_password"] == connected.app_password
    assert saved["did"] == connected.did
    # The new tokens are stored before the first page is yielded.
    assert connected.events[0] == "save"

    # The stored session now works without another refresh.
    await collect(make_provider(http, pds), connected, EVERYTHING)
    assert len(connected.saved) == 1


async def test_bad_refresh_token_logs_in_with_app_password(
    pds: PdsServer, http: aiohttp.ClientSession
) -> None:
    connected = await connect(pds, http, "ivan")
    await write(connected, scattered_posts(2))
    connected.credentials["access_token"] = "not-a-jwt"
    connected.credentials["refresh_token"] = "also-not-a-jwt"

    pages = await collect(make_provider(http, pds), connected, EVERYTHING)
    assert len(posts_of(pages)) == 2
    assert len(connected.saved) == 1
    assert connected.saved[0]["refresh_token"] != "also-not-a-jwt"
    assert connected.saved[0]["app_password"] == connected.app_password


async def test_no_way_to_renew_raises_auth_error(
    pds: PdsServer, http: aiohttp.ClientSession
) -> None:
    connected = await connect(pds, http, "jane")
    connected.credentials["access_token"] = "not-a-jwt"
    connected.credentials["refresh_token"] = "also-not-a-jwt"
    del connected.credentials["app_password"]
    with pytest.raises(ProviderAuthError, match="no app password is stored"):
        await collect(make_provider(http, pds), connected, EVERYTHING)
    assert connected.saved == []


async def test_revoked_app_password_raises_auth_error(
    pds: PdsServer, http: aiohttp.ClientSession
) -> None:
    connected = await connect(pds, http, "kate")
    connected.credentials["access_token"] = "not-a-jwt"
    connected.credentials["refresh_token"] = "also-not-a-jwt"
    connected.credentials["app_password"] = "aaaa-bbbb-cccc-dddd"
    with pytest.raises(ProviderAuthError, match="invalid identifier or app password"):
        await collect(make_provider(http, pds), connected, EVERYTHING)


async def test_session_of_other_account_rejected(
    pds: PdsServer, http: aiohttp.ClientSession
) -> None:
    connected = await connect(pds, http, "liam")
    context = connected.context()
    other = AccountContext(
        account_id=context.account_id,
        platform="bluesky",
        username="someone.test",
        network_unique_id="did:plc:aaaaaaaaaaaaaaaaaaaaaaaa",
        api_base_url=pds.url,
        credentials=context.credentials,
        save_credentials=connected.save,
    )
    with pytest.raises(ProviderAuthError, match="belongs to"):
        async for _ in make_provider(http, pds).fetch(other, EVERYTHING, None):
            pass


async def test_media_embeds_are_mapped(pds: PdsServer, http: aiohttp.ClientSession) -> None:
    connected = await connect(pds, http, "mona")
    token = connected.credentials["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(
        f"{pds.url}/xrpc/com.atproto.repo.uploadBlob",
        data=PNG,
        headers={**headers, "Content-Type": "image/png"},
    ) as response:
        assert response.status == 200
        blob = (await response.json())["blob"]
    cid = blob["ref"]["$link"]
    created_at = iso(datetime(2024, 2, 3, tzinfo=UTC))
    embeds: list[dict[str, Any]] = [
        {"$type": "app.bsky.embed.images", "images": [{"image": blob, "alt": "a dot"}]},
        {
            "$type": "app.bsky.embed.external",
            "external": {
                "uri": "https://example.com/article",
                "title": "An article",
                "description": "",
                "thumb": blob,
            },
        },
    ]
    for index, embed in enumerate(embeds):
        record = {
            "$type": "app.bsky.feed.post",
            "text": f"with media {index}",
            "createdAt": created_at,
            "embed": embed,
        }
        async with http.post(
            f"{pds.url}/xrpc/com.atproto.repo.createRecord",
            json={"repo": connected.did, "collection": "app.bsky.feed.post", "record": record},
            headers=headers,
        ) as response:
            assert response.status == 200, await response.text()

    pages = await collect(make_provider(http, pds), connected, EVERYTHING)
    by_text = {post.content: post for post in posts_of(pages)}
    blob_url = f"{pds.url}/xrpc/com.atproto.sync.getBlob?did={connected.did}&cid={cid}"
    image_post = by_text["with media 0"]
    assert [(item.type, item.url) for item in image_post.media] == [("image", blob_url)]
    link = by_text["with media 1"].media[0]
    assert (link.type, link.url, link.thumbnail_url) == (
        "link",
        "https://example.com/article",
        blob_url,
    )
    assert image_post.platform_post_url == (
        f"https://bsky.app/profile/{connected.did}/post/"
        + image_post.platform_post_id.rsplit("/", 1)[-1]
    )
    assert image_post.raw["value"]["embed"]["$type"] == "app.bsky.embed.images"
    assert image_post.metrics == {}
    async with http.get(blob_url, allow_redirects=False) as response:
        assert response.status == 200
        assert await response.read() == PNG


async def test_expired_access_token_is_refreshed(tmp_path: Path) -> None:
    server = await start_pds(tmp_path, access_token_ttl=1)
    try:
        async with create_client_session(allow_private=True, timeout=HTTP_TIMEOUT) as http:
            connected = await connect(server, http, "nora")
            await write(connected, scattered_posts(2))
            # Wait, with a deadline, until the PDS itself reports the token as expired.
            token = connected.credentials["access_token"]
            deadline = time.monotonic() + 20
            status, error = 200, None
            while status == 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                async with http.get(
                    f"{server.url}/xrpc/com.atproto.server.getSession",
                    headers={"Authorization": f"Bearer {token}"},
                ) as response:
                    status, error = response.status, (await response.json()).get("error")
            assert (status, error) == (400, "ExpiredToken")

            pages = await collect(make_provider(http, server), connected, EVERYTHING)
            assert len(posts_of(pages)) == 2
            assert len(connected.saved) == 1
            assert connected.saved[0]["access_token"] != token
    finally:
        await server.stop()
