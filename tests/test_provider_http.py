"""Tests of the adapters' HTTP client against a real aiohttp server on 127.0.0.1.

Waits go through an injected sleep that records them, and the clock is fixed, so no
test waits for a backoff or a rate limit. Only the timeout tests spend real time: a
50 ms request timeout per try.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from postfuze_imports.errors import (
    OutboundBlocked,
    ProviderAuthError,
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderTransientError,
)
from postfuze_imports.outbound import create_client_session
from postfuze_imports.providers.http import (
    ProviderHttpClient,
    RetryPolicy,
    parse_rate_limit,
    parse_retry_after,
)

NOW = 1_800_000_000.0
SESSION_TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass
class Recorder:
    """Counts requests per path and records the waits the client requested."""

    hits: dict[str, int] = field(default_factory=dict)
    sleeps: list[float] = field(default_factory=list)
    query_strings: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def hit(self, request: web.Request) -> int:
        count = self.hits.get(request.path, 0) + 1
        self.hits[request.path] = count
        self.query_strings.append(request.query_string)
        return count

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(recorder: Recorder) -> web.Application:
    def json_error(status: int, error: str, message: str, **headers: str) -> web.Response:
        return web.json_response(
            {"error": error, "message": message}, status=status, headers=headers
        )

    async def ok(request: web.Request) -> web.Response:
        recorder.hit(request)
        return web.json_response({"ok": True})

    async def rate_limited_long(request: web.Request) -> web.Response:
        recorder.hit(request)
        return json_error(429, "RateLimitExceeded", "Rate Limit Exceeded", **{"Retry-After": "120"})

    async def rate_limited_short(request: web.Request) -> web.Response:
        if recorder.hit(request) == 1:
            return json_error(
                429, "RateLimitExceeded", "Rate Limit Exceeded", **{"Retry-After": "2"}
            )
        return web.json_response({"ok": True})

    async def rate_limited_date(request: web.Request) -> web.Response:
        recorder.hit(request)
        retry_at = formatdate(NOW + 90, usegmt=True)
        return json_error(429, "RateLimitExceeded", "slow down", **{"Retry-After": retry_at})

    async def rate_limited_reset(request: web.Request) -> web.Response:
        recorder.hit(request)
        headers = {
            "ratelimit-limit": "3000",
            "ratelimit-remaining": "0",
            "ratelimit-reset": str(int(NOW + 300)),
            "ratelimit-policy": "3000;w=300",
        }
        return json_error(429, "RateLimitExceeded", "Rate Limit Exceeded", **headers)

    async def rate_limited_bare(request: web.Request) -> web.Response:
        recorder.hit(request)
        return web.Response(status=429, text="Too Many Requests")

    async def quota_used_up(request: web.Request) -> web.Response:
        recorder.hit(request)
        headers = {"ratelimit-remaining": "0", "ratelimit-reset": str(int(NOW + 100))}
        return web.json_response({"ok": True}, headers=headers)

    async def quota_used_up_briefly(request: web.Request) -> web.Response:
        recorder.hit(request)
        headers = {"ratelimit-remaining": "0", "ratelimit-reset": "3"}
        return web.json_response({"ok": True}, headers=headers)

    async def flaky(request: web.Request) -> web.Response:
        if recorder.hit(request) == 1:
            return json_error(503, "NotEnoughResources", "try later")
        return web.json_response({"ok": True})

    async def always_503(request: web.Request) -> web.Response:
        recorder.hit(request)
        return json_error(503, "NotEnoughResources", "try later")

    async def unavailable_long(request: web.Request) -> web.Response:
        recorder.hit(request)
        return json_error(503, "NotEnoughResources", "maintenance", **{"Retry-After": "600"})

    async def hang_once(request: web.Request) -> web.Response:
        if recorder.hit(request) == 1:
            # Never set: the client's timeout ends this request.
            await recorder.release.wait()
        return web.json_response({"ok": True})

    async def hang(request: web.Request) -> web.Response:
        recorder.hit(request)
        await recorder.release.wait()
        return web.json_response({"ok": True})

    async def unauthorized(request: web.Request) -> web.Response:
        recorder.hit(request)
        return json_error(401, "AuthenticationRequired", "Invalid identifier or password")

    async def not_found(request: web.Request) -> web.Response:
        recorder.hit(request)
        return json_error(400, "InvalidRequest", "Could not find repo: did:plc:nobody")

    async def html(request: web.Request) -> web.Response:
        recorder.hit(request)
        return web.Response(text="<html>hello</html>", content_type="text/html")

    async def huge(request: web.Request) -> web.StreamResponse:
        recorder.hit(request)
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"x" * 1024)
        await response.write_eof()
        return response

    async def redirect(request: web.Request) -> web.Response:
        recorder.hit(request)
        raise web.HTTPFound("/ok")

    app = web.Application()
    routes: dict[str, Handler] = {
        "/ok": ok,
        "/rate-limited-long": rate_limited_long,
        "/rate-limited-short": rate_limited_short,
        "/rate-limited-date": rate_limited_date,
        "/rate-limited-reset": rate_limited_reset,
        "/rate-limited-bare": rate_limited_bare,
        "/quota-used-up": quota_used_up,
        "/quota-used-up-briefly": quota_used_up_briefly,
        "/flaky": flaky,
        "/always-503": always_503,
        "/unavailable-long": unavailable_long,
        "/hang-once": hang_once,
        "/hang": hang,
        "/unauthorized": unauthorized,
        "/not-found": not_found,
        "/html": html,
        "/huge": huge,
        "/redirect": redirect,
    }
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    return app


@dataclass
class Harness:
    recorder: Recorder
    base_url: str
    session: aiohttp.ClientSession

    def client(
        self, *, timeout: float = 5.0, retry: RetryPolicy | None = None
    ) -> ProviderHttpClient:
        return ProviderHttpClient(
            self.session,
            timeout=timeout,
            log_context={"provider": "test", "account_id": "acc_1"},
            retry=retry,
            sleep=self.recorder.sleep,
            clock=lambda: NOW,
            random_fraction=lambda: 0.5,
            max_body_bytes=32 * 1024,
        )


@pytest.fixture
async def harness(aiohttp_server: AiohttpServer) -> AsyncIterator[Harness]:
    recorder = Recorder()
    server = await aiohttp_server(build_app(recorder), host="127.0.0.1")
    async with create_client_session(allow_private=True, timeout=SESSION_TIMEOUT) as session:
        yield Harness(recorder, f"http://127.0.0.1:{server.port}", session)
    recorder.release.set()


async def test_get_json_returns_object(harness: Harness) -> None:
    body = await harness.client().get_json(f"{harness.base_url}/ok", params={"limit": 100})
    assert body == {"ok": True}
    assert harness.recorder.query_strings == ["limit=100"]
    assert harness.recorder.sleeps == []


async def test_long_retry_after_raises_rate_limited(harness: Harness) -> None:
    with pytest.raises(ProviderRateLimited) as caught:
        await harness.client().get_json(f"{harness.base_url}/rate-limited-long")
    assert caught.value.retry_after == 120
    assert harness.recorder.hits["/rate-limited-long"] == 1
    assert harness.recorder.sleeps == []


async def test_short_retry_after_sleeps_in_place(harness: Harness) -> None:
    body = await harness.client().get_json(f"{harness.base_url}/rate-limited-short")
    assert body == {"ok": True}
    assert harness.recorder.sleeps == [2.0]
    assert harness.recorder.hits["/rate-limited-short"] == 2


async def test_short_retry_after_applies_to_post(harness: Harness) -> None:
    response = await harness.client().request(
        "POST", f"{harness.base_url}/rate-limited-short", json_body={"x": 1}
    )
    assert response.status == 200
    assert harness.recorder.hits["/rate-limited-short"] == 2


async def test_retry_after_http_date(harness: Harness) -> None:
    with pytest.raises(ProviderRateLimited) as caught:
        await harness.client().get_json(f"{harness.base_url}/rate-limited-date")
    assert caught.value.retry_after == pytest.approx(90, abs=1)


async def test_ratelimit_reset_epoch_seconds(harness: Harness) -> None:
    with pytest.raises(ProviderRateLimited) as caught:
        await harness.client().get_json(f"{harness.base_url}/rate-limited-reset")
    assert caught.value.retry_after == pytest.approx(300)


async def test_429_without_headers_uses_default_wait(harness: Harness) -> None:
    retry = RetryPolicy(default_rate_limit_wait=45.0)
    with pytest.raises(ProviderRateLimited) as caught:
        await harness.client(retry=retry).get_json(f"{harness.base_url}/rate-limited-bare")
    assert caught.value.retry_after == 45.0


async def test_used_up_quota_raises_before_sending(harness: Harness) -> None:
    client = harness.client()
    assert await client.get_json(f"{harness.base_url}/quota-used-up") == {"ok": True}
    with pytest.raises(ProviderRateLimited) as caught:
        await client.get_json(f"{harness.base_url}/ok")
    assert caught.value.retry_after == pytest.approx(100)
    assert "/ok" not in harness.recorder.hits


async def test_briefly_used_up_quota_sleeps(harness: Harness) -> None:
    client = harness.client()
    await client.get_json(f"{harness.base_url}/quota-used-up-briefly")
    assert await client.get_json(f"{harness.base_url}/ok") == {"ok": True}
    assert harness.recorder.sleeps == [pytest.approx(3.0)]
    assert harness.recorder.hits["/ok"] == 1


async def test_503_then_200_retries_with_backoff(harness: Harness) -> None:
    body = await harness.client().get_json(f"{harness.base_url}/flaky")
    assert body == {"ok": True}
    assert harness.recorder.hits["/flaky"] == 2
    # base_delay 0.5 with the jitter fraction fixed at 0.5: 0.25 + 0.5 * 0.25.
    assert harness.recorder.sleeps == [pytest.approx(0.375)]


async def test_persistent_503_raises_transient_after_max_attempts(harness: Harness) -> None:
    retry = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=3.0)
    with pytest.raises(ProviderTransientError, match="after 4 tries: HTTP 503"):
        await harness.client(retry=retry).get_json(f"{harness.base_url}/always-503")
    assert harness.recorder.hits["/always-503"] == 4
    # Ceilings 1, 2 and 3 (capped), each waited at three quarters.
    assert harness.recorder.sleeps == [pytest.approx(0.75), pytest.approx(1.5), pytest.approx(2.25)]


async def test_post_is_not_retried_after_503(harness: Harness) -> None:
    with pytest.raises(ProviderTransientError, match="after 1 try"):
        await harness.client().request("POST", f"{harness.base_url}/always-503", json_body={})
    assert harness.recorder.hits["/always-503"] == 1
    assert harness.recorder.sleeps == []


async def test_503_with_long_retry_after_raises_rate_limited(harness: Harness) -> None:
    with pytest.raises(ProviderRateLimited) as caught:
        await harness.client().get_json(f"{harness.base_url}/unavailable-long")
    assert caught.value.retry_after == 600
    assert harness.recorder.hits["/unavailable-long"] == 1


async def test_timeout_then_success_retries(harness: Harness) -> None:
    body = await harness.client(timeout=0.05).get_json(f"{harness.base_url}/hang-once")
    assert body == {"ok": True}
    assert harness.recorder.hits["/hang-once"] == 2
    assert len(harness.recorder.sleeps) == 1


async def test_persistent_timeout_raises_transient(harness: Harness) -> None:
    retry = RetryPolicy(max_attempts=2)
    with pytest.raises(ProviderTransientError, match="after 2 tries: timed out"):
        await harness.client(timeout=0.05, retry=retry).get_json(f"{harness.base_url}/hang")
    assert harness.recorder.hits["/hang"] == 2


async def test_connection_refused_raises_transient(harness: Harness) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    retry = RetryPolicy(max_attempts=3)
    with pytest.raises(ProviderTransientError, match="after 3 tries: connection failed"):
        await harness.client(retry=retry).get_json(f"http://127.0.0.1:{closed_port}/ok")
    assert len(harness.recorder.sleeps) == 2


async def test_401_maps_to_auth_error(harness: Harness) -> None:
    with pytest.raises(ProviderAuthError, match="AuthenticationRequired: Invalid identifier"):
        await harness.client().get_json(f"{harness.base_url}/unauthorized")
    assert harness.recorder.hits["/unauthorized"] == 1


async def test_400_maps_to_permanent_error(harness: Harness) -> None:
    with pytest.raises(ProviderPermanentError, match="HTTP 400: InvalidRequest: Could not find"):
        await harness.client().get_json(f"{harness.base_url}/not-found")
    assert harness.recorder.hits["/not-found"] == 1
    assert harness.recorder.sleeps == []


async def test_request_returns_4xx_for_caller(harness: Harness) -> None:
    response = await harness.client().request("GET", f"{harness.base_url}/not-found")
    assert response.status == 400
    assert response.error_name() == "InvalidRequest"


async def test_non_json_body_is_permanent_error(harness: Harness) -> None:
    with pytest.raises(ProviderPermanentError, match="not JSON"):
        await harness.client().get_json(f"{harness.base_url}/html")


async def test_oversized_body_is_permanent_error(harness: Harness) -> None:
    with pytest.raises(ProviderPermanentError, match="larger than 32768 bytes"):
        await harness.client().get_json(f"{harness.base_url}/huge")


async def test_redirect_is_not_followed(harness: Harness) -> None:
    response = await harness.client().request("GET", f"{harness.base_url}/redirect")
    assert response.status == 302
    assert "/ok" not in harness.recorder.hits
    with pytest.raises(ProviderPermanentError, match="HTTP 302"):
        await harness.client().get_json(f"{harness.base_url}/redirect")


async def test_blocked_address_is_not_retried(aiohttp_server: AiohttpServer) -> None:
    recorder = Recorder()
    server = await aiohttp_server(build_app(recorder), host="127.0.0.1")
    async with create_client_session(allow_private=False, timeout=SESSION_TIMEOUT) as session:
        client = ProviderHttpClient(session, timeout=5.0, sleep=recorder.sleep)
        with pytest.raises(OutboundBlocked, match="blocked by the outbound guard"):
            await client.get_json(f"https://localhost:{server.port}/ok")
        with pytest.raises(OutboundBlocked, match="not a public address"):
            await client.get_json(f"https://127.0.0.1:{server.port}/ok")
    assert recorder.hits == {}
    assert recorder.sleeps == []


async def test_tokens_stay_out_of_logs_and_errors(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ProviderTransientError) as caught:
        await harness.client().get_json(
            f"{harness.base_url}/always-503",
            params={"access_token": "secret-query-token"},
            headers={"Authorization": "Bearer secret-header-token"},
        )
    assert harness.recorder.hits["/always-503"] == 4
    # The test server's own access log shows the query; only the client's lines count.
    ours = [record for record in caplog.records if record.name.startswith("postfuze_imports")]
    assert len(ours) == 3
    for record in ours:
        logged = record.getMessage() + repr(vars(record))
        assert "account_id acc_1" in logged
        assert "secret" not in logged
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (formatdate(NOW + 30, usegmt=True), 30.0),
        (formatdate(NOW - 30, usegmt=True), 0.0),
        ("-5", None),
        ("soon", None),
        ("", None),
        ("nan", None),
    ],
)
def test_parse_retry_after_values(value: str, expected: float | None) -> None:
    result = parse_retry_after(value, now=NOW)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected, abs=1)


def test_parse_rate_limit_delta_reset() -> None:
    info = parse_rate_limit({"ratelimit-reset": "30", "ratelimit-remaining": "7"}, now=NOW)
    assert info.reset_at == NOW + 30
    assert info.remaining == 7
    assert info.retry_after is None
    assert info.wait_seconds(NOW) == 30


def test_parse_rate_limit_prefers_retry_after() -> None:
    headers = {"Retry-After": "5", "ratelimit-reset": str(int(NOW + 300))}
    info = parse_rate_limit(headers, now=NOW)
    assert info.wait_seconds(NOW) == 5


def test_parse_rate_limit_ignores_garbage() -> None:
    headers = {"ratelimit-reset": "tomorrow", "ratelimit-remaining": "-1", "Retry-After": "x"}
    info = parse_rate_limit(headers, now=NOW)
    assert info.reset_at is None
    assert info.remaining is None
    assert info.wait_seconds(NOW) is None
