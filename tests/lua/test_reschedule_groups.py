"""reschedule_groups.lua: after a reload, every group flushed before is due again now."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from alertd.storage import keys
from alertd.storage.scripts import lua
from tests.lua.conftest import SLOT, SlotHarness
from tests.lua.touched import watch
from tests.test_dispatch import PREFIX, T0, Harness, write_config

DUE = keys.groups_due(PREFIX)


@pytest.fixture
async def h(redis: aioredis.Redis, tmp_path: Path) -> Harness:
    return Harness(redis, write_config(tmp_path))


async def group(redis: aioredis.Redis, gid: str, due: float, **fields: str) -> None:
    await redis.hset(keys.group(PREFIX, gid), mapping={"key": gid, **fields})
    await redis.zadd(DUE, {gid: due})


async def reschedule(redis: aioredis.Redis, now: float, *gids: str) -> int:
    script = redis.register_script(lua("reschedule_groups"))
    groups = [keys.group(PREFIX, gid) for gid in gids]
    result: int = await script(keys=[DUE, *groups], args=[repr(now), *gids])
    return result


class TestRescheduleGroups:
    """Groups flushed before become due now, never later; groups in group_wait keep it."""

    async def test_flushed_groups_due_now_others_keep_group_wait(
        self, redis: aioredis.Redis
    ) -> None:
        await group(redis, "flushed", T0 + 3600, last_flush=repr(T0 - 10))
        await group(redis, "waiting", T0 + 5)
        assert 0 == await reschedule(redis, T0, "flushed", "waiting", "x")
        expected = [(b"flushed", T0), (b"waiting", T0 + 5)]
        assert expected == await redis.zrange(DUE, 0, -1, withscores=True)

    async def test_a_group_due_earlier_stays_earlier(self, redis: aioredis.Redis) -> None:
        await group(redis, "late", T0 - 30, last_flush=repr(T0 - 60))
        await reschedule(redis, T0, "late")
        assert T0 - 30 == await redis.zscore(DUE, "late")

    async def test_reschedule_all_takes_every_due_group(self, h: Harness) -> None:
        await group(h.redis, "a", T0 + 3600, last_flush=repr(T0))
        await group(h.redis, "b", T0 + 7200, last_flush=repr(T0))
        await h.dispatcher.reschedule_all(T0 + 1)
        assert [(b"a", T0 + 1), (b"b", T0 + 1)] == await h.redis.zrange(DUE, 0, -1, withscores=True)


class TestDeclaredKeys:
    """On the partition's Cluster slot, every key a rescheduling touches is one it declared."""

    async def test_every_key_touched_is_declared(self, slot: SlotHarness) -> None:
        for gid in ("a", "b"):
            await slot.redis.hset(slot.store.group_key(gid), "last_flush", repr(T0))
            await slot.redis.zadd(slot.store.due_key, {gid: T0 + 3600})
        async with watch(slot.redis) as seen:
            await slot.dispatcher.reschedule_all(T0 + 1)
        assert set() == seen.undeclared
        s = slot.store
        assert {s.due_key, s.group_key("a"), s.group_key("b")} == {k.decode() for k in seen.touched}
        assert {SLOT} == {key_slot(k) for k in seen.declared}
