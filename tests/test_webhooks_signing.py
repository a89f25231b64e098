"""Unit tests of webhook signing, body serialization and the retry schedule.

Signatures are checked against the `standardwebhooks` package, a verifier written
outside this project.
"""

from __future__ import annotations

import base64
import json
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from postfuze_imports.db import queries
from postfuze_imports.timestamps import format_timestamp
from postfuze_imports.webhooks.events import serialize_body
from postfuze_imports.webhooks.schedule import (
    JITTER,
    MAX_ATTEMPTS,
    MAX_RETRY_AFTER,
    RETRY_DELAYS,
    parse_retry_after,
    retry_delay,
)
from postfuze_imports.webhooks.signing import generate_secret, secret_key, sign

NOW = datetime(2026, 6, 9, 12, 30, tzinfo=UTC)


def test_generated_secret_is_whsec_32_bytes() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert generate_secret() != secret


def test_sign_matches_standardwebhooks() -> None:
    secret = generate_secret()
    body = '{"id":"evt_1","data":{"note":"Café 東京 🎉"}}'.encode()
    timestamp = int(datetime.now(UTC).timestamp())
    signature = sign(secret, "evt_1", timestamp, body)
    headers = {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }

    assert signature.startswith("v1,")
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    moment = datetime.fromtimestamp(timestamp, UTC)
    assert signature == Webhook(secret).sign("evt_1", moment, body)


def test_sign_covers_id_timestamp_and_body() -> None:
    secret = generate_secret()
    body = b'{"a":1}'
    timestamp = int(datetime.now(UTC).timestamp())
    headers = {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, "evt_1", timestamp, body),
    }
    verifier = Webhook(secret)

    with pytest.raises(WebhookVerificationError):
        verifier.verify(b'{"a": 1}', headers)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body, {**headers, "webhook-id": "evt_2"})
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body, {**headers, "webhook-timestamp": str(timestamp - 1)})
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, headers)


def test_sign_known_vector() -> None:
    # From the openssl command line: HMAC-SHA256 of "msg_1.1700000000.{}" under the key
    # bytes 0x00 to 0x1f, base64-encoded.
    secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    signature = sign(secret, "msg_1", 1_700_000_000, b"{}")
    assert signature == "v1,fhksJF5ElKjlPoT/jtefCO5XjQPvhf7Dhf/8R1ad9yU="


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("c2VjcmV0", "must start with 'whsec_'"),
        ("whsec_not base64!", "followed by standard base64"),
        ("whsec_" + base64.b64encode(b"x" * 16).decode(), "24 to 64 bytes, not 16"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "24 to 64 bytes, not 65"),
    ],
)
def test_secret_key_rejects_malformed(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        secret_key(secret)


def test_secret_key_accepts_bounds() -> None:
    for size in (24, 64):
        key = bytes(range(size))
        assert secret_key("whsec_" + base64.b64encode(key).decode()) == key


def test_serialize_body_exact_text() -> None:
    created_at = datetime(2026, 6, 9, 12, 30, 0, 123_999, tzinfo=UTC)
    body = serialize_body("evt_1", "import.completed", created_at, {"note": "Café 🎉", "n": 1})

    assert body == (
        '{"id":"evt_1","type":"import.completed","created_at":"2026-06-09T12:30:00.123Z",'
        '"data":{"note":"Café 🎉","n":1}}'
    )


def test_serialize_body_rejects_nan() -> None:
    with pytest.raises(ValueError, match="Out of range float values"):
        serialize_body("evt_1", "import.completed", NOW, {"x": float("nan")})


def test_format_timestamp_converts_to_utc() -> None:
    utc = datetime(2026, 1, 1, 10, 0, 0, 5_999, tzinfo=UTC)
    assert format_timestamp(utc) == "2026-01-01T10:00:00.005Z"
    local = datetime.fromisoformat("2026-01-01T12:00:00.250+02:00")
    assert format_timestamp(local) == "2026-01-01T10:00:00.250Z"


def test_retry_delays_match_schedule() -> None:
    assert (
        timedelta(seconds=5),
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(hours=2),
        timedelta(hours=5),
        timedelta(hours=10),
        timedelta(hours=10),
    ) == RETRY_DELAYS
    assert MAX_ATTEMPTS == 8


class ExtremeRandom(random.Random):
    """Returns one end of every uniform range, to pin the jitter bounds."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


def test_retry_delay_jitter_bounds() -> None:
    for failed, base in enumerate(RETRY_DELAYS, start=1):
        assert retry_delay(failed, ExtremeRandom(high=False)) == base * (1 - JITTER)
        assert retry_delay(failed, ExtremeRandom(high=True)) == base * (1 + JITTER)
        seeded = random.Random(failed)
        for _ in range(50):
            delay = retry_delay(failed, seeded)
            assert delay is not None
            assert base * (1 - JITTER) <= delay <= base * (1 + JITTER)


def test_retry_delay_gives_up_after_schedule() -> None:
    assert retry_delay(len(RETRY_DELAYS) + 1, random.Random(0)) is None
    with pytest.raises(ValueError, match="at least 1"):
        retry_delay(0, random.Random(0))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", timedelta(seconds=120)),
        (" 5 ", timedelta(seconds=5)),
        ("0", timedelta(0)),
        ("86400", timedelta(hours=24)),
        ("86401", MAX_RETRY_AFTER),
        ("99999999999999999999", MAX_RETRY_AFTER),
        ("Tue, 09 Jun 2026 12:32:00 GMT", timedelta(minutes=2)),
        # The obsolete date formats that RFC 9110 requires recipients to accept.
        ("Tuesday, 09-Jun-26 12:32:00 GMT", timedelta(minutes=2)),
        ("Tue Jun  9 12:32:00 2026", timedelta(minutes=2)),
        ("Tue, 09 Jun 2026 12:00:00 GMT", timedelta(0)),
        ("Wed, 09 Jun 2027 12:00:00 GMT", MAX_RETRY_AFTER),
        (None, None),
        ("", None),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("٣", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: timedelta | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_every_webhook_query_exists() -> None:
    package = Path(__file__).resolve().parent.parent / "postfuze_imports" / "webhooks"
    used = {
        name
        for path in package.glob("*.py")
        for name in re.findall(r'\bq\("([a-z_0-9]+)"\)', path.read_text(encoding="utf-8"))
    }
    assert used
    assert used <= set(queries())
