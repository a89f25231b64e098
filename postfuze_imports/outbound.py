"""The outbound guard for every request the server sends to a URL a user supplied.

A user chooses a network's `api_base_url` (a Bluesky PDS, a Mastodon instance) and,
later, webhook URLs. Without a guard they could aim the server at its own loopback
services, the private network or a cloud metadata address. The guard works in two
places:

- `validate_url` rejects a URL before any request: wrong scheme, userinfo, a missing
  host, or a host that is a non-public IP literal. `resolve_and_check` adds a DNS
  lookup, so a stored URL (a webhook URL, an `api_base_url`) whose host name resolves
  to a non-public address is rejected when it is saved, not only when it is used.
- `create_client_session` returns a session whose connector checks the address each
  socket is about to connect to, after DNS resolution. A host name that resolves, or
  later re-resolves (DNS rebinding), to a non-public address is rejected at connect
  time. The session also applies `validate_url`'s checks to every request it sends,
  each redirect hop included. aiohttp moves userinfo into an Authorization header
  before that check runs, so only `validate_url` itself catches userinfo.

Callers pass `allow_redirects=False` on every request through a guarded session:
aiohttp follows redirects by default, and a redirect should be handled by the caller
like any other unexpected answer. Both checks still apply when a caller forgets.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from collections.abc import Mapping

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver
from yarl import URL

from postfuze_imports.errors import OutboundBlocked

logger = logging.getLogger(__name__)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The same text for every blocked address, so aiohappyeyeballs, which merges the errors of
# several addresses into one OSError unless their texts match, keeps raising
# `BlockedAddressError` itself when every address of a host is blocked.
BLOCKED_ADDRESS_MESSAGE = "connecting to a non-public address is blocked by the outbound guard"

# Ranges that some Python patch releases do not count as private, listed so the verdict
# does not depend on the interpreter version (IANA IPv4 special-purpose registry).
_BLOCKED_IPV4_NETWORKS = tuple(
    ipaddress.IPv4Network(network)
    for network in (
        "0.0.0.0/8",  # "this network"
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "192.0.0.0/24",  # IETF protocol assignments
        "198.18.0.0/15",  # benchmarking
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255
    )
)
# RFC 6052 well-known NAT64 prefix: the last 32 bits are the IPv4 address it reaches.
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
# RFC 8215 local-use NAT64 prefix: it translates into the operator's own network.
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")
# RFC 4291 IPv4-compatible addresses (deprecated, never routed), with :: and ::1 inside.
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
# RFC 2765 IPv4-translated addresses (SIIT).
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")

_PUBLIC_SCHEMES = frozenset({"https"})
_PRIVATE_SCHEMES = frozenset({"https", "http"})

# Seconds `resolve_and_check` waits for a host name lookup before rejecting the URL.
RESOLVE_TIMEOUT_SECONDS = 2.0

_PRIVATE_NETWORKS_HINT = (
    "A development server can allow http and private addresses with "
    "POSTFUZE_ALLOW_PRIVATE_NETWORKS=true"
)


class UnresolvableHost(OutboundBlocked):
    """A URL's host name did not resolve to any address, or its lookup timed out."""


class BlockedAddressError(OSError):
    """A connection the guard stopped because its address is not public.

    aiohttp wraps it in `aiohttp.ClientConnectorError`; `is_blocked_connection` finds it
    there.
    """

    def __init__(self, address: str) -> None:
        super().__init__(errno.EACCES, BLOCKED_ADDRESS_MESSAGE)
        self.address = address


