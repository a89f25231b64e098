"""Request parsing: body limits, content types, JSON, and marshmallow validation.

Every problem found is reported at once as one item of a 422 body's `errors` list,
each with the dotted JSON path of the field and a stable code.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from marshmallow import Schema, ValidationError

from postfuze_imports.errors import (
    FieldProblem,
    InvalidJson,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)

MAX_BODY_BYTES = 64 * 1024

# Codes for marshmallow's built-in messages; the project's own fields use `coded`.
_MESSAGE_CODES: dict[str, str] = {
    "Missing data for required field.": "required",
    "Unknown field.": "unknown_field",
    "Field may not be null.": "null",
    "Not a valid string.": "invalid_type",
    "Not a valid integer.": "invalid_type",
    "Not a valid boolean.": "invalid_type",
    "Not a valid list.": "invalid_type",
    "Invalid input type.": "invalid_type",
    "Not a valid URL.": "invalid_url",
    "Not a valid email address.": "invalid_format",
    "Not a valid UUID.": "invalid_format",
    "Not a valid datetime.": "invalid_format",
    "Not a valid aware datetime.": "invalid_format",
}


def coded(message: str, code: str) -> str:
    """Register the stable error code of a validation message and return the message."""
    _MESSAGE_CODES[message] = code
    return message


def _code_for(message: str) -> str:
    if message in _MESSAGE_CODES:
        return _MESSAGE_CODES[message]
    if message.startswith("Must be one of"):
        return "invalid_choice"
    if message.startswith("Length must be") or message.startswith("Shorter than"):
        return "invalid_length"
    if message.startswith("Must be greater") or message.startswith("Must be less"):
        return "out_of_range"
    return "invalid"


def _flatten(messages: Any, path: str | None, out: list[FieldProblem]) -> None:
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            if key == "_schema":
                _flatten(value, path, out)
            else:
                child = str(key) if path is None else f"{path}.{key}"
                _flatten(value, child, out)
    elif isinstance(messages, list | tuple):
        for item in messages:
            _flatten(item, path, out)
    else:
        text = str(messages)
        out.append(FieldProblem(field=path, message=text, code=_code_for(text)))


def _field_names(schema: Schema, path: str | None) -> list[str]:
    """Return the JSON names of the fields at a dotted path of a schema."""
    current: Schema = schema
    for part in path.split(".") if path else []:
        field = next((f for f in current.fields.values() if (f.data_key or f.name) == part), None)
        nested = getattr(field, "schema", None)
        if not isinstance(nested, Schema):
            return []
        current = nested
    return [field.data_key or field.name or "" for field in current.fields.values()]


def suggest_fields(problems: list[FieldProblem], schema: Schema) -> list[FieldProblem]:
    """Add the closest known field name to each unknown-field problem."""
    result = []
    for problem in problems:
        if problem.code == "unknown_field" and problem.field:
            parent, _, name = problem.field.rpartition(".")
            known = _field_names(schema, parent or None)
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            listing = f" Known fields: {', '.join(sorted(known))}." if known else ""
            problem = FieldProblem(problem.field, f"Unknown field.{hint}{listing}", problem.code)
        result.append(problem)
    return result


def problems_from(error: ValidationError) -> list[FieldProblem]:
    out: list[FieldProblem] = []
    _flatten(error.messages, None, out)
    return out


def _is_json_media_type(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_json_body(request: web.Request, *, allow_empty: bool) -> dict[str, Any] | None:
    """Read the body as a JSON object, or None when it is empty and that is allowed."""
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise PayloadTooLarge(
            f"the request body has {length} bytes; the limit is {MAX_BODY_BYTES} bytes"
        )
    # request.read() caches the body, so it still returns it after the idempotency
    # middleware has read it, when request.content is already drained. A body without a
    # Content-Length is read up to the application's client_max_size, past which aiohttp
    # raises 413.
    raw = await request.read()
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the request body is larger than {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        if allow_empty:
            return None
        raise ValidationFailed(
            [FieldProblem(None, "A JSON object body is required.", "required")],
            detail="the request needs a JSON body",
        )
    if not _is_json_media_type(request.content_type):
        raise UnsupportedMediaType(
            f"the body's content type is {request.content_type!r}; send application/json"
        )
    try:
        document = json.loads(raw.decode(request.charset or "utf-8"))
    except (UnicodeDecodeError, LookupError):
        raise InvalidJson("the body is not valid UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise InvalidJson(
            f"the body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except RecursionError:
        raise InvalidJson("the body's JSON nests arrays or objects too deeply") from None
    if not isinstance(document, dict):
        raise ValidationFailed(
            [FieldProblem(None, "The body must be a JSON object.", "invalid_type")],
            detail="the request body must be a JSON object",
        )
    problems = unstorable_text(document, None)
    if problems:
        raise ValidationFailed(problems)
    return document


def _drop_nulls(document: Mapping[str, Any]) -> dict[str, Any]:
    # A JSON null for an optional field means the field is omitted, in nested objects too.
    # Required fields still report `required`.
    return {
        key: _drop_nulls(value) if isinstance(value, Mapping) else value
        for key, value in document.items()
        if value is not None
    }


def load(schema: Schema, document: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a document with a schema, reporting every problem in one 422."""
    try:
        result: dict[str, Any] = schema.load(_drop_nulls(document))
    except ValidationError as error:
        raise ValidationFailed(suggest_fields(problems_from(error), schema)) from None
    return result


