"""The OpenAPI 3 document at /openapi.json and the Swagger UI at /docs."""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from typing import Any, cast

import pytest
from aiohttp import web
from openapi_spec_validator import validate

from postfuze_imports.api.app import create_app
from postfuze_imports.settings import Settings
from tests.api_support import Client, JsonObject, field_codes, read_validation
from tests.conftest import Org

# Routes that serve the documentation itself.
UNDOCUMENTED = {"/openapi.json", "/docs"}
PATH_PARAMETER = re.compile(r"{([^}]+)}")
PROBLEM_MEDIA_TYPE = "application/problem+json"


@pytest.fixture
async def document(client: Client) -> JsonObject:
    response = await client.get("/openapi.json")
    assert response.status == 200
    body: JsonObject = await response.json()
    return body


def app_operations(app: web.Application) -> set[tuple[str, str]]:
    """Return (path, method) of every route, without HEAD and the documentation routes."""
    found = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is None or isinstance(resource, web.StaticResource):
            continue
        if route.method == "HEAD" or resource.canonical in UNDOCUMENTED:
            continue
        found.add((resource.canonical, route.method.lower()))
    return found


def documented_operations(document: JsonObject) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }


def operations(document: JsonObject) -> list[tuple[str, str, JsonObject]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method != "parameters"
    ]


def parameter_names(operation: JsonObject, location: str) -> set[str]:
    return {param["name"] for param in operation.get("parameters", []) if param["in"] == location}


async def test_document_valid_openapi3(document: JsonObject) -> None:
    # The validator takes Mapping[Hashable, Any], and Mapping is invariant in its key type.
    validate(cast("Mapping[Hashable, Any]", document))

    assert document["openapi"].startswith("3.")


async def test_every_route_documented(client: Client, document: JsonObject) -> None:
    assert app_operations(client.app) - documented_operations(document) == set()


async def test_every_operation_routed(client: Client, document: JsonObject) -> None:
    assert documented_operations(document) - app_operations(client.app) == set()


async def test_path_parameters_declared(document: JsonObject) -> None:
    for path, method, operation in operations(document):
        expected = set(PATH_PARAMETER.findall(path))
        declared = [p for p in operation.get("parameters", []) if p["in"] == "path"]

        assert {p["name"] for p in declared} == expected, f"{method} {path}"
        assert all(p["required"] is True for p in declared), f"{method} {path}"


@pytest.mark.parametrize(
    ("path", "schema", "required"),
    [
        ("/api/v1/social-accounts", "CreateAccount", True),
        ("/api/v1/social-accounts/bluesky/connect", "ConnectBluesky", True),
        ("/api/v1/social-accounts/{account_id}/imports", "CreateImport", False),
        ("/api/v1/webhooks", "CreateEndpoint", True),
    ],
)
async def test_request_bodies_documented(
    document: JsonObject, path: str, schema: str, required: bool
) -> None:
    body = document["paths"][path]["post"]["requestBody"]

    assert body["content"]["application/json"]["schema"] == {
        "$ref": f"#/components/schemas/{schema}"
    }
    assert body["required"] is required
    assert schema in document["components"]["schemas"]


async def test_webhook_update_body_optional(document: JsonObject) -> None:
    body = document["paths"]["/api/v1/webhooks/{endpoint_id}"]["patch"]["requestBody"]

    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/UpdateEndpoint"
    }
    assert body["required"] is False


@pytest.mark.parametrize("schema", ["CreateEndpoint", "UpdateEndpoint"])
async def test_webhook_description_limit(document: JsonObject, schema: str) -> None:
    description = document["components"]["schemas"][schema]["properties"]["description"]

    assert description["maxLength"] == 500


async def test_webhook_description_limit_enforced(client: Client, org: Org) -> None:
    response = await client.post(
        "/api/v1/webhooks",
        json={
            "url": "https://localhost/hook",
            "events": ["import.completed"],
            "description": "x" * 501,
        },
        headers=org.test,
    )

    errors = await read_validation(response)
    assert field_codes(errors) == [("description", "invalid_length")]
    assert errors[0]["message"] == "Must be at most 500 characters."


async def test_import_body_schema(document: JsonObject) -> None:
    schema = document["components"]["schemas"]["CreateImport"]

    assert set(schema["properties"]) == {"from_date", "to_date", "limit"}
    assert schema["properties"]["limit"]["type"] == "integer"
    assert schema["properties"]["limit"]["minimum"] == 1
    assert schema["properties"]["limit"]["maximum"] == 1000
    assert schema["properties"]["limit"]["default"] == 100
    assert schema["additionalProperties"] is False


def window_bounds(document: JsonObject) -> list[tuple[str, JsonObject]]:
    """Return the schemas of the date-or-date-time bounds: import window and post range."""
    imports = document["components"]["schemas"]["CreateImport"]["properties"]
    bounds = [(name, imports[name]) for name in ("from_date", "to_date")]
    for param in document["paths"]["/api/v1/posts"]["get"]["parameters"]:
        if param["name"] in ("from", "to"):
            # A query parameter carries its description itself, beside its schema.
            bounds.append((param["name"], {**param["schema"], "description": param["description"]}))
    return bounds


async def test_window_bounds_documented(document: JsonObject) -> None:
    bounds = window_bounds(document)

    assert [name for name, _ in bounds] == ["from_date", "to_date", "from", "to"]
    for name, schema in bounds:
        assert schema["type"] == "string", name
        # date-time alone would declare the dates invalid.
        assert "format" not in schema, name
        assert "2026-01-01" in schema["description"], name
        assert "RFC 3339 date-time with an offset" in schema["description"], name
        assert schema["example"].startswith("2026-01-"), name


