"""admit_rate.lua: a slot of the channel's sliding window, or a place in its held list."""

from __future__ import annotations

import redis.asyncio as aioredis

from alertd.storage import keys
from alertd.storage.scripts import lua

PREFIX = "t:"
SLOTS = keys.rate_slots(PREFIX, "hook")
HELD = keys.rate_held(PREFIX, "hook")
T0 = 1_700_000_000_000  # ms
PERIOD = 1_000


class TestAdmitRate:
    """A slot while the window has room and nothing is held; else the notification is held."""

    async def test_takes_slots_while_the_window_has_room_then_holds(
        self, redis: aioredis.Redis
    ) -> None:
        admit = redis.register_script(lua("admit_rate"))
        answers = [
            await admit(keys=[SLOTS, HELD], args=[T0 + i, PERIOD, 2, f"s{i}", f"n{i}"])
            for i in range(3)
        ]
        assert [1, 1, 0] == answers
        assert [(b"s0", T0), (b"s1", T0 + 1)] == await redis.zrange(SLOTS, 0, -1, withscores=True)
        assert [b"n2"] == await redis.lrange(HELD, 0, -1)
        assert 900 < await redis.pttl(SLOTS) <= PERIOD

    async def test_nothing_is_admitted_while_older_notifications_are_held(
        self, redis: aioredis.Redis
    ) -> None:
        admit = redis.register_script(lua("admit_rate"))
        await redis.rpush(HELD, "n0")  # waiting for the next digest
        assert 0 == await admit(keys=[SLOTS, HELD], args=[T0, PERIOD, 2, "s1", "n1"])
        assert [b"n0", b"n1"] == await redis.lrange(HELD, 0, -1)
        assert 0 == await redis.zcard(SLOTS)

    async def test_a_slot_leaves_the_window_once_a_period_old(self, redis: aioredis.Redis) -> None:
        admit = redis.register_script(lua("admit_rate"))
        assert 1 == await admit(keys=[SLOTS, HELD], args=[T0, PERIOD, 1, "s0", "n0"])
        later = T0 + PERIOD - 1
        assert 0 == await admit(keys=[SLOTS, HELD], args=[later, PERIOD, 1, "s1", "n1"])
        await redis.delete(HELD)  # a digest sent it
        later = T0 + PERIOD  # as RateLimiter.flush counts: a slot this old is out
        assert 1 == await admit(keys=[SLOTS, HELD], args=[later, PERIOD, 1, "s2", "n2"])
        assert [(b"s2", later)] == await redis.zrange(SLOTS, 0, -1, withscores=True)
