"""Routes of social accounts: create, connect Bluesky, list, get, disconnect."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp_apigami import docs, querystring_schema, request_schema

from postfuze_imports.api import responses
from postfuze_imports.api.auth import requires_scope
from postfuze_imports.api.context import api_key, services
from postfuze_imports.api.pagination import decode_cursor, page_body
from postfuze_imports.api.responses import account_payload, json_response, parse_uuid
from postfuze_imports.api.schemas import (
    AccountListQuerySchema,
    AccountListSchema,
    AccountSchema,
    ConnectBlueskySchema,
    CreateAccountSchema,
)
from postfuze_imports.api.validation import parse_body, parse_query
from postfuze_imports.db import q, required
from postfuze_imports.errors import (
    Conflict,
    FieldProblem,
    NotFound,
    OutboundBlocked,
    ProviderAuthError,
    ProviderError,
    ServiceUnavailable,
    ValidationFailed,
)
from postfuze_imports.imports.runner import parse_expiry
from postfuze_imports.outbound import UnresolvableHost, resolve_and_check, validate_url
from postfuze_imports.records import SocialAccount

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


async def load_account(request: web.Request, account_id: str) -> SocialAccount:
    """Return the caller's account by path id, or raise 404."""
    key = api_key(request)
    parsed = parse_uuid(account_id)
    row = None
    if parsed is not None:
        row = await services(request).pool.fetchrow(
            q("get_social_account"), key.organization_id, key.livemode, parsed
        )
    if row is None:
        raise NotFound(f"social account {account_id!r} was not found")
    return SocialAccount.from_row(row)


async def _check_base_url(request: web.Request, url: str | None) -> str | None:
    """Return `url` without a trailing slash, or raise 422 when the outbound guard rejects it.

    A URL from the request is also resolved, and rejected when its host resolves to a
    non-public address or not at all. The operator's default PDS is configuration, not
    input, so only its form is checked, and an account without `api_base_url` can be
    registered while DNS is down.
    """
    if url is None:
        return None
    settings = services(request).settings
    allow_private = settings.allow_private_networks
    try:
        if url == settings.bluesky_default_pds:
            validate_url(url, allow_private=allow_private)
        else:
            await resolve_and_check(url, allow_private=allow_private)
    except UnresolvableHost as error:
        problem = FieldProblem("api_base_url", f"{error}.", "unresolvable_url")
        raise ValidationFailed([problem]) from None
    except OutboundBlocked as error:
        raise ValidationFailed([FieldProblem("api_base_url", f"{error}.", "blocked_url")]) from None
    return url.rstrip("/")


