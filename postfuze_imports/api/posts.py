"""Routes of posts, imported and published."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web
from aiohttp_apigami import docs, querystring_schema

from postfuze_imports.api import responses
from postfuze_imports.api.accounts import load_account
from postfuze_imports.api.context import api_key, services
from postfuze_imports.api.pagination import decode_cursor, page_body
from postfuze_imports.api.responses import json_response, parse_uuid, post_payload
from postfuze_imports.api.schemas import (
    AccountPostsQuerySchema,
    PostListQuerySchema,
    PostListSchema,
    PostSchema,
)
from postfuze_imports.api.validation import parse_query
from postfuze_imports.db import q
from postfuze_imports.errors import NotFound

routes = web.RouteTableDef()


async def _list(
    request: web.Request, query: dict[str, Any], account_id: uuid.UUID | None
) -> web.Response:
    key = api_key(request)
    after = decode_cursor(request, query.get("cursor"), "posts")
    limit = query["limit"]
    start = query.get("from_")
    end = query.get("to")
    rows = await services(request).pool.fetch(
        q("list_posts"),
        key.organization_id,
        key.livemode,
        account_id,
        query.get("source"),
        start.instant if start else None,
        end.instant if end else None,
        after[0] if after else None,
        uuid.UUID(after[1]) if after else None,
        limit + 1,
    )
    return json_response(
        page_body(
            request,
            rows,
            limit=limit,
            kind="posts",
            position=lambda row: (row["published_at"], str(row["id"])),
            render=post_payload,
        )
    )


@docs(
    tags=["Posts"],
    summary="List posts, newest published first",
    description=(
        "`from` and `to` filter on published_at and are inclusive; a date means the whole UTC day."
    ),
    responses={
        200: {"schema": PostListSchema, "description": "A page of posts."},
        **responses.UNAUTHORIZED,
        **responses.INVALID,
    },
)
@querystring_schema(PostListQuerySchema)
@routes.get("/api/v1/posts")
async def list_posts(request: web.Request) -> web.Response:
    query = parse_query(request, PostListQuerySchema())
    return await _list(request, query, query.get("social_account_id"))


@docs(
    tags=["Posts"],
    summary="Get a post",
    responses={
        200: {"schema": PostSchema, "description": "The post."},
        **responses.UNAUTHORIZED,
        **responses.NOT_FOUND,
    },
)
@routes.get("/api/v1/posts/{post_id}")
async def get_post(request: web.Request) -> web.Response:
    key = api_key(request)
    post_id = request.match_info["post_id"]
    parsed = parse_uuid(post_id)
    row = None
    if parsed is not None:
        row = await services(request).pool.fetchrow(
            q("get_post"), key.organization_id, key.livemode, parsed
        )
    if row is None:
        raise NotFound(f"post {post_id!r} was not found")
    return json_response(post_payload(row))


@docs(
    tags=["Posts"],
    summary="List an account's posts, newest published first",
    responses={
        200: {"schema": PostListSchema, "description": "A page of posts."},
        **responses.UNAUTHORIZED,
        **responses.NOT_FOUND,
        **responses.INVALID,
    },
)
@querystring_schema(AccountPostsQuerySchema)
@routes.get("/api/v1/social-accounts/{account_id}/posts")
async def list_account_posts(request: web.Request) -> web.Response:
    account = await load_account(request, request.match_info["account_id"])
    query = parse_query(request, AccountPostsQuerySchema())
    return await _list(request, query, account.id)
