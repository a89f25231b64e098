"""JSON rendering of API objects and the shared documentation of error responses."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from aiohttp import web

from postfuze_imports.api.schemas import ProblemSchema
from postfuze_imports.records import SocialAccount
from postfuze_imports.timestamps import format_optional_timestamp


def json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
        content_type="application/json",
        headers=headers,
    )


timestamp = format_optional_timestamp


def account_payload(account: SocialAccount) -> dict[str, Any]:
    return {
        "id": str(account.id),
        "platform": account.platform,
        "tenant_id": account.tenant_id,
        "username": account.username,
        "display_name": account.display_name,
        "network_unique_id": account.network_unique_id,
        "status": account.status.value,
        "api_base_url": account.api_base_url,
        "token_expires_at": timestamp(account.token_expires_at),
        "last_synced_at": timestamp(account.last_synced_at),
        "created_at": timestamp(account.created_at),
        "updated_at": timestamp(account.updated_at),
        "livemode": account.livemode,
    }


def post_payload(row: Any) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "social_account_id": str(row["social_account_id"]),
        "platform": row["platform"],
        "platform_post_id": row["platform_post_id"],
        "platform_post_url": row["platform_post_url"],
        "content": row["content"],
        "media": row["media"],
        "published_at": timestamp(row["published_at"]),
        "source": row["source"],
        "import_id": row["import_id"],
        "metrics": row["metrics"],
        "created_at": timestamp(row["created_at"]),
        "livemode": row["livemode"],
    }


def parse_uuid(value: str) -> UUID | None:
    """Parse a path id; a malformed id is simply not found."""
    try:
        return UUID(value)
    except ValueError:
        return None


def problem_doc(description: str) -> dict[str, Any]:
    """Document a problem+json response for `@docs(responses=...)`."""
    return {"schema": ProblemSchema, "description": description}


UNAUTHORIZED = {401: problem_doc("Missing, malformed or unknown API key.")}
NOT_FOUND = {404: problem_doc("No such object in this organization and mode.")}
INVALID = {
    400: problem_doc("Malformed JSON (invalid_json) or a tampered cursor (invalid_cursor)."),
    422: problem_doc("Validation failed; `errors` lists every problem."),
}
WRITE = {
    403: problem_doc("The API key lacks the scope this write needs."),
    413: problem_doc("The body is larger than 64 KiB."),
    415: problem_doc("The body is not application/json."),
    429: problem_doc("Rate limit exceeded; see Retry-After."),
}
