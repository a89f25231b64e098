"""The Bluesky adapter: an account's own posts from its PDS over the AT Protocol.

Posts are read with `com.atproto.repo.listRecords` on collection `app.bsky.feed.post`,
the reliable full-history path: `app.bsky.feed.getAuthorFeed` can end its cursor early.
listRecords needs no token, but the adapter first checks the stored session with
`com.atproto.server.getSession`, refreshing or re-creating it when it has expired, so a
revoked or expired session fails the import instead of going unnoticed.

listRecords returns records by record key, newest key first. Keys are TIDs, built from
the PDS's clock when the record is written, while a post's `createdAt` is whatever the
client declared: imported and backdated posts have old `createdAt` values under new keys.
So the adapter scans the whole collection and keeps the `window.limit` newest posts of
the window in a bounded heap (memory grows with the limit, not with the history). It
yields an empty page after each listRecords call as a heartbeat, then the kept posts
newest first, 100 per page.

Checkpoints are `{"emitted": n, "before": {"published_at": ISO 8601, "rkey": key}}`: n
posts were yielded, the last of them with that sort key. A resumed run scans again and
keeps only posts that sort after `before`, so posts written since the first run do not
shift what it emits. A checkpoint with `emitted` alone skips the first n posts instead.
Heartbeat pages repeat the checkpoint the run started from.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import heapq
import itertools
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from yarl import URL

from postfuze_imports.errors import (
    ProviderAuthError,
    ProviderPermanentError,
)
from postfuze_imports.outbound import validate_url
from postfuze_imports.providers.base import (
    AccountContext,
    JsonObject,
    Media,
    NormalizedPost,
    Page,
    Window,
)
from postfuze_imports.providers.http import (
    HttpResponse,
    ProviderHttpClient,
    RetryPolicy,
    Sleep,
    raise_for_response,
)

logger = logging.getLogger(__name__)

POST_COLLECTION = "app.bsky.feed.post"
# com.atproto.repo.listRecords accepts limit 1..100 (lexicon).
LIST_LIMIT = 100
PAGE_SIZE = 100
# Scope of access tokens that a main account password produces; app passwords produce
# com.atproto.appPass or com.atproto.appPassPrivileged (@atproto/pds auth-scope.ts).
FULL_ACCESS_SCOPE = "com.atproto.access"
# Error names of a rejected token: 400 ExpiredToken and 400 InvalidToken from the
# reference PDS's auth verifier, 401 when the header is missing or not accepted.
_TOKEN_ERRORS = frozenset({"ExpiredToken", "InvalidToken"})

# TIDs: 13 characters of base32-sortable; the first character keeps the top bit zero.
_TID_PATTERN = re.compile(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}")
_BASE32_SORTABLE = "234567abcdefghijklmnopqrstuvwxyz"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class BlueskyProvider:
    """A `Provider` for Bluesky accounts, reading from each account's PDS."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        default_pds: str,
        allow_private: bool,
        timeout: float,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._session = session
        self._default_pds = default_pds
        self._allow_private = allow_private
        self._timeout = timeout
        self._retry = retry
        self._sleep = sleep

    async def fetch(
        self, account: AccountContext, window: Window, checkpoint: JsonObject | None
    ) -> AsyncIterator[Page]:
        resume = _ResumePoint.parse(checkpoint)
        remaining = window.limit - resume.emitted
        if remaining <= 0:
            return
        base_url = self._base_url(account.api_base_url)
        client = self._client(account.account_id)
        did = await _verified_did(client, base_url, account)

        # A sort key to resume after excludes the posts already emitted, so only the rest
        # of the limit is kept. A bare count needs the first `emitted` posts found again.
        capacity = remaining if resume.before is not None else window.limit
        newest = _NewestPosts(capacity)
        heartbeat = resume.to_checkpoint()
        scan = _ScanStats()
        cursor: str | None = None

        while True:
            params: dict[str, str | int] = {
                "repo": did,
                "collection": POST_COLLECTION,
                "limit": LIST_LIMIT,
            }
            if cursor is not None:
                params["cursor"] = cursor
            body = await client.get_json(
                _xrpc(base_url, "com.atproto.repo.listRecords"), params=params
            )
            records = body.get("records")
            if not isinstance(records, list):
                raise ProviderPermanentError(
                    f"com.atproto.repo.listRecords on {base_url} returned no records list"
                )
            scan.pages += 1
            for record in records:
                scan.records += 1
                entry = parse_record(record, base_url, did)
                if entry is None:
                    scan.skipped += 1
                    continue
                if not window.contains(entry.post.published_at):
                    continue
                if resume.before is not None and entry.sort_key >= resume.before:
                    continue
                scan.in_window += 1
                newest.offer(entry)
            yield Page(posts=(), checkpoint=heartbeat)

            # The reference PDS returns a cursor with every non-empty page, so its last
            # page is empty. Other PDS implementations omit the cursor on the last page.
            next_cursor = body.get("cursor")
            if not records or not isinstance(next_cursor, str) or not next_cursor:
                break
            if next_cursor == cursor:
                raise ProviderPermanentError(
                    f"com.atproto.repo.listRecords on {base_url} returned cursor "
                    f"{next_cursor!r} twice; paging cannot continue"
                )
            cursor = next_cursor

        logger.info(
            "scanned %d Bluesky records in %d pages for account %s: %d in the window, "
            "%d skipped without a usable createdAt",
            scan.records,
            scan.pages,
            account.account_id,
            scan.in_window,
            scan.skipped,
            extra={"provider": "bluesky", "account_id": account.account_id},
        )

        chosen = newest.newest_first()
        if resume.before is None:
            chosen = chosen[resume.emitted :]
        chosen = chosen[:remaining]
        emitted = resume.emitted
        for start in range(0, len(chosen), PAGE_SIZE):
            page = chosen[start : start + PAGE_SIZE]
            emitted += len(page)
            yield Page(
                posts=[entry.post for entry in page],
                checkpoint=_ResumePoint(emitted=emitted, before=page[-1].sort_key).to_checkpoint(),
            )

    async def create_session(
        self, api_base_url: str | None, identifier: str, app_password: str
    ) -> JsonObject:
        """Log in with an app password and return the credentials to store.

        See the module-level `create_session`.
        """
        base_url = self._base_url(api_base_url)
        return await _create_session(
            self._client(None), base_url, identifier, app_password, previous={}
        )

    def _base_url(self, api_base_url: str | None) -> str:
        base_url = (api_base_url or self._default_pds).rstrip("/")
        validate_url(base_url, allow_private=self._allow_private)
        return base_url

    def _client(self, account_id: str | None) -> ProviderHttpClient:
        context = {"provider": "bluesky"}
        if account_id is not None:
            context["account_id"] = account_id
        return ProviderHttpClient(
            self._session,
            timeout=self._timeout,
            log_context=context,
            retry=self._retry,
            sleep=self._sleep,
        )


