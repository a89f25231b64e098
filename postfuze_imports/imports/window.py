"""Parsing of an import's `from_date` / `to_date` into an inclusive UTC window."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

# RFC 3339 section 5.6 date-time with a mandatory offset; "T" and "Z" in either case.
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


@dataclass(frozen=True)
class Bound:
    """One end of a window: the text to echo and the instant it stands for."""

    echo: str
    instant: datetime
    is_date: bool


def format_timestamp(value: datetime) -> str:
    """Format an instant as the API does: UTC, milliseconds, `Z`."""
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    )


def parse_bound(text: str, *, end: bool) -> Bound:
    """Parse a date or an RFC 3339 date-time with an offset; raise ValueError otherwise.

    A date stands for the whole UTC day: as a start it is the day's first instant, as an
    end its last microsecond, so the end is inclusive through the end of that day.
    """
    if _DATE.match(text):
        day = date.fromisoformat(text)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        instant = start + timedelta(days=1) - timedelta(microseconds=1) if end else start
        return Bound(echo=text, instant=instant, is_date=True)
    match = _DATE_TIME.match(text)
    if not match:
        if re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}", text):
            raise ValueError("a date-time needs a UTC offset, such as Z or +02:00")
        raise ValueError("expected a date (2026-01-01) or an RFC 3339 date-time with an offset")
    day_text, hour, minute, second, fraction, offset = match.groups()
    fraction_digits = (fraction or ".0")[1:7].ljust(6, "0")
    normalized_offset = "+00:00" if offset in ("Z", "z") else offset
    instant = datetime.fromisoformat(
        f"{day_text}T{hour}:{minute}:{second}.{fraction_digits}{normalized_offset}"
    ).astimezone(UTC)
    return Bound(echo=format_timestamp(instant), instant=instant, is_date=False)
