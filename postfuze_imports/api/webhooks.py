"""Routes of webhook endpoints, their deliveries, test events and redelivery."""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web
from aiohttp_apigami import docs, querystring_schema, request_schema
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import ValidationError, fields, validate

from postfuze_imports import queue
from postfuze_imports.api import responses
from postfuze_imports.api.auth import requires_scope
from postfuze_imports.api.context import api_key, services
from postfuze_imports.api.pagination import decode_cursor, page_body
from postfuze_imports.api.responses import json_response, timestamp
from postfuze_imports.api.schemas import ImportJobSchema, PageQuerySchema, StrictSchema, Text
from postfuze_imports.api.validation import coded, parse_body, parse_query
from postfuze_imports.errors import NotFound
from postfuze_imports.webhooks import endpoints
from postfuze_imports.webhooks.records import (
    EVENT_TYPES,
    IMPORT_COMPLETED,
    IMPORT_FAILED,
    WEBHOOK_TEST,
    DeliveryStatus,
    DisabledReason,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)

routes = web.RouteTableDef()

_NOT_BOOLEAN = coded("Must be true or false.", "invalid_type")
_NO_EVENTS = coded("Give at least one event type.", "invalid_length")
_LONG_DESCRIPTION = coded(
    f"Must be at most {endpoints.MAX_DESCRIPTION_LENGTH} characters.", "invalid_length"
)


def _description() -> Text:
    return Text(
        validate=validate.Length(max=endpoints.MAX_DESCRIPTION_LENGTH, error=_LONG_DESCRIPTION),
        metadata={"description": "A note for people, such as what the receiver does."},
    )


