"""The OpenAPI 3 document at /openapi.json and the Swagger UI at /docs."""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from typing import Any, cast

import pytest
from aiohttp import web
from openapi_spec_validator import validate

from tests.api_support import Client, JsonObject

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


async def test_import_body_schema(document: JsonObject) -> None:
    schema = document["components"]["schemas"]["CreateImport"]

    assert set(schema["properties"]) == {"from_date", "to_date", "limit"}
    assert schema["properties"]["limit"]["type"] == "integer"
    assert schema["properties"]["limit"]["minimum"] == 1
    assert schema["properties"]["limit"]["maximum"] == 1000
    assert schema["properties"]["limit"]["default"] == 100
    assert schema["additionalProperties"] is False


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