async def create_session(
    session: aiohttp.ClientSession,
    api_base_url: str,
    identifier: str,
    app_password: str,
    *,
    request_timeout: float = 30.0,
) -> JsonObject:
    """Log in to a PDS with `com.atproto.server.createSession` and return credentials.

    `session` must come from `postfuze_imports.outbound.create_client_session`, and
    `api_base_url` must have passed `validate_url`. The result contains `access_token`,
    `refresh_token`, `did`, `handle`, `token_expires_at` (ISO 8601, from the access
    token's `exp` claim, or None) and `app_password`, so the adapter can log in again
    once the refresh token has expired.

    Raises `ProviderAuthError` for a wrong identifier or password, an account that
    needs an email sign-in code, a taken-down account, or a main account password
    (only app passwords are accepted, so the account password is never stored).
    """
    client = ProviderHttpClient(
        session, timeout=request_timeout, log_context={"provider": "bluesky"}
    )
    return await _create_session(
        client, api_base_url.rstrip("/"), identifier, app_password, previous={}
    )


# --- Sessions ------------------------------------------------------------------------


def _xrpc(base_url: str, nsid: str) -> str:
    return f"{base_url}/xrpc/{nsid}"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _is_token_rejection(response: HttpResponse) -> bool:
    if response.status == 401:
        return True
    return response.status == 400 and response.error_name() in _TOKEN_ERRORS


async def _verified_did(client: ProviderHttpClient, base_url: str, account: AccountContext) -> str:
    """Check the stored session and return the account's DID, renewing the session if needed."""
    credentials = account.credentials
    access_token = credentials.get("access_token")
    if isinstance(access_token, str) and access_token:
        response = await client.request(
            "GET", _xrpc(base_url, "com.atproto.server.getSession"), headers=_bearer(access_token)
        )
        if response.ok:
            return _session_did(response.json_object(), account)
        if not _is_token_rejection(response):
            raise_for_response(response)
        logger.info(
            "Bluesky access token of account %s was rejected (%s); renewing the session",
            account.account_id,
            response.error_name() or f"HTTP {response.status}",
            extra={"provider": "bluesky", "account_id": account.account_id},
        )

    renewed = await _renew_session(client, base_url, account)
    # Stored before use: the refresh token just used is now rotated out, and only the
    # new one works once the PDS's grace period for the old one ends.
    await account.save_credentials(renewed)
    return _session_did(renewed, account)


