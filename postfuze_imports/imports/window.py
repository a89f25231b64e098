"""Parsing of an import's `from_date` / `to_date` into an inclusive UTC window."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from postfuze_imports.timestamps import format_timestamp

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


# The instants a window may name. PostgreSQL stores Python's datetime.min and max as
# -infinity and infinity, and social networks hold nothing from before 1900.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
_RANGE_MESSAGE = "must be between 1900-01-01 and 9999-12-30 (UTC)"


def parse_bound(text: str, *, end: bool) -> Bound:
    """Parse a date or an RFC 3339 date-time with an offset; raise ValueError otherwise.

    A date stands for the whole UTC day: as a start it is the day's first instant, as an
    end its last microsecond, so the end is inclusive through the end of that day.
    """
    try:
        bound = _parse(text, end=end)
    except OverflowError:
        raise ValueError(_RANGE_MESSAGE) from None
    if not EARLIEST <= bound.instant <= LATEST:
        raise ValueError(_RANGE_MESSAGE)
    return bound


def _parse(text: str, *, end: bool) -> Bound:
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
