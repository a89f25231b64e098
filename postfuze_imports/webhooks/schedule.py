"""When a failed webhook delivery is attempted again, and when it is given up."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

# The wait after failed attempt number k is RETRY_DELAYS[k - 1]; the attempt after the
# last delay is the final one. The first six delays follow the example schedule of the
# Standard Webhooks specification.
RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
# Each delay is multiplied by a random factor in [1 - JITTER, 1 + JITTER], so deliveries
# that failed together (one receiver outage) do not all come back at the same moment.
JITTER = 0.2
# The maximum wait taken from a Retry-After header; a longer requested wait is capped.
MAX_RETRY_AFTER = timedelta(hours=24)
# An endpoint whose attempts have all failed for this long is disabled.
FAILING_DISABLE_AFTER = timedelta(days=5)


def retry_delay(failed_attempts: int, rng: random.Random) -> timedelta | None:
    """Return the jittered wait after `failed_attempts` failures, or None to give up."""
    if failed_attempts < 1:
        raise ValueError(f"failed_attempts must be at least 1, not {failed_attempts}")
    if failed_attempts > len(RETRY_DELAYS):
        return None
    factor = rng.uniform(1 - JITTER, 1 + JITTER)
    return RETRY_DELAYS[failed_attempts - 1] * factor


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """Return the wait that a `Retry-After` value requests, capped at MAX_RETRY_AFTER.

    RFC 9110, section 10.2.3: the value is either a number of seconds (`1*DIGIT`) or an
    HTTP-date. A date in the past means no wait. Returns None for a missing or
    malformed value, so the caller falls back to its own schedule.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        # int() of a long digit string is slow; any value this long is over the cap.
        if len(text) > 9:
            return MAX_RETRY_AFTER
        return min(timedelta(seconds=int(text)), MAX_RETRY_AFTER)
    try:
        moment = parsedate_to_datetime(text)
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        # An HTTP-date is always in GMT; the asctime form carries no zone of its own.
        moment = moment.replace(tzinfo=UTC)
    return min(max(moment - now, timedelta(0)), MAX_RETRY_AFTER)
