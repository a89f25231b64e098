"""HTTP plumbing shared by the network adapters.

`ProviderHttpClient` wraps the worker's guarded `aiohttp.ClientSession` (see
`postfuze_imports.outbound`) for one job. It gives each request a timeout, retries
idempotent requests after timeouts, connection failures and 5xx responses with
exponential backoff and jitter, reads rate-limit headers, and turns every failure into
a `ProviderError` subclass the job runner understands:

- `ProviderRateLimited(retry_after)`: a 429 (or a 503 with a long `Retry-After`), or a
  quota the previous answer reported as used up. Waits up to
  `RetryPolicy.max_inline_wait` seconds are slept in place; longer ones are raised so
  the runner can release the worker.
- `ProviderTransientError`: a timeout, a connection failure or a 5xx after the last try.
- `ProviderAuthError`: a 401, from `raise_for_response`.
- `ProviderPermanentError`: other 4xx answers, bodies that are not JSON or too large.
- `OutboundBlocked`: the outbound guard stopped the request. It is never retried.

Log lines and error messages show URLs without their query string and never include
request headers, so tokens sent either way stay out of logs.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from postfuze_imports.errors import (
    OutboundBlocked,
    ProviderAuthError,
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderTransientError,
)
from postfuze_imports.outbound import BLOCKED_ADDRESS_MESSAGE, is_blocked_connection

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
JsonObject = dict[str, Any]
QueryParams = Mapping[str, str | int]

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Values of `ratelimit-reset` above this are Unix timestamps, which Bluesky's XRPC
# servers send. Smaller values are seconds from now, as the IETF RateLimit header draft
# defines them. 10**9 seconds after the epoch is September 2001.
_EPOCH_THRESHOLD = 1_000_000_000
_ERROR_TEXT_LIMIT = 300


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how long a client retries and waits, in seconds."""

    # Tries of one request, the first included.
    max_attempts: int = 4
    # Backoff before the second try; it doubles for each later try, up to `max_delay`.
    base_delay: float = 0.5
    max_delay: float = 8.0
    # Maximum rate-limit wait slept in place; a longer one raises ProviderRateLimited.
    max_inline_wait: float = 5.0
    # Wait assumed when a 429 carries no usable Retry-After or ratelimit-reset header.
    default_rate_limit_wait: float = 60.0
    # Maximum wait a server can request, so a bad header cannot park a job forever.
    max_rate_limit_wait: float = 86_400.0


@dataclass(frozen=True, kw_only=True)
class RateLimitInfo:
    """The rate-limit headers of one response; None where a header is missing or invalid."""

    limit: int | None = None
    remaining: int | None = None
    # Unix time in seconds when the quota refills.
    reset_at: float | None = None
    # Seconds from the response to the moment the server accepts a new request.
    retry_after: float | None = None

    def wait_seconds(self, now: float) -> float | None:
        """Return how long to wait before the next request, or None when unknown."""
        if self.retry_after is not None:
            return self.retry_after
        if self.reset_at is not None:
            return max(0.0, self.reset_at - now)
        return None