async def test_reads_have_no_body(document: JsonObject) -> None:
    for path, method, operation in operations(document):
        if method in ("get", "delete"):
            assert "requestBody" not in operation, f"{method} {path}"


@pytest.mark.parametrize(
    ("path", "names"),
    [
        ("/api/v1/social-accounts", {"limit", "cursor", "platform", "tenant_id"}),
        ("/api/v1/social-accounts/{account_id}/imports", {"limit", "cursor"}),
        ("/api/v1/posts", {"limit", "cursor", "social_account_id", "source", "from", "to"}),
        ("/api/v1/social-accounts/{account_id}/posts", {"limit", "cursor", "source", "from", "to"}),
    ],
)
async def test_query_parameters_documented(
    document: JsonObject, path: str, names: set[str]
) -> None:
    operation = document["paths"][path]["get"]

    assert parameter_names(operation, "query") == names


async def test_list_limit_documented(document: JsonObject) -> None:
    limit = next(
        param
        for param in document["paths"]["/api/v1/posts"]["get"]["parameters"]
        if param["name"] == "limit"
    )

    assert limit["schema"]["default"] == 25
    assert limit["schema"]["maximum"] == 100


async def test_no_swagger2_keys(document: JsonObject) -> None:
    for path, method, operation in operations(document):
        assert "produces" not in operation, f"{method} {path}"
        assert "consumes" not in operation, f"{method} {path}"


async def test_error_responses_problem_json(document: JsonObject) -> None:
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            if path == "/health" or not status.startswith(("4", "5")):
                continue

            assert list(response.get("content", {})) == [PROBLEM_MEDIA_TYPE], (
                f"{method} {path} {status}"
            )


async def test_success_responses_documented(document: JsonObject) -> None:
    for path, method, operation in operations(document):
        success = [status for status in operation["responses"] if status.startswith("2")]

        assert len(success) == 1, f"{method} {path}"
        if success[0] == "204":
            continue
        if path == "/metrics":
            assert list(operation["responses"]["200"]["content"]) == ["text/plain"]
            continue
        content = operation["responses"][success[0]].get("content", {})
        assert list(content) == ["application/json"], f"{method} {path}"
        assert "$ref" in content["application/json"]["schema"], f"{method} {path}"


async def test_rate_limit_documented(document: JsonObject) -> None:
    for path, method, operation in operations(document):
        if not path.startswith("/api/v1/"):
            continue
        response = operation["responses"].get("429")

        assert response is not None, f"{method} {path}"
        assert response["content"][PROBLEM_MEDIA_TYPE]["schema"] == {
            "$ref": "#/components/schemas/Problem"
        }, f"{method} {path}"
        for header in ("Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
            assert header in response["headers"], f"{method} {path} {header}"


def event_body(document: JsonObject) -> JsonObject:
    callback = document["paths"]["/api/v1/webhooks"]["post"]["callbacks"]["event"]
    operation = callback["{$request.body#/url}"]["post"]
    body: JsonObject = operation["requestBody"]["content"]["application/json"]["schema"]
    return body


async def test_webhook_event_callback(document: JsonObject) -> None:
    body = event_body(document)
    schemas = document["components"]["schemas"]

    assert body["oneOf"] == [
        {"$ref": "#/components/schemas/ImportEvent"},
        {"$ref": "#/components/schemas/WebhookTestEvent"},
    ]
    assert body["discriminator"]["propertyName"] == "type"
    assert set(body["discriminator"]["mapping"]) == {
        "import.completed",
        "import.failed",
        "webhook.test",
    }
    assert set(schemas["ImportEvent"]["properties"]) == {"id", "type", "created_at", "data"}
    assert schemas["ImportEvent"]["properties"]["data"] == {
        "$ref": "#/components/schemas/ImportJob"
    }
    assert schemas["WebhookTestEvent"]["properties"]["data"] == {
        "$ref": "#/components/schemas/WebhookTestData"
    }


async def test_event_headers_documented(document: JsonObject) -> None:
    callback = document["paths"]["/api/v1/webhooks"]["post"]["callbacks"]["event"]
    operation = callback["{$request.body#/url}"]["post"]

    assert parameter_names(operation, "header") == {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
    assert operation["security"] == []


async def test_document_same_for_every_app(
    aiohttp_client: Any, settings: Settings, document: JsonObject
) -> None:
    # apispec rewrites the dicts given to @docs in place, so a second application built
    # in the same process must still get a complete document.
    again = await aiohttp_client(create_app(settings))
    response = await again.get("/openapi.json")

    assert await response.json() == document


async def test_bearer_security(document: JsonObject) -> None:
    scheme = document["components"]["securitySchemes"]["apiKey"]

    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    assert document["security"] == [{"apiKey": []}]


async def test_health_without_security(document: JsonObject) -> None:
    assert document["paths"]["/health"]["get"]["security"] == []


async def test_docs_serves_swagger_ui(client: Client) -> None:
    response = await client.get("/docs")

    assert response.status == 200
    assert response.content_type == "text/html"
    text = await response.text()
    assert "swagger" in text.lower()
    assert "/openapi.json" in text


async def test_docs_static_files(client: Client) -> None:
    page = await (await client.get("/docs")).text()
    scripts = re.findall(r'src="([^"]+\.js)"', page)

    assert scripts
    for script in scripts:
        response = await client.get(script)

        assert response.status == 200, script
