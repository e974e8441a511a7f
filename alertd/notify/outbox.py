"""The durable outbox: one Redis stream per channel, read by a consumer group.

A notification is added here before its first attempt and removed (XACK +
XDEL) only after it was delivered or moved to the dead-letter stream. A
crashed worker's entries stay pending and are claimed by a live one, with
the same notification id.
"""

from __future__ import annotations

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from alertd.model import Notification

GROUP = "alertd"


class Outbox:
    def __init__(self, redis: Redis, key_prefix: str) -> None:
        self.redis = redis
        self.prefix = key_prefix
        self._groups: set[str] = set()

    def stream(self, channel: str) -> str:
        return f"{self.prefix}outbox:{channel}"

    async def ensure_group(self, channel: str) -> None:
        stream = self.stream(channel)
        if stream in self._groups:
            return
        try:
            await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(stream)

    def add_to(self, pipe: Pipeline | Redis, n: Notification) -> None:
        """Queue the XADD of `n` on a pipeline (so it commits with other writes)."""
        pipe.xadd(self.stream(n.receiver), {"n": orjson.dumps(n.to_dict())})

    async def enqueue(self, n: Notification) -> None:
        await self.ensure_group(n.receiver)
        await self.redis.xadd(self.stream(n.receiver), {"n": orjson.dumps(n.to_dict())})

    async def read(
        self, channel: str, consumer: str, count: int, block_ms: int, pending: bool = False
    ) -> list[tuple[str, Notification | None]]:
        """New entries (or, with pending=True, this consumer's own unacknowledged ones)."""
        try:
            rows = await self.redis.xreadgroup(
                GROUP,
                consumer,
                {self.stream(channel): "0" if pending else ">"},
                count=count,
                block=None if pending else block_ms,
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # Redis lost its data (restart without persistence)
                self._groups.discard(self.stream(channel))
            raise
        return [(eid, n) for _, entries in rows or [] for eid, n in map(self._decode, entries)]

    async def claim(
        self, channel: str, consumer: str, min_idle_ms: int, count: int = 100
    ) -> list[tuple[str, Notification | None]]:
        """Entries a dead worker left pending longer than min_idle_ms."""
        res = await self.redis.xautoclaim(
            self.stream(channel),
            GROUP,
            consumer,
            min_idle_time=min_idle_ms,
            start_id="0-0",
            count=count,
        )
        return [self._decode(e) for e in res[1] if e[1] is not None]

    @staticmethod
    def _decode(entry: tuple[bytes, dict[bytes, bytes] | None]) -> tuple[str, Notification | None]:
        eid, fields = entry
        raw = (fields or {}).get(b"n")
        try:
            return eid.decode(), Notification.from_dict(orjson.loads(raw)) if raw else None
        except (ValueError, KeyError, TypeError):
            return eid.decode(), None

    def done_on(self, pipe: Pipeline, channel: str, entry_id: str) -> None:
        pipe.xack(self.stream(channel), GROUP, entry_id)
        pipe.xdel(self.stream(channel), entry_id)

    async def depth(self, channel: str) -> int:
        return int(await self.redis.xlen(self.stream(channel)))
