"""write_history.lua: notification history records, written only forward and indexed."""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aioredis

from alertd.notify.history import HistoryKeys, rank
from alertd.storage.scripts import lua

HKEYS = HistoryKeys("t:")
T0 = 1_700_000_000.25
AT = "2023-11-14T22:13:21Z"  # delivered_at of a settled record


def record(outcome: str, **fields: Any) -> dict[str, Any]:
    return {"id": "n1", "outcome": outcome, "last_error": "", "delivered_at": None, **fields}


async def write(redis: aioredis.Redis, *items: tuple[str, float, dict[str, Any]]) -> None:
    """One script call, its ARGV built as History writes a batch."""
    args: list[Any] = []
    for m, queued_at, rec in items:
        args += [m, repr(queued_at), rank(rec), orjson.dumps(rec)]
    script = redis.register_script(lua("write_history"))
    await script(keys=[HKEYS.records, HKEYS.index], args=args)


async def stored(redis: aioredis.Redis, m: str = "hook n1") -> Any:
    raw = await redis.hget(HKEYS.records, m)
    return None if raw is None else orjson.loads(raw)


class TestWriteHistory:
    """Each record is written and indexed unless the stored one is further on."""

    async def test_writes_the_record_and_indexes_it_by_when_queued(
        self, redis: aioredis.Redis
    ) -> None:
        await write(redis, ("hook n1", T0, record("pending")))
        assert record("pending") == await stored(redis)
        assert T0 == await redis.zscore(HKEYS.index, "hook n1")
        await write(redis, ("hook n1", T0, record("delivered", delivered_at=AT)))
        assert "delivered" == (await stored(redis))["outcome"]

    async def test_pending_landing_after_delivered_does_not_overwrite_it(
        self, redis: aioredis.Redis
    ) -> None:
        delivered = record("delivered", attempts=1, delivered_at=AT)
        await write(redis, ("hook n1", T0, delivered))
        await write(redis, ("hook n1", T0, record("pending", attempts=0)))
        assert delivered == await stored(redis)

    async def test_a_settled_record_is_not_overwritten_by_an_unsettled_one_of_its_outcome(
        self, redis: aioredis.Redis
    ) -> None:
        await write(redis, ("hook n1", T0, record("held")))
        noted = record("held", digest="d1")  # the limiter's note: same outcome, rewritten
        await write(redis, ("hook n1", T0, noted))
        assert noted == await stored(redis)
        for settled in (
            record("held", digest="d1", delivered_at=AT),
            record("held", digest="d1", last_error="503 from the receiver"),
        ):
            await write(redis, ("hook n1", T0, settled))
            await write(redis, ("hook n1", T0, noted))
            assert settled == await stored(redis)

    async def test_each_record_of_a_call_is_judged_on_its_own(self, redis: aioredis.Redis) -> None:
        delivered = record("delivered", delivered_at=AT)
        await write(redis, ("hook n1", T0, delivered))
        other = record("pending", id="n2")
        await write(redis, ("hook n1", T0, record("pending")), ("hook n2", T0 + 1, other))
        assert delivered == await stored(redis)
        assert other == await stored(redis, "hook n2")
        assert T0 + 1 == await redis.zscore(HKEYS.index, "hook n2")
