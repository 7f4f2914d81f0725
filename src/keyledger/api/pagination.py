"""Cursor pagination: ``?limit=`` (1–500, default 50) and ``?cursor=`` (opaque, from ``next_cursor``).

Collections answer ``{"data": [...], "next_cursor": "…" | null}`` in a stable order (creation, then id).
The cursor names the last item seen, so pages do not shift when items are added at the end.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import Query

from keyledger.core.errors import Invalid

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class Page:
    def __init__(
        self,
        limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Items per page."),
        cursor: str | None = Query(None, max_length=200, description="next_cursor of the previous page."),
    ) -> None:
        self.limit = limit
        self.cursor = cursor


def _encode(item_id: str) -> str:
    return base64.urlsafe_b64encode(item_id.encode()).decode().rstrip("=")


def _decode(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise Invalid("cursor is not valid: pass next_cursor from the previous page unchanged") from None


def paginate(items: Sequence[Any], page: Page, key: Callable[[Any], str]) -> dict[str, Any]:
    start = 0
    if page.cursor:
        after = _decode(page.cursor)
        ids = [key(i) for i in items]
        if after not in ids:
            raise Invalid("cursor is not valid (or its item is gone): start again without a cursor")
        start = ids.index(after) + 1
    chunk = list(items[start:start + page.limit])
    more = start + page.limit < len(items)
    return {"data": chunk, "next_cursor": _encode(key(chunk[-1])) if more and chunk else None}