async def _renew_session(
    client: ProviderHttpClient, base_url: str, account: AccountContext
) -> JsonObject:
    """Refresh the session, or log in again with the stored app password."""
    credentials = account.credentials
    refresh_token = credentials.get("refresh_token")
    if isinstance(refresh_token, str) and refresh_token:
        # The refresh token goes in the Authorization header and the request has no
        # body (com.atproto.server.refreshSession lexicon).
        response = await client.request(
            "POST",
            _xrpc(base_url, "com.atproto.server.refreshSession"),
            headers=_bearer(refresh_token),
        )
        if response.ok:
            return _session_credentials(response.json_object(), credentials)
        if response.error_name() == "AccountTakedown":
            raise ProviderAuthError("the Bluesky account was taken down by its PDS")
        if not _is_token_rejection(response):
            raise_for_response(response)
        logger.info(
            "Bluesky refresh token of account %s was rejected (%s)",
            account.account_id,
            response.error_name() or f"HTTP {response.status}",
            extra={"provider": "bluesky", "account_id": account.account_id},
        )

    app_password = credentials.get("app_password")
    if not isinstance(app_password, str) or not app_password:
        raise ProviderAuthError(
            "the Bluesky session expired and no app password is stored to log in again; "
            "reconnect the account"
        )
    identifier = _identifier(credentials, account)
    logger.info(
        "logging in to Bluesky again with the stored app password of account %s",
        account.account_id,
        extra={"provider": "bluesky", "account_id": account.account_id},
    )
    return await _create_session(client, base_url, identifier, app_password, previous=credentials)


def _identifier(credentials: Mapping[str, Any], account: AccountContext) -> str:
    for value in (credentials.get("did"), account.network_unique_id, credentials.get("handle")):
        if isinstance(value, str) and value:
            return value
    return account.username


async def _create_session(
    client: ProviderHttpClient,
    base_url: str,
    identifier: str,
    app_password: str,
    *,
    previous: Mapping[str, Any],
) -> JsonObject:
    response = await client.request(
        "POST",
        _xrpc(base_url, "com.atproto.server.createSession"),
        json_body={"identifier": identifier, "password": app_password},
    )
    if not response.ok:
        error = response.error_name()
        if error == "AuthFactorTokenRequired":
            raise ProviderAuthError(
                "the Bluesky account asks for an email sign-in code; "
                "use an app password, which does not need one"
            )
        if error == "AccountTakedown":
            raise ProviderAuthError("the Bluesky account was taken down by its PDS")
        if response.status == 401:
            raise ProviderAuthError("invalid identifier or app password")
        raise_for_response(response)

    credentials = _session_credentials(response.json_object(), previous)
    claims = _jwt_claims(credentials["access_token"])
    if claims is not None and claims.get("scope") == FULL_ACCESS_SCOPE:
        await _delete_session(client, base_url, credentials["refresh_token"])
        raise ProviderAuthError(
            "that is the account password, not an app password; create an app password "
            "in Bluesky under Settings > Privacy and security > App passwords and use it"
        )
    credentials["app_password"] = app_password
    return credentials


async def _delete_session(client: ProviderHttpClient, base_url: str, refresh_token: str) -> None:
    """End a session we will not keep; a failure only leaves it to expire."""
    response = await client.request(
        "POST", _xrpc(base_url, "com.atproto.server.deleteSession"), headers=_bearer(refresh_token)
    )
    if not response.ok:
        logger.warning(
            "could not end an unused Bluesky session on %s: HTTP %d %s",
            base_url,
            response.status,
            response.error_name() or "",
            extra={"provider": "bluesky"},
        )


def _session_credentials(body: Mapping[str, Any], previous: Mapping[str, Any]) -> JsonObject:
    """Build stored credentials from a createSession or refreshSession output."""
    fields = {}
    for name in ("accessJwt", "refreshJwt", "did", "handle"):
        value = body.get(name)
        if not isinstance(value, str) or not value:
            raise ProviderPermanentError(f"the PDS returned a session without {name}")
        fields[name] = value
    return {
        **previous,
        "access_token": fields["accessJwt"],
        "refresh_token": fields["refreshJwt"],
        "did": fields["did"],
        "handle": fields["handle"],
        "token_expires_at": _token_expiry(fields["accessJwt"]),
    }


