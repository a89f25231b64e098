"""Bearer API keys: authentication, organization scope, test mode and write scopes."""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from postfuze_imports.api.context import API_KEY, services
from postfuze_imports.crypto import hash_api_key
from postfuze_imports.db import q
from postfuze_imports.errors import InsufficientScope, Unauthorized
from postfuze_imports.records import ApiKey

API_PREFIX = "/api/v1"
SCOPES = ("accounts:write", "imports:write", "webhooks:write")
ALL_SCOPES = "*"
_KEY_FORMAT = re.compile(r"^sk_(live|test)_[A-Za-z0-9_-]{16,128}$")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate every request under the API prefix before its handler runs."""
    if not request.path.startswith(API_PREFIX + "/") and request.path != API_PREFIX:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise Unauthorized("send an API key as 'Authorization: Bearer sk_live_…' or sk_test_…")
    key = key.strip()
    # Anything not shaped like a key is rejected before any database lookup.
    if not _KEY_FORMAT.match(key):
        raise Unauthorized(
            "the API key is malformed: expected sk_live_ or sk_test_ followed by 16 to 128 "
            "letters, digits, - or _"
        )
    row = await services(request).pool.fetchrow(q("get_api_key_by_hash"), hash_api_key(key))
    if row is None:
        raise Unauthorized("the API key is invalid or was revoked")
    request[API_KEY] = ApiKey.from_row(row)
    return await handler(request)


def has_scope(key: ApiKey, scope: str) -> bool:
    return ALL_SCOPES in key.scopes or scope in key.scopes


def requires_scope(
    scope: str,
) -> Callable[[Callable[[web.Request], Awaitable[web.StreamResponse]]], Handler]:
    """Reject a write with 403 insufficient_scope unless the key has `scope`."""

    def decorate(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            key: ApiKey = request[API_KEY]
            if not has_scope(key, scope):
                raise InsufficientScope(scope)
            return await handler(request)

        return wrapper

    return decorate
