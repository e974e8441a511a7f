"""The dead-letter stream: what could not be processed or delivered.

Entries never hold a secret: notification errors are redacted (alertd.redact)
before they get here, and a notification's payload is the notification as
alertd stores it (its alerts and group, no channel settings), whole, so a
replay re-queues it with the same id. Event payloads are clipped to 64 KiB.
"""

from __future__ import annotations

import builtins
import time
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from alertd.model import Notification, rfc3339

MAX_PAYLOAD = 64 * 1024
MAX_LEN = 100_000  # the stream is trimmed (approximately) to this many entries


def _clip(text: str) -> str:
    data = text.encode()
    if len(data) <= MAX_PAYLOAD:
        return text
    return data[: MAX_PAYLOAD - 20].decode("utf-8", "ignore") + "...(truncated)"


class DeadLetters:
    def __init__(self, redis: Redis, stream: str) -> None:
        self.redis = redis
        self.stream = stream

    @staticmethod
    def event_fields(stream_id: str, payload: str, reason: str, stream: str) -> dict[str, str]:
        return {
            "source": "event",
            "reason": reason[:1000],
            "at": rfc3339(time.time()),
            "stream": stream,
            "stream_id": stream_id,
            "payload": _clip(payload),
        }

    @staticmethod
    def notification_fields(
        n: Notification, channel: str, reason: str, last_error: str
    ) -> dict[str, str]:
        return {
            "source": "notification",
            "reason": reason[:1000],
            "at": rfc3339(time.time()),
            "channel": channel,
            "notification_id": n.id,
            "attempts": str(n.attempts),
            "last_error": last_error[:1000],
            "payload": orjson.dumps(n.to_dict()).decode(),
        }

    def add_to(self, pipe: Pipeline, fields: dict[str, str]) -> None:
        """Queue the XADD of a dead letter on a pipeline (so it commits with other writes)."""
        pipe.xadd(self.stream, fields, maxlen=MAX_LEN, approximate=True)

    async def add(self, fields: dict[str, str]) -> str:
        entry_id = await self.redis.xadd(self.stream, fields, maxlen=MAX_LEN, approximate=True)
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def list(self, count: int = 100, source: str | None = None) -> list[dict[str, Any]]:
        rows = await self.redis.xrevrange(self.stream, count=max(1, min(count, 10_000)))
        out = []
        for entry_id, fields in rows:
            item: dict[str, Any] = {"id": entry_id.decode()}
            item.update({k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()})
            if item.get("attempts", "").isdigit():  # a count, as the API and --json show it
                item["attempts"] = int(item["attempts"])
            if source is None or item.get("source") == source:
                out.append(item)
        return out

    async def get(self, ids: builtins.list[str]) -> builtins.list[tuple[str, dict[str, str]]]:
        out = []
        for entry_id in ids:
            rows = await self.redis.xrange(self.stream, entry_id, entry_id)
            for eid, fields in rows:
                out.append(
                    (
                        eid.decode(),
                        {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()},
                    )
                )
        return out

    async def delete(self, ids: builtins.list[str]) -> None:
        if ids:
            await self.redis.xdel(self.stream, *ids)
