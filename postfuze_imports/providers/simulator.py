"""The test-mode network: a deterministic, made-up post history for any platform.

Test-mode accounts import from here instead of a real network, with no network access.
Each account's history follows from a seed of (platform, network_unique_id), so the
same account always yields the same posts: the same ids, times, texts, media and
metrics.

The history is a stationary process over calendar days, so extending it never changes
posts that already exist:

- The account starts posting 3 to 8 years before 2026-01-01 and has about 1,500 to
  4,000 posts by then; later anchors see more posts.
- Time is cut into 21-day seasons. Each season is silent, quiet, normal or a burst,
  which gives the history gaps, bursts and quiet periods.
- A day's post count is Poisson-distributed with the season's rate. The times, texts
  and ids of a day's posts come from a random generator seeded by the account and day.

`fetch` walks back day by day from the window's end and builds only the days it passes
through, so memory stays bounded by one page and one day, not by the history.

The history ends at an anchor: only posts before it exist. It is the constructor's
`anchor` argument, or, by default, the current day's midnight (UTC) when an import
starts. A resumed import reuses the anchor its checkpoint stores, so new days do not
shift the offset it resumes from.

Checkpoints are `{"offset": n, "anchor": "<ISO 8601>"}`, where n counts the posts of the
window yielded so far. Pages hold 100 posts.

Integrators can trigger failures with words in the account's username or
network_unique_id (case-insensitive):

- `expired`: `ProviderAuthError` before the first page, as when a token was revoked.
- `ratelimit`: `ProviderRateLimited` (30 s) after the first page of an import that
  starts from no checkpoint. The resumed import then runs to the end.
- `fail`: `ProviderPermanentError` after the first page of every run.
- `empty`: the account has no posts.
- `slow`: every page after the first takes one second, as over a slow network, which
  leaves time to watch progress, cancel a running import or stop its worker.

`fail` raises at once when the window contains no posts; `ratelimit` then does not wait.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import string
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from postfuze_imports.errors import (
    ProviderAuthError,
    ProviderPermanentError,
    ProviderRateLimited,
)
from postfuze_imports.providers.base import (
    AccountContext,
    JsonObject,
    Media,
    NormalizedPost,
    Page,
    Window,
)

PAGE_SIZE = 100
# Histories are sized against this day; later anchors see more posts.
REFERENCE_DAY = date(2026, 1, 1).toordinal()
SEASON_DAYS = 21
RATE_LIMIT_SECONDS = 30.0
# Seconds each page after the first takes for accounts with the `slow` trigger.
SLOW_PAGE_SECONDS = 1.0
MEDIA_HOST = "https://media.simulator.postfuze.example"

_MASK64 = (1 << 64) - 1
# Stream constants keep the values drawn for seasons, day counts and day contents apart.
_STREAM_SEASON = 0x5EA5_0000_0000_0001
_STREAM_COUNT = 0xC0C0_0000_0000_0002
_STREAM_DAY = 0xDA7A_0000_0000_0003

# (probability, rate multiplier) of each season kind. The multipliers are divided by
# their mean, so the history as a whole keeps the account's average rate.
_SEASONS = ((0.08, 0.0), (0.20, 0.25), (0.50, 1.0), (0.22, 3.0))
_SEASON_MEAN = sum(probability * multiplier for probability, multiplier in _SEASONS)

# Maximum text length each platform accepts, in characters.
_TEXT_LIMITS = {"x": 280, "bluesky": 300, "threads": 500, "mastodon": 500, "pinterest": 500}
_VIDEO_PLATFORMS = frozenset({"tiktok", "youtube"})


def _mix(value: int) -> int:
    """Scramble a 64-bit integer (the splitmix64 finalizer): a fast stateless hash."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def _unit(value: int) -> float:
    """Map a 64-bit integer to [0, 1)."""
    return (value >> 11) / float(1 << 53)


def _poisson(rate: float, fraction: float) -> int:
    """Return the Poisson(rate) count whose CDF first reaches `fraction` (inverse transform)."""
    if rate <= 0:
        return 0
    count = 0
    probability = math.exp(-rate)
    cumulative = probability
    while fraction > cumulative and count < 60:
        count += 1
        probability *= rate / count
        cumulative += probability
    return count


