"""Checks of the local Bluesky PDS harness against the real @atproto/pds server."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from postfuze_imports.devstack.pds import PdsServer, XrpcError, start_pds

pytestmark = pytest.mark.pds

POST_COUNT = 250
FIRST_CREATED_AT = datetime(2023, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=730)
# The launcher rounds exp up to whole seconds, so a token stays valid for TTL to TTL + 1
# seconds.
ACCESS_TOKEN_TTL = 2


@pytest.fixture
async def pds(tmp_path: Path) -> AsyncIterator[PdsServer]:
    server = await start_pds(tmp_path)
    try:
        yield server
    finally:
        await server.stop()


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _scattered_posts(count: int) -> list[tuple[str, str]]:
    """Build posts whose createdAt values cover two years in a shuffled order."""
    posts = []
    for index in range(count):
        # 7919 is a prime that does not divide 250, so index * 7919 mod count visits every
        # slot once, out of order.
        slot = (index * 7919) % count
        created_at = FIRST_CREATED_AT + SPAN * slot / count
        text = f"post {index} (slot {slot}) café ☕ 🦋" if index % 50 == 0 else f"post {index}"
        posts.append((text, _iso(created_at)))
    return posts


def _jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


async def _get_session(http: aiohttp.ClientSession, pds: PdsServer, token: str) -> tuple[int, Any]:
    async with http.get(
        f"{pds.url}/xrpc/com.atproto.server.getSession",
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        return response.status, await response.json()


async def test_posts_round_trip(pds: PdsServer) -> None:
    assert pds.url.startswith("http://127.0.0.1:")
    assert pds.handle_domains == [".test"]
    account = await pds.create_account("alice.test", "alice-password", "alice@example.com")
    did = account["did"]
    assert did.startswith("did:plc:")
    assert account["handle"] == "alice.test"

    posts = _scattered_posts(POST_COUNT)
    created_ats = [created_at for _, created_at in posts]
    assert created_ats != sorted(created_ats)
    assert min(created_ats) == _iso(FIRST_CREATED_AT)
    assert max(created_ats) > _iso(FIRST_CREATED_AT + SPAN * 0.99)

    uris = await pds.write_posts(account, posts)
    assert len(uris) == POST_COUNT
    assert len(set(uris)) == POST_COUNT
    assert all(uri.startswith(f"at://{did}/app.bsky.feed.post/") for uri in uris)

    records = await pds.list_all_posts(did)
    assert len(records) == POST_COUNT
    assert {record["uri"] for record in records} == set(uris)
    listed = {(record["value"]["text"], record["value"]["createdAt"]) for record in records}
    assert listed == set(posts)
    assert all(record["value"]["$type"] == "app.bsky.feed.post" for record in records)


async def test_write_posts_large_batch(pds: PdsServer) -> None:
    account = await pds.create_account("frank.test", "frank-password", "frank@example.com")
    # Each grapheme is "é" with four combining acute accents: 10 bytes of UTF-8 and 30 bytes
    # of escaped JSON. A post of 300 graphemes stays within the 3,000-byte post limit, and
    # 130 such posts exceed the 1,000,000-byte applyWrites body limit in one call.
    grapheme = "\u00e9" + "\u0301" * 4
    posts = [
        (f"{index:03d}" + grapheme * 297, _iso(FIRST_CREATED_AT + timedelta(hours=index)))
        for index in range(130)
    ]
    assert all(len(text.encode()) <= 3000 for text, _ in posts)

    uris = await pds.write_posts(account, posts)
    assert len(uris) == 130

    records = await pds.list_all_posts(account["did"])
    listed = {(record["value"]["text"], record["value"]["createdAt"]) for record in records}
    assert listed == set(posts)


async def test_list_all_posts_empty_repo(pds: PdsServer) -> None:
    account = await pds.create_account("erin.test", "erin-password", "erin@example.com")
    assert await pds.list_all_posts(account["did"]) == []


async def test_app_password_logs_in(pds: PdsServer) -> None:
    account = await pds.create_account("bob.test", "bob-password", "bob@example.com")
    app_password = await pds.create_app_password(account, "postfuze-imports")
    assert len(app_password) == len("xxxx-xxxx-xxxx-xxxx")

    session = await pds.create_session("bob.test", app_password)
    assert session["did"] == account["did"]
    assert _jwt_claims(session["accessJwt"])["scope"] == "com.atproto.appPass"


async def test_wrong_password_rejected(pds: PdsServer) -> None:
    await pds.create_account("carol.test", "carol-password", "carol@example.com")
    with pytest.raises(XrpcError) as caught:
        await pds.create_session("carol.test", "not-the-password")
    assert caught.value.status == 401
    assert caught.value.error == "AuthenticationRequired"


async def test_access_token_ttl_expires(tmp_path: Path) -> None:
    server = await start_pds(tmp_path, access_token_ttl=ACCESS_TOKEN_TTL)
    try:
        session = await server.create_account("dave.test", "dave-password", "dave@example.com")
        claims = _jwt_claims(session["accessJwt"])
        assert claims["exp"] - claims["iat"] in {ACCESS_TOKEN_TTL, ACCESS_TOKEN_TTL + 1}
        refresh_claims = _jwt_claims(session["refreshJwt"])
        assert refresh_claims["exp"] - refresh_claims["iat"] == 90 * 24 * 3600

        async with aiohttp.ClientSession() as http:
            status, body = await _get_session(http, server, session["accessJwt"])
            assert status == 200

            # The PDS must reject the token soon after its lifetime ends.
            deadline = time.monotonic() + ACCESS_TOKEN_TTL + 15
            while status == 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                status, body = await _get_session(http, server, session["accessJwt"])
            assert status == 400
            assert body["error"] == "ExpiredToken"

            async with http.post(
                f"{server.url}/xrpc/com.atproto.server.refreshSession",
                headers={"Authorization": f"Bearer {session['refreshJwt']}"},
            ) as response:
                assert response.status == 200
                refreshed = await response.json()
            status, body = await _get_session(http, server, refreshed["accessJwt"])
            assert status == 200
            assert body["did"] == session["did"]
    finally:
        await server.stop()
    assert not server.running
