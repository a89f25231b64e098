"""The one timestamp format of the API and of webhook bodies."""

from __future__ import annotations

from datetime import UTC, datetime


def format_timestamp(value: datetime) -> str:
    """Format an instant as UTC with milliseconds, `Z` and a four-digit year."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_optional_timestamp(value: datetime | None) -> str | None:
    return None if value is None else format_timestamp(value)
