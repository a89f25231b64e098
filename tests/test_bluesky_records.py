"""Tests of the Bluesky adapter's record mapping and checkpoints, without a server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from postfuze_imports.errors import ProviderPermanentError
from postfuze_imports.outbound import create_client_session
from postfuze_imports.providers.base import AccountContext, JsonObject, Window
from postfuze_imports.providers.bluesky import (
    BlueskyProvider,
    parse_datetime,
    parse_record,
    tid_timestamp,
)

PDS = "https://pds.example.com"
DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
# A TID written at 2024-06-01T00:00:00Z, built as the atproto TID format describes.
RKEY = "3ktt5626c2222"
EVERYTHING = Window(start=None, end=None, limit=1000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-06T07:08:09Z", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        ("2024-05-06T07:08:09.123Z", datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)),
        ("2024-05-06T07:08:09.123456789Z", datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)),
        ("2024-05-06t07:08:09z", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        ("2024-05-06T09:08:09+02:00", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        ("2024-05-06T07:08:09-00:00", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        ("2024-05-06T07:08:09", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        ("2024-05-06 07:08:09Z", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        ("2024-13-01T00:00:00Z", None),
    ],
)
def test_parse_datetime_forms(text: str, expected: datetime | None) -> None:
    assert parse_datetime(text) == expected


def test_tid_timestamp_decodes_write_time() -> None:
    # 3jzfcijpj2z2a is the TID example of the atproto record key specification.
    written = tid_timestamp("3jzfcijpj2z2a")
    assert written is not None
    assert datetime(2022, 1, 1, tzinfo=UTC) < written < datetime(2024, 1, 1, tzinfo=UTC)
    assert tid_timestamp("self") is None
    assert tid_timestamp("kjzfcijpj2z2a") is None


def _record(value: dict[str, Any], rkey: str = RKEY) -> dict[str, Any]:
    return {
        "uri": f"at://{DID}/app.bsky.feed.post/{rkey}",
        "cid": "bafyreih",
        "value": {"$type": "app.bsky.feed.post", "text": "hello", **value},
    }


def _blob(cid: str, mime_type: str = "image/jpeg") -> dict[str, Any]:
    return {"$type": "blob", "ref": {"$link": cid}, "mimeType": mime_type, "size": 100}


def _blob_url(cid: str) -> str:
    return f"{PDS}/xrpc/com.atproto.sync.getBlob?did={DID}&cid={cid}"


def test_rkey_fixture_is_a_tid_of_june_2024() -> None:
    assert tid_timestamp(RKEY) == datetime(2024, 6, 1, tzinfo=UTC)


def test_parse_record_maps_fields() -> None:
    record = _record({"createdAt": "2024-05-01T10:00:00.000Z"})
    entry = parse_record(record, PDS, DID)
    assert entry is not None
    post = entry.post
    assert post.platform_post_id == f"at://{DID}/app.bsky.feed.post/{RKEY}"
    assert post.platform_post_url == f"https://bsky.app/profile/{DID}/post/{RKEY}"
    assert post.content == "hello"
    assert post.published_at == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert post.media == ()
    assert post.metrics == {}
    assert post.raw == record
    assert entry.sort_key == (post.published_at, RKEY)


def test_future_created_at_clamped_to_write_time() -> None:
    entry = parse_record(_record({"createdAt": "2099-01-01T00:00:00Z"}), PDS, DID)
    assert entry is not None
    assert entry.post.published_at == datetime(2024, 6, 1, tzinfo=UTC)


def test_invalid_created_at_falls_back_to_write_time() -> None:
    entry = parse_record(_record({"createdAt": "last tuesday"}), PDS, DID)
    assert entry is not None
    assert entry.post.published_at == datetime(2024, 6, 1, tzinfo=UTC)


def test_invalid_created_at_without_tid_is_skipped() -> None:
    assert parse_record(_record({"createdAt": "soon"}, rkey="custom-key"), PDS, DID) is None
    custom_key_entry = parse_record(
        _record({"createdAt": "2020-01-01T00:00:00Z"}, rkey="custom"), PDS, DID
    )
    assert custom_key_entry is not None
    assert custom_key_entry.post.published_at == datetime(2020, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "record",
    [None, "text", {"uri": "https://example.com", "value": {}}, {"uri": f"at://{DID}/x/y"}],
)
def test_malformed_records_are_skipped(record: object) -> None:
    assert parse_record(record, PDS, DID) is None


def test_missing_text_is_empty_content() -> None:
    record = _record({"createdAt": "2024-05-01T10:00:00Z"})
    del record["value"]["text"]
    entry = parse_record(record, PDS, DID)
    assert entry is not None
    assert entry.post.content == ""


@pytest.mark.parametrize(
    ("embed", "expected"),
    [
        (
            {
                "$type": "app.bsky.embed.images",
                "images": [
                    {"image": _blob("bafyimg1"), "alt": ""},
                    {"image": _blob("bafygif", "image/gif"), "alt": ""},
                ],
            },
            [("image", _blob_url("bafyimg1"), None), ("gif", _blob_url("bafygif"), None)],
        ),
        (
            {"$type": "app.bsky.embed.images", "images": [{"image": {"cid": "bafylegacy"}}]},
            [("image", _blob_url("bafylegacy"), None)],
        ),
        (
            {"$type": "app.bsky.embed.video", "video": _blob("bafyvid", "video/mp4")},
            [("video", _blob_url("bafyvid"), None)],
        ),
        (
            {
                "$type": "app.bsky.embed.external",
                "external": {
                    "uri": "https://example.com/a",
                    "title": "A",
                    "description": "",
                    "thumb": _blob("bafythumb"),
                },
            },
            [("link", "https://example.com/a", _blob_url("bafythumb"))],
        ),
        (
            {
                "$type": "app.bsky.embed.external",
                "external": {"uri": "https://example.com/b", "title": "B", "description": ""},
            },
            [("link", "https://example.com/b", None)],
        ),
        (
            {
                "$type": "app.bsky.embed.recordWithMedia",
                "record": {"record": {"uri": f"at://{DID}/app.bsky.feed.post/x", "cid": "c"}},
                "media": {"$type": "app.bsky.embed.images", "images": [{"image": _blob("q")}]},
            },
            [("image", _blob_url("q"), None)],
        ),
        (
            {
                "$type": "app.bsky.embed.record",
                "record": {"uri": f"at://{DID}/app.bsky.feed.post/x", "cid": "c"},
            },
            [],
        ),
        ({"$type": "app.bsky.embed.images", "images": "not a list"}, []),
        ({"$type": "app.bsky.embed.unknown"}, []),
    ],
)
def test_embeds_map_to_media(
    embed: dict[str, Any], expected: list[tuple[str, str | None, str | None]]
) -> None:
    entry = parse_record(_record({"createdAt": "2024-05-01T10:00:00Z", "embed": embed}), PDS, DID)
    assert entry is not None
    assert [(item.type, item.url, item.thumbnail_url) for item in entry.post.media] == expected


@pytest.mark.parametrize(
    "checkpoint",
    [
        {"emitted": -1},
        {"emitted": "3"},
        {"before": {"published_at": "2024-01-01T00:00:00Z", "rkey": RKEY}},
        {"emitted": 1, "before": {"rkey": RKEY}},
        {"emitted": 1, "before": {"published_at": "later", "rkey": RKEY}},
        {"emitted": 1, "before": "x"},
    ],
)
async def test_invalid_checkpoint_is_permanent_error(checkpoint: JsonObject) -> None:
    timeout = aiohttp.ClientTimeout(total=5)
    async with create_client_session(allow_private=True, timeout=timeout) as http:
        # The checkpoint is rejected before any request, so the address is never used.
        provider = BlueskyProvider(
            session=http, default_pds="https://pds.invalid", allow_private=False, timeout=1.0
        )
        context = AccountContext(
            account_id="00000000-0000-0000-0000-000000000002",
            platform="bluesky",
            username="a.test",
            network_unique_id=DID,
            api_base_url=None,
            credentials={},
            save_credentials=_never_save,
        )
        with pytest.raises(ProviderPermanentError, match="invalid Bluesky checkpoint"):
            async for _ in provider.fetch(context, EVERYTHING, checkpoint):
                pass


async def test_window_limit_reached_makes_no_request() -> None:
    timeout = aiohttp.ClientTimeout(total=5)
    async with create_client_session(allow_private=True, timeout=timeout) as http:
        provider = BlueskyProvider(
            session=http, default_pds="https://pds.invalid", allow_private=False, timeout=1.0
        )
        context = AccountContext(
            account_id="00000000-0000-0000-0000-000000000002",
            platform="bluesky",
            username="a.test",
            network_unique_id=DID,
            api_base_url=None,
            credentials={},
            save_credentials=_never_save,
        )
        window = Window(start=None, end=None, limit=10)
        pages = [page async for page in provider.fetch(context, window, {"emitted": 10})]
        assert pages == []


async def _never_save(credentials: JsonObject) -> None:
    raise AssertionError("no credentials to save")
