"""Routes of import jobs: start, list, get and cancel."""

from __future__ import annotations

from aiohttp import web
from aiohttp_apigami import docs, querystring_schema, request_schema

from postfuze_imports import queue
from postfuze_imports.api import responses
from postfuze_imports.api.accounts import load_account
from postfuze_imports.api.auth import requires_scope
from postfuze_imports.api.context import FINISH_HOOK, api_key, services
from postfuze_imports.api.pagination import decode_cursor, page_body
from postfuze_imports.api.responses import json_response
from postfuze_imports.api.schemas import (
    CreateImportSchema,
    ImportJobListSchema,
    ImportJobSchema,
    PageQuerySchema,
)
from postfuze_imports.api.validation import parse_body, parse_query
from postfuze_imports.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from postfuze_imports.imports import jobs
from postfuze_imports.providers import LIVE_PLATFORMS
from postfuze_imports.records import AccountStatus

routes = web.RouteTableDef()


@docs(
    tags=["Imports"],
    summary="Start an import",
    description=(
        "Queues an import of the account's posts published in [from_date, to_date], newest "
        "first, at most `limit`. A date means the whole UTC day. Without a window, the "
        "account's `limit` most recent posts are imported. Returns 202 with the pending job "
        "and a Location header."
    ),
    responses={
        202: {"schema": ImportJobSchema, "description": "The queued job."},
        409: responses.problem_doc("The account is disconnected."),
        **responses.UNAUTHORIZED,
        **responses.NOT_FOUND,
        **responses.INVALID,
        **responses.WRITE,
    },
)
@request_schema(CreateImportSchema)
@routes.post("/api/v1/social-accounts/{account_id}/imports")
@requires_scope("imports:write")
async def create_import(request: web.Request) -> web.Response:
    account = await load_account(request, request.match_info["account_id"])
    body = await parse_body(request, CreateImportSchema(), allow_empty=True)
    if account.status is AccountStatus.DISCONNECTED:
        raise Conflict(
            f"social account {account.id} is disconnected; register the account again "
            "to import from it"
        )
    if account.livemode and account.platform not in LIVE_PLATFORMS:
        raise ValidationFailed(
            [
                FieldProblem(
                    None,
                    f"Live imports from {account.platform} are not supported yet; live mode "
                    f"supports {', '.join(sorted(LIVE_PLATFORMS))}, and test mode every platform.",
                    "unsupported_platform",
                )
            ],
            detail=f"imports from {account.platform} are not supported in live mode",
        )
    svc = services(request)
    job = await jobs.create_job(
        svc.pool,
        account,
        from_bound=body.get("from_date"),
        to_bound=body.get("to_date"),
        limit=body["limit"],
    )
    await queue.wake_import(svc.redis, job.id)
    location = f"/api/v1/social-accounts/{account.id}/imports/{job.id}"
    return json_response(jobs.job_payload(job), status=202, headers={"Location": location})


@docs(
    tags=["Imports"],
    summary="List an account's import jobs, newest first",
    responses={
        200: {"schema": ImportJobListSchema, "description": "A page of jobs."},
        **responses.UNAUTHORIZED,
        **responses.NOT_FOUND,
        **responses.INVALID,
    },
)
@querystring_schema(PageQuerySchema)
@routes.get("/api/v1/social-accounts/{account_id}/imports")
async def list_imports(request: web.Request) -> web.Response:
    account = await load_account(request, request.match_info["account_id"])
    query = parse_query(request, PageQuerySchema())
    after = decode_cursor(request, query.get("cursor"), "imports")
    key = api_key(request)
    found = await jobs.list_jobs(
        services(request).pool,
        key.organization_id,
        key.livemode,
        account.id,
        after=after,
        limit=query["limit"],
    )
    return json_response(
        page_body(
            request,
            found,
            limit=query["limit"],
            kind="imports",
            position=lambda job: (job.created_at, job.id),
            render=jobs.job_payload,
        )
    )


@docs(
    tags=["Imports"],
    summary="Get an import job",
    responses={
        200: {"schema": ImportJobSchema, "description": "The job."},
        **responses.UNAUTHORIZED,
        **responses.NOT_FOUND,
    },
)
@routes.get("/api/v1/social-accounts/{account_id}/imports/{import_id}")
async def get_import(request: web.Request) -> web.Response:
    account = await load_account(request, request.match_info["account_id"])
    key = api_key(request)
    import_id = request.match_info["import_id"]
    job = await jobs.get_job(
        services(request).pool, key.organization_id, key.livemode, account.id, import_id
    )
    if job is None:
        raise NotFound(f"import {import_id!r} was not found for account {account.id}")
    return json_response(jobs.job_payload(job))


@docs(
    tags=["Imports"],
    summary="Cancel a pending or running import",
    description=(
        "A pending job ends `failed` at once. A running job stays `running` until its "
        "worker reaches the next page boundary, then ends `failed`; it keeps the posts "
        "already imported and emits import.failed. A finished job is 409."
    ),
    responses={
        200: {"schema": ImportJobSchema, "description": "The job as it stands."},
        409: responses.problem_doc("The job has already finished."),
        **responses.UNAUTHORIZED,
        **responses.NOT_FOUND,
        **responses.WRITE,
    },
)
@routes.post("/api/v1/social-accounts/{account_id}/imports/{import_id}/cancel")
@requires_scope("imports:write")
async def cancel_import(request: web.Request) -> web.Response:
    account = await load_account(request, request.match_info["account_id"])
    key = api_key(request)
    import_id = request.match_info["import_id"]
    svc = services(request)
    job = await jobs.cancel_job(
        svc.pool,
        key.organization_id,
        key.livemode,
        account.id,
        import_id,
        request.app[FINISH_HOOK],
    )
    if job is None:
        raise NotFound(f"import {import_id!r} was not found for account {account.id}")
    if job.finished:
        await queue.wake_dispatcher(svc.redis)
        await queue.wake_import(svc.redis, None)
    return json_response(jobs.job_payload(job))
