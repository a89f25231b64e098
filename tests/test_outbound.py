"""Tests of the outbound guard: address verdicts, URL checks and connect-time blocking.

Every server here listens on 127.0.0.1. The table below names other addresses only as
strings; no test connects to them.
"""

from __future__ import annotations

import ipaddress
import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from pytest_aiohttp import AiohttpServer

from postfuze_imports.errors import OutboundBlocked
from postfuze_imports.outbound import (
    BlockedAddressError,
    create_client_session,
    guarded_socket,
    is_blocked_connection,
    is_public_address,
    parse_ip_literal,
    validate_url,
)

TIMEOUT = aiohttp.ClientTimeout(total=10)

ADDRESS_VERDICTS = [
    # Public unicast.
    ("8.8.8.8", True),
    ("1.1.1.1", True),
    ("93.184.215.14", True),
    ("2606:4700:4700::1111", True),
    ("2a00:1450:4001:80b::200e", True),
    # IPv4 special-purpose ranges.
    ("0.0.0.0", False),
    ("0.1.2.3", False),
    ("10.0.0.1", False),
    ("100.64.0.1", False),
    ("100.127.255.254", False),
    ("127.0.0.1", False),
    ("127.255.255.254", False),
    ("169.254.169.254", False),
    ("172.16.0.1", False),
    ("172.31.255.255", False),
    ("192.0.0.8", False),
    ("192.0.2.1", False),
    ("192.168.1.1", False),
    ("198.18.0.1", False),
    ("198.51.100.7", False),
    ("203.0.113.9", False),
    ("224.0.0.1", False),
    ("239.255.255.250", False),
    ("240.0.0.1", False),
    ("255.255.255.255", False),
    # IPv6 special-purpose ranges.
    ("::", False),
    ("::1", False),
    ("fe80::1", False),
    ("fe80::1%eth0", False),
    ("fec0::1", False),
    ("fc00::1", False),
    ("fd12:3456:789a::1", False),
    ("ff02::1", False),
    ("ff0e::1", False),
    ("2001:db8::1", False),
    ("100::1", False),
    # IPv6 forms that carry an IPv4 address.
    ("::ffff:127.0.0.1", False),
    ("::ffff:10.1.2.3", False),
    ("::ffff:169.254.169.254", False),
    ("::ffff:8.8.8.8", True),
    ("::ffff:0:127.0.0.1", False),
    ("::127.0.0.1", False),
    ("::8.8.8.8", False),
    ("64:ff9b::127.0.0.1", False),
    ("64:ff9b::169.254.169.254", False),
    ("64:ff9b::8.8.8.8", True),
    ("64:ff9b:1::8.8.8.8", False),
    ("2002:7f00:1::1", False),
    ("2002:a9fe:a9fe::1", False),
    ("2002:808:808::1", True),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),
]


@pytest.mark.parametrize(("address", "public"), ADDRESS_VERDICTS)
def test_is_public_address_table(address: str, public: bool) -> None:
    assert is_public_address(address) is public


def test_is_public_address_accepts_ip_objects() -> None:
    assert is_public_address(ipaddress.ip_address("8.8.8.8")) is True
    assert is_public_address(ipaddress.ip_address("::ffff:10.0.0.1")) is False


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("[::1]", "::1"),
        ("example.com", None),
        ("localhost", None),
    ],
)
def test_parse_ip_literal_forms(host: str, expected: str | None) -> None:
    parsed = parse_ip_literal(host)
    assert (None if parsed is None else str(parsed)) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://bsky.social",
        "https://pds.example.com:8443/base/",
        "https://8.8.8.8/xrpc",
        "https://[2606:4700:4700::1111]/",
        "https://localhost:2583",
    ],
)
def test_validate_url_accepts_public(url: str) -> None:
    validate_url(url, allow_private=False)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://bsky.social", "scheme 'http' is not allowed: use https"),
        ("ftp://bsky.social", "scheme 'ftp' is not allowed"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("bsky.social", "scheme '' is not allowed"),
        ("https:///xrpc", "has no host"),
        ("https://user:secret@bsky.social", "contains a user name or password"),
        ("https://user@bsky.social", "contains a user name or password"),
        ("https://:secret@bsky.social", "contains a user name or password"),
        ("https://127.0.0.1:2583", "127.0.0.1 is not a public address"),
        ("https://127.1/", "127.1 is not a public address"),
        ("https://2130706433/", "2130706433 is not a public address"),
        ("https://0.0.0.0/", "is not a public address"),
        ("https://169.254.169.254/latest/meta-data", "is not a public address"),
        ("https://[::1]/", "is not a public address"),
        ("https://[::ffff:127.0.0.1]/", "is not a public address"),
        ("https://[fd00::1]/", "is not a public address"),
        ("https://10.0.0.5/", "is not a public address"),
        ("https://[64:ff9b::a00:5]/", "is not a public address"),
        ("https://[", "invalid URL"),
    ],
)
def test_validate_url_rejects(url: str, message: str) -> None:
    with pytest.raises(OutboundBlocked, match=message.replace("(", r"\(")):
        validate_url(url, allow_private=False)