class StrictBoolean(fields.Boolean):
    """A JSON boolean: strings and numbers are invalid."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError(_NOT_BOOLEAN)
        return value


_EVENTS_DESCRIPTION = "Event types to receive, from: " + ", ".join(EVENT_TYPES) + "."


class CreateEndpointSchema(StrictSchema):
    url = Text(
        required=True,
        metadata={
            "description": (
                "The https URL that receives events. Its host must resolve only to public "
                "addresses."
            ),
            "example": "https://hooks.example.com/postfuze",
        },
    )
    events = fields.List(
        Text(metadata={"enum": list(EVENT_TYPES)}),
        required=True,
        validate=validate.Length(min=1, max=20, error=_NO_EVENTS),
        metadata={"description": _EVENTS_DESCRIPTION},
    )
    description = _description()
    signing_secret = Text(metadata={"description": "whsec_ + base64; generated when omitted."})


class UpdateEndpointSchema(StrictSchema):
    url = Text(metadata={"description": "As in the request that created the endpoint."})
    events = fields.List(
        Text(metadata={"enum": list(EVENT_TYPES)}),
        validate=validate.Length(min=1, max=20, error=_NO_EVENTS),
        metadata={"description": _EVENTS_DESCRIPTION},
    )
    description = _description()
    enabled = StrictBoolean(
        metadata={
            "description": "false cancels pending deliveries, and true clears disabled_reason."
        }
    )


# --- Responses (documentation) ---------------------------------------------------------


class EndpointSchema(StrictSchema):
    id = fields.String(metadata={"example": "we_3c2b1a09d4e5f60718293a4b"})
    url = fields.String()
    description = fields.String(allow_none=True)
    events = fields.List(fields.String(metadata={"enum": list(EVENT_TYPES)}))
    enabled = fields.Boolean()
    disabled_reason = fields.String(
        allow_none=True, metadata={"enum": [reason.value for reason in DisabledReason]}
    )
    created_at = fields.String()
    updated_at = fields.String()
    livemode = fields.Boolean()


class CreatedEndpointSchema(EndpointSchema):
    signing_secret = fields.String(
        metadata={"description": "Sent only in this response. Store it to verify signatures."}
    )


class DeliveryAttemptSchema(StrictSchema):
    attempt_number = fields.Integer(metadata={"description": "1 for the first request."})
    attempted_at = fields.String()
    status_code = fields.Integer(
        allow_none=True,
        metadata={"description": "null when no response arrived (timeout, connection error)."},
    )
    duration_ms = fields.Integer()
    error = fields.String(allow_none=True)
    response_excerpt = fields.String(
        allow_none=True,
        metadata={"description": "At most the first 1 KiB of the response body."},
    )


class DeliverySchema(StrictSchema):
    id = fields.String(metadata={"example": "wd_3c2b1a09d4e5f60718293a4b"})
    event_id = fields.String(metadata={"description": "The webhook-id header of every attempt."})
    event_type = fields.String(metadata={"enum": list(EVENT_TYPES)})
    endpoint_id = fields.String()
    status = fields.String(metadata={"enum": [status.value for status in DeliveryStatus]})
    attempt_count = fields.Integer()
    next_attempt_at = fields.String(
        allow_none=True, metadata={"description": "When a pending delivery is due."}
    )
    last_attempt_at = fields.String(allow_none=True)
    last_status_code = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    attempts = fields.List(
        fields.Nested(DeliveryAttemptSchema),
        metadata={"description": "Every request sent for this delivery, oldest first."},
    )
    created_at = fields.String()


class EndpointListSchema(StrictSchema):
    data = fields.List(fields.Nested(EndpointSchema))
    next_cursor = fields.String(allow_none=True)


class DeliveryListSchema(StrictSchema):
    data = fields.List(fields.Nested(DeliverySchema))
    next_cursor = fields.String(allow_none=True)


class ImportEventSchema(StrictSchema):
    id = fields.String(metadata={"example": "evt_3c2b1a09d4e5f60718293a4b"})
    type = fields.String(metadata={"enum": [IMPORT_COMPLETED, IMPORT_FAILED]})
    created_at = fields.String(metadata={"example": "2026-01-01T12:00:00.000Z"})
    data = fields.Nested(ImportJobSchema)


class WebhookTestDataSchema(StrictSchema):
    webhook_endpoint_id = fields.String(metadata={"example": "we_3c2b1a09d4e5f60718293a4b"})


class WebhookTestEventSchema(StrictSchema):
    id = fields.String(metadata={"example": "evt_3c2b1a09d4e5f60718293a4b"})
    type = fields.String(metadata={"enum": [WEBHOOK_TEST]})
    created_at = fields.String(metadata={"example": "2026-01-01T12:00:00.000Z"})
    data = fields.Nested(WebhookTestDataSchema)


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


_EVENT_SCHEMAS = (ImportEventSchema, WebhookTestEventSchema)
_COMPONENTS = "#/components/schemas/"

_EVENT_BODY = {
    "oneOf": [
        {"$ref": _COMPONENTS + "ImportEvent"},
        {"$ref": _COMPONENTS + "WebhookTestEvent"},
    ],
    "discriminator": {
        "propertyName": "type",
        "mapping": {
            IMPORT_COMPLETED: _COMPONENTS + "ImportEvent",
            IMPORT_FAILED: _COMPONENTS + "ImportEvent",
            WEBHOOK_TEST: _COMPONENTS + "WebhookTestEvent",
        },
    },
}

_SIGNATURE_DESCRIPTION = (
    "`v1,` + base64(HMAC-SHA256(key, `{webhook-id}.{webhook-timestamp}.{body}`)), where "
    "the key is the base64-decoded part of the signing secret after `whsec_`."
)

_RETRY_DESCRIPTION = (
    "Any other status, a redirect, a timeout or a connection error is retried after 5 s, "
    "5 min, 30 min, 2 h, 5 h, 10 h and 10 h (±20 % jitter). The Retry-After header of a "
    "429 or 503 replaces the next wait. An endpoint whose deliveries all fail for 5 days "
    "is disabled."
)


def _event_header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


# The request this service sends to an endpoint's URL, as an OpenAPI 3.0 callback.
_EVENT_CALLBACK = {
    "event": {
        "{$request.body#/url}": {
            "post": {
                "summary": "An event sent to the endpoint",
                "description": (
                    "Signed as in the Standard Webhooks specification. Verify "
                    "`webhook-signature` over the exact bytes received before parsing the body."
                ),
                "security": [],
                "parameters": [
                    _event_header(
                        "webhook-id", "The event id (evt_…), the same on every retry of the event."
                    ),
                    _event_header("webhook-timestamp", "Unix time in seconds of this attempt."),
                    _event_header("webhook-signature", _SIGNATURE_DESCRIPTION),
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _EVENT_BODY}},
                },
                "responses": {
                    "2XX": {
                        "description": (
                            "Received. Any 2xx within the delivery timeout (15 seconds by "
                            "default) ends the delivery."
                        )
                    },
                    "410": {"description": "Gone: the endpoint is disabled."},
                    "default": {"description": _RETRY_DESCRIPTION},
                },
            }
        }
    }
}


def document_events(document: dict[str, Any]) -> None:
    """Add the event callback to POST /api/v1/webhooks and the event schemas to components.

    The callback is added to the generated document rather than declared in `@docs`,
    because apispec rewrites the dicts given to `@docs` in place. After the first
    application was built, a callback there would hold `$ref`s instead of schema
    classes, and later applications would lack the components it references.
    """
    spec = APISpec(
        title="events", version="1", openapi_version="3.0.3", plugins=[MarshmallowPlugin()]
    )
    for schema in _EVENT_SCHEMAS:
        spec.components.schema(schema.__name__.removesuffix("Schema"), schema=schema)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, converted in spec.to_dict()["components"]["schemas"].items():
        schemas.setdefault(name, converted)
    operation = document["paths"]["/api/v1/webhooks"]["post"]
    operation["callbacks"] = copy.deepcopy(_EVENT_CALLBACK)


@docs(
    tags=["Webhooks"],
    summary="Create a webhook endpoint; the signing secret is shown only here",
    description=(
        "The service sends `import.completed` and `import.failed` events to the endpoint "
        "when they are subscribed to, and `webhook.test` on request. The `event` callback "
        "documents the request: its headers and its JSON body, an `ImportEvent` or a "
        "`WebhookTestEvent`."
    ),
    responses={
        201: {"schema": CreatedEndpointSchema, "description": "The endpoint and its secret."},
        **responses.UNAUTHORIZED,
        **responses.INVALID,
        **responses.WRITE,
    },
)
@request_schema(CreateEndpointSchema, required=True)
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
@request_schema(UpdateEndpointSchema, required=False)
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