def _session_did(session: Mapping[str, Any], account: AccountContext) -> str:
    """Return the session's DID after checking it belongs to `account` and is active."""
    did = session.get("did")
    if not isinstance(did, str) or not did.startswith("did:"):
        raise ProviderPermanentError("the PDS returned a session without a valid DID")
    expected = account.network_unique_id
    if expected.startswith("did:") and did != expected:
        raise ProviderAuthError(
            f"the stored Bluesky session belongs to {did}, not to the connected account "
            f"{expected}; reconnect the account"
        )
    # getSession reports active false with a status for taken-down, suspended and
    # deactivated accounts (com.atproto.server.getSession lexicon).
    if session.get("active") is False:
        status = session.get("status")
        raise ProviderPermanentError(
            f"the Bluesky account {did} is {status if isinstance(status, str) else 'inactive'}; "
            "its posts cannot be imported until it is active again"
        )
    return did


def _jwt_claims(token: str) -> dict[str, Any] | None:
    """Decode a JWT's payload without checking its signature; None if it is malformed.

    Only the token's own expiry and scope are read, to plan refreshes and to recognize
    account passwords; the PDS verifies every token it receives.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def _token_expiry(token: str) -> str | None:
    claims = _jwt_claims(token)
    expiry = claims.get("exp") if claims is not None else None
    if not isinstance(expiry, int | float) or isinstance(expiry, bool):
        return None
    try:
        moment = datetime.fromtimestamp(expiry, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat().replace("+00:00", "Z")


# --- Records -------------------------------------------------------------------------

# Newest first means descending (published_at, rkey): equal createdAt values are ordered
# by record key, newest key first, so every scan emits the same order.
SortKey = tuple[datetime, str]


@dataclass(frozen=True)
class ScannedPost:
    """A post read from listRecords, with the key it is ordered by."""

    sort_key: SortKey
    post: NormalizedPost


class _NewestPosts:
    """The `capacity` entries with the largest sort keys seen so far (a min-heap)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        # The counter breaks ties between equal keys (a PDS listing a record twice), so
        # the heap never compares posts.
        self._heap: list[tuple[SortKey, int, ScannedPost]] = []
        self._counter = itertools.count()

    def offer(self, entry: ScannedPost) -> None:
        if self._capacity <= 0:
            return
        item = (entry.sort_key, next(self._counter), entry)
        if len(self._heap) < self._capacity:
            heapq.heappush(self._heap, item)
        elif item[0] > self._heap[0][0]:
            heapq.heapreplace(self._heap, item)

    def newest_first(self) -> list[ScannedPost]:
        return [entry for _, _, entry in sorted(self._heap, reverse=True)]


@dataclass
class _ScanStats:
    pages: int = 0
    records: int = 0
    in_window: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class _ResumePoint:
    emitted: int
    before: SortKey | None

    @classmethod
    def parse(cls, checkpoint: JsonObject | None) -> _ResumePoint:
        if checkpoint is None:
            return cls(emitted=0, before=None)
        emitted = checkpoint.get("emitted")
        if not isinstance(emitted, int) or isinstance(emitted, bool) or emitted < 0:
            raise ProviderPermanentError(
                f"invalid Bluesky checkpoint {checkpoint!r}: emitted must be a whole number "
                "of at least 0"
            )
        before = checkpoint.get("before")
        if before is None:
            return cls(emitted=emitted, before=None)
        published_at = before.get("published_at") if isinstance(before, dict) else None
        rkey = before.get("rkey") if isinstance(before, dict) else None
        moment = parse_datetime(published_at) if isinstance(published_at, str) else None
        if moment is None or not isinstance(rkey, str):
            raise ProviderPermanentError(
                f"invalid Bluesky checkpoint {checkpoint!r}: before must hold published_at and rkey"
            )
        return cls(emitted=emitted, before=(moment, rkey))

    def to_checkpoint(self) -> JsonObject:
        checkpoint: JsonObject = {"emitted": self.emitted}
        if self.before is not None:
            checkpoint["before"] = {
                "published_at": self.before[0].isoformat(),
                "rkey": self.before[1],
            }
        return checkpoint


def parse_datetime(value: str) -> datetime | None:
    """Parse an RFC 3339 / ISO 8601 time into UTC; None when it is not one.

    Accepts fractional seconds of any length, `Z`, `z` or an offset, and lowercase `t`
    (RFC 3339 section 5.6). A time without an offset is taken as UTC: the atproto
    datetime format requires one, but records written before strict validation may
    lack it.
    """
    text = value.strip()
    if len(text) > 10 and text[10] in "tT ":
        text = f"{text[:10]}T{text[11:]}"
    if text[-1:] in ("z", "Z"):
        text = f"{text[:-1]}+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return None


