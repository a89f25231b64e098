"""Idempotency-Key for POST requests, after IETF draft-ietf-httpapi-idempotency-key-header.

A POST under /api/v1 that carries an Idempotency-Key header claims the key for its
organization and mode in PostgreSQL before its handler runs, and stores the response
when the handler finishes. Keys are kept for 24 hours. A later request with the same key:

- with the same method, path, query string and body (the fingerprint is the SHA-256
  of the body bytes) gets the stored status, body, Content-Type and Location again, plus
  `Idempotent-Replayed: true`, and its handler does not run;
- with a different method, path, query string or body gets 422 `idempotency_key_reused`;
- while the first request is still running gets 409 `conflict` with `Retry-After: 1`
  at once, rather than holding a connection open until the first one finishes.

Responses with a status below 500 are stored, except 403 and 429. A 403 depends on the
API key that sent the request, and all keys of an organization and mode share one key
space, so a retry with a key that has the scope must run. A 429 is transient. A 5xx, an
exception and a streamed response are not stored: the key is released so that the client
can retry with it. The header value is used as sent, so a structured-field string
(`"8e03978e-…"`, quotes included) is a different key from the same text unquoted.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler

from postfuze_imports.api.auth import API_PREFIX
from postfuze_imports.api.context import API_KEY, REQUEST_ID, services
from postfuze_imports.api.problems import error_response
from postfuze_imports.api.validation import MAX_BODY_BYTES
from postfuze_imports.db import Record, q
from postfuze_imports.errors import (
    ApiError,
    Conflict,
    FieldProblem,
    IdempotencyKeyReused,
    PayloadTooLarge,
    ValidationFailed,
)
from postfuze_imports.records import ApiKey

log = logging.getLogger(__name__)

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
# Visible ASCII: codes 0x21 to 0x7E, so no spaces, control characters or non-ASCII.
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
RETENTION_SECONDS = 24 * 60 * 60
# An in-progress key older than this belongs to a request whose process died before it
# stored or released the key, and the next request with the key takes it over. The
# slowest handler, the Bluesky connect call, makes a few outbound requests that each time
# out after network_timeout_seconds (30 by default).
# NOTE: with a network timeout above about 90 seconds, a retry can take over the key of a
# connect call that is still running. The key's response is stored after the handler's
# own transaction, so a process that dies between the two leaves a created object that
# a retry after this time creates again.
ABANDONED_AFTER_SECONDS = 300
# Claims retried when the key is released or expires between the claim and the lookup.
CLAIM_ATTEMPTS = 3
STORED_HEADERS = ("Content-Type", "Location")
_UNSTORED_STATUSES = frozenset({403, 429})
_DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def _invalid_key(message: str, code: str) -> ValidationFailed:
    return ValidationFailed(
        [FieldProblem(IDEMPOTENCY_KEY_HEADER, message, code)],
        detail="the Idempotency-Key header is invalid",
    )


def parse_key(values: list[str]) -> str:
    """Return the one Idempotency-Key value, or raise 422 validation_failed.

    The 422 reports the field as "Idempotency-Key", the header's name, because null would
    mean a problem with the body.
    """
    if len(values) > 1:
        raise _invalid_key("Send one Idempotency-Key header, not several.", "duplicate")
    value = values[0]
    if not 1 <= len(value) <= MAX_KEY_LENGTH:
        raise _invalid_key(
            f"Length must be between 1 and {MAX_KEY_LENGTH} characters, not {len(value)}.",
            "invalid_length",
        )
    if not _VISIBLE_ASCII.fullmatch(value):
        raise _invalid_key(
            "Use visible ASCII characters only, without spaces (codes 33 to 126).",
            "invalid_format",
        )
    return value


async def _read_body(request: web.Request) -> bytes:
    # The handler reads the body again later: aiohttp caches what request.read() returns.
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise PayloadTooLarge(
            f"the request body has {length} bytes; the limit is {MAX_BODY_BYTES} bytes"
        )
    body = await request.read()
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the request body is larger than {MAX_BODY_BYTES} bytes")
    return body


class _Claim:
    """The identity of one request's claim on an idempotency key."""

    def __init__(self, request: web.Request, key: ApiKey, value: str) -> None:
        self.pool = services(request).pool
        self.organization_id = key.organization_id
        self.livemode = key.livemode
        self.key = value
        self.owner = request[REQUEST_ID]

    @property
    def identity(self) -> tuple[Any, ...]:
        return (self.organization_id, self.livemode, self.key)

    @property
    def log_extra(self) -> dict[str, str]:
        return {"organization_id": str(self.organization_id), "idempotency_key": self.key}

    async def complete(self, response: web.StreamResponse, body: bytes) -> None:
        headers = {
            name: response.headers[name] for name in STORED_HEADERS if name in response.headers
        }
        await self.pool.execute(
            q("complete_idempotency_key"),
            *self.identity,
            self.owner,
            response.status,
            headers,
            body,
        )

    async def release(self) -> None:
        """Delete the claimed key so that the client can retry with it.

        A failure is logged, not raised, so the response or the handler's own error still
        reaches the client.
        """
        try:
            await self.pool.execute(q("release_idempotency_key"), *self.identity, self.owner)
        except _DATABASE_ERRORS as error:
            log.error(
                "could not release idempotency key %r; retries get 409 until it is "
                "abandoned after %d seconds: %s",
                self.key,
                ABANDONED_AFTER_SECONDS,
                error,
                extra=self.log_extra,
            )


