"""Routes of webhook endpoints, their deliveries, test events and redelivery."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_apigami import docs, querystring_schema, request_schema
from marshmallow import ValidationError, fields, validate

from postfuze_imports import queue
from postfuze_imports.api import responses
from postfuze_imports.api.auth import requires_scope
from postfuze_imports.api.context import api_key, services
from postfuze_imports.api.pagination import decode_cursor, page_body
from postfuze_imports.api.responses import json_response, timestamp
from postfuze_imports.api.schemas import PageQuerySchema, StrictSchema, Text
from postfuze_imports.api.validation import coded, parse_body, parse_query
from postfuze_imports.errors import NotFound
from postfuze_imports.webhooks import endpoints
from postfuze_imports.webhooks.records import WebhookAttempt, WebhookDelivery, WebhookEndpoint

routes = web.RouteTableDef()

_NOT_BOOLEAN = coded("Must be true or false.", "invalid_type")
_NO_EVENTS = coded("Give at least one event type.", "invalid_length")


class StrictBoolean(fields.Boolean):
    """A JSON boolean: strings and numbers are invalid."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError(_NOT_BOOLEAN)
        return value


class CreateEndpointSchema(StrictSchema):
    url = Text(required=True, metadata={"description": "https URL that receives events."})
    events = fields.List(
        Text(), required=True, validate=validate.Length(min=1, max=20, error=_NO_EVENTS)
    )
    description = Text()
    signing_secret = Text(metadata={"description": "whsec_ + base64; generated when omitted."})


class UpdateEndpointSchema(StrictSchema):
    url = Text()
    events = fields.List(Text(), validate=validate.Length(min=1, max=20, error=_NO_EVENTS))
    description = Text()
    enabled = StrictBoolean()


class EndpointSchema(StrictSchema):
    id = fields.String()
    url = fields.String()
    description = fields.String(allow_none=True)
    events = fields.List(fields.String())
    enabled = fields.Boolean()
    disabled_reason = fields.String(allow_none=True)
    created_at = fields.String()
    updated_at = fields.String()
    livemode = fields.Boolean()
    signing_secret = fields.String(metadata={"description": "Only in the response to POST."})


class DeliverySchema(StrictSchema):
    id = fields.String()
    event_id = fields.String()
    event_type = fields.String()
    status = fields.String()
    attempt_count = fields.Integer()
    next_attempt_at = fields.String(allow_none=True)
    last_status_code = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    attempts = fields.List(fields.Dict())
    created_at = fields.String()


class EndpointListSchema(StrictSchema):
    data = fields.List(fields.Nested(EndpointSchema))
    next_cursor = fields.String(allow_none=True)


class DeliveryListSchema(StrictSchema):
    data = fields.List(fields.Nested(DeliverySchema))
    next_cursor = fields.String(allow_none=True)


def endpoint_payload(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "events": list(endpoint.events),
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason.value if endpoint.disabled_reason else None,
        "created_at": timestamp(endpoint.created_at),
        "updated_at": timestamp(endpoint.updated_at),
        "livemode": endpoint.livemode,
    }


def _attempt_payload(attempt: WebhookAttempt) -> dict[str, Any]:
    return {
        "attempt_number": attempt.attempt_number,
        "attempted_at": timestamp(attempt.attempted_at),
        "status_code": attempt.status_code,
        "duration_ms": attempt.duration_ms,
        "error": attempt.error,
        "response_excerpt": attempt.response_excerpt,
    }


def delivery_payload(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "endpoint_id": delivery.endpoint_id,
        "status": delivery.status.value,
        "attempt_count": delivery.attempt_count,
        "next_attempt_at": timestamp(delivery.next_attempt_at),
        "last_attempt_at": timestamp(delivery.last_attempt_at),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "attempts": [_attempt_payload(attempt) for attempt in delivery.attempts],
        "created_at": timestamp(delivery.created_at),
    }


