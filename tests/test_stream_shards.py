"""`redis.stream_shards`: producers spread events over `<stream>:<i>`; alertd reads them all."""

from __future__ import annotations

import redis.asyncio as aioredis

from alertd.client import apublish, shard_stream
from tests.conftest import DaemonFactory, Receiver, wait_for
from tests.test_e2e import ROUTE, RULES, hook

SHARDS = "\nstream_shards = 3"


def queues(receiver: Receiver) -> set[str]:
    return {a["labels"]["queue"] for b in receiver.bodies("/hook") for a in b["alerts"]}


class TestShards:
    """Events on any shard, or on the stream itself, fire alike."""

    async def test_every_shard_and_the_stream_are_read(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.redis_extra = SHARDS
        daemons.write(RULES, hook(receiver), ROUTE)
        await daemons.start()
        for i, stream in enumerate(["alertd:events", *(f"alertd:events:{i}" for i in range(3))]):
            fields = {"name": "queue_depth", "value": "7000", "service": "s", "queue": f"q{i}"}
            await redis.xadd(stream, fields)
        await wait_for(lambda: {"q0", "q1", "q2", "q3"} == queues(receiver))

    async def test_dead_letter_names_its_stream(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.redis_extra = SHARDS
        daemons.write(RULES, hook(receiver), ROUTE)
        await daemons.start()
        await redis.xadd("alertd:events:2", {"value": "1"})  # no name
        [(_, letter)] = await wait_for(lambda: redis.xrange("alertd:dead"))
        assert b"alertd:events:2" == letter[b"stream"]
        assert 0 == (await redis.xpending("alertd:events:2", "alertd"))["pending"]

    async def test_client_spreads_by_labels(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.redis_extra = SHARDS
        daemons.write(RULES, hook(receiver), ROUTE)
        await daemons.start()
        labels = [{"service": "s", "queue": f"c{i}"} for i in range(12)]
        for one in labels:
            await apublish("queue_depth", 7000, one, client=redis, stream_shards=3)
        used = {shard_stream("alertd:events", 3, one) for one in labels}
        assert 1 < len(used)  # more than one shard took events
        for one in labels:  # the same labels always go to the same shard
            assert shard_stream("alertd:events", 3, one) == shard_stream("alertd:events", 3, one)
        await wait_for(lambda: {one["queue"] for one in labels} == queues(receiver))
