"""The project's exception hierarchy.

API errors carry their HTTP status and stable problem code; one middleware turns them
into problem+json. Provider errors describe what a network did, so the job runner can
decide between retrying, waiting and failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class PostfuzeError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigurationError(PostfuzeError):
    """A setting is missing or invalid."""


# --- API errors -------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldProblem:
    """One item of a 422 body's `errors` list."""

    field: str | None
    message: str
    code: str


class ApiError(PostfuzeError):
    """An error with an HTTP status and a stable machine code."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(status={self.status}, code={self.code!r}, detail={self.detail!r})"


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class InvalidJson(ApiError):
    status = 400
    code = "invalid_json"


class InvalidCursor(ApiError):
    status = 400
    code = "invalid_cursor"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="postfuze-imports"'})


class InsufficientScope(ApiError):
    status = 403
    code = "insufficient_scope"

    def __init__(self, scope: str) -> None:
        super().__init__(
            f"this API key lacks the {scope!r} scope this request needs",
            extra={"required_scope": scope},
        )


class NotFound(ApiError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class ValidationFailed(ApiError):
    status = 422
    code = "validation_failed"

    def __init__(self, problems: Sequence[FieldProblem], detail: str | None = None) -> None:
        count = len(problems)
        super().__init__(
            detail or f"the request has {count} invalid field{'s' if count != 1 else ''}"
        )
        self.problems = list(problems)


class IdempotencyKeyReused(ApiError):
    status = 422
    code = "idempotency_key_reused"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"


class ServiceUnavailable(ApiError):
    status = 503
    code = "service_unavailable"


# --- Job and provider errors ----------------------------------------------------------


class LeaseLost(PostfuzeError):
    """The worker no longer owns the job: another worker claimed it after the lease expired."""


class ProviderError(PostfuzeError):
    """A failed network request. Subclasses tell whether retrying can help."""


class ProviderRateLimited(ProviderError):
    """The network asked us to wait `retry_after` seconds before the next request."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderTransientError(ProviderError):
    """A timeout, a connection failure or a 5xx: the same request may succeed later."""


class ProviderAuthError(ProviderError):
    """The network rejected the account's credentials and refreshing them did not help."""


class ProviderPermanentError(ProviderError):
    """The network rejected the request in a way that retrying cannot fix."""


class OutboundBlocked(ProviderError):
    """The outbound guard rejected a URL or the address it resolved to."""