def _replay_or_reject(
    row: Record, method: str, path: str, fingerprint: bytes, key: str
) -> web.Response:
    if row["request_method"] != method or row["request_path"] != path:
        raise IdempotencyKeyReused(
            f"idempotency key {key!r} was first used for {row['request_method']} "
            f"{row['request_path']}; send a new key with each new request"
        )
    if bytes(row["request_fingerprint"]) != fingerprint:
        raise IdempotencyKeyReused(
            f"idempotency key {key!r} was first used with a different request body; "
            "send a new key with each new request"
        )
    if row["status"] != "completed":
        raise Conflict(
            f"a request with idempotency key {key!r} is still in progress; "
            "retry once it has finished",
            headers={"Retry-After": "1"},
        )
    stored_headers: dict[str, str] = row["response_headers"] or {}
    return web.Response(
        status=row["response_status"],
        body=bytes(row["response_body"]),
        headers={**stored_headers, REPLAYED_HEADER: "true"},
    )


def _stored_body(response: web.StreamResponse) -> bytes | None:
    """Return the body to store, or None when the response is not stored."""
    if not isinstance(response, web.Response) or response.prepared:
        return None
    if response.status >= 500 or response.status in _UNSTORED_STATUSES:
        return None
    body = response.body
    if body is None:
        return b""
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    return None


async def _run_and_store(
    request: web.Request, handler: Handler, claim: _Claim
) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except ApiError as error:
        # Rendered here rather than in problem_middleware, so a 4xx problem is stored too.
        response = error_response(error)
    except BaseException:
        await claim.release()
        raise

    body = _stored_body(response)
    if body is None:
        await claim.release()
        return response
    try:
        await claim.complete(response, body)
    except _DATABASE_ERRORS as error:
        # The handler's work is done, so the client still gets its response.
        log.error(
            "could not store the response of idempotency key %r; retries get 409 until it "
            "is abandoned after %d seconds: %s",
            claim.key,
            ABANDONED_AFTER_SECONDS,
            error,
            extra=claim.log_extra,
        )
    return response


@web.middleware
async def idempotency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Replay, reject or run a POST that carries an Idempotency-Key header.

    Runs after auth_middleware, because keys are scoped to the API key's organization and
    mode.
    """
    if request.method != "POST" or not request.path.startswith(API_PREFIX + "/"):
        return await handler(request)
    values = request.headers.getall(IDEMPOTENCY_KEY_HEADER, [])
    key: ApiKey | None = request.get(API_KEY)
    if not values or key is None:
        return await handler(request)
    value = parse_key(values)
    body = await _read_body(request)
    fingerprint = hashlib.sha256(body).digest()
    path = request.path_qs
    claim = _Claim(request, key, value)

    for _ in range(CLAIM_ATTEMPTS):
        claimed = await claim.pool.fetchval(
            q("claim_idempotency_key"),
            *claim.identity,
            request.method,
            path,
            fingerprint,
            claim.owner,
            RETENTION_SECONDS,
            ABANDONED_AFTER_SECONDS,
        )
        if claimed is not None:
            return await _run_and_store(request, handler, claim)
        row = await claim.pool.fetchrow(q("get_idempotency_key"), *claim.identity)
        if row is None:
            # Released or expired since the claim: claim it again.
            continue
        response = _replay_or_reject(row, request.method, path, fingerprint, value)
        log.info(
            "replayed the stored response of idempotency key %r",
            value,
            extra=claim.log_extra,
        )
        return response

    raise Conflict(
        f"idempotency key {value!r} was released and claimed again while this request "
        "looked it up; retry the request",
        headers={"Retry-After": "1"},
    )