def is_public_address(address: str | IpAddress) -> bool:
    """Return whether `address` is a public unicast address the server may connect to.

    IPv6 forms that carry an IPv4 address (IPv4-mapped, IPv4-translated, 6to4, Teredo,
    NAT64) are judged by the IPv4 address they carry. IPv4-compatible addresses and the
    local-use NAT64 prefix are always rejected. An IPv6 zone suffix such as `%eth0` is
    accepted and does not change the verdict.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv4Address):
        return _is_public_ipv4(ip)
    return _is_public_ipv6(ip)


def _is_public_ipv4(ip: ipaddress.IPv4Address) -> bool:
    if any(ip in network for network in _BLOCKED_IPV4_NETWORKS):
        return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _is_public_ipv6(ip: ipaddress.IPv6Address) -> bool:
    if ip.ipv4_mapped is not None:
        return _is_public_ipv4(ip.ipv4_mapped)
    embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64_WELL_KNOWN or ip in _IPV4_TRANSLATED:
        return _is_public_ipv4(embedded)
    if ip in _IPV4_COMPATIBLE or ip in _NAT64_LOCAL_USE:
        return False
    if ip.sixtofour is not None and not _is_public_ipv4(ip.sixtofour):
        return False
    if ip.teredo is not None:
        server, client = ip.teredo
        if not (_is_public_ipv4(server) and _is_public_ipv4(client)):
            return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_site_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def parse_ip_literal(host: str) -> IpAddress | None:
    """Return the address a URL host names directly, or None for a DNS name.

    Besides the standard forms this accepts what `inet_aton` accepts (`127.1`,
    `0x7f.0.0.1`, `2130706433`), because the system resolver turns such hosts into
    those IPv4 addresses without a DNS query.
    """
    candidate = host.strip("[]")
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        pass
    try:
        packed = socket.inet_aton(candidate)
    except OSError:
        return None
    return ipaddress.IPv4Address(packed)


def validate_url(url: str, *, allow_private: bool) -> None:
    """Raise `OutboundBlocked` unless the server may send requests to `url`.

    Requires an `https` URL (`http` too when `allow_private` is true) with a host and
    no userinfo, whose host, when it is an IP literal, is a public address. DNS names
    are checked at connect time by the sessions `create_client_session` returns.
    """
    parsed = _parse(url)
    check_url(parsed, allow_private=allow_private)


def _parse(url: str) -> URL:
    try:
        return URL(url)
    except (TypeError, ValueError) as exc:
        raise OutboundBlocked(f"invalid URL {url!r}: {exc}") from None


def check_url(url: URL, *, allow_private: bool) -> None:
    """Apply `validate_url`'s checks to a parsed URL."""
    schemes = _PRIVATE_SCHEMES if allow_private else _PUBLIC_SCHEMES
    scheme = url.scheme.lower()
    if scheme not in schemes:
        allowed = " or ".join(sorted(schemes))
        message = f"URL scheme {scheme!r} is not allowed: use {allowed} (URL {_display(url)!r})"
        if not allow_private:
            message = f"{message}. {_PRIVATE_NETWORKS_HINT}"
        raise OutboundBlocked(message)
    if not url.host:
        raise OutboundBlocked(f"URL {_display(url)!r} has no host")
    if url.raw_user is not None or url.raw_password is not None or "@" in url.raw_authority:
        raise OutboundBlocked(
            f"URL {_display(url)!r} contains a user name or password; "
            "pass credentials in headers instead"
        )
    if allow_private:
        return
    ip = parse_ip_literal(url.host)
    if ip is not None and not is_public_address(ip):
        raise OutboundBlocked(
            f"URL host {url.host} is not a public address; "
            "private, loopback, link-local and reserved addresses are not allowed"
        )


async def resolve_and_check(
    url: str, *, allow_private: bool, timeout: float = RESOLVE_TIMEOUT_SECONDS
) -> None:
    """Apply `validate_url`, then resolve a host name and reject non-public addresses.

    With `allow_private` false, a DNS name is resolved with the event loop's
    `getaddrinfo`, and the URL is rejected with `OutboundBlocked` when any address it
    resolves to is not public. `UnresolvableHost`, a subclass, means the name did not
    resolve or the lookup took longer than `timeout` seconds. With `allow_private` true,
    or for an IP literal host, no lookup is made. The verdict holds only at the time of
    the lookup, so the connect-time check of `create_client_session` stays necessary.
    """
    parsed = _parse(url)
    check_url(parsed, allow_private=allow_private)
    host = parsed.raw_host
    if allow_private or host is None or parse_ip_literal(host) is not None:
        return
    addresses = await _resolve(host, parsed.port, timeout)
    blocked = sorted(address for address in addresses if not _is_public_text(address))
    if blocked:
        logger.warning(
            "outbound guard rejected URL host %s: it resolves to non-public addresses %s",
            host,
            ", ".join(blocked),
            extra={"action": "outbound_blocked", "host": host},
        )
        # The addresses stay out of the message, which the API returns to its caller,
        # so the check does not reveal the server's internal DNS records.
        raise OutboundBlocked(
            f"URL host {host} resolves to a non-public address. Private, loopback, "
            "link-local and reserved addresses are not allowed"
        )