def test_validate_url_hides_secrets_in_message() -> None:
    with pytest.raises(OutboundBlocked) as caught:
        validate_url("http://user:hunter2@example.com/?access_token=abc", allow_private=False)
    assert "hunter2" not in str(caught.value)
    assert "abc" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:2583", "http://localhost/", "https://[::1]/", "http://10.0.0.5/"],
)
def test_validate_url_allow_private_accepts(url: str) -> None:
    validate_url(url, allow_private=True)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "http://user:pw@localhost/", "http:///path"])
def test_validate_url_allow_private_still_checks_form(url: str) -> None:
    with pytest.raises(OutboundBlocked):
        validate_url(url, allow_private=True)


@pytest.mark.parametrize(
    "addr_info",
    [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 80)),
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::ffff:127.0.0.1", 80, 0, 0)),
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fe80::1%lo", 80, 0, 1)),
        (socket.AF_UNIX, socket.SOCK_STREAM, 0, "", ("/run/docker.sock",)),
    ],
)
def test_guarded_socket_rejects(addr_info: tuple[int, int, int, str, tuple[object, ...]]) -> None:
    with pytest.raises(BlockedAddressError):
        guarded_socket(addr_info)


def test_guarded_socket_creates_public_socket() -> None:
    sock = guarded_socket((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", 443)))
    try:
        assert sock.family == socket.AF_INET
        assert sock.type == socket.SOCK_STREAM
    finally:
        sock.close()


async def _hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def _redirect_to_loopback(request: web.Request) -> web.Response:
    raise web.HTTPFound(f"http://127.0.0.1:{request.url.port}/hello")


@pytest.fixture
async def loopback_server(aiohttp_server: AiohttpServer) -> str:
    """Start a server on 127.0.0.1 and return its port as a string."""
    app = web.Application()
    app.router.add_get("/hello", _hello)
    app.router.add_get("/redirect", _redirect_to_loopback)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.port)


class _StaticResolver(AbstractResolver):
    """Resolve every host name to one address, as a rebinding DNS server would."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.resolved: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.resolved.append(host)
        return [
            ResolveResult(
                hostname=host,
                host=self.address,
                port=port,
                family=socket.AF_INET,
                proto=socket.IPPROTO_TCP,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        pass


async def test_session_rejects_localhost_at_connect(loopback_server: str) -> None:
    # https passes the URL check; the connection itself must be stopped before TLS.
    async with create_client_session(allow_private=False, timeout=TIMEOUT) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await session.get(f"https://localhost:{loopback_server}/hello", allow_redirects=False)
    assert is_blocked_connection(caught.value)
    assert isinstance(caught.value.os_error, BlockedAddressError)
    assert caught.value.os_error.address in ("127.0.0.1", "::1")


async def test_session_rejects_rebound_name(loopback_server: str) -> None:
    resolver = _StaticResolver("127.0.0.1")
    async with create_client_session(
        allow_private=False, timeout=TIMEOUT, resolver=resolver
    ) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await session.get(
                f"https://public-looking.test:{loopback_server}/hello", allow_redirects=False
            )
    assert resolver.resolved == ["public-looking.test"]
    assert is_blocked_connection(caught.value)


async def test_session_rejects_private_literal_before_connect(loopback_server: str) -> None:
    async with create_client_session(allow_private=False, timeout=TIMEOUT) as session:
        with pytest.raises(OutboundBlocked, match="not a public address"):
            await session.get(f"https://127.0.0.1:{loopback_server}/hello", allow_redirects=False)


async def test_session_rejects_http_without_allow_private(loopback_server: str) -> None:
    async with create_client_session(allow_private=False, timeout=TIMEOUT) as session:
        with pytest.raises(OutboundBlocked, match="scheme 'http' is not allowed"):
            await session.get(f"http://localhost:{loopback_server}/hello", allow_redirects=False)


async def test_session_allow_private_reaches_loopback(loopback_server: str) -> None:
    async with (
        create_client_session(allow_private=True, timeout=TIMEOUT) as session,
        session.get(f"http://localhost:{loopback_server}/hello", allow_redirects=False) as response,
    ):
        assert response.status == 200
        assert await response.text() == "hello"


async def test_session_follows_allowed_redirect(loopback_server: str) -> None:
    async with (
        create_client_session(allow_private=True, timeout=TIMEOUT) as session,
        session.get(f"http://localhost:{loopback_server}/redirect") as response,
    ):
        assert response.status == 200
        assert len(response.history) == 1


def test_is_blocked_connection_ignores_other_errors() -> None:
    assert is_blocked_connection(ConnectionRefusedError()) is False
    assert is_blocked_connection(TimeoutError()) is False
    assert is_blocked_connection(OutboundBlocked("x")) is True
