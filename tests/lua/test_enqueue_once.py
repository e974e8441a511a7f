"""enqueue_once.lua: set a marker key and queue notifications, only the first time."""

from __future__ import annotations

import orjson
import redis.asyncio as aioredis

from alertd.notify.outbox import Outbox
from alertd.storage.partitions import Partitions
from alertd.storage.scripts import lua
from tests.test_delivery import make_notification

PREFIX = "t:"


async def queued_ids(redis: aioredis.Redis, outbox: Outbox, channel: str) -> list[str]:
    rows = await redis.xrange(outbox.stream(channel))
    return [orjson.loads(fields[b"n"])["id"] for _, fields in rows]


class TestEnqueueOnce:
    """The marker is set and the notifications queued together, or neither when it exists."""

    async def test_first_call_sets_the_key_and_queues_on_every_stream(
        self, redis: aioredis.Redis
    ) -> None:
        outbox = Outbox(Partitions.single(redis, PREFIX))
        hook, pager = make_notification("hook"), make_notification("pager")
        assert await outbox.enqueue_once("t:once", b"v1", 60, [hook, pager])
        assert b"v1" == await redis.get("t:once")
        assert 50 < await redis.ttl("t:once") <= 60
        assert [hook.id] == await queued_ids(redis, outbox, "hook")
        assert [pager.id] == await queued_ids(redis, outbox, "pager")

    async def test_second_call_queues_nothing_and_keeps_the_first_value(
        self, redis: aioredis.Redis
    ) -> None:
        outbox = Outbox(Partitions.single(redis, PREFIX))
        first, second = make_notification("hook", "a"), make_notification("hook", "b")
        assert await outbox.enqueue_once("t:once", b"v1", 60, [first])
        assert not await outbox.enqueue_once("t:once", b"v2", 60, [second])
        assert b"v1" == await redis.get("t:once")
        assert [first.id] == await queued_ids(redis, outbox, "hook")

    async def test_an_expired_marker_lets_the_next_call_through(
        self, redis: aioredis.Redis
    ) -> None:
        script = redis.register_script(lua("enqueue_once"))
        assert 1 == await script(keys=["t:once", "t:s"], args=["v1", 60, "n1"])
        await redis.delete("t:once")  # as when its ttl ran out
        assert 1 == await script(keys=["t:once", "t:s"], args=["v2", 60, "n2"])
        assert [b"n1", b"n2"] == [f[b"n"] for _, f in await redis.xrange("t:s")]