def account_seed(platform: str, network_unique_id: str) -> int:
    """Return the 64-bit seed of an account's history."""
    digest = hashlib.sha256(f"{platform}\x00{network_unique_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass(frozen=True, kw_only=True)
class _Profile:
    """The per-account constants every day of the history derives from."""

    seed: int
    platform: str
    username: str
    network_unique_id: str
    instance_host: str
    first_day: int  # date ordinal of the first day with posts
    daily_rate: float  # average posts per day over the history
    popularity: float  # scale of the metrics

    @classmethod
    def build(cls, account: AccountContext) -> _Profile:
        seed = account_seed(account.platform, account.network_unique_id)
        rng = random.Random(seed)  # noqa: S311 - seeded so every run builds the same history
        span_days = rng.randint(3 * 365, 8 * 365)
        target_posts = rng.randint(1500, 4000)
        base_url = account.api_base_url or "https://mastodon.social"
        return cls(
            seed=seed,
            platform=account.platform,
            username=account.username,
            network_unique_id=account.network_unique_id,
            instance_host=base_url.split("://", 1)[-1].split("/", 1)[0],
            first_day=REFERENCE_DAY - span_days,
            daily_rate=target_posts / span_days,
            popularity=rng.lognormvariate(3.0, 1.2),
        )

    def season_multiplier(self, day: int) -> float:
        season = (day - self.first_day) // SEASON_DAYS
        fraction = _unit(_mix(self.seed ^ _mix(_STREAM_SEASON + season)))
        for probability, multiplier in _SEASONS:
            if fraction < probability:
                return multiplier / _SEASON_MEAN
            fraction -= probability
        return _SEASONS[-1][1] / _SEASON_MEAN

    def count_on(self, day: int) -> int:
        """Return how many posts the account published on `day` (a date ordinal)."""
        if day < self.first_day:
            return 0
        rate = self.daily_rate * self.season_multiplier(day)
        return _poisson(rate, _unit(_mix(self.seed ^ _mix(_STREAM_COUNT + day))))

    def posts_on(self, day: int) -> list[NormalizedPost]:
        """Build the posts of `day`, newest first, at distinct seconds."""
        count = self.count_on(day)
        if count == 0:
            return []
        rng = random.Random(_mix(self.seed ^ _mix(_STREAM_DAY + day)))  # noqa: S311 - as above
        midnight = datetime.combine(date.fromordinal(day), time(), tzinfo=UTC)
        seconds = sorted(rng.sample(range(86_400), count), reverse=True)
        return [
            _build_post(self, rng, midnight + timedelta(seconds=second), day, index)
            for index, second in enumerate(seconds)
        ]


class SimulatorProvider:
    """A `Provider` that serves a deterministic history for any platform."""

    def __init__(self, *, anchor: datetime | None = None) -> None:
        if anchor is not None and anchor.tzinfo is None:
            raise ValueError("anchor must be timezone-aware")
        self._anchor = anchor

    async def fetch(
        self, account: AccountContext, window: Window, checkpoint: JsonObject | None
    ) -> AsyncIterator[Page]:
        offset, anchor = self._resume_point(checkpoint)
        triggers = f"{account.username} {account.network_unique_id}".lower()
        if "expired" in triggers:
            raise ProviderAuthError("the simulated network rejected the token as expired")
        profile = _Profile.build(account)
        posts: Iterator[NormalizedPost] = iter(())
        if "empty" not in triggers:
            posts = _posts_in_window(profile, window, anchor, skip=offset)
        budget = max(0, window.limit - offset)
        anchor_text = anchor.isoformat()
        first_page = True

        while budget > 0:
            if "slow" in triggers and not first_page:
                await asyncio.sleep(SLOW_PAGE_SECONDS)
            page = _take(posts, min(PAGE_SIZE, budget))
            if not page:
                break
            budget -= len(page)
            offset += len(page)
            yield Page(posts=page, checkpoint={"offset": offset, "anchor": anchor_text})
            if first_page:
                first_page = False
                _raise_triggered_failure(triggers, started_fresh=checkpoint is None)
        if first_page:
            # An empty window never raises a rate limit. With no page there is no checkpoint,
            # so every run would start fresh and wait again.
            _raise_triggered_failure(triggers, started_fresh=False)

    def _resume_point(self, checkpoint: JsonObject | None) -> tuple[int, datetime]:
        default_anchor = self._anchor or datetime.now(UTC).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        if checkpoint is None:
            return 0, default_anchor
        offset = checkpoint.get("offset")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ProviderPermanentError(
                f"invalid simulator checkpoint {checkpoint!r}: offset must be a whole "
                "number of at least 0"
            )
        anchor_text = checkpoint.get("anchor")
        if anchor_text is None:
            return offset, default_anchor
        try:
            anchor = datetime.fromisoformat(str(anchor_text))
        except ValueError:
            raise ProviderPermanentError(
                f"invalid simulator checkpoint {checkpoint!r}: anchor is not an ISO 8601 time"
            ) from None
        if anchor.tzinfo is None:
            anchor = anchor.replace(tzinfo=UTC)
        return offset, anchor


def _raise_triggered_failure(triggers: str, *, started_fresh: bool) -> None:
    if "ratelimit" in triggers and started_fresh:
        raise ProviderRateLimited(
            "the simulated network asked to wait before the next page",
            retry_after=RATE_LIMIT_SECONDS,
        )
    if "fail" in triggers:
        raise ProviderPermanentError("the simulated network failed after the first page")


def _take(posts: Iterator[NormalizedPost], count: int) -> list[NormalizedPost]:
    page: list[NormalizedPost] = []
    for post in posts:
        page.append(post)
        if len(page) == count:
            break
    return page


def _posts_in_window(
    profile: _Profile, window: Window, anchor: datetime, *, skip: int
) -> Iterator[NormalizedPost]:
    """Yield the window's posts before `anchor`, newest first, after the first `skip`."""
    newest = anchor - timedelta(microseconds=1)
    if window.end is not None:
        newest = min(newest, window.end)
    last_day = newest.astimezone(UTC).date().toordinal()
    first_day = profile.first_day
    start_day = first_day
    if window.start is not None:
        start_day = window.start.astimezone(UTC).date().toordinal()
        first_day = max(first_day, start_day)

    for day in range(last_day, first_day - 1, -1):
        count = profile.count_on(day)
        if count == 0:
            continue
        # Days the window or anchor cut need their posts' times; whole days can be
        # skipped by count alone, which keeps resuming cheap.
        if day not in (last_day, start_day) and skip >= count:
            skip -= count
            continue
        for post in profile.posts_on(day):
            if post.published_at >= anchor or not window.contains(post.published_at):
                continue
            if skip:
                skip -= 1
                continue
            yield post


# --- Post contents ------------------------------------------------------------------

_OPENERS = (
    "Just shipped",
    "Thinking about",
    "Finally tried",
    "Can't stop talking about",
    "Quick update on",
    "Hot take on",
    "Loving",
    "Still figuring out",
    "Big news about",
    "Behind the scenes of",
    "Une petite note sur",
    "Ein kurzer Blick auf",
    "Pequeña reflexión sobre",
)
_SUBJECTS = (
    "our new product launch",
    "the morning coffee routine",
    "remote work",
    "the team offsite",
    "weekend hiking plans",
    "this year's roadmap",
    "the café around the corner",
    "a naïve idea that worked",
    "the spring collection",
    "customer feedback",
    "the Zürich meetup",
    "東京での展示会",
    "нашей новой функции",
    "our open-source library",
    "the quarterly numbers",
    "a rainy Sunday",
)
_REMARKS = (
    "More soon.",
    "What do you think?",
    "Thanks to everyone who helped!",
    "Details in the thread.",
    "Can't wait to share the rest.",
    "Grüße aus München!",
    "¡Qué bueno!",
    "Merci à tous.",
    "Lesson learned.",
    "Link below.",
    "Stay tuned.",
    "ありがとう!",
)
_EMOJI = ("🚀", "☕", "🎉", "✨", "🙌", "📈", "🌧️", "🏔️", "❤️", "🤔", "👀", "🇫🇷")
_HASHTAGS = ("#launch", "#buildinpublic", "#coffee", "#remotework", "#design", "#café", "#日本")
_LINK_SLUGS = ("how-we-work", "launch-notes", "spring-recipes", "field-guide", "year-in-review")


def _build_post(
    profile: _Profile, rng: random.Random, published_at: datetime, day: int, index: int
) -> NormalizedPost:
    uid = _mix(profile.seed ^ _mix((day << 16) | index))
    post_id, url = _identity(profile, published_at, uid, (day - profile.first_day) * 64 + index)
    media = _media(profile, rng, uid)
    text = _text(rng, profile.platform, has_media=bool(media))
    metrics = _metrics(profile, rng, has_video=any(item.type == "video" for item in media))
    raw: dict[str, Any] = {
        "id": post_id,
        "created_at": published_at.isoformat().replace("+00:00", "Z"),
        "text": text,
        "simulated": True,
    }
    return NormalizedPost(
        platform_post_id=post_id,
        platform_post_url=url,
        content=text,
        published_at=published_at,
        media=media,
        metrics=metrics,
        raw=raw,
    )


def _text(rng: random.Random, platform: str, *, has_media: bool) -> str:
    if has_media and rng.random() < 0.02:
        return ""
    parts = [f"{rng.choice(_OPENERS)} {rng.choice(_SUBJECTS)}."]
    for _ in range(rng.randint(0, 2)):
        parts.append(rng.choice(_REMARKS))
    if rng.random() < 0.45:
        parts.append(rng.choice(_EMOJI))
    if rng.random() < 0.35:
        parts.append(" ".join(rng.sample(_HASHTAGS, rng.randint(1, 3))))
    text = " ".join(parts)
    limit = _TEXT_LIMITS.get(platform, 2000)
    return text[:limit]


def _media(profile: _Profile, rng: random.Random, uid: int) -> tuple[Media, ...]:
    platform = profile.platform
    base = f"{MEDIA_HOST}/{platform}/{uid:016x}"
    roll = rng.random()
    if platform in _VIDEO_PLATFORMS:
        kind = "video"
    elif platform == "pinterest":
        kind = "image"
    elif platform == "instagram":
        kind = "image" if roll < 0.7 else "video"
    elif roll < 0.62:
        return ()
    elif roll < 0.84:
        kind = "image"
    elif roll < 0.91:
        kind = "video"
    elif roll < 0.94:
        kind = "gif"
    else:
        kind = "link"

    if kind == "image":
        return tuple(
            Media(type="image", url=f"{base}/{number}.jpg")
            for number in range(1, rng.randint(1, 4) + 1)
        )
    if kind == "video":
        return (Media(type="video", url=f"{base}/video.mp4", thumbnail_url=f"{base}/poster.jpg"),)
    if kind == "gif":
        return (Media(type="gif", url=f"{base}/loop.gif"),)
    slug = rng.choice(_LINK_SLUGS)
    return (
        Media(
            type="link",
            url=f"https://www.example.com/articles/{slug}",
            thumbnail_url=f"{base}/card.jpg",
        ),
    )


def _metrics(profile: _Profile, rng: random.Random, *, has_video: bool) -> dict[str, int]:
    likes = int(profile.popularity * rng.lognormvariate(0.0, 1.0))
    metrics = {
        "likes": likes,
        "comments": int(likes * rng.uniform(0.02, 0.2)),
        "shares": int(likes * rng.uniform(0.01, 0.3)),
    }
    if has_video or profile.platform in _VIDEO_PLATFORMS:
        metrics["views"] = int(likes * rng.uniform(8, 60)) + rng.randint(0, 50)
    return metrics


# --- Platform-style ids and URLs ----------------------------------------------------

_BASE32_SORTABLE = "234567abcdefghijklmnopqrstuvwxyz"
_BASE64_URL = string.ascii_letters + string.digits + "-_"
_BASE36 = string.digits + string.ascii_lowercase
# X (Twitter) snowflake ids count milliseconds from this Unix time in milliseconds.
_X_EPOCH_MS = 1_288_834_974_657


def _encode(value: int, alphabet: str, length: int) -> str:
    digits = []
    for _ in range(length):
        value, remainder = divmod(value, len(alphabet))
        digits.append(alphabet[remainder])
    return "".join(reversed(digits))


def _did(profile: _Profile) -> str:
    if profile.network_unique_id.startswith("did:"):
        return profile.network_unique_id
    return "did:plc:" + _encode(profile.seed, _BASE32_SORTABLE, 24)


def _identity(profile: _Profile, published_at: datetime, uid: int, serial: int) -> tuple[str, str]:
    """Return (platform_post_id, platform_post_url) in the platform's own style.

    `uid` is a 64-bit hash of the post. `serial` counts up through the account's history
    and is unique within it, for id formats too short to hold a hash without collisions.
    """
    build = _IDENTITIES.get(profile.platform, _generic_identity)
    return build(profile, published_at, uid, serial)


def _x_identity(
    profile: _Profile, published_at: datetime, uid: int, serial: int
) -> tuple[str, str]:
    millis = int(published_at.timestamp() * 1000)
    post_id = str(((millis - _X_EPOCH_MS) << 22) | (uid & 0x3FFFFF))
    return post_id, f"https://x.com/{profile.username}/status/{post_id}"


def _bluesky_identity(
    profile: _Profile, published_at: datetime, uid: int, serial: int
) -> tuple[str, str]:
    # A TID: 53 bits of microseconds since the epoch, then a 10-bit clock id.
    micros = int(published_at.timestamp()) * 1_000_000 + uid % 1_000_000
    rkey = _encode((micros << 10) | (uid >> 54), _BASE32_SORTABLE, 13)
    did = _did(profile)
    return f"at://{did}/app.bsky.feed.post/{rkey}", f"https://bsky.app/profile/{did}/post/{rkey}"


def _mastodon_identity(
    profile: _Profile, published_at: datetime, uid: int, serial: int
) -> tuple[str, str]:
    # Mastodon ids are milliseconds shifted left by 16 bits plus a sequence.
    post_id = str((int(published_at.timestamp() * 1000) << 16) | (uid & 0xFFFF))
    return post_id, f"https://{profile.instance_host}/@{profile.username}/{post_id}"


def _threads_identity(
    profile: _Profile, published_at: datetime, uid: int, serial: int
) -> tuple[str, str]:
    post_id = str(17_000_000_000_000_000 + uid % 10**17)
    code = _encode(uid, _BASE64_URL, 11)
    return post_id, f"https://www.threads.net/@{profile.username}/post/{code}"


def _instagram_identity(
    profile: _Profile, published_at: datetime, uid: int, serial: int
) -> tuple[str, str]:
    post_id = str(17_840_000_000_000_000 + uid % 10**15)
    return post_id, f"https://www.instagram.com/p/{_encode(uid, _BASE64_URL, 11)}/"


def _facebook_identity(
    profile: _Profile, published_at: datetime, uid: int, serial: int
) -> tuple[str, str]:
    page_id = 100_000_000_000_000 + profile.seed % 10**14
    story_id = 100_000_000_000_000 + uid % 10**15
    return f"{page_id}_{story_id}", f"https://www.facebook.com/{page_id}/posts/{story_id}"


def _linkedin_identity(
    profile: _Profile, published_at: datetime, uid: int, serial: int
) -> tuple[str, str]:
    urn = f"urn:li:share:{7_000_000_000_000_000_000 + uid % 10**18}"
    return urn, f"https://www.linkedin.com/feed/update/{urn}/"


def _tiktok_identity(
    profile: _Profile, published_at: datetime, uid: int, serial: int
) -> tuple[str, str]:
    post_id = str(7_000_000_000_000_000_000 + uid % 10**18)
    return post_id, f"https://www.tiktok.com/@{profile.username}/video/{post_id}"


def _youtube_identity(
    profile: _Profile, published_at: datetime, uid: int, serial: int
) -> tuple[str, str]:
    video_id = _encode(uid, _BASE64_URL, 11)
    return video_id, f"https://www.youtube.com/watch?v={video_id}"


def _pinterest_identity(
    profile: _Profile, published_at: datetime, uid: int, serial: int
) -> tuple[str, str]:
    pin_id = str(100_000_000_000_000_000 + uid % 10**17)
    return pin_id, f"https://www.pinterest.com/pin/{pin_id}/"


def _google_business_identity(
    profile: _Profile, published_at: datetime, uid: int, serial: int
) -> tuple[str, str]:
    account = 100_000_000_000_000_000 + profile.seed % 10**17
    location = 1_000_000_000_000_000_000 + (profile.seed >> 8) % 10**18
    post = 1_000_000_000_000_000_000 + uid % 10**18
    name = f"accounts/{account}/locations/{location}/localPosts/{post}"
    return name, f"https://local.google.com/place?id={location}&use=posts&lpsid={post}"


def _reddit_identity(
    profile: _Profile, published_at: datetime, uid: int, serial: int
) -> tuple[str, str]:
    # Reddit ids are sequential base-36 numbers, 7 digits at the time of writing.
    base36 = _encode(36**6 * 10 + profile.seed % (36**6 * 20) + serial, _BASE36, 7)
    return (
        f"t3_{base36}",
        f"https://www.reddit.com/user/{profile.username}/comments/{base36}/",
    )


def _generic_identity(
    profile: _Profile, published_at: datetime, uid: int, serial: int
) -> tuple[str, str]:
    post_id = f"sim_{uid:016x}"
    return post_id, f"https://{profile.platform}.simulator.postfuze.example/posts/{post_id}"


_IDENTITIES: dict[str, Callable[[_Profile, datetime, int, int], tuple[str, str]]] = {
    "x": _x_identity,
    "bluesky": _bluesky_identity,
    "mastodon": _mastodon_identity,
    "threads": _threads_identity,
    "instagram": _instagram_identity,
    "facebook": _facebook_identity,
    "linkedin": _linkedin_identity,
    "tiktok": _tiktok_identity,
    "youtube": _youtube_identity,
    "pinterest": _pinterest_identity,
    "google_business": _google_business_identity,
    "reddit": _reddit_identity,
}
