"""Problem Details (RFC 9457) for every error, and the request id of every response."""

from __future__ import annotations

import json
import logging
import secrets
import time
from http import HTTPStatus
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler

from postfuze_imports.api.context import REQUEST_ID
from postfuze_imports.api.validation import MAX_BODY_BYTES, has_unstorable_text
from postfuze_imports.errors import ApiError, BadRequest, ValidationFailed
from postfuze_imports.logs import request_id_var

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
# Headers that problem_middleware adds to the final response, error or not; inner
# middlewares such as the rate limiter set them.
RESPONSE_HEADERS: web.RequestKey[dict[str, str]] = web.RequestKey("postfuze_response_headers")


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if extra:
        body.update(extra)
    return web.Response(
        status=status,
        body=json.dumps(body, ensure_ascii=False).encode("utf-8"),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def error_response(error: ApiError) -> web.Response:
    extra: dict[str, Any] = dict(error.extra)
    if isinstance(error, ValidationFailed):
        extra["errors"] = [
            {"field": problem.field, "message": problem.message, "code": problem.code}
            for problem in error.problems
        ]
    return problem_response(
        error.status, error.code, error.detail, headers=error.headers, extra=extra
    )


# Errors that mean PostgreSQL cannot be reached right now, not that a query is wrong.
_DATABASE_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.TooManyConnectionsError,
)

_HTTP_CODES = {
    404: ("not_found", "no route matches this path; see /docs for the API"),
    405: ("method_not_allowed", "this path does not accept the {method} method"),
    413: (
        "payload_too_large",
        f"the request body is larger than the limit of {MAX_BODY_BYTES} bytes",
    ),
}


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give each request an id and turn every exception into problem+json."""
    request_id = "req_" + secrets.token_hex(8)
    request[REQUEST_ID] = request_id
    token = request_id_var.set(request_id)
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        try:
            if has_unstorable_text(request.path):
                raise BadRequest(
                    "the URL path contains a NUL character or invalid UTF-8; check the ids in it"
                )
            response = await handler(request)
        except ApiError as error:
            response = error_response(error)
        except web.HTTPException as error:
            if error.status < 400:
                error.headers.update(request.get(RESPONSE_HEADERS, {}))
                raise
            code, detail = _HTTP_CODES.get(error.status, ("http_error", error.reason))
            headers = {key: value for key, value in error.headers.items() if key.lower() == "allow"}
            response = problem_response(
                error.status,
                code,
                detail.format(method=request.method),
                headers=headers,
            )
        except _DATABASE_UNAVAILABLE as error:
            log.error("database unavailable in %s %s: %s", request.method, request.raw_path, error)
            response = problem_response(
                503,
                "service_unavailable",
                "the database is unavailable; retry shortly",
                headers={"Retry-After": "5"},
            )
        except Exception:
            # The traceback goes to the log only; the client sees the request id.
            log.exception("unhandled error in %s %s", request.method, request.raw_path)
            response = problem_response(
                500,
                "internal_error",
                f"an internal error occurred; quote request id {request_id} when reporting it",
            )
        response.headers.update(request.get(RESPONSE_HEADERS, {}))
        response.headers["Request-Id"] = request_id
        log.info(
            "%s %s -> %d in %.1f ms",
            request.method,
            # The raw path keeps percent-encoding, so a %0a in a URL cannot start a log line.
            request.raw_path,
            response.status,
            (time.perf_counter() - started) * 1000,
            extra={"status": response.status},
        )
        return response
    finally:
        request_id_var.reset(token)
