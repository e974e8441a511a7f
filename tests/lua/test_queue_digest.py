"""queue_digest.lua: the digest of what a channel holds, queued once, with a slot."""

from __future__ import annotations

import redis.asyncio as aioredis

from alertd.storage import keys
from alertd.storage.scripts import lua

PREFIX = "t:"
SLOTS = keys.rate_slots(PREFIX, "hook")
HELD = keys.rate_held(PREFIX, "hook")
STREAM = "t:outbox:hook"
KEYS = [SLOTS, HELD, STREAM]
T0 = 1_700_000_000_000  # ms
PERIOD = 1_000


async def queued(redis: aioredis.Redis) -> list[bytes]:
    return [fields[b"n"] for _, fields in await redis.xrange(STREAM)]


class TestQueueDigest:
    """Queued only with room and an unmoved held list; what it stands for leaves the list."""

    async def test_queues_the_digest_trims_what_it_stood_for_and_takes_a_slot(
        self, redis: aioredis.Redis
    ) -> None:
        digest = redis.register_script(lua("queue_digest"))
        await redis.rpush(HELD, "h1", "h2", "h3")
        assert 1 == await digest(keys=KEYS, args=[T0, PERIOD, 1, "d1", 2, "h1", "h2", "D"])
        assert [b"D"] == await queued(redis)
        assert [b"h3"] == await redis.lrange(HELD, 0, -1)  # held after it was read
        assert [(b"d1", T0)] == await redis.zrange(SLOTS, 0, -1, withscores=True)
        assert 900 < await redis.pttl(SLOTS) <= PERIOD

    async def test_a_full_window_queues_nothing_until_its_slot_is_a_period_old(
        self, redis: aioredis.Redis
    ) -> None:
        digest = redis.register_script(lua("queue_digest"))
        await redis.rpush(HELD, "h1")
        await redis.zadd(SLOTS, {"s0": T0 - PERIOD + 1})
        assert 0 == await digest(keys=KEYS, args=[T0, PERIOD, 1, "d1", 1, "h1", "h1", "D"])
        assert [b"h1"] == await redis.lrange(HELD, 0, -1)
        assert [] == await queued(redis)
        assert 1 == await digest(keys=KEYS, args=[T0 + 1, PERIOD, 1, "d1", 1, "h1", "h1", "D"])
        assert [(b"d1", T0 + 1)] == await redis.zrange(SLOTS, 0, -1, withscores=True)

    async def test_a_held_list_that_moved_answers_minus_one(self, redis: aioredis.Redis) -> None:
        digest = redis.register_script(lua("queue_digest"))
        await redis.rpush(HELD, "h2", "h2")  # another replica sent h1; h2 was held twice
        assert -1 == await digest(keys=KEYS, args=[T0, PERIOD, 1, "d1", 2, "h1", "h2", "D"])
        await redis.delete(HELD)
        await redis.rpush(HELD, "h1", "h3")  # starts as read, no longer ends so
        assert -1 == await digest(keys=KEYS, args=[T0, PERIOD, 1, "d1", 2, "h1", "h2", "D"])
        assert [b"h1", b"h3"] == await redis.lrange(HELD, 0, -1)
        assert 0 == await redis.zcard(SLOTS)
        assert [] == await queued(redis)
