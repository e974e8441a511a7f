"""Publishing events from Python: one validated `XADD` in the JSON entry form.

    from alertd.client import publish
    publish("queue_depth", 7000, {"service": "billing", "queue": "emails"})

The event is checked with the daemon's own validator first, so a mistake
raises `EventError` here instead of becoming a dead letter later. Without
`redis_url` the URL is `ALERTD_REDIS_URL`, else `redis://127.0.0.1:6379/0`.
Each call opens and closes its own connection unless `client=` passes one in;
publishers sending many events should pass a long-lived client.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
import redis
import redis.asyncio

from alertd.errors import EventError
from alertd.events import event_from_object

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_STREAM = "alertd:events"

Timestamp = float | int | str | datetime


def _redis_url(redis_url: str | None) -> str:
    return redis_url or os.environ.get("ALERTD_REDIS_URL") or DEFAULT_REDIS_URL


def entry_fields(
    name: str,
    value: float = 1.0,
    labels: Mapping[str, str] | None = None,
    ts: Timestamp | None = None,
) -> dict[str, bytes]:
    """The stream entry `{"data": <event JSON>}` for one event; EventError when invalid.

    Without `ts` the entry carries none, so the daemon takes the time in the
    entry's ID (Redis' clock), as for any entry without `ts`.
    """
    obj: dict[str, Any] = {"name": name, "value": value, "labels": dict(labels or {})}
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            raise EventError("ts must be a timezone-aware datetime")
        obj["ts"] = ts.timestamp()
    elif ts is not None:
        obj["ts"] = ts
    event = event_from_object(obj, time.time())
    data: dict[str, Any] = {"name": event.name, "value": event.value, "labels": event.labels}
    if ts is not None:
        data["ts"] = event.ts
    return {"data": orjson.dumps(data)}


def shard_stream(stream: str, shards: int, labels: Mapping[str, str] | None) -> str:
    """Where an event goes when the daemon reads `shards` shards `<stream>:<i>`
    (`redis.stream_shards`): a shard chosen by a hash of its labels, so one series
    stays in one shard, in order. With one shard, `stream` itself."""
    if shards <= 1:
        return stream
    digest = zlib.crc32(orjson.dumps(dict(labels or {}), option=orjson.OPT_SORT_KEYS))
    return f"{stream}:{digest % shards}"


def _entry_id(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def publish(
    name: str,
    value: float = 1.0,
    labels: Mapping[str, str] | None = None,
    ts: Timestamp | None = None,
    *,
    redis_url: str | None = None,
    stream: str = DEFAULT_STREAM,
    client: redis.Redis | None = None,
    stream_shards: int = 1,
) -> str:
    """Add one event to the stream; returns the entry ID. Raises EventError when invalid.

    `stream_shards`: the daemon's `redis.stream_shards` (the event goes to one shard).
    """
    fields = entry_fields(name, value, labels, ts)
    stream = shard_stream(stream, stream_shards, labels)
    if client is not None:
        return _entry_id(client.xadd(stream, fields))
    own = redis.Redis.from_url(_redis_url(redis_url), socket_connect_timeout=3, socket_timeout=10)
    try:
        return _entry_id(own.xadd(stream, fields))
    finally:
        own.close()


async def apublish(
    name: str,
    value: float = 1.0,
    labels: Mapping[str, str] | None = None,
    ts: Timestamp | None = None,
    *,
    redis_url: str | None = None,
    stream: str = DEFAULT_STREAM,
    client: redis.asyncio.Redis | None = None,
    stream_shards: int = 1,
) -> str:
    """`publish` for asyncio code (redis.asyncio)."""
    fields = entry_fields(name, value, labels, ts)
    stream = shard_stream(stream, stream_shards, labels)
    if client is not None:
        return _entry_id(await client.xadd(stream, fields))
    own = redis.asyncio.Redis.from_url(
        _redis_url(redis_url), socket_connect_timeout=3, socket_timeout=10
    )
    try:
        return _entry_id(await own.xadd(stream, fields))
    finally:
        await own.aclose()
