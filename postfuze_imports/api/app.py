"""The aiohttp application: middlewares, routes, OpenAPI document, health and metrics."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp_apigami import docs, setup_aiohttp_apispec
from aiohttp_apigami.constants import SWAGGER_DICT
from arq.connections import ArqRedis

from postfuze_imports import __version__, db, logs
from postfuze_imports.api import accounts, imports, posts, webhooks
from postfuze_imports.api.auth import auth_middleware
from postfuze_imports.api.context import FINISH_HOOK, SERVICES, BlueskyConnector, Services
from postfuze_imports.api.idempotency import idempotency_middleware
from postfuze_imports.api.metrics import REQUESTS, metrics, metrics_middleware
from postfuze_imports.api.problems import PROBLEM_CONTENT_TYPE, problem_middleware
from postfuze_imports.api.ratelimit import rate_limit_middleware
from postfuze_imports.api.responses import json_response
from postfuze_imports.api.schemas import HealthSchema
from postfuze_imports.crypto import Secrets
from postfuze_imports.hooks import record_import_finished
from postfuze_imports.imports.jobs import FinishHook
from postfuze_imports.outbound import create_client_session
from postfuze_imports.settings import Settings

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECONDS = 2.0


@docs(
    tags=["Operations"],
    summary="Report whether PostgreSQL and Redis are reachable",
    description=f"Needs no API key. Each check waits at most {HEALTH_TIMEOUT_SECONDS:g} seconds.",
    responses={
        200: {"schema": HealthSchema, "description": "Healthy."},
        503: {
            "schema": HealthSchema,
            "description": "A dependency is unreachable, and `checks` names it.",
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before checking again.",
                    "schema": {"type": "integer"},
                }
            },
        },
    },
)
async def health(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            await svc.pool.fetchval("SELECT 1")
        checks["postgres"] = "ok"
    except (OSError, TimeoutError, Exception) as error:
        checks["postgres"] = f"unreachable: {type(error).__name__}"
    try:
        if svc.redis is None:
            raise ConnectionError("no Redis client")
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            await svc.redis.ping()
        checks["redis"] = "ok"
    except (OSError, TimeoutError, Exception) as error:
        checks["redis"] = f"unreachable: {type(error).__name__}"
    ok = all(value == "ok" for value in checks.values())
    body = {
        "ok": ok,
        "service": "postfuze-imports",
        "version": __version__,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "checks": checks,
    }
    return json_response(
        body, status=200 if ok else 503, headers=None if ok else {"Retry-After": "5"}
    )


def _tidy_openapi(app: web.Application) -> None:
    """Make the generated document valid OpenAPI 3.0 and describe the bearer scheme."""
    document: dict[str, Any] = app[SWAGGER_DICT]
    for path, path_item in document.get("paths", {}).items():
        post = path_item.get("post")
        if isinstance(post, dict) and path.startswith("/api/v1/"):
            post.setdefault("parameters", []).append(_IDEMPOTENCY_PARAMETER)
        # aiohttp adds a HEAD route beside every GET route, and aiohttp-apigami documents
        # it as a copy of the GET operation.
        if "get" in path_item:
            path_item.pop("head", None)
        for operation in path_item.values():
            if isinstance(operation, dict):
                # aiohttp-apigami's @docs adds Swagger 2's `produces`, invalid in OpenAPI 3.
                operation.pop("produces", None)
                operation.pop("consumes", None)
                _problem_media_type(operation)
                if path in ("/health", "/metrics"):
                    # Operations endpoints need no API key.
                    operation["security"] = []
                if path == "/metrics":
                    operation["responses"]["200"]["content"] = {
                        "text/plain": {"schema": {"type": "string"}}
                    }
                if path.startswith("/api/v1/"):
                    # The global limit counts every authenticated request, reads included.
                    operation["responses"].setdefault("429", copy.deepcopy(_RATE_LIMITED_RESPONSE))
                    _document_api_headers(operation)
        post = path_item.get("post")
        if isinstance(post, dict) and path.startswith("/api/v1/"):
            # An invalid Idempotency-Key is a 422 on every POST, before the route's checks.
            post["responses"].setdefault("422", copy.deepcopy(_INVALID_RESPONSE))
            if path.endswith("/retry"):
                post["responses"].setdefault("409", copy.deepcopy(_DISABLED_RESPONSE))
    webhooks.document_events(document)
    components = document.setdefault("components", {})
    components["securitySchemes"] = {
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key: sk_live_… for live mode, sk_test_… for test mode.",
        }
    }
    document["security"] = [{"apiKey": []}]


_PROBLEM_REF = "#/components/schemas/Problem"

_IDEMPOTENCY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Up to 255 visible ASCII characters. A retry with the same key and body returns the "
        "first response unchanged for 24 hours; another body with the key is 422."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}

_RATE_LIMITED_RESPONSE = {
    "description": "Rate limit exceeded (rate_limited); wait for the seconds in Retry-After.",
    "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": _PROBLEM_REF}}},
}

_INVALID_RESPONSE = {
    "description": "Validation failed (validation_failed), for example an invalid Idempotency-Key.",
    "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": _PROBLEM_REF}}},
}

_DISABLED_RESPONSE = {
    "description": "The webhook endpoint is disabled (conflict); enable it first.",
    "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": _PROBLEM_REF}}},
}

_RATE_LIMIT_HEADERS = {
    "RateLimit-Limit": "Requests allowed in the current 60-second window.",
    "RateLimit-Remaining": "Requests left in the current window.",
    "RateLimit-Reset": "Seconds until the window resets.",
}


def _document_api_headers(operation: dict[str, Any]) -> None:
    """Describe the headers every authenticated route accepts and sends."""
    for status, response in operation.get("responses", {}).items():
        headers = response.setdefault("headers", {})
        headers["Request-Id"] = {
            "description": "Identifies this request in the server's logs.",
            "schema": {"type": "string"},
        }
        for name, description in _RATE_LIMIT_HEADERS.items():
            headers[name] = {"description": description, "schema": {"type": "integer"}}
        if status in ("429", "503"):
            headers["Retry-After"] = {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer"},
            }


def _problem_media_type(operation: dict[str, Any]) -> None:
    """Document problem bodies as application/problem+json, the type they are sent with."""
    for response in operation.get("responses", {}).values():
        content = response.get("content", {})
        media = content.get("application/json", {})
        if media.get("schema", {}).get("$ref") == _PROBLEM_REF:
            content[PROBLEM_CONTENT_TYPE] = content.pop("application/json")


async def _tidy_openapi_on_startup(app: web.Application) -> None:
    _tidy_openapi(app)


def create_app(
    settings: Settings,
    *,
    connect_bluesky: BlueskyConnector | None = None,
    finish_hook: FinishHook = record_import_finished,
) -> web.Application:
    """Build the API application; connections open at startup and close at cleanup."""
    app = web.Application(
        middlewares=[
            metrics_middleware,
            problem_middleware,
            auth_middleware,
            rate_limit_middleware,
            idempotency_middleware,
        ],
        # Bodies are read and size-checked by the handlers (64 KiB, problem+json 413).
        client_max_size=1024 * 1024,
    )
    logs.install_request_ids()
    app[FINISH_HOOK] = finish_hook
    app[REQUESTS] = Counter()

    async def services_context(app: web.Application) -> AsyncIterator[None]:
        from postfuze_imports.providers.bluesky import create_session as bluesky_create_session

        pool = await db.create_pool(settings.database_url, max_size=settings.database_pool_size)
        # No connection is opened here, so the API starts and serves reads while Redis is
        # down. /health then reports the outage, and wake-ups are best effort because the
        # worker's sweep finds the jobs. arq's create_pool would ping with retries and fail.
        redis = ArqRedis.from_url(settings.redis_url, socket_connect_timeout=HEALTH_TIMEOUT_SECONDS)
        http = create_client_session(
            allow_private=settings.allow_private_networks,
            timeout=aiohttp.ClientTimeout(total=settings.network_timeout_seconds),
        )
        app[SERVICES] = Services(
            settings=settings,
            secrets=Secrets(settings.secret_key),
            pool=pool,
            redis=redis,
            http=http,
            connect_bluesky=connect_bluesky or bluesky_create_session,
        )
        log.info("API started (version %s)", __version__)
        yield
        await http.close()
        await redis.aclose()
        await pool.close()

    app.cleanup_ctx.append(services_context)
    app.router.add_routes(accounts.routes)
    app.router.add_routes(imports.routes)
    app.router.add_routes(posts.routes)
    app.router.add_routes(webhooks.routes)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)

    setup_aiohttp_apispec(
        app,
        title="PostFuze Imports API",
        version=__version__,
        url="/openapi.json",
        swagger_path="/docs",
        openapi_version="3.0.3",
        info={
            "description": (
                "Import a connected social account's past posts in the background, poll the "
                "job or receive a signed webhook when it ends."
            )
        },
        servers=[{"url": "/"}],
    )
    app.on_startup.append(_tidy_openapi_on_startup)
    return app
