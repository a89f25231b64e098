"""Keyset pagination with signed, opaque cursors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web

from postfuze_imports.api.context import services
from postfuze_imports.errors import InvalidCursor

T = TypeVar("T")


def decode_cursor(
    request: web.Request, cursor: str | None, kind: str
) -> tuple[datetime, str] | None:
    """Return the (timestamp, id) position a cursor of `kind` points after."""
    if cursor is None:
        return None
    payload = services(request).secrets.verify_cursor(cursor)
    try:
        cursor_kind, stamp, identifier = payload
        if cursor_kind != kind:
            raise ValueError("cursor of another list")
        return datetime.fromisoformat(stamp), str(identifier)
    except (ValueError, TypeError):
        raise InvalidCursor(
            "the cursor does not belong to this list; pass next_cursor from this list unchanged"
        ) from None


def page_body(
    request: web.Request,
    items: Sequence[T],
    *,
    limit: int,
    kind: str,
    position: Callable[[T], tuple[datetime, str]],
    render: Callable[[T], dict[str, Any]],
) -> dict[str, Any]:
    """Build `{"data": [...], "next_cursor": ...}` from up to `limit + 1` items."""
    visible = list(items[:limit])
    next_cursor = None
    if len(items) > limit and visible:
        stamp, identifier = position(visible[-1])
        next_cursor = services(request).secrets.sign_cursor([kind, stamp.isoformat(), identifier])
    return {"data": [render(item) for item in visible], "next_cursor": next_cursor}