def parse_retry_after(value: str, *, now: float) -> float | None:
    """Parse a `Retry-After` value, delay-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now)


def parse_rate_limit(headers: Mapping[str, str], *, now: float) -> RateLimitInfo:
    """Read `Retry-After` and the `ratelimit-*` headers of a response."""
    retry_after_header = headers.get("Retry-After")
    retry_after = (
        parse_retry_after(retry_after_header, now=now) if retry_after_header is not None else None
    )
    reset_at: float | None = None
    reset = _parse_number(headers.get("ratelimit-reset"))
    if reset is not None:
        reset_at = reset if reset > _EPOCH_THRESHOLD else now + reset
    limit = _parse_number(headers.get("ratelimit-limit"))
    remaining = _parse_number(headers.get("ratelimit-remaining"))
    return RateLimitInfo(
        limit=None if limit is None else int(limit),
        remaining=None if remaining is None else int(remaining),
        reset_at=reset_at,
        retry_after=retry_after,
    )


def _parse_number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def display_url(url: str | URL) -> str:
    """Return `url` without userinfo, query and fragment, for logs and messages."""
    parsed = URL(url) if isinstance(url, str) else url
    if parsed.absolute:
        parsed = parsed.with_user(None)
    return str(parsed.with_query(None).with_fragment(None))


@dataclass(frozen=True, kw_only=True)
class HttpResponse:
    """A response read in full: status, headers, body and parsed rate-limit headers."""

    method: str
    url: str  # without query string, safe to log
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    rate_limit: RateLimitInfo

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """Parse the body as JSON or raise `ProviderPermanentError`."""
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            content_type = self.headers.get("Content-Type", "no content type")
            raise ProviderPermanentError(
                f"{self.method} {self.url} returned HTTP {self.status} with a body that is "
                f"not JSON ({content_type}); check that the API base URL points to the API"
            ) from None

    def json_object(self) -> JsonObject:
        """Parse the body as a JSON object or raise `ProviderPermanentError`."""
        value = self.json()
        if not isinstance(value, dict):
            raise ProviderPermanentError(
                f"{self.method} {self.url} returned JSON that is not an object"
            )
        return value

    def error_name(self) -> str | None:
        """Return the machine-readable error code of an error body, if it has one.

        XRPC servers (Bluesky) send `{"error": "<Name>", "message": "<text>"}`.
        """
        body = self._try_json_object()
        name = body.get("error") if body is not None else None
        return name if isinstance(name, str) else None

    def error_text(self) -> str:
        """Return the error code and message of an error body, shortened, for messages."""
        body = self._try_json_object()
        parts: list[str] = []
        if body is not None:
            error = body.get("error")
            if isinstance(error, dict):
                # Graph-style bodies nest the error: {"error": {"message": "..."}}.
                error = error.get("message")
            for value in (error, body.get("message"), body.get("error_description")):
                if isinstance(value, str) and value and value not in parts:
                    parts.append(value)
        text = ": ".join(parts) if parts else self.body[:_ERROR_TEXT_LIMIT].decode(errors="replace")
        text = " ".join(text.split())
        return text[:_ERROR_TEXT_LIMIT] if text else "empty body"

    def _try_json_object(self) -> JsonObject | None:
        try:
            value = json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        return value if isinstance(value, dict) else None


def raise_for_response(response: HttpResponse) -> None:
    """Raise the `ProviderError` a non-2xx response means; return on 2xx."""
    if response.ok:
        return
    message = (
        f"{response.method} {response.url} returned HTTP {response.status}: {response.error_text()}"
    )
    if response.status == 401:
        raise ProviderAuthError(message)
    if response.status == 429:
        raise ProviderRateLimited(message, retry_after=response.rate_limit.retry_after or 0.0)
    if response.status >= 500 or response.status == 408:
        raise ProviderTransientError(message)
    raise ProviderPermanentError(message)


class ProviderHttpClient:
    """Requests for one adapter and one job, over a shared guarded session.

    Cheap to create: adapters make one per `fetch` call so the quota a response reports
    applies to that job's later requests only. `sleep`, `clock` and `random` are
    injectable so tests run without real waiting.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        timeout: float,
        log_context: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.time,
        random_fraction: Callable[[], float] = random.random,
        max_body_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._log_context = dict(log_context or {})
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._random_fraction = random_fraction
        self._max_body_bytes = max_body_bytes
        # Unix time before which the quota the last response reported is used up.
        self._quota_exhausted_until: float | None = None

    async def get_json(
        self,
        url: str,
        *,
        params: QueryParams | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> JsonObject:
        """Send a GET and return its JSON object; raise the mapped error on non-2xx."""
        response = await self.request("GET", url, params=params, headers=headers)
        raise_for_response(response)
        return response.json_object()

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: QueryParams | None = None,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        idempotent: bool | None = None,
    ) -> HttpResponse:
        """Send a request and return its response, retrying where that is safe.

        Returns 2xx, 3xx and 4xx responses other than 429 for the caller to judge.
        Raises `ProviderRateLimited`, `ProviderTransientError`, `ProviderPermanentError`
        or `OutboundBlocked`. Requests are retried after timeouts, connection failures
        and 5xx only when `idempotent` is true, which is the default for GET, HEAD and
        OPTIONS; any request is retried after a short 429 wait, since the server did not
        process it.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in _IDEMPOTENT_METHODS
        shown_url = display_url(url)
        attempts = self._retry.max_attempts

        for attempt in range(1, attempts + 1):
            await self._wait_for_quota(method, shown_url)
            last_attempt = attempt == attempts
            try:
                response = await self._send(method, url, shown_url, params, headers, json_body)
            except (TimeoutError, aiohttp.ClientError) as exc:
                if is_blocked_connection(exc):
                    raise OutboundBlocked(
                        f"{method} {shown_url}: {BLOCKED_ADDRESS_MESSAGE}"
                    ) from None
                if isinstance(exc, aiohttp.InvalidURL):
                    raise ProviderPermanentError(f"{method} {shown_url}: invalid URL") from None
                failure = _describe_failure(exc)
                if not idempotent or last_attempt:
                    # `from None`: aiohttp's own messages can contain the full URL.
                    raise ProviderTransientError(
                        f"{method} {shown_url} failed after {attempt} "
                        f"{'try' if attempt == 1 else 'tries'}: {failure}"
                    ) from None
                await self._back_off(method, shown_url, attempt, failure)
                continue

            self._note_quota(response)
            if response.status == 429:
                wait = self._rate_limit_wait(response)
                if wait <= self._retry.max_inline_wait and not last_attempt:
                    self._log_wait(method, shown_url, attempt, wait, "HTTP 429")
                    await self._sleep(wait)
                    continue
                raise ProviderRateLimited(
                    f"{method} {shown_url} was rate limited (HTTP 429: "
                    f"{response.error_text()}); retry after {wait:.0f} s",
                    retry_after=wait,
                )
            if response.status >= 500 or response.status == 408:
                failure = f"HTTP {response.status}: {response.error_text()}"
                server_wait = response.rate_limit.retry_after
                if server_wait is not None and server_wait > self._retry.max_inline_wait:
                    raise ProviderRateLimited(
                        f"{method} {shown_url} is unavailable ({failure}); "
                        f"retry after {server_wait:.0f} s",
                        retry_after=min(server_wait, self._retry.max_rate_limit_wait),
                    )
                if not idempotent or last_attempt:
                    raise ProviderTransientError(
                        f"{method} {shown_url} failed after {attempt} "
                        f"{'try' if attempt == 1 else 'tries'}: {failure}"
                    )
                await self._back_off(method, shown_url, attempt, failure, minimum=server_wait)
                continue
            return response

        # The loop returns or raises on its last attempt.
        raise AssertionError("unreachable")

    async def _send(
        self,
        method: str,
        url: str,
        shown_url: str,
        params: QueryParams | None,
        headers: Mapping[str, str] | None,
        json_body: Any,
    ) -> HttpResponse:
        # The total timeout covers connecting, sending and reading the whole body.
        async with self._session.request(
            method,
            url,
            params=params,
            headers=headers,
            json=json_body,
            timeout=self._timeout,
            allow_redirects=False,
        ) as raw:
            body = await self._read_body(raw, method, shown_url)
            return HttpResponse(
                method=method,
                url=shown_url,
                status=raw.status,
                headers=raw.headers,
                body=body,
                rate_limit=parse_rate_limit(raw.headers, now=self._clock()),
            )

    async def _read_body(self, raw: aiohttp.ClientResponse, method: str, shown_url: str) -> bytes:
        declared = raw.content_length
        if declared is not None and declared > self._max_body_bytes:
            raise ProviderPermanentError(self._too_large(method, shown_url))
        chunks: list[bytes] = []
        size = 0
        async for chunk in raw.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max_body_bytes:
                raise ProviderPermanentError(self._too_large(method, shown_url))
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, method: str, shown_url: str) -> str:
        return f"{method} {shown_url} returned a body larger than {self._max_body_bytes} bytes"

    def _rate_limit_wait(self, response: HttpResponse) -> float:
        wait = response.rate_limit.wait_seconds(self._clock())
        if wait is None:
            wait = self._retry.default_rate_limit_wait
        return min(wait, self._retry.max_rate_limit_wait)

    def _note_quota(self, response: HttpResponse) -> None:
        info = response.rate_limit
        if response.ok and info.remaining == 0 and info.reset_at is not None:
            self._quota_exhausted_until = info.reset_at
        elif response.ok:
            self._quota_exhausted_until = None

    async def _wait_for_quota(self, method: str, shown_url: str) -> None:
        """Wait or raise before a request that the quota of the last response would reject."""
        if self._quota_exhausted_until is None:
            return
        wait = self._quota_exhausted_until - self._clock()
        if wait <= 0:
            self._quota_exhausted_until = None
            return
        wait = min(wait, self._retry.max_rate_limit_wait)
        if wait > self._retry.max_inline_wait:
            raise ProviderRateLimited(
                f"rate limit quota for {shown_url} is used up (ratelimit-remaining: 0); "
                f"retry after {wait:.0f} s",
                retry_after=wait,
            )
        self._log_wait(method, shown_url, 0, wait, "ratelimit-remaining: 0")
        await self._sleep(wait)
        self._quota_exhausted_until = None

    async def _back_off(
        self,
        method: str,
        shown_url: str,
        attempt: int,
        failure: str,
        *,
        minimum: float | None = None,
    ) -> None:
        ceiling = min(self._retry.max_delay, self._retry.base_delay * 2 ** (attempt - 1))
        # Equal jitter: half the ceiling plus a random part of the other half, so tries
        # from many jobs spread out but each still waits.
        delay = ceiling / 2 + self._random_fraction() * ceiling / 2
        if minimum is not None:
            delay = max(delay, minimum)
        logger.info(
            "retrying %s %s after %s (try %d of %d) in %.2f s%s",
            method,
            shown_url,
            failure,
            attempt,
            self._retry.max_attempts,
            delay,
            self._context_suffix(),
            extra={
                "action": "provider_retry",
                "attempt": attempt,
                "delay": delay,
                **self._log_context,
            },
        )
        await self._sleep(delay)

    def _log_wait(self, method: str, shown_url: str, attempt: int, wait: float, cause: str) -> None:
        logger.info(
            "waiting %.2f s before %s %s because of %s%s",
            wait,
            method,
            shown_url,
            cause,
            self._context_suffix(),
            extra={
                "action": "provider_rate_limit_wait",
                "attempt": attempt,
                "delay": wait,
                **self._log_context,
            },
        )

    def _context_suffix(self) -> str:
        if not self._log_context:
            return ""
        return " (" + ", ".join(f"{key} {value}" for key, value in self._log_context.items()) + ")"


def _describe_failure(exc: BaseException) -> str:
    """Describe a transport failure without aiohttp's message, which may hold the URL."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or type(exc.os_error).__name__
        return f"connection failed ({reason})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "response body was cut off"
    return f"request failed ({type(exc).__name__})"