def tid_timestamp(rkey: str) -> datetime | None:
    """Return the write time a TID record key encodes, or None for other keys.

    A TID is 64 bits in base32-sortable: a zero bit, 53 bits of microseconds since the
    Unix epoch, then a 10-bit clock identifier (atproto record key specification).
    """
    if not _TID_PATTERN.fullmatch(rkey):
        return None
    value = 0
    for character in rkey:
        value = value * 32 + _BASE32_SORTABLE.index(character)
    return _EPOCH + timedelta(microseconds=value >> 10)


def _published_at(value: Mapping[str, Any], rkey: str) -> datetime | None:
    """Return when a post was published, or None to skip it.

    Uses `createdAt`, but never later than the write time the record key encodes, the
    rule the Bluesky AppView applies to sort feeds (sortAt = min(createdAt, indexedAt)),
    so a post dated in the future cannot stay "most recent" forever. A post whose
    `createdAt` is missing or invalid falls back to that write time, and is skipped when
    its key is not a TID either, because it cannot be placed in a window.
    """
    created_at = value.get("createdAt")
    parsed = parse_datetime(created_at) if isinstance(created_at, str) else None
    written_at = tid_timestamp(rkey)
    if parsed is None:
        return written_at
    if written_at is not None and parsed > written_at:
        return written_at
    return parsed


def parse_record(record: object, base_url: str, did: str) -> ScannedPost | None:
    """Map one listRecords item to a post with its sort key; None to skip it."""
    if not isinstance(record, dict):
        return None
    uri = record.get("uri")
    value = record.get("value")
    if not isinstance(uri, str) or not uri.startswith("at://") or not isinstance(value, dict):
        return None
    rkey = uri.rsplit("/", 1)[-1]
    published_at = _published_at(value, rkey)
    if published_at is None:
        return None
    text = value.get("text")
    post = NormalizedPost(
        platform_post_id=uri,
        platform_post_url=f"https://bsky.app/profile/{did}/post/{rkey}",
        content=text if isinstance(text, str) else "",
        published_at=published_at,
        media=tuple(_media(value.get("embed"), base_url, did)),
        # listRecords returns records only; like, repost and reply counts live in the
        # AppView (app.bsky.feed.getPosts), which this adapter does not call.
        metrics={},
        raw=record,
    )
    return ScannedPost(sort_key=(published_at, rkey), post=post)


def _media(embed: object, base_url: str, did: str) -> list[Media]:
    """Map a post record's embed (app.bsky.embed.* lexicons) to media items."""
    if not isinstance(embed, dict):
        return []
    kind = embed.get("$type")
    if kind == "app.bsky.embed.recordWithMedia":
        return _media(embed.get("media"), base_url, did)
    if kind == "app.bsky.embed.images":
        images = embed.get("images")
        items = []
        for image in images if isinstance(images, list) else []:
            blob = image.get("image") if isinstance(image, dict) else None
            media_type = "gif" if _blob_mime_type(blob) == "image/gif" else "image"
            items.append(Media(type=media_type, url=_blob_url(blob, base_url, did)))
        return items
    if kind == "app.bsky.embed.video":
        return [Media(type="video", url=_blob_url(embed.get("video"), base_url, did))]
    if kind == "app.bsky.embed.external":
        external = embed.get("external")
        if not isinstance(external, dict):
            return []
        uri = external.get("uri")
        return [
            Media(
                type="link",
                url=uri if isinstance(uri, str) else None,
                thumbnail_url=_blob_url(external.get("thumb"), base_url, did),
            )
        ]
    # Quotes (app.bsky.embed.record) carry no media; their reference stays in `raw`.
    return []


def _blob_cid(blob: object) -> str | None:
    """Return a blob's CID from the typed form {"ref": {"$link": cid}} or legacy {"cid"}."""
    if not isinstance(blob, dict):
        return None
    ref = blob.get("ref")
    if isinstance(ref, dict) and isinstance(ref.get("$link"), str):
        cid: str = ref["$link"]
        return cid
    legacy = blob.get("cid")
    return legacy if isinstance(legacy, str) else None


def _blob_mime_type(blob: object) -> str | None:
    mime_type = blob.get("mimeType") if isinstance(blob, dict) else None
    return mime_type if isinstance(mime_type, str) else None


def _blob_url(blob: object, base_url: str, did: str) -> str | None:
    cid = _blob_cid(blob)
    if cid is None:
        return None
    url = URL(_xrpc(base_url, "com.atproto.sync.getBlob")).with_query(did=did, cid=cid)
    return str(url)
