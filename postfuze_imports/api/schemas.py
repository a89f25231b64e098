"""Marshmallow schemas: request validation and the documented response shapes."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from postfuze_imports.api.validation import coded
from postfuze_imports.imports.window import EARLIEST, LATEST, Bound, parse_bound
from postfuze_imports.records import PLATFORMS

_NOT_INTEGER = coded("Must be a JSON integer.", "invalid_type")
_LIMIT_RANGE = coded("Must be between 1 and 1000.", "out_of_range")
_PAGE_RANGE = coded("Must be between 1 and 100.", "out_of_range")
_NOT_WHOLE = coded("Must be a whole number.", "invalid_type")
_WINDOW_ORDER = coded("from_date must not be after to_date.", "invalid_range")
_RANGE_ORDER = coded("from must not be after to.", "invalid_range")
_NOT_TEXT = coded("Must be a string.", "invalid_type")
_WHOLE_NUMBER = re.compile(r"-?[0-9]+")


class StrictInteger(fields.Integer):
    """A JSON integer: strings, fractions and booleans are invalid."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(_NOT_INTEGER)
        return int(value)


class QueryInteger(fields.Integer):
    """An integer written in a query string."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        # A regex, not str.isdigit(), which accepts "²" and, after lstrip("-"), "--1".
        if not isinstance(value, str) or not _WHOLE_NUMBER.fullmatch(value):
            raise ValidationError(_NOT_WHOLE)
        return int(value)


class Text(fields.String):
    default_error_messages = {"invalid": _NOT_TEXT}  # noqa: RUF012 (marshmallow's API)


_BOUND_FORMATS = (
    "A date (2026-01-01, the whole UTC day) or an RFC 3339 date-time with an offset "
    "(2026-01-01T09:30:00Z, 2026-01-01T09:30:00+02:00)."
)


class WindowBound(fields.String):
    """A date (`2026-01-01`) or an RFC 3339 date-time with an offset."""

    def __init__(self, *, end: bool, metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        # No OpenAPI `format` is set, because `date-time` would declare dates invalid.
        given = dict(metadata or {})
        summary = given.get("description")
        given["description"] = f"{summary} {_BOUND_FORMATS}" if summary else _BOUND_FORMATS
        given.setdefault("example", "2026-01-31" if end else "2026-01-01")
        super().__init__(metadata=given, **kwargs)
        self.end = end

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Bound:
        if not isinstance(value, str):
            raise ValidationError(_NOT_TEXT)
        try:
            return parse_bound(value, end=self.end)
        except ValueError as error:
            raise ValidationError(coded(f"Invalid date: {error}.", "invalid_format")) from None


def _name(maximum: int = 255) -> validate.Length:
    return validate.Length(
        min=1, max=maximum, error=coded(f"Must be 1 to {maximum} characters.", "invalid_length")
    )


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


# --- Requests -------------------------------------------------------------------------


class CredentialsSchema(StrictSchema):
    access_token = Text(required=True, validate=_name(8192))
    refresh_token = Text(validate=_name(8192))
    token_expires_at = fields.AwareDateTime(
        format="iso",
        default_timezone=None,
        error_messages={
            "invalid": coded(
                "Must be an RFC 3339 date-time with an offset, such as 2026-07-01T00:00:00Z.",
                "invalid_format",
            ),
            "invalid_awareness": coded(
                "Needs a UTC offset, such as Z or +02:00.", "invalid_format"
            ),
        },
        validate=validate.Range(
            min=EARLIEST,
            max=LATEST,
            error=coded("Must be between 1900-01-01 and 9999-12-30 (UTC).", "out_of_range"),
        ),
    )


class CreateAccountSchema(StrictSchema):
    platform = Text(
        required=True,
        validate=validate.OneOf(
            PLATFORMS,
            error=coded("Must be one of: " + ", ".join(PLATFORMS) + ".", "invalid_choice"),
        ),
    )
    username = Text(required=True, validate=_name())
    network_unique_id = Text(required=True, validate=_name())
    display_name = Text(validate=_name())
    tenant_id = Text(validate=_name())
    credentials = fields.Nested(CredentialsSchema, required=True)
    api_base_url = Text(validate=_name(2048))


class ConnectBlueskySchema(StrictSchema):
    identifier = Text(required=True, validate=_name(253))
    app_password = Text(required=True, validate=_name(255))
    api_base_url = Text(validate=_name(2048))
    tenant_id = Text(validate=_name())


class CreateImportSchema(StrictSchema):
    from_date = WindowBound(end=False, metadata={"description": "Start of the window (inclusive)."})
    to_date = WindowBound(end=True, metadata={"description": "End of the window (inclusive)."})
    limit = StrictInteger(
        load_default=100,
        validate=validate.Range(min=1, max=1000, error=_LIMIT_RANGE),
        metadata={"description": "Maximum number of posts to fetch (1-1000)."},
    )

    # Runs despite errors in other fields, so every problem is reported at once. It
    # compares only the bounds that parsed.
    @validates_schema(skip_on_field_errors=False)
    def check_window_order(self, data: dict[str, Any], **kwargs: Any) -> None:
        start: Bound | None = data.get("from_date")
        end: Bound | None = data.get("to_date")
        if start is not None and end is not None and start.instant > end.instant:
            raise ValidationError(_WINDOW_ORDER, "to_date")


class PageQuerySchema(StrictSchema):
    limit = QueryInteger(
        load_default=25, validate=validate.Range(min=1, max=100, error=_PAGE_RANGE)
    )
    # A malformed cursor is a 400 invalid_cursor like a tampered one, so the pattern is
    # documented here and checked with the signature.
    cursor = Text(
        validate=_name(1024),
        metadata={
            "description": "next_cursor of the previous page, unchanged.",
            "pattern": r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
        },
    )


class AccountListQuerySchema(PageQuerySchema):
    platform = Text(
        validate=validate.OneOf(
            PLATFORMS,
            error=coded("Must be one of: " + ", ".join(PLATFORMS) + ".", "invalid_choice"),
        )
    )
    tenant_id = Text(validate=_name())


class PostListQuerySchema(PageQuerySchema):
    social_account_id = fields.UUID()
    source = Text(
        validate=validate.OneOf(
            ("imported", "published"),
            error=coded("Must be one of: imported, published.", "invalid_choice"),
        )
    )
    from_ = WindowBound(end=False, data_key="from")
    to = WindowBound(end=True)

    @validates_schema(skip_on_field_errors=False)
    def check_range_order(self, data: dict[str, Any], **kwargs: Any) -> None:
        start: Bound | None = data.get("from_")
        end: Bound | None = data.get("to")
        if start is not None and end is not None and start.instant > end.instant:
            raise ValidationError(_RANGE_ORDER, "to")


class AccountPostsQuerySchema(PostListQuerySchema):
    class Meta:
        unknown = RAISE
        exclude = ("social_account_id",)


# --- Responses (documentation) ---------------------------------------------------------


class ProblemItemSchema(Schema):
    field = fields.String(allow_none=True)
    message = fields.String()
    code = fields.String()


class ProblemSchema(Schema):
    type = fields.String(metadata={"example": "about:blank"})
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    code = fields.String()
    errors = fields.List(fields.Nested(ProblemItemSchema))


class AccountSchema(Schema):
    id = fields.UUID()
    platform = fields.String()
    tenant_id = fields.String(allow_none=True)
    username = fields.String()
    display_name = fields.String(allow_none=True)
    network_unique_id = fields.String()
    status = fields.String(metadata={"enum": ["active", "token_expired", "disconnected"]})
    api_base_url = fields.String(allow_none=True)
    token_expires_at = fields.String(allow_none=True)
    last_synced_at = fields.String(allow_none=True)
    created_at = fields.String()
    updated_at = fields.String()
    livemode = fields.Boolean()


class AccountListSchema(Schema):
    data = fields.List(fields.Nested(AccountSchema))
    next_cursor = fields.String(allow_none=True)


class ImportJobSchema(Schema):
    id = fields.String(metadata={"example": "imp_3c2b1a09d4e5f60718293a4b"})
    social_account_id = fields.UUID()
    tenant_id = fields.String(allow_none=True)
    status = fields.String(metadata={"enum": ["pending", "running", "completed", "failed"]})
    from_date = fields.String(allow_none=True)
    to_date = fields.String(allow_none=True)
    limit = fields.Integer()
    imported_count = fields.Integer(allow_none=True)
    error_message = fields.String(allow_none=True)
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)
    created_at = fields.String()
    livemode = fields.Boolean()


class ImportJobListSchema(Schema):
    data = fields.List(fields.Nested(ImportJobSchema))
    next_cursor = fields.String(allow_none=True)


class MediaSchema(Schema):
    type = fields.String()
    url = fields.String(allow_none=True)
    thumbnail_url = fields.String(allow_none=True)


class PostSchema(Schema):
    id = fields.UUID()
    social_account_id = fields.UUID()
    platform = fields.String()
    platform_post_id = fields.String()
    platform_post_url = fields.String(allow_none=True)
    content = fields.String()
    media = fields.List(fields.Nested(MediaSchema))
    published_at = fields.String()
    source = fields.String(metadata={"enum": ["imported", "published"]})
    import_id = fields.String(allow_none=True)
    metrics = fields.Dict()
    created_at = fields.String()
    livemode = fields.Boolean()


class PostListSchema(Schema):
    data = fields.List(fields.Nested(PostSchema))
    next_cursor = fields.String(allow_none=True)


class HealthSchema(Schema):
    ok = fields.Boolean(metadata={"description": "true when every check is ok."})
    service = fields.String(metadata={"example": "postfuze-imports"})
    version = fields.String(metadata={"description": "The version of the running service."})
    time = fields.String(metadata={"example": "2026-01-01T12:00:00.000Z"})
    checks = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        metadata={
            "description": (
                'Each dependency (postgres, redis) mapped to "ok", or to "unreachable: " '
                'and the error type, such as "unreachable: TimeoutError".'
            )
        },
    )
