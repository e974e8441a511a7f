"""file_alerts.lua: filings of the alert changes into a partition's groups, each once and
in order; a refresh only brings an existing copy up to date."""

from __future__ import annotations

import orjson
import redis.asyncio as aioredis

from alertd.storage import keys
from alertd.storage.scripts import lua
from tests.test_dispatch import PREFIX, T0

DUE, URGENT = keys.groups_due(PREFIX), keys.groups_urgent(PREFIX)
COPIES, SEQ = keys.alert_copies(PREFIX), keys.alert_copies_seq(PREFIX)
FIXED = [DUE, URGENT, COPIES, SEQ]


def filing(seq: int, alert: str, *, refresh: bool = False, page: bool = False) -> list[object]:
    """A filing of fp1 into group g1 (places 5, 6, 7: ag:fp1, group:g1, gm:g1)."""
    target = ["g1", "{}:g1", "{}", "r0", "5.0", "10.0", 6, 7]
    return [
        "fp1",
        seq,
        alert,
        repr(T0),
        [target],
        "0",
        "1" if page else "0",
        5,
        "1" if refresh else "0",
    ]


async def file(redis: aioredis.Redis, *filings: list[object]) -> list[int]:
    script = redis.register_script(lua("file_alerts"))
    call = [*FIXED, keys.alert_groups(PREFIX, "fp1"), keys.group(PREFIX, "g1")]
    call.append(keys.group_members(PREFIX, "g1"))
    result: list[int] = await script(keys=call, args=[orjson.dumps(list(filings))])
    return result


class TestFileAlerts:
    async def test_files_copy_membership_and_schedule(self, redis: aioredis.Redis) -> None:
        assert [1] == await file(redis, filing(3, "A3", page=True))
        assert (b"A3", b"3") == (await redis.hget(COPIES, "fp1"), await redis.hget(SEQ, "fp1"))
        assert {b"fp1"} == await redis.smembers(keys.group_members(PREFIX, "g1"))
        assert {b"g1"} == await redis.smembers(keys.alert_groups(PREFIX, "fp1"))
        assert T0 + 5 == await redis.zscore(DUE, "g1")
        assert T0 + 5 == await redis.zscore(URGENT, "g1")

    async def test_an_older_or_the_same_filing_is_skipped(self, redis: aioredis.Redis) -> None:
        assert [1] == await file(redis, filing(3, "A3"))
        await redis.zadd(DUE, {"g1": T0 + 99})
        assert [0, 0] == await file(redis, filing(3, "A3"), filing(2, "A2"))
        assert b"A3" == await redis.hget(COPIES, "fp1")
        assert T0 + 99 == await redis.zscore(DUE, "g1")

    async def test_a_refresh_updates_a_copy_and_schedules_nothing(
        self, redis: aioredis.Redis
    ) -> None:
        assert [0] == await file(redis, filing(1, "A1", refresh=True))  # no copy: nothing
        assert (None, 0) == (await redis.hget(COPIES, "fp1"), await redis.zcard(DUE))
        assert [1, 1] == await file(redis, filing(2, "A2"), filing(3, "A3", refresh=True))
        assert b"A3" == await redis.hget(COPIES, "fp1")
        assert T0 + 5 == await redis.zscore(DUE, "g1")  # the filing's, not moved by the refresh
