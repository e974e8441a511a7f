"""Pages of a list answer: `?limit=N&cursor=C`, the answer's `next_cursor` when more follow.

A cursor is opaque to clients: the sort key of the last item of the page, so the
next page starts after it even when items came or went in between (none is shown
twice; one that sorts before the cursor and appeared meanwhile is not shown).
Without `limit` a page holds DEFAULT_LIMIT items: far more than a screen, and few
enough that one answer stays a few megabytes, whatever a producer did.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson
from aiohttp import web

from alertd.http.common import ApiError

DEFAULT_LIMIT = 10_000
MAX_LIMIT = 10_000
# Where a bare-list answer (Alertmanager's GET /api/v2/alerts) puts the next cursor.
NEXT_CURSOR_HEADER = "X-Next-Cursor"

T = TypeVar("T")
Key = Callable[[T], tuple[str, ...]]


def page_params(request: web.Request) -> tuple[int, tuple[str, ...] | None]:
    """(limit, the key after which the page starts) from the query; 400 when malformed."""
    raw = request.query.get("limit")
    limit = DEFAULT_LIMIT
    if raw is not None:
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise ApiError(400, "invalid limit", [f"limit must be 1 to {MAX_LIMIT}, got {raw!r}"])
        limit = int(raw)
    cursor = request.query.get("cursor")
    return limit, (decode_cursor(cursor) if cursor else None)


def encode_cursor(key: tuple[str, ...]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, ...]:
    try:
        key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        key = None
    if not isinstance(key, list) or not all(isinstance(k, str) for k in key):
        raise ApiError(400, "invalid cursor", ["pass the next_cursor of a previous answer"])
    return tuple(key)


def paginate(
    items: Sequence[T],
    key: Callable[[T], tuple[str, ...]],
    limit: int,
    after: tuple[str, ...] | None,
) -> tuple[list[T], str | None]:
    """The page of `items` (sorted by `key`) after `after`, and the cursor of the next one."""
    ordered = sorted(items, key=key)
    if after is not None:
        ordered = [i for i in ordered if key(i) > after]
    page = ordered[:limit]
    more = len(ordered) > limit
    return page, (encode_cursor(key(page[-1])) if more and page else None)


def with_next(body: dict[str, Any], next_cursor: str | None) -> dict[str, Any]:
    """The answer, with `next_cursor` only when another page follows (the usual shape else)."""
    if next_cursor is not None:
        body["next_cursor"] = next_cursor
    return body
