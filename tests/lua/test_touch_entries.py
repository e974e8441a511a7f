"""touch_entries.lua: a worker keeps the outbox entries it holds from looking abandoned."""

from __future__ import annotations

import redis.asyncio as aioredis

from alertd.notify.outbox import GROUP, Outbox
from alertd.storage.partitions import Partitions
from alertd.storage.scripts import lua
from tests.test_delivery import make_notification

PREFIX = "t:"
HOUR_MS = 3_600_000


async def pending(redis: aioredis.Redis, stream: str) -> dict[str, tuple[str, int, int]]:
    """entry id -> (consumer, idle ms, times delivered)."""
    rows = await redis.xpending_range(stream, GROUP, min="-", max="+", count=100)
    return {
        r["message_id"].decode(): (
            r["consumer"].decode(),
            r["time_since_delivered"],
            r["times_delivered"],
        )
        for r in rows
    }


async def read_two(redis: aioredis.Redis, outbox: Outbox) -> tuple[str, list[str]]:
    """Two entries read by consumer w1, both made to look idle for an hour."""
    for series in ("a", "b"):
        await outbox.enqueue(make_notification("hook", series))
    ids = [eid for eid, _ in await outbox.read("hook", "w1", count=10, block_ms=1)]
    stream = outbox.stream("hook")
    await redis.xclaim(stream, GROUP, "w1", 0, ids, idle=HOUR_MS, justid=True)
    return stream, ids


class TestTouchEntries:
    """Entries the consumer holds are made fresh again; the ids it no longer holds come back."""

    async def test_held_entries_are_no_longer_idle(self, redis: aioredis.Redis) -> None:
        outbox = Outbox(Partitions.single(redis, PREFIX))
        stream, ids = await read_two(redis, outbox)
        assert [] == await outbox.touch_many("hook", "w1", ids)
        after = await pending(redis, stream)
        assert {"w1"} == {after[i][0] for i in ids}
        assert all(after[i][1] < 60_000 for i in ids)
        assert [1, 1] == [after[i][2] for i in ids]  # a touch is not a delivery

    async def test_entries_claimed_by_another_consumer_are_lost_and_left_alone(
        self, redis: aioredis.Redis
    ) -> None:
        outbox = Outbox(Partitions.single(redis, PREFIX))
        stream, ids = await read_two(redis, outbox)
        await redis.xclaim(stream, GROUP, "w2", 0, [ids[1]], idle=HOUR_MS, justid=True)
        assert [ids[1]] == await outbox.touch_many("hook", "w1", ids)
        after = await pending(redis, stream)
        assert "w2" == after[ids[1]][0]
        assert after[ids[1]][1] >= HOUR_MS  # still looks abandoned: w1 did not touch it
        assert after[ids[0]][1] < 60_000

    async def test_acknowledged_entries_are_lost(self, redis: aioredis.Redis) -> None:
        outbox = Outbox(Partitions.single(redis, PREFIX))
        stream, ids = await read_two(redis, outbox)
        await redis.xack(stream, GROUP, ids[0])
        touch = redis.register_script(lua("touch_entries"))
        assert [ids[0].encode()] == await touch(keys=[stream], args=[GROUP, "w1", *ids])
        assert [ids[1]] == list(await pending(redis, stream))