async def _insert_account(request: web.Request, values: dict[str, Any]) -> SocialAccount:
    key = api_key(request)
    svc = services(request)
    try:
        row = await svc.pool.fetchrow(
            q("insert_social_account"),
            uuid.uuid4(),
            key.organization_id,
            key.livemode,
            values["platform"],
            values.get("tenant_id"),
            values["username"],
            values.get("display_name"),
            values["network_unique_id"],
            values.get("api_base_url"),
            svc.secrets.encrypt_json(values["credentials"]),
            values.get("token_expires_at"),
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(
            f"a connected {values['platform']} account with network_unique_id "
            f"{values['network_unique_id']!r} already exists; delete it first to replace it"
        ) from None
    account = SocialAccount.from_row(required(row))
    log.info(
        "created %s account %s", account.platform, account.id, extra={"account_id": str(account.id)}
    )
    return account


@docs(
    tags=["Social accounts"],
    summary="Register a social account with tokens you already hold",
    responses={
        201: {"schema": AccountSchema, "description": "The account."},
        409: responses.problem_doc("The account is already connected."),
        **responses.UNAUTHORIZED,
        **responses.INVALID,
        **responses.WRITE,
    },
)
@request_schema(CreateAccountSchema, required=True)
@routes.post("/api/v1/social-accounts")
@requires_scope("accounts:write")
async def create_account(request: web.Request) -> web.Response:
    body = await parse_body(request, CreateAccountSchema(), allow_empty=False)
    key = api_key(request)
    if key.livemode:
        if body["platform"] == "bluesky" and "api_base_url" not in body:
            body["api_base_url"] = services(request).settings.bluesky_default_pds
        body["api_base_url"] = await _check_base_url(request, body.get("api_base_url"))
    else:
        # Test-mode accounts import from the simulator and never reach a network.
        body["api_base_url"] = None
    credentials = dict(body["credentials"])
    expires = credentials.get("token_expires_at")
    if expires is not None:
        credentials["token_expires_at"] = expires.isoformat()
    account = await _insert_account(
        request, {**body, "credentials": credentials, "token_expires_at": expires}
    )
    return json_response(account_payload(account), status=201)


@docs(
    tags=["Social accounts"],
    summary="Connect a Bluesky account with a handle and an app password",
    description=(
        "The service opens a session on the account's PDS (api_base_url, by default "
        "https://bsky.social) and keeps the app password encrypted, so it can open a new "
        "session when the refresh token has expired. Test-mode keys create a simulated "
        "account without contacting a PDS."
    ),
    responses={
        201: {"schema": AccountSchema, "description": "The connected account."},
        409: responses.problem_doc("The account is already connected."),
        503: responses.problem_doc("The PDS could not be reached."),
        **responses.UNAUTHORIZED,
        **responses.INVALID,
        **responses.WRITE,
    },
)
@request_schema(ConnectBlueskySchema, required=True)
@routes.post("/api/v1/social-accounts/bluesky/connect")
@requires_scope("accounts:write")
async def connect_bluesky(request: web.Request) -> web.Response:
    body = await parse_body(request, ConnectBlueskySchema(), allow_empty=False)
    key = api_key(request)
    svc = services(request)
    identifier = body["identifier"]
    if not key.livemode:
        account = await _insert_account(
            request,
            {
                "platform": "bluesky",
                "username": identifier,
                "network_unique_id": _test_did(identifier),
                "display_name": None,
                "tenant_id": body.get("tenant_id"),
                "api_base_url": None,
                "credentials": {"app_password": body["app_password"]},
            },
        )
        return json_response(account_payload(account), status=201)

    base_url = await _check_base_url(
        request, body.get("api_base_url") or svc.settings.bluesky_default_pds
    )
    assert base_url is not None
    try:
        credentials = await svc.connect_bluesky(
            svc.http, base_url, identifier, body["app_password"]
        )
    except ProviderAuthError as error:
        raise ValidationFailed(
            [FieldProblem("app_password", f"{error}.", "invalid_credentials")],
            detail="the PDS rejected the identifier or app password",
        ) from None
    except OutboundBlocked as error:
        raise ValidationFailed([FieldProblem("api_base_url", f"{error}.", "blocked_url")]) from None
    except ProviderError as error:
        raise ServiceUnavailable(
            f"the PDS at {base_url} could not be reached: {error}", headers={"Retry-After": "30"}
        ) from None
    credentials["app_password"] = body["app_password"]
    account = await _insert_account(
        request,
        {
            "platform": "bluesky",
            "username": credentials.get("handle", identifier),
            "network_unique_id": credentials["did"],
            "display_name": None,
            "tenant_id": body.get("tenant_id"),
            "api_base_url": base_url,
            "credentials": credentials,
            "token_expires_at": parse_expiry(credentials.get("token_expires_at")),
        },
    )
    return json_response(account_payload(account), status=201)


def _test_did(identifier: str) -> str:
    """Return the stable simulated DID of a test-mode Bluesky handle."""
    return f"did:plc:test{uuid.uuid5(uuid.NAMESPACE_DNS, identifier).hex[:20]}"


@docs(
    tags=["Social accounts"],
    summary="List social accounts, newest first",
    responses={
        200: {"schema": AccountListSchema, "description": "A page of accounts."},
        **responses.UNAUTHORIZED,
        **responses.INVALID,
    },
)
@querystring_schema(AccountListQuerySchema)
@routes.get("/api/v1/social-accounts")
async def list_accounts(request: web.Request) -> web.Response:
    query = parse_query(request, AccountListQuerySchema())
    key = api_key(request)
    after = decode_cursor(request, query.get("cursor"), "accounts")
    limit = query["limit"]
    rows = await services(request).pool.fetch(
        q("list_social_accounts"),
        key.organization_id,
        key.livemode,
        query.get("platform"),
        query.get("tenant_id"),
        after[0] if after else None,
        uuid.UUID(after[1]) if after else None,
        limit + 1,
    )
    accounts = [SocialAccount.from_row(row) for row in rows]
    return json_response(
        page_body(
            request,
            accounts,
            limit=limit,
            kind="accounts",
            position=lambda account: (account.created_at, str(account.id)),
            render=account_payload,
        )
    )


@docs(
    tags=["Social accounts"],
    summary="Get a social account",
    responses={
        200: {"schema": AccountSchema, "description": "The account."},
        **responses.UNAUTHORIZED,
        **responses.NOT_FOUND,
    },
)
@routes.get("/api/v1/social-accounts/{account_id}")
async def get_account(request: web.Request) -> web.Response:
    account = await load_account(request, request.match_info["account_id"])
    return json_response(account_payload(account))


@docs(
    tags=["Social accounts"],
    summary="Disconnect a social account; its posts stay",
    responses={
        200: {"schema": AccountSchema, "description": "The disconnected account."},
        **responses.UNAUTHORIZED,
        **responses.NOT_FOUND,
        **responses.WRITE,
    },
)
@routes.delete("/api/v1/social-accounts/{account_id}")
@requires_scope("accounts:write")
async def delete_account(request: web.Request) -> web.Response:
    account = await load_account(request, request.match_info["account_id"])
    key = api_key(request)
    row = await services(request).pool.fetchrow(
        q("disconnect_social_account"), key.organization_id, key.livemode, account.id
    )
    log.info("disconnected account %s", account.id, extra={"account_id": str(account.id)})
    return json_response(account_payload(SocialAccount.from_row(required(row))))
