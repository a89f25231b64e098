"""The interface every network adapter implements.

An adapter does not use the database, the API or the queue. Given an account's
credentials, a window and a checkpoint, it yields pages of normalized posts, each with
the checkpoint to resume after it. The job runner stores each page, its count and its
checkpoint in one transaction, enforces the job's limit and decides what a raised
`ProviderError` means for the job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

JsonObject = dict[str, Any]

# Platform identifiers of the API, in the order the API documents them.
PLATFORMS = (
    "x",
    "linkedin",
    "instagram",
    "tiktok",
    "youtube",
    "facebook",
    "threads",
    "bluesky",
    "pinterest",
    "google_business",
    "reddit",
    "mastodon",
)


@dataclass(frozen=True, kw_only=True)
class Media:
    """One attachment of a post: `type` is image, video, gif, link or other."""

    type: str
    url: str | None
    thumbnail_url: str | None = None


@dataclass(frozen=True, kw_only=True)
class NormalizedPost:
    """A post in the shape every network is mapped to before it is stored."""

    platform_post_id: str
    platform_post_url: str | None
    content: str
    published_at: datetime  # timezone-aware UTC
    media: Sequence[Media] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Window:
    """The posts a job requests: published in [start, end], newest first, at most `limit`.

    `start` and `end` are inclusive, timezone-aware and None when open. `limit` counts
    posts the job fetches, whether or not they were already stored.
    """

    start: datetime | None
    end: datetime | None
    limit: int

    def contains(self, published_at: datetime) -> bool:
        if self.start is not None and published_at < self.start:
            return False
        return not (self.end is not None and published_at > self.end)


@dataclass(frozen=True, kw_only=True)
class Page:
    """Posts from one step of paging, newest first, and the checkpoint to resume after them.

    A page may be empty: adapters that scan before they emit yield empty pages so the
    runner can renew its lease and notice a cancel.
    """

    posts: Sequence[NormalizedPost]
    checkpoint: JsonObject | None


# Persists credentials an adapter obtained by refreshing or renewing a session, so the
# next job starts from them. The adapter awaits it before it uses the new tokens.
CredentialsSaver = Callable[[JsonObject], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class AccountContext:
    """The account details an adapter receives for the account it imports from."""

    account_id: str
    platform: str
    username: str
    network_unique_id: str
    api_base_url: str | None
    # Decrypted: access_token, refresh_token, token_expires_at, and per-network extras.
    credentials: JsonObject
    save_credentials: CredentialsSaver


class Provider(Protocol):
    """A network adapter. One instance serves many jobs and keeps no per-job state."""

    def fetch(
        self, account: AccountContext, window: Window, checkpoint: JsonObject | None
    ) -> AsyncIterator[Page]:
        """Yield pages of the account's posts inside `window`, newest first.

        Resumes after `checkpoint` when given (the value of a page this adapter yielded
        before). Raises subclasses of `postfuze_imports.errors.ProviderError`.
        """
        ...
