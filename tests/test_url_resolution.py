"""Webhook URLs and `api_base_url` are resolved when saved, and rejected when they resolve
to a non-public address or not at all.

Only names that resolve without a DNS server (`localhost`, from /etc/hosts) and names
under `.invalid`, which never resolve (RFC 2606), are looked up. Other lookup results
come from a replaced `getaddrinfo`. No test opens a connection to a resolved address.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from postfuze_imports.api.app import create_app
from postfuze_imports.errors import OutboundBlocked
from postfuze_imports.outbound import UnresolvableHost, resolve_and_check
from postfuze_imports.settings import Settings
from tests.api_support import ACCOUNTS, Client, JsonObject, account_body, read_validation
from tests.conftest import Org

WEBHOOKS = "/api/v1/webhooks"
EVENTS = ["import.completed"]
HINT = "POSTFUZE_ALLOW_PRIVATE_NETWORKS=true"

AddrInfo = tuple[Any, ...]
GetAddrInfo = Callable[..., Coroutine[Any, Any, list[AddrInfo]]]


@pytest.fixture
async def guarded(
    aiohttp_client: Any, settings: Settings, pool: Any, redis_flushed: None
) -> Client:
    """A client of an application with the outbound guard on, as in production."""
    guarded_settings = dataclasses.replace(settings, allow_private_networks=False)
    result: Client = await aiohttp_client(create_app(guarded_settings))
    return result


def replace_getaddrinfo(monkeypatch: pytest.MonkeyPatch, fake: GetAddrInfo) -> None:
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake)


def resolving_to(*addresses: str) -> GetAddrInfo:
    """Return a `getaddrinfo` replacement that resolves every name to `addresses`."""

    async def getaddrinfo(host: str, port: int | None, **kwargs: Any) -> list[AddrInfo]:
        infos: list[AddrInfo] = []
        for address in addresses:
            if ":" in address:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return infos

    return getaddrinfo


def only_problem(errors: list[JsonObject]) -> JsonObject:
    assert len(errors) == 1, errors
    return errors[0]


# --- resolve_and_check -----------------------------------------------------------------


async def test_localhost_blocked_after_lookup() -> None:
    with pytest.raises(OutboundBlocked) as caught:
        await resolve_and_check("https://localhost/hook", allow_private=False)

    assert not isinstance(caught.value, UnresolvableHost)
    assert "localhost resolves to a non-public address" in str(caught.value)
    # The resolved addresses stay in the server's log, out of the message.
    assert "127.0.0.1" not in str(caught.value)


async def test_invalid_name_unresolvable() -> None:
    with pytest.raises(UnresolvableHost, match=re.escape("nonexistent.invalid does not resolve")):
        await resolve_and_check("https://nonexistent.invalid/", allow_private=False)


async def test_allow_private_skips_lookup() -> None:
    # A lookup of this name would fail, so passing shows that none was made.
    await resolve_and_check("https://nonexistent.invalid/", allow_private=True)
    await resolve_and_check("http://localhost:8080/hook", allow_private=True)


async def test_ip_literal_skips_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fail(*args: Any, **kwargs: Any) -> list[AddrInfo]:
        raise AssertionError("an IP literal was resolved")

    replace_getaddrinfo(monkeypatch, fail)

    await resolve_and_check("https://1.1.1.1/hook", allow_private=False)
    with pytest.raises(OutboundBlocked, match=re.escape("127.0.0.1 is not a public address")):
        await resolve_and_check("https://127.0.0.1/hook", allow_private=False)


async def test_public_addresses_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    replace_getaddrinfo(monkeypatch, resolving_to("1.1.1.1", "2606:4700:4700::1111"))

    await resolve_and_check("https://hooks.example.com/hook", allow_private=False)


@pytest.mark.parametrize(
    "addresses",
    [
        ("10.0.0.5",),
        ("1.1.1.1", "192.168.1.10"),
        ("1.1.1.1", "fd00::1"),
        ("169.254.169.254",),
        ("::ffff:127.0.0.1",),
    ],
)
async def test_any_private_address_blocked(
    monkeypatch: pytest.MonkeyPatch, addresses: tuple[str, ...]
) -> None:
    replace_getaddrinfo(monkeypatch, resolving_to(*addresses))

    with pytest.raises(OutboundBlocked, match="resolves to a non-public address"):
        await resolve_and_check("https://hooks.example.com/hook", allow_private=False)


async def test_lookup_passes_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, int | None]] = []
    public = resolving_to("1.1.1.1")

    async def record(host: str, port: int | None, **kwargs: Any) -> list[AddrInfo]:
        seen.append((host, port))
        return await public(host, port, **kwargs)

    replace_getaddrinfo(monkeypatch, record)

    await resolve_and_check("https://hooks.example.com:8443/hook", allow_private=False)
    await resolve_and_check("https://bücher.example/hook", allow_private=False)

    assert seen == [("hooks.example.com", 8443), ("xn--bcher-kva.example", 443)]


async def test_slow_lookup_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    never = asyncio.Event()

    async def hang(*args: Any, **kwargs: Any) -> list[AddrInfo]:
        await never.wait()
        return []

    replace_getaddrinfo(monkeypatch, hang)

    with pytest.raises(UnresolvableHost, match=re.escape("did not resolve within 0.05 seconds")):
        await resolve_and_check("https://hooks.example.com/", allow_private=False, timeout=0.05)


async def test_empty_result_unresolvable(monkeypatch: pytest.MonkeyPatch) -> None:
    replace_getaddrinfo(monkeypatch, resolving_to())

    with pytest.raises(UnresolvableHost, match="does not resolve"):
        await resolve_and_check("https://hooks.example.com/", allow_private=False)


async def test_form_checked_before_lookup() -> None:
    # Rejected for the scheme and the userinfo, so the names are never looked up.
    with pytest.raises(OutboundBlocked, match="scheme 'http' is not allowed") as caught:
        await resolve_and_check("http://nonexistent.invalid/", allow_private=False)
    assert HINT in str(caught.value)

    with pytest.raises(OutboundBlocked, match="user name or password") as caught:
        await resolve_and_check("https://user:pw@nonexistent.invalid/", allow_private=False)
    assert not isinstance(caught.value, UnresolvableHost)


# --- Webhook endpoints -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://localhost/hook", "blocked_url"),
        ("https://LOCALHOST:8443/hook", "blocked_url"),
        ("https://127.0.0.1/", "blocked_url"),
        ("https://[::1]/hook", "blocked_url"),
        ("https://nonexistent.invalid/", "unresolvable_url"),
    ],
)
async def test_webhook_create_rejects(guarded: Client, org: Org, url: str, code: str) -> None:
    response = await guarded.post(WEBHOOKS, json={"url": url, "events": EVENTS}, headers=org.live)

    problem = only_problem(await read_validation(response))
    assert problem["field"] == "url"
    assert problem["code"] == code


async def test_webhook_create_stores_nothing(guarded: Client, org: Org) -> None:
    response = await guarded.post(
        WEBHOOKS, json={"url": "https://localhost/hook", "events": EVENTS}, headers=org.live
    )
    assert response.status == 422

    listed = await guarded.get(WEBHOOKS, headers=org.live)

    assert (await listed.json())["data"] == []


async def test_webhook_http_hint(guarded: Client, org: Org) -> None:
    response = await guarded.post(
        WEBHOOKS, json={"url": "http://hooks.example.com/hook", "events": EVENTS}, headers=org.live
    )

    problem = only_problem(await read_validation(response))
    assert problem["code"] == "blocked_url"
    assert "use https" in problem["message"]
    assert HINT in problem["message"]


async def test_webhook_localhost_allowed_private(client: Client, org: Org) -> None:
    response = await client.post(
        WEBHOOKS, json={"url": "https://localhost/hook", "events": EVENTS}, headers=org.live
    )

    assert response.status == 201, await response.text()
    assert (await response.json())["url"] == "https://localhost/hook"


async def test_webhook_unresolvable_allowed_private(client: Client, org: Org) -> None:
    response = await client.post(
        WEBHOOKS, json={"url": "https://nonexistent.invalid/", "events": EVENTS}, headers=org.live
    )

    assert response.status == 201, await response.text()


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://localhost/other", "blocked_url"),
        ("https://127.0.0.1/", "blocked_url"),
        ("https://nonexistent.invalid/", "unresolvable_url"),
    ],
)
async def test_webhook_update_rejects(
    client: Client, guarded: Client, org: Org, url: str, code: str
) -> None:
    # Created while private networks were allowed, changed with the guard on.
    created = await client.post(
        WEBHOOKS, json={"url": "https://localhost/hook", "events": EVENTS}, headers=org.live
    )
    assert created.status == 201, await created.text()
    endpoint_id = (await created.json())["id"]

    response = await guarded.patch(f"{WEBHOOKS}/{endpoint_id}", json={"url": url}, headers=org.live)

    problem = only_problem(await read_validation(response))
    assert problem["field"] == "url"
    assert problem["code"] == code
    stored = await guarded.get(f"{WEBHOOKS}/{endpoint_id}", headers=org.live)
    assert (await stored.json())["url"] == "https://localhost/hook"


async def test_webhook_update_without_url(client: Client, guarded: Client, org: Org) -> None:
    created = await client.post(
        WEBHOOKS, json={"url": "https://localhost/hook", "events": EVENTS}, headers=org.live
    )
    endpoint_id = (await created.json())["id"]

    # The stored URL is not checked again when the request leaves it unchanged.
    response = await guarded.patch(
        f"{WEBHOOKS}/{endpoint_id}", json={"description": "billing"}, headers=org.live
    )

    assert response.status == 200, await response.text()
    assert (await response.json())["description"] == "billing"


async def test_webhook_update_allowed_private(client: Client, org: Org) -> None:
    created = await client.post(
        WEBHOOKS, json={"url": "https://127.0.0.1/hook", "events": EVENTS}, headers=org.live
    )
    endpoint_id = (await created.json())["id"]

    response = await client.patch(
        f"{WEBHOOKS}/{endpoint_id}", json={"url": "https://localhost/v2"}, headers=org.live
    )

    assert response.status == 200, await response.text()
    assert (await response.json())["url"] == "https://localhost/v2"


# --- Social accounts' api_base_url ------------------------------------------------------


def bluesky_body(api_base_url: str) -> JsonObject:
    return account_body(platform="bluesky", api_base_url=api_base_url)


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://localhost", "blocked_url"),
        ("https://127.0.0.1/", "blocked_url"),
        ("https://nonexistent.invalid/", "unresolvable_url"),
    ],
)
async def test_account_base_url_rejects(guarded: Client, org: Org, url: str, code: str) -> None:
    response = await guarded.post(ACCOUNTS, json=bluesky_body(url), headers=org.live)

    problem = only_problem(await read_validation(response))
    assert problem["field"] == "api_base_url"
    assert problem["code"] == code


async def test_account_base_url_http_hint(guarded: Client, org: Org) -> None:
    response = await guarded.post(
        ACCOUNTS, json=bluesky_body("http://pds.example.com"), headers=org.live
    )

    problem = only_problem(await read_validation(response))
    assert problem["code"] == "blocked_url"
    assert HINT in problem["message"]


async def test_account_default_pds_not_resolved(guarded: Client, org: Org) -> None:
    # No DNS server is needed: the operator's default PDS is only checked for its form.
    response = await guarded.post(ACCOUNTS, json=account_body(platform="bluesky"), headers=org.live)

    assert response.status == 201, await response.text()
    assert (await response.json())["api_base_url"] == "https://bsky.social"


async def test_account_base_url_allowed_private(client: Client, org: Org) -> None:
    response = await client.post(
        ACCOUNTS, json=bluesky_body("https://localhost/"), headers=org.live
    )

    assert response.status == 201, await response.text()
    assert (await response.json())["api_base_url"] == "https://localhost"


async def test_test_mode_ignores_base_url(guarded: Client, org: Org) -> None:
    # Test-mode accounts never reach a network, so their URL is neither checked nor kept.
    response = await guarded.post(
        ACCOUNTS, json=bluesky_body("https://localhost"), headers=org.test
    )

    assert response.status == 201, await response.text()
    assert (await response.json())["api_base_url"] is None


async def test_connect_base_url_rejected(
    aiohttp_client: Any, settings: Settings, pool: Any, redis_flushed: None, org: Org
) -> None:
    contacted: list[str] = []

    async def connect(session: Any, base_url: str, identifier: str, password: str) -> JsonObject:
        contacted.append(base_url)
        return {"did": "did:plc:alice", "handle": identifier}

    guarded_settings = dataclasses.replace(settings, allow_private_networks=False)
    client: Client = await aiohttp_client(create_app(guarded_settings, connect_bluesky=connect))

    response = await client.post(
        f"{ACCOUNTS}/bluesky/connect",
        json={
            "identifier": "alice.example.com",
            "app_password": "abcd-efgh-ijkl-mnop",
            "api_base_url": "https://localhost:2583",
        },
        headers=org.live,
    )

    problem = only_problem(await read_validation(response))
    assert problem["field"] == "api_base_url"
    assert problem["code"] == "blocked_url"
    # Rejected before the PDS was contacted, not by the connect-time guard.
    assert contacted == []
