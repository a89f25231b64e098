"""`/metrics`: Prometheus text exposition of request counts and queue depths."""

from __future__ import annotations

import time
from collections import Counter

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp_apigami import docs

from postfuze_imports.api.context import SERVICES

REQUESTS = web.AppKey("request_counter", Counter[tuple[str, str]])
# Text format 0.0.4: https://prometheus.io/docs/instrumenting/exposition_formats/
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_JOB_COUNTS = "SELECT status, count(*) AS n FROM import_jobs GROUP BY status"
_DELIVERY_COUNTS = (
    "SELECT count(*) FILTER (WHERE status = 'pending') AS pending,"
    " count(*) FILTER (WHERE status = 'failed') AS failed FROM webhook_deliveries"
)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count responses by method and status class; runs outside problem_middleware."""
    response = await handler(request)
    request.app[REQUESTS][(request.method, f"{response.status // 100}xx")] += 1
    return response


@docs(
    tags=["Operations"],
    summary="Prometheus metrics",
    responses={200: {"description": "Prometheus text format 0.0.4."}},
)
async def metrics(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    lines = [
        "# HELP postfuze_http_responses_total HTTP responses by method and status class.",
        "# TYPE postfuze_http_responses_total counter",
    ]
    for (method, status), count in sorted(request.app[REQUESTS].items()):
        lines.append(
            f'postfuze_http_responses_total{{method="{method}",status="{status}"}} {count}'
        )
    lines += [
        "# HELP postfuze_import_jobs Import jobs by status.",
        "# TYPE postfuze_import_jobs gauge",
    ]
    for row in await svc.pool.fetch(_JOB_COUNTS):
        lines.append(f'postfuze_import_jobs{{status="{row["status"]}"}} {row["n"]}')
    deliveries = await svc.pool.fetchrow(_DELIVERY_COUNTS)
    if deliveries is not None:
        lines += [
            "# HELP postfuze_webhook_deliveries Webhook deliveries waiting or given up.",
            "# TYPE postfuze_webhook_deliveries gauge",
            f'postfuze_webhook_deliveries{{status="pending"}} {deliveries["pending"]}',
            f'postfuze_webhook_deliveries{{status="failed"}} {deliveries["failed"]}',
        ]
    lines += [
        "# HELP postfuze_scrape_timestamp_seconds Time of this scrape.",
        "# TYPE postfuze_scrape_timestamp_seconds gauge",
        f"postfuze_scrape_timestamp_seconds {time.time():.3f}",
    ]
    return web.Response(
        body=("\n".join(lines) + "\n").encode(), headers={"Content-Type": CONTENT_TYPE}
    )
