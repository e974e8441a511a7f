"""due_alerts.lua: the live alerts whose next clock judgement is due."""

from __future__ import annotations

import redis.asyncio as aioredis

from alertd.alerts import AlertStore
from alertd.storage import keys
from alertd.storage.partitions import Partitions
from alertd.storage.scripts import lua

PREFIX = "t:"


class TestDueAlerts:
    """By `now`, oldest due first, at most `limit`, each with its stored alert (nil if gone)."""

    async def test_only_due_entries_oldest_first_with_their_alerts(
        self, redis: aioredis.Redis
    ) -> None:
        await redis.zadd(keys.alerts_clock(PREFIX), {"late": 300, "b": 200, "a": 100, "gone": 150})
        await redis.hset(keys.alerts(PREFIX), mapping={"a": "A", "b": "B", "late": "L"})
        due = redis.register_script(lua("due_alerts"))
        answer = await due(keys=[keys.alerts_clock(PREFIX), keys.alerts(PREFIX)], args=[200, 10])
        assert [[b"a", b"gone", b"b"], [b"A", None, b"B"]] == answer

    async def test_at_most_limit(self, redis: aioredis.Redis) -> None:
        await redis.zadd(keys.alerts_clock(PREFIX), {"a": 1, "b": 2, "c": 3})
        await redis.hset(keys.alerts(PREFIX), mapping={"a": "A", "b": "B", "c": "C"})
        due = redis.register_script(lua("due_alerts"))
        answer = await due(keys=[keys.alerts_clock(PREFIX), keys.alerts(PREFIX)], args=[10, 2])
        assert [[b"a", b"b"], [b"A", b"B"]] == answer

    async def test_nothing_due(self, redis: aioredis.Redis) -> None:
        store = AlertStore(Partitions.single(redis, PREFIX))
        await redis.zadd(keys.alerts_clock(PREFIX), {"a": 100})
        due = redis.register_script(lua("due_alerts"))
        assert [[], []] == await due(
            keys=[keys.alerts_clock(PREFIX), keys.alerts(PREFIX)], args=[99, 10]
        )
        assert [] == await store.due(99)