async def parse_body(request: web.Request, schema: Schema, *, allow_empty: bool) -> dict[str, Any]:
    document = await read_json_body(request, allow_empty=allow_empty)
    return load(schema, document or {})


_UNSTORABLE = coded(
    "Must not contain NUL characters or unpaired UTF-16 surrogates.", "invalid_characters"
)


_EMPTY_PARAMETER = coded("Must not be empty; leave the parameter out instead.", "empty")


def has_unstorable_text(text: str) -> bool:
    """Tell whether PostgreSQL would reject the text: it stores no NUL and only valid UTF-8."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def unstorable_text(value: Any, path: str | None) -> list[FieldProblem]:
    """Return one problem per string (or key) of a JSON value that cannot be stored."""
    problems: list[FieldProblem] = []
    if isinstance(value, str):
        if has_unstorable_text(value):
            problems.append(FieldProblem(path, _UNSTORABLE, "invalid_characters"))
    elif isinstance(value, dict):
        for key, item in value.items():
            child = str(key) if path is None else f"{path}.{key}"
            if has_unstorable_text(str(key)):
                problems.append(FieldProblem(path, _UNSTORABLE, "invalid_characters"))
            else:
                problems.extend(unstorable_text(item, child))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problems.extend(
                unstorable_text(item, f"{index}" if path is None else f"{path}.{index}")
            )
    return problems


def parse_query(request: web.Request, schema: Schema) -> dict[str, Any]:
    """Validate the query string; a parameter given twice is a problem too."""
    problems: list[FieldProblem] = []
    document: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        if len(values) > 1:
            problems.append(FieldProblem(key, "Give this parameter once.", "duplicate"))
        if has_unstorable_text(key) or has_unstorable_text(values[0]):
            problems.append(FieldProblem(key, _UNSTORABLE, "invalid_characters"))
            continue
        if values[0] == "":
            # An empty filter would silently match everything, as if it were absent.
            problems.append(FieldProblem(key, _EMPTY_PARAMETER, "empty"))
            continue
        document[key] = values[0]
    try:
        result: dict[str, Any] = schema.load(document)
    except ValidationError as error:
        problems.extend(suggest_fields(problems_from(error), schema))
        result = {}
    if problems:
        raise ValidationFailed(problems, detail="the query string has invalid parameters")
    return result