def _not_found(endpoint_id: str) -> NotFound:
    return NotFound(f"webhook endpoint {endpoint_id!r} was not found")


@docs(
    tags=["Webhooks"],
    summary="Create a webhook endpoint; the signing secret is shown only here",
    responses={
        201: {"schema": EndpointSchema, "description": "The endpoint and its secret."},
        **responses.UNAUTHORIZED,
        **responses.INVALID,
        **responses.WRITE,
    },
)
@request_schema(CreateEndpointSchema)
@routes.post("/api/v1/webhooks")
@requires_scope("webhooks:write")
async def create_endpoint(request: web.Request) -> web.Response:
    body = await parse_body(request, CreateEndpointSchema(), allow_empty=False)
    key = api_key(request)
    svc = services(request)
    created = await endpoints.create(
        svc.pool,
        svc.secrets,
        svc.settings,
        key.organization_id,
        key.livemode,
        url=body["url"],
        events=body["events"],
        description=body.get("description"),
        signing_secret=body.get("signing_secret"),
    )
    payload = endpoint_payload(created.endpoint)
    payload["signing_secret"] = created.signing_secret
    return json_response(
        payload, status=201, headers={"Location": f"/api/v1/webhooks/{created.endpoint.id}"}
    )


@docs(
    tags=["Webhooks"],
    summary="List webhook endpoints, newest first",
    responses={
        200: {"schema": EndpointListSchema, "description": "A page of endpoints."},
        **responses.UNAUTHORIZED,
        **responses.INVALID,
    },
)
@querystring_schema(PageQuerySchema)
@routes.get("/api/v1/webhooks")
async def list_endpoints(request: web.Request) -> web.Response:
    query = parse_query(request, PageQuerySchema())
    key = api_key(request)
    after = decode_cursor(request, query.get("cursor"), "webhooks")
    found = await endpoints.list_endpoints(
        services(request).pool,
        key.organization_id,
        key.livemode,
        after=after,
        limit=query["limit"],
    )
    return json_response(
        page_body(
            request,
            found,
            limit=query["limit"],
            kind="webhooks",
            position=lambda item: (item.created_at, item.id),
            render=endpoint_payload,
        )
    )


@docs(
    tags=["Webhooks"],
    summary="Get a webhook endpoint",
    responses={
        200: {"schema": EndpointSchema, "description": "The endpoint."},
        **responses.UNAUTHORIZED,
        **responses.NOT_FOUND,
    },
)
@routes.get("/api/v1/webhooks/{endpoint_id}")
async def get_endpoint(request: web.Request) -> web.Response:
    key = api_key(request)
    endpoint_id = request.match_info["endpoint_id"]
    found = await endpoints.get(
        services(request).pool, key.organization_id, key.livemode, endpoint_id
    )
    if found is None:
        raise _not_found(endpoint_id)
    return json_response(endpoint_payload(found))


@docs(
    tags=["Webhooks"],
    summary="Change a webhook endpoint's url, events, description or enabled flag",
    responses={
        200: {"schema": EndpointSchema, "description": "The endpoint."},
        **responses.UNAUTHORIZED,
        **responses.NOT_FOUND,
        **responses.INVALID,
        **responses.WRITE,
    },
)
@request_schema(UpdateEndpointSchema)
@routes.patch("/api/v1/webhooks/{endpoint_id}")
@requires_scope("webhooks:write")
async def update_endpoint(request: web.Request) -> web.Response:
    body = await parse_body(request, UpdateEndpointSchema(), allow_empty=True)
    key = api_key(request)
    svc = services(request)
    endpoint_id = request.match_info["endpoint_id"]
    found = await endpoints.update(
        svc.pool,
        svc.settings,
        key.organization_id,
        key.livemode,
        endpoint_id,
        url=body.get("url"),
        events=body.get("events"),
        description=body.get("description"),
        enabled=body.get("enabled"),
    )
    if found is None:
        raise _not_found(endpoint_id)
    return json_response(endpoint_payload(found))


