"""Keys derived from POSTFUZE_SECRET_KEY: credential encryption, cursor signing, API keys."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from postfuze_imports.errors import InvalidCursor

API_KEY_PREFIX_LIVE = "sk_live_"
API_KEY_PREFIX_TEST = "sk_test_"


def _derive(secret_key: str, purpose: bytes) -> bytes:
    # HKDF (RFC 5869) gives each purpose its own key, so one leaked derived key does not
    # expose the others.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
        secret_key.encode("utf-8")
    )


class Secrets:
    """The keys one process derives from the configured secret."""

    def __init__(self, secret_key: str) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(secret_key, b"credentials v1")))
        self._cursor_key = _derive(secret_key, b"cursor v1")

    def encrypt_json(self, value: dict[str, Any]) -> bytes:
        return self._fernet.encrypt(json.dumps(value, separators=(",", ":")).encode("utf-8"))

    def decrypt_json(self, token: bytes) -> dict[str, Any]:
        try:
            value: dict[str, Any] = json.loads(self._fernet.decrypt(token))
        except InvalidToken:
            raise ValueError(
                "stored credentials cannot be decrypted; was POSTFUZE_SECRET_KEY changed?"
            ) from None
        return value

    def sign_cursor(self, payload: list[Any]) -> str:
        """Encode a keyset position as an opaque, tamper-evident cursor."""
        body = base64.urlsafe_b64encode(
            json.dumps(payload, separators=(",", ":")).encode("utf-8")
        ).rstrip(b"=")
        mac = hmac.new(self._cursor_key, body, hashlib.sha256).digest()[:16]
        return (body + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode("ascii")

    def verify_cursor(self, cursor: str) -> list[Any]:
        """Return the keyset position of a cursor made by `sign_cursor`; raise InvalidCursor."""
        try:
            body, mac = cursor.encode("ascii").split(b".", 1)
            expected = hmac.new(self._cursor_key, body, hashlib.sha256).digest()[:16]
            if not hmac.compare_digest(_unpad_b64(mac), expected):
                raise ValueError("signature mismatch")
            payload = json.loads(_unpad_b64(body))
        except (ValueError, UnicodeError, binascii.Error):
            raise InvalidCursor(
                "the cursor is invalid; pass next_cursor from a previous page unchanged"
            ) from None
        if not isinstance(payload, list):
            raise InvalidCursor("the cursor is invalid; pass next_cursor unchanged")
        return payload


def _unpad_b64(value: bytes) -> bytes:
    return base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4))


def generate_api_key(*, livemode: bool) -> str:
    prefix = API_KEY_PREFIX_LIVE if livemode else API_KEY_PREFIX_TEST
    return prefix + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> bytes:
    # Keys carry 256 random bits, so a fast hash resists guessing; no slow KDF is needed.
    return hashlib.sha256(key.encode("utf-8")).digest()
