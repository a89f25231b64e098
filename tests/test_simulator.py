"""Tests of the test-mode network simulator."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from postfuze_imports.errors import (
    ProviderAuthError,
    ProviderPermanentError,
    ProviderRateLimited,
)
from postfuze_imports.providers.base import AccountContext, JsonObject, NormalizedPost, Page, Window
from postfuze_imports.providers.simulator import PAGE_SIZE, SimulatorProvider

ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)
EVERYTHING = Window(start=None, end=None, limit=1_000_000)


async def _no_save(credentials: JsonObject) -> None:
    raise AssertionError("the simulator never saves credentials")


def make_account(
    platform: str = "x", network_unique_id: str = "1234567890", username: str = "alice"
) -> AccountContext:
    return AccountContext(
        account_id="00000000-0000-0000-0000-000000000001",
        platform=platform,
        username=username,
        network_unique_id=network_unique_id,
        api_base_url=None,
        credentials={},
        save_credentials=_no_save,
    )


async def collect_pages(
    provider: SimulatorProvider,
    account: AccountContext,
    window: Window,
    checkpoint: JsonObject | None = None,
) -> list[Page]:
    return [page async for page in provider.fetch(account, window, checkpoint)]


async def drain(pages: AsyncIterator[Page], into: list[Page]) -> None:
    """Append every page to `into`, so a test can check the pages before an exception."""
    async for page in pages:
        into.append(page)


def flatten(pages: list[Page]) -> list[NormalizedPost]:
    return [post for page in pages for post in page.posts]


async def full_history(account: AccountContext, anchor: datetime = ANCHOR) -> list[NormalizedPost]:
    return flatten(await collect_pages(SimulatorProvider(anchor=anchor), account, EVERYTHING))


async def test_history_is_deterministic() -> None:
    first = await full_history(make_account())
    second = await full_history(make_account())
    assert first == second


async def test_accounts_get_different_histories() -> None:
    alice = await full_history(make_account(network_unique_id="1"))
    bob = await full_history(make_account(network_unique_id="2"))
    other_platform = await full_history(make_account(platform="threads", network_unique_id="1"))
    assert {post.platform_post_id for post in alice}.isdisjoint(
        post.platform_post_id for post in bob
    )
    assert [post.published_at for post in alice] != [post.published_at for post in other_platform]


@pytest.mark.parametrize("network_unique_id", ["1", "2", "3", "4", "5", "6"])
async def test_history_size_and_span(network_unique_id: str) -> None:
    posts = await full_history(make_account(network_unique_id=network_unique_id))
    assert 1_000 <= len(posts) <= 5_000
    span = posts[0].published_at - posts[-1].published_at
    assert timedelta(days=2 * 365) < span < timedelta(days=9 * 365)
    assert len({post.platform_post_id for post in posts}) == len(posts)


async def test_history_has_gaps_and_bursts() -> None:
    posts = await full_history(make_account())
    gaps = [newer.published_at - older.published_at for newer, older in itertools.pairwise(posts)]
    days = [post.published_at.date() for post in posts]
    busiest_day = max(days.count(day) for day in set(days))
    assert max(gaps) > timedelta(days=10)
    assert min(gaps) < timedelta(hours=1)
    assert busiest_day >= 5


async def test_history_is_newest_first_and_before_anchor() -> None:
    posts = await full_history(make_account())
    times = [post.published_at for post in posts]
    assert times == sorted(times, reverse=True)
    assert times[0] < ANCHOR
    assert all(moment.tzinfo is UTC for moment in times)


async def test_window_is_exact_and_inclusive() -> None:
    account = make_account()
    posts = await full_history(account)
    start = posts[900].published_at
    end = posts[300].published_at
    window = Window(start=start, end=end, limit=1_000_000)
    got = flatten(await collect_pages(SimulatorProvider(anchor=ANCHOR), account, window))
    expected = [post for post in posts if start <= post.published_at <= end]
    assert got == expected
    assert got[0].published_at == end
    assert got[-1].published_at == start


async def test_window_cutting_inside_a_day() -> None:
    account = make_account()
    posts = await full_history(account)
    end = posts[50].published_at - timedelta(seconds=1)
    start = posts[120].published_at + timedelta(seconds=1)
    window = Window(start=start, end=end, limit=1_000_000)
    got = flatten(await collect_pages(SimulatorProvider(anchor=ANCHOR), account, window))
    assert got == posts[51:120]


@pytest.mark.parametrize(
    "window",
    [
        Window(start=None, end=datetime(2010, 1, 1, tzinfo=UTC), limit=100),
        Window(start=datetime(2027, 1, 1, tzinfo=UTC), end=None, limit=100),
        Window(
            start=datetime(2025, 6, 2, tzinfo=UTC), end=datetime(2025, 6, 1, tzinfo=UTC), limit=100
        ),
        Window(start=None, end=None, limit=0),
    ],
)
async def test_empty_windows_yield_nothing(window: Window) -> None:
    assert await collect_pages(SimulatorProvider(anchor=ANCHOR), make_account(), window) == []


async def test_limit_is_exact_in_pages_of_100() -> None:
    account = make_account()
    posts = await full_history(account)
    pages = await collect_pages(
        SimulatorProvider(anchor=ANCHOR), account, Window(start=None, end=None, limit=250)
    )
    assert [len(page.posts) for page in pages] == [100, 100, 50]
    assert flatten(pages) == posts[:250]
    assert [page.checkpoint for page in pages] == [
        {"offset": 100, "anchor": ANCHOR.isoformat()},
        {"offset": 200, "anchor": ANCHOR.isoformat()},
        {"offset": 250, "anchor": ANCHOR.isoformat()},
    ]


async def test_pages_do_not_overlap() -> None:
    pages = await collect_pages(SimulatorProvider(anchor=ANCHOR), make_account(), EVERYTHING)
    seen: set[str] = set()
    for page in pages[:-1]:
        assert len(page.posts) == PAGE_SIZE
    for page in pages:
        ids = {post.platform_post_id for post in page.posts}
        assert seen.isdisjoint(ids)
        seen |= ids


@pytest.mark.parametrize("stop_after", [1, 3, 7])
async def test_resume_from_checkpoint(stop_after: int) -> None:
    account = make_account()
    window = Window(start=datetime(2023, 3, 1, tzinfo=UTC), end=None, limit=1000)
    provider = SimulatorProvider(anchor=ANCHOR)
    uninterrupted = flatten(await collect_pages(provider, account, window))

    first_run: list[Page] = []
    async for page in provider.fetch(account, window, None):
        first_run.append(page)
        if len(first_run) == stop_after:
            break
    checkpoint = first_run[-1].checkpoint
    second_run = await collect_pages(provider, account, window, checkpoint)

    assert checkpoint == {"offset": stop_after * PAGE_SIZE, "anchor": ANCHOR.isoformat()}
    assert flatten(first_run) + flatten(second_run) == uninterrupted
    assert len(uninterrupted) == 1000


async def test_resume_keeps_checkpoint_anchor() -> None:
    account = make_account()
    pinned = SimulatorProvider(anchor=ANCHOR)
    expected = flatten(await collect_pages(pinned, account, EVERYTHING))[100:300]
    checkpoint = {"offset": 100, "anchor": ANCHOR.isoformat()}
    resumed = SimulatorProvider()
    window = Window(start=None, end=None, limit=300)
    assert flatten(await collect_pages(resumed, account, window, checkpoint)) == expected


async def test_default_anchor_is_today_midnight() -> None:
    pages = await collect_pages(
        SimulatorProvider(), make_account(), Window(start=None, end=None, limit=1)
    )
    assert pages[0].checkpoint is not None
    anchor = datetime.fromisoformat(pages[0].checkpoint["anchor"])
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    # A run across midnight can see yesterday's anchor.
    assert anchor in (today, today + timedelta(days=1), today - timedelta(days=1))


async def test_later_anchor_keeps_earlier_posts() -> None:
    account = make_account()
    earlier = await full_history(account, ANCHOR)
    later = await full_history(account, ANCHOR + timedelta(days=90))
    assert len(later) > len(earlier)
    assert [post for post in later if post.published_at < ANCHOR] == earlier


@pytest.mark.parametrize(
    "checkpoint",
    [
        {"offset": -1},
        {"offset": "10"},
        {"offset": True},
        {"anchor": ANCHOR.isoformat()},
        {"offset": 5, "anchor": "yesterday"},
    ],
)
async def test_invalid_checkpoint_rejected(checkpoint: JsonObject) -> None:
    with pytest.raises(ProviderPermanentError, match="invalid simulator checkpoint"):
        await collect_pages(
            SimulatorProvider(anchor=ANCHOR), make_account(), EVERYTHING, checkpoint
        )


async def test_fail_trigger_after_first_page() -> None:
    provider = SimulatorProvider(anchor=ANCHOR)
    pages: list[Page] = []
    with pytest.raises(ProviderPermanentError, match="failed after the first page"):
        await drain(provider.fetch(make_account(username="sim-fail"), EVERYTHING, None), pages)
    assert len(pages) == 1
    assert len(pages[0].posts) == PAGE_SIZE


async def test_ratelimit_trigger_once() -> None:
    provider = SimulatorProvider(anchor=ANCHOR)
    account = make_account(network_unique_id="RateLimit-42")
    window = Window(start=None, end=None, limit=300)
    pages: list[Page] = []
    with pytest.raises(ProviderRateLimited) as caught:
        await drain(provider.fetch(account, window, None), pages)
    assert caught.value.retry_after == 30
    assert len(pages) == 1
    resumed = await collect_pages(provider, account, window, pages[0].checkpoint)
    assert sum(len(page.posts) for page in resumed) == 200


async def test_expired_trigger_before_any_page() -> None:
    provider = SimulatorProvider(anchor=ANCHOR)
    with pytest.raises(ProviderAuthError):
        await collect_pages(provider, make_account(username="token-expired"), EVERYTHING)


async def test_empty_trigger_has_no_posts() -> None:
    provider = SimulatorProvider(anchor=ANCHOR)
    assert await collect_pages(provider, make_account(username="empty-account"), EVERYTHING) == []


async def test_fail_trigger_with_empty_window() -> None:
    provider = SimulatorProvider(anchor=ANCHOR)
    window = Window(start=None, end=datetime(2001, 1, 1, tzinfo=UTC), limit=10)
    with pytest.raises(ProviderPermanentError):
        await collect_pages(provider, make_account(username="fail"), window)


PLATFORM_FORMATS = {
    "x": (r"\d{18,19}", r"https://x\.com/alice/status/\d+"),
    "bluesky": (
        r"at://did:plc:[a-z2-7]{24}/app\.bsky\.feed\.post/[2-7a-z]{13}",
        r"https://bsky\.app/profile/did:plc:[a-z2-7]{24}/post/[2-7a-z]{13}",
    ),
    "mastodon": (r"\d{17,19}", r"https://mastodon\.social/@alice/\d+"),
    "threads": (r"\d{17,18}", r"https://www\.threads\.net/@alice/post/[\w-]{11}"),
    "instagram": (r"\d{17}", r"https://www\.instagram\.com/p/[\w-]{11}/"),
    "facebook": (r"\d{15}_\d{15,16}", r"https://www\.facebook\.com/\d+/posts/\d+"),
    "linkedin": (
        r"urn:li:share:\d{19}",
        r"https://www\.linkedin\.com/feed/update/urn:li:share:\d+/",
    ),
    "tiktok": (r"\d{19}", r"https://www\.tiktok\.com/@alice/video/\d{19}"),
    "youtube": (r"[\w-]{11}", r"https://www\.youtube\.com/watch\?v=[\w-]{11}"),
    "pinterest": (r"\d{18}", r"https://www\.pinterest\.com/pin/\d{18}/"),
    "google_business": (
        r"accounts/\d+/locations/\d+/localPosts/\d+",
        r"https://local\.google\.com/place\?id=\d+&use=posts&lpsid=\d+",
    ),
    "reddit": (r"t3_[0-9a-z]{7}", r"https://www\.reddit\.com/user/alice/comments/[0-9a-z]{7}/"),
}


@pytest.mark.parametrize("platform", sorted(PLATFORM_FORMATS))
async def test_platform_id_and_url_formats(platform: str) -> None:
    id_pattern, url_pattern = PLATFORM_FORMATS[platform]
    posts = await full_history(make_account(platform=platform))
    assert len({post.platform_post_id for post in posts}) == len(posts)
    for post in posts[:200]:
        assert re.fullmatch(id_pattern, post.platform_post_id), post.platform_post_id
        assert post.platform_post_url is not None
        assert re.fullmatch(url_pattern, post.platform_post_url), post.platform_post_url


@pytest.mark.parametrize(
    ("platform", "media_types"),
    [("youtube", {"video"}), ("tiktok", {"video"}), ("pinterest", {"image"})],
)
async def test_media_platforms_always_have_media(platform: str, media_types: set[str]) -> None:
    posts = await full_history(make_account(platform=platform))
    assert all(post.media for post in posts)
    assert {item.type for post in posts for item in post.media} == media_types


async def test_contents_are_varied() -> None:
    posts = await full_history(make_account())
    media_types = {item.type for post in posts for item in post.media}
    assert media_types == {"image", "video", "gif", "link"}
    assert any(not post.media for post in posts)
    assert any(any(ord(char) > 0xFFFF for char in post.content) for post in posts)
    assert any(any(0x80 <= ord(char) <= 0xFFFF for char in post.content) for post in posts)
    assert all(len(post.content) <= 280 for post in posts)
    assert all(post.metrics["likes"] >= 0 for post in posts)
    assert all(post.raw["id"] == post.platform_post_id for post in posts)


async def test_thousand_posts_are_fast() -> None:
    provider = SimulatorProvider(anchor=ANCHOR)
    account = make_account(network_unique_id="speed")
    window = Window(start=None, end=None, limit=1000)
    started = time.perf_counter()
    pages = await collect_pages(provider, account, window)
    resumed = await collect_pages(provider, account, window, {"offset": 900})
    elapsed = time.perf_counter() - started
    assert sum(len(page.posts) for page in pages) == 1000
    assert sum(len(page.posts) for page in resumed) == 100
    # Measured at about 40 ms for both on a laptop-class CPU; the bound leaves room for CI.
    assert elapsed < 1.0


@pytest.mark.parametrize("offset", [1, 3, 40, 150])
async def test_resume_with_window_cut_inside_days(offset: int) -> None:
    account = make_account()
    posts = await full_history(account)
    # Pick a busy day so the cut leaves posts of that day on both sides.
    busy = next(
        index
        for index in range(100, len(posts) - 3)
        if posts[index].published_at.date() == posts[index + 3].published_at.date()
    )
    end = posts[busy + 1].published_at
    start = posts[busy + 400].published_at + timedelta(seconds=1)
    window = Window(start=start, end=end, limit=1_000_000)
    expected = [post for post in posts if start <= post.published_at <= end]
    provider = SimulatorProvider(anchor=ANCHOR)
    resumed = flatten(
        await collect_pages(
            provider, account, window, {"offset": offset, "anchor": ANCHOR.isoformat()}
        )
    )
    assert resumed == expected[offset:]


async def test_anchor_inside_a_day() -> None:
    account = make_account()
    posts = await full_history(account)
    anchor = posts[20].published_at + timedelta(seconds=1)
    got = await full_history(account, anchor)
    assert got == posts[20:]
    assert got[0].published_at < anchor
