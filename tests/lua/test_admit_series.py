"""admit_series.lua: a rule's series admitted first come, up to max; idle ones make room."""

from __future__ import annotations

import redis.asyncio as aioredis

from alertd.storage import keys
from alertd.storage.scripts import lua

KEY = keys.admitted_series("t:", "Rule")
T0 = 1_800_000_000.0


async def admit(
    redis: aioredis.Redis, now: float, *fps: str, max_series: int = 2, stale_before: float = 0
) -> list[int]:
    script = redis.register_script(lua("admit_series"))
    args = [max_series, repr(now), repr(stale_before), 600, *fps]
    reply: list[int] = await script(keys=[KEY], args=args)
    return [int(x) for x in reply]


class TestAdmission:
    """Series are admitted first come up to max; the rest are refused, the admitted kept."""

    async def test_first_come_up_to_max(self, redis: aioredis.Redis) -> None:
        assert [2, 1, 1, 0] == await admit(redis, T0, "a", "b", "c")
        assert {b"a", b"b"} == set(await redis.zrange(KEY, 0, -1))
        assert 0 < await redis.ttl(KEY) <= 600

    async def test_an_admitted_series_stays_admitted_and_is_seen_again(
        self, redis: aioredis.Redis
    ) -> None:
        await admit(redis, T0, "a", "b")
        assert [2, 1, 0] == await admit(redis, T0 + 5, "a", "c")
        assert T0 + 5 == await redis.zscore(KEY, "a")


class TestIdleSeriesMakeRoom:
    """At the limit, series idle since before stale_before leave, and only then."""

    async def test_idle_series_leave_for_new_ones(self, redis: aioredis.Redis) -> None:
        await admit(redis, T0, "a")
        await admit(redis, T0 + 100, "b")
        assert [2, 1] == await admit(redis, T0 + 200, "c", stale_before=T0 + 50)
        assert {b"b", b"c"} == set(await redis.zrange(KEY, 0, -1))

    async def test_nothing_leaves_below_the_limit(self, redis: aioredis.Redis) -> None:
        await admit(redis, T0, "a")
        assert [2, 1] == await admit(redis, T0 + 200, "b", stale_before=T0 + 50)
        assert {b"a", b"b"} == set(await redis.zrange(KEY, 0, -1))
