"""Per-organization rate limits: fixed 60-second windows aligned to the minute, in Redis.

Every authenticated request counts against each limit that applies to it, rejected
requests included. The response headers RateLimit-Limit, RateLimit-Remaining and
RateLimit-Reset (seconds until the window ends) follow draft-ietf-httpapi-ratelimit-headers-06
and describe the applicable limit closest to running out. When Redis is unreachable the
request is served without limits or headers (fail open), because an outage of the counter
store must not take the API down with it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from postfuze_imports.api.auth import API_PREFIX
from postfuze_imports.api.context import API_KEY, services
from postfuze_imports.api.problems import RESPONSE_HEADERS
from postfuze_imports.errors import RateLimited
from postfuze_imports.records import ApiKey
from postfuze_imports.settings import Settings

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
# A counter only needs to outlive its window. The margin covers app servers whose clocks
# disagree by a few seconds.
COUNTER_TTL_SECONDS = 2 * WINDOW_SECONDS
# A hung Redis delays a request by at most this long, then the request is served unlimited.
REDIS_TIMEOUT_SECONDS = 0.5
# Redis failures are logged at most once per this many seconds per application.
OUTAGE_LOG_INTERVAL_SECONDS = 60.0
KEY_PREFIX = "postfuze:ratelimit"

ACCOUNTS_PREFIX = f"{API_PREFIX}/social-accounts"
WEBHOOKS_PREFIX = f"{API_PREFIX}/webhooks"
ACCOUNTS_WRITE_METHODS = frozenset({"POST", "DELETE"})
WEBHOOKS_WRITE_METHODS = frozenset({"POST", "PATCH", "DELETE"})

# Unix time in seconds. Tests store a controllable clock under this key before the
# application starts; without one the middleware uses time.time.
RATE_LIMIT_CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("rate_limit_clock")

# When each application last logged a Redis failure, on the application's clock.
_outage_logged_at: weakref.WeakKeyDictionary[web.Application, float] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Limit:
    """A named maximum number of requests per window."""

    name: str
    maximum: int


@dataclass(frozen=True)
class Usage:
    """A limit and the number of requests counted against it in the current window."""

    limit: Limit
    count: int

    @property
    def remaining(self) -> int:
        return max(0, self.limit.maximum - self.count)

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit.maximum


def _is_under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def applicable_limits(method: str, path: str, settings: Settings) -> list[Limit]:
    """Return the limits a request counts against; the global limit is always first."""
    limits = [Limit("global", settings.rate_limit_global)]
    if method in ACCOUNTS_WRITE_METHODS and _is_under(path, ACCOUNTS_PREFIX):
        limits.append(Limit("accounts_write", settings.rate_limit_accounts_write))
    if method in WEBHOOKS_WRITE_METHODS and _is_under(path, WEBHOOKS_PREFIX):
        limits.append(Limit("webhooks_write", settings.rate_limit_webhooks_write))
    return limits


def window_start(now: float) -> int:
    """Return the Unix time of the start of the minute that contains `now`."""
    return int(now // WINDOW_SECONDS) * WINDOW_SECONDS


def counter_key(key: ApiKey, limit: Limit, start: int) -> str:
    # Limits are per organization, so test-mode and live-mode requests share a counter.
    return f"{KEY_PREFIX}:{key.organization_id}:{limit.name}:{start}"


def _closest_to_running_out(usages: list[Usage]) -> Usage:
    # Ties go to the smaller limit, the one a client is more likely to hit next.
    return min(usages, key=lambda usage: (usage.remaining, usage.limit.maximum))


def _clock(app: web.Application) -> Callable[[], float]:
    return app.get(RATE_LIMIT_CLOCK) or time.time


def _log_outage(app: web.Application, now: float, error: BaseException) -> None:
    last = _outage_logged_at.get(app)
    if last is not None and now - last < OUTAGE_LOG_INTERVAL_SECONDS:
        return
    _outage_logged_at[app] = now
    log.warning(
        "rate limits are not enforced because Redis failed (%s: %s); requests are served "
        "without limits and this message repeats at most once every %d seconds",
        type(error).__name__,
        error,
        OUTAGE_LOG_INTERVAL_SECONDS,
    )


async def count_requests(
    request: web.Request, key: ApiKey, limits: list[Limit], start: int
) -> list[Usage]:
    """Add one request to each limit's counter and return the new counts.

    INCR and EXPIRE of every counter run in one MULTI/EXEC transaction, so a counter never
    exists without its expiry. Raises RedisError, OSError or TimeoutError when Redis fails.
    """
    redis = services(request).redis
    if redis is None:
        raise ConnectionError("the application has no Redis client")
    keys = [counter_key(key, limit, start) for limit in limits]
    async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
        async with redis.pipeline(transaction=True) as pipeline:
            for name in keys:
                pipeline.incr(name)
                pipeline.expire(name, COUNTER_TTL_SECONDS)
            results = await pipeline.execute()
    # The results alternate: the INCR count, then EXPIRE's True.
    counts = [int(count) for count in results[0::2]]
    return [Usage(limit, count) for limit, count in zip(limits, counts, strict=True)]


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count an authenticated request, reject it with 429 over a limit, set the headers.

    Runs after auth_middleware, so requests without a valid key are not counted: their
    organization is unknown. The headers are stored on the request and problem_middleware
    adds them to the final response, so error responses carry them too.
    """
    key: ApiKey | None = request.get(API_KEY)
    if key is None:
        return await handler(request)
    settings = services(request).settings
    limits = applicable_limits(request.method, request.path, settings)
    now = _clock(request.app)()
    start = window_start(now)
    try:
        usages = await count_requests(request, key, limits, start)
    except (RedisError, OSError, TimeoutError) as error:
        _log_outage(request.app, now, error)
        return await handler(request)

    reset_seconds = max(1, math.ceil(start + WINDOW_SECONDS - now))
    closest = _closest_to_running_out(usages)
    request[RESPONSE_HEADERS] = {
        "RateLimit-Limit": str(closest.limit.maximum),
        "RateLimit-Remaining": str(closest.remaining),
        "RateLimit-Reset": str(reset_seconds),
    }
    exceeded = [usage for usage in usages if usage.exceeded]
    if exceeded:
        # The most specific limit names the problem: a write limit before the global one.
        broken = exceeded[-1]
        raise RateLimited(
            f"this organization sent more than {broken.limit.maximum} requests counted by "
            f"the {broken.limit.name} limit in this {WINDOW_SECONDS}-second window; "
            f"retry in {reset_seconds} seconds",
            headers={"Retry-After": str(reset_seconds)},
            extra={"rate_limit": broken.limit.name},
        )
    return await handler(request)