async def _resolve(host: str, port: int | None, timeout: float) -> set[str]:
    """Return the addresses `host` resolves to, or raise `UnresolvableHost`."""
    loop = asyncio.get_running_loop()
    try:
        # NOTE: on timeout the lookup keeps running in the executor's thread until the
        # system resolver gives up; only the wait for it ends here.
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise UnresolvableHost(
            f"URL host {host} did not resolve within {timeout:g} seconds. "
            "Check the host name and try again"
        ) from None
    except (OSError, UnicodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise UnresolvableHost(
            f"URL host {host} does not resolve to an address ({reason}). Check the host name"
        ) from None
    addresses = {str(sockaddr[0]) for _, _, _, _, sockaddr in infos}
    if not addresses:
        raise UnresolvableHost(f"URL host {host} does not resolve to an address")
    return addresses


def _is_public_text(address: str) -> bool:
    try:
        return is_public_address(address)
    except ValueError:
        return False


def _display(url: URL) -> str:
    """Return `url` without userinfo, query and fragment, which may carry secrets."""
    if url.absolute:
        url = url.with_user(None)
    return str(url.with_query(None).with_fragment(None))


def is_blocked_connection(exc: BaseException) -> bool:
    """Return whether `exc`, raised by a guarded session, means the guard stopped it."""
    if isinstance(exc, OutboundBlocked | BlockedAddressError):
        return True
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        # When a host has several addresses and they failed differently, aiohappyeyeballs
        # raises one plain OSError whose text lists every failure.
        return isinstance(os_error, BlockedAddressError) or (
            BLOCKED_ADDRESS_MESSAGE in str(os_error)
        )
    return False


def guarded_socket(addr_info: AddrInfoType) -> socket.socket:
    """Create the socket for one resolved address, or raise `BlockedAddressError`.

    aiohttp calls this (as `TCPConnector(socket_factory=...)`) with the exact address
    the socket will connect to, after DNS resolution and for every attempt.
    """
    family, type_, proto, _, sockaddr = addr_info
    host = str(sockaddr[0])
    if family not in (socket.AF_INET, socket.AF_INET6):
        logger.warning(
            "outbound guard rejected a connection to %s: address family %s is not IP",
            host,
            family,
            extra={"action": "outbound_blocked", "address": host},
        )
        raise BlockedAddressError(host)
    try:
        public = is_public_address(host)
    except ValueError:
        public = False
    if not public:
        logger.warning(
            "outbound guard rejected a connection to non-public address %s",
            host,
            extra={"action": "outbound_blocked", "address": host},
        )
        raise BlockedAddressError(host)
    return socket.socket(family=family, type=type_, proto=proto)


def create_client_session(
    *,
    allow_private: bool,
    timeout: aiohttp.ClientTimeout,
    headers: Mapping[str, str] | None = None,
    limit: int = 100,
    limit_per_host: int = 10,
    resolver: AbstractResolver | None = None,
) -> aiohttp.ClientSession:
    """Create an aiohttp session that can only reach what the outbound guard allows.

    With `allow_private` false, every socket is checked by `guarded_socket` and every
    request URL, each redirect hop included, by `check_url`. With `allow_private` true
    (local development) only the scheme, host and userinfo checks remain. The session
    ignores proxy environment variables, since a proxy would connect on our behalf to
    addresses the guard never checks.

    Call it inside a running event loop and close the session when done. Pass
    `allow_redirects=False` on every request.
    """

    async def check_request(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        check_url(request.url, allow_private=allow_private)
        return await handler(request)

    connector = aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=limit_per_host,
        resolver=resolver,
        socket_factory=None if allow_private else guarded_socket,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers=headers,
        trust_env=False,
        middlewares=(check_request,),
    )
