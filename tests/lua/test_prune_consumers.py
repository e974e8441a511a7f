"""prune_consumers.lua: forgetting the outbox consumers of dead workers."""

from __future__ import annotations

import redis.asyncio as aioredis

from alertd.notify.outbox import GROUP, Outbox
from alertd.storage.partitions import Partitions
from alertd.storage.scripts import lua
from tests.test_delivery import make_notification

PREFIX = "t:"
HOUR_MS = 3_600_000


async def consumers(redis: aioredis.Redis, stream: str) -> list[str]:
    return sorted(c["name"].decode() for c in await redis.xinfo_consumers(stream, GROUP))


async def two_consumers(redis: aioredis.Redis, outbox: Outbox) -> str:
    """`busy` holds an entry; `idle` has read and holds nothing."""
    await outbox.enqueue(make_notification("hook"))
    await outbox.read("hook", "busy", count=10, block_ms=1)
    await outbox.read("hook", "idle", count=10, block_ms=1, pending=True)  # joins, reads nothing
    return outbox.stream("hook")


class TestPruneConsumers:
    """Only consumers with nothing pending and idle long enough are deleted, and named."""

    async def test_idle_consumer_with_nothing_pending_is_deleted(
        self, redis: aioredis.Redis
    ) -> None:
        outbox = Outbox(Partitions.single(redis, PREFIX))
        stream = await two_consumers(redis, outbox)
        assert ["idle"] == await outbox.prune_consumers("hook", 0)
        assert ["busy"] == await consumers(redis, stream)

    async def test_recently_active_consumers_are_kept(self, redis: aioredis.Redis) -> None:
        outbox = Outbox(Partitions.single(redis, PREFIX))
        stream = await two_consumers(redis, outbox)
        assert [] == await outbox.prune_consumers("hook", HOUR_MS)
        assert ["busy", "idle"] == await consumers(redis, stream)

    async def test_consumer_holding_entries_is_kept_however_idle(
        self, redis: aioredis.Redis
    ) -> None:
        outbox = Outbox(Partitions.single(redis, PREFIX))
        stream = await two_consumers(redis, outbox)
        prune = redis.register_script(lua("prune_consumers"))
        assert [b"idle"] == await prune(keys=[stream], args=[GROUP, 0])
        assert [] == await prune(keys=[stream], args=[GROUP, 0])
        assert 1 == (await redis.xpending(stream, GROUP))["pending"]