@docs(
    tags=["Webhooks"],
    summary="Delete a webhook endpoint; its pending deliveries are canceled",
    responses={
        204: {"description": "Deleted."},
        **responses.UNAUTHORIZED,
        **responses.NOT_FOUND,
        **responses.WRITE,
    },
)
@routes.delete("/api/v1/webhooks/{endpoint_id}")
@requires_scope("webhooks:write")
async def delete_endpoint(request: web.Request) -> web.Response:
    key = api_key(request)
    endpoint_id = request.match_info["endpoint_id"]
    if not await endpoints.delete(
        services(request).pool, key.organization_id, key.livemode, endpoint_id
    ):
        raise _not_found(endpoint_id)
    return web.Response(status=204)


@docs(
    tags=["Webhooks"],
    summary="Send a webhook.test event to this endpoint",
    responses={
        202: {"schema": DeliverySchema, "description": "The queued delivery."},
        409: responses.problem_doc("The endpoint is disabled."),
        **responses.UNAUTHORIZED,
        **responses.NOT_FOUND,
        **responses.WRITE,
    },
)
@routes.post("/api/v1/webhooks/{endpoint_id}/test")
@requires_scope("webhooks:write")
async def send_test(request: web.Request) -> web.Response:
    key = api_key(request)
    svc = services(request)
    endpoint_id = request.match_info["endpoint_id"]
    delivery = await endpoints.send_test(svc.pool, key.organization_id, key.livemode, endpoint_id)
    if delivery is None:
        raise _not_found(endpoint_id)
    await queue.wake_dispatcher(svc.redis)
    return json_response(delivery_payload(delivery), status=202)


@docs(
    tags=["Webhooks"],
    summary="List an endpoint's deliveries with their attempts, newest first",
    responses={
        200: {"schema": DeliveryListSchema, "description": "A page of deliveries."},
        **responses.UNAUTHORIZED,
        **responses.NOT_FOUND,
        **responses.INVALID,
    },
)
@querystring_schema(PageQuerySchema)
@routes.get("/api/v1/webhooks/{endpoint_id}/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    query = parse_query(request, PageQuerySchema())
    key = api_key(request)
    endpoint_id = request.match_info["endpoint_id"]
    after = decode_cursor(request, query.get("cursor"), "deliveries")
    found = await endpoints.list_deliveries(
        services(request).pool,
        key.organization_id,
        key.livemode,
        endpoint_id,
        after=after,
        limit=query["limit"],
    )
    if found is None:
        raise _not_found(endpoint_id)
    return json_response(
        page_body(
            request,
            found,
            limit=query["limit"],
            kind="deliveries",
            position=lambda item: (item.created_at, item.id),
            render=delivery_payload,
        )
    )


@docs(
    tags=["Webhooks"],
    summary="Send a delivery's event again",
    responses={
        202: {"schema": DeliverySchema, "description": "The delivery, due now."},
        **responses.UNAUTHORIZED,
        **responses.NOT_FOUND,
        **responses.WRITE,
    },
)
@routes.post("/api/v1/webhooks/{endpoint_id}/deliveries/{delivery_id}/retry")
@requires_scope("webhooks:write")
async def retry_delivery(request: web.Request) -> web.Response:
    key = api_key(request)
    svc = services(request)
    endpoint_id = request.match_info["endpoint_id"]
    delivery_id = request.match_info["delivery_id"]
    delivery = await endpoints.retry_delivery(
        svc.pool, key.organization_id, key.livemode, endpoint_id, delivery_id
    )
    if delivery is None:
        raise NotFound(
            f"delivery {delivery_id!r} of webhook endpoint {endpoint_id!r} was not found"
        )
    await queue.wake_dispatcher(svc.redis)
    return json_response(delivery_payload(delivery), status=202)
