"""enqueue_if.lua: take a key holding an expected value and queue notifications with it."""

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


class TestEnqueueIf:
    """Queued only when the key holds the value, and then the key is deleted in the same step."""

    async def test_matching_value_deletes_the_key_and_queues(self, redis: aioredis.Redis) -> None:
        outbox = Outbox(Partitions.single(redis, PREFIX))
        hook, pager = make_notification("hook"), make_notification("pager")
        await redis.set("t:episode", b"e1")
        assert await outbox.enqueue_if("t:episode", b"e1", [hook, pager])
        assert None is await redis.get("t:episode")
        assert [hook.id] == await queued_ids(redis, outbox, "hook")
        assert [pager.id] == await queued_ids(redis, outbox, "pager")

    async def test_other_value_leaves_the_key_and_queues_nothing(
        self, redis: aioredis.Redis
    ) -> None:
        outbox = Outbox(Partitions.single(redis, PREFIX))
        await redis.set("t:episode", b"e2")
        assert not await outbox.enqueue_if("t:episode", b"e1", [make_notification("hook")])
        assert b"e2" == await redis.get("t:episode")
        assert [] == await queued_ids(redis, outbox, "hook")

    async def test_missing_key_queues_nothing_and_only_once(self, redis: aioredis.Redis) -> None:
        script = redis.register_script(lua("enqueue_if"))
        assert 0 == await script(keys=["t:episode", "t:s"], args=["e1", "n0"])
        await redis.set("t:episode", "e1")
        assert 1 == await script(keys=["t:episode", "t:s"], args=["e1", "n1"])
        assert 0 == await script(keys=["t:episode", "t:s"], args=["e1", "n2"])
        assert [b"n1"] == [f[b"n"] for _, f in await redis.xrange("t:s")]
