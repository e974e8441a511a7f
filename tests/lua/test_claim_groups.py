"""claim_groups.lua: leasing due groups to one flush, and reading what it needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from alertd.storage import keys
from alertd.storage.scripts import lua
from tests.lua.conftest import SLOT, SlotHarness
from tests.lua.touched import watch
from tests.test_dispatch import PREFIX, T0, Harness, write_config

DUE = keys.groups_due(PREFIX)
COPIES = keys.alert_copies(PREFIX)
URGENT = keys.groups_urgent(PREFIX)
ROUTES = orjson.dumps({"r0": ["hook", "pager"], "": ["other"]})


@pytest.fixture
async def h(redis: aioredis.Redis, tmp_path: Path) -> Harness:
    return Harness(redis, write_config(tmp_path))


async def group(redis: aioredis.Redis, gid: str, due: float, **fields: str) -> None:
    await redis.hset(keys.group(PREFIX, gid), mapping={"key": f"{{}}:{gid}", **fields})
    await redis.zadd(DUE, {gid: due})


async def claim(
    redis: aioredis.Redis,
    now: float,
    token: str,
    limit: int = 10,
    lease_s: float = 30,
    urgent_only: bool = False,
) -> tuple[int, list[Any]]:
    script = redis.register_script(lua("claim_groups"))
    args = [PREFIX, repr(now), repr(now + lease_s), token, limit, ROUTES, int(urgent_only)]
    count, rows = await script(keys=[DUE, COPIES, URGENT], args=args)
    return count, rows


def gids(rows: list[Any]) -> list[bytes]:
    return rows[::5]


class TestClaimGroups:
    """Only due groups nobody else holds are leased, read with members, alerts and logs."""

    async def test_only_due_groups_are_leased(self, redis: aioredis.Redis) -> None:
        await group(redis, "g1", T0)
        await group(redis, "g2", T0 + 10)
        count, rows = await claim(redis, T0 + 1, "A:0")
        assert (1, [b"g1"]) == (count, gids(rows))
        leased = await redis.hmget(keys.group(PREFIX, "g1"), "lease", "lease_until")
        assert [b"A:0", b"%r" % (T0 + 31)] == leased
        assert [(b"g2", T0 + 10), (b"g1", T0 + 31)] == await redis.zrange(
            DUE, 0, -1, withscores=True
        )
        assert None is await redis.hget(keys.group(PREFIX, "g2"), "lease")

    async def test_group_leased_by_another_token_is_skipped_until_the_lease_ends(
        self, redis: aioredis.Redis
    ) -> None:
        await group(redis, "g1", T0, lease="B:0", lease_until=repr(T0 + 20))
        count, rows = await claim(redis, T0 + 1, "A:0")
        assert (1, []) == (count, rows)
        assert b"B:0" == await redis.hget(keys.group(PREFIX, "g1"), "lease")
        assert T0 + 20 == await redis.zscore(DUE, "g1")
        count, rows = await claim(redis, T0 + 20, "A:1")  # B's lease has run out
        assert [b"g1"] == gids(rows)
        assert b"A:1" == await redis.hget(keys.group(PREFIX, "g1"), "lease")

    async def test_reads_members_their_alerts_and_the_routes_channel_logs(
        self, redis: aioredis.Redis
    ) -> None:
        await group(redis, "g1", T0, route="r0")
        await group(redis, "g2", T0, route="r9")  # a route not in the map: ''
        await redis.sadd(keys.group_members(PREFIX, "g1"), "f1", "f2")
        await redis.hset(COPIES, "f1", "A1")
        await redis.set(keys.nflog(PREFIX, "hook", "g1"), "L1")
        await redis.set(keys.nflog(PREFIX, "other", "g2"), "L2")
        _, rows = await claim(redis, T0, "A:0")
        by_gid = {rows[i]: rows[i + 1 : i + 5] for i in range(0, len(rows), 5)}
        flat, members, raws, logs = by_gid[b"g1"]
        assert b"r0" == dict(zip(flat[::2], flat[1::2], strict=True))[b"route"]
        assert {b"f1": b"A1", b"f2": None} == dict(zip(members, raws, strict=True))
        assert [b"hook", b"L1", b"pager", None] == logs
        assert [b"other", b"L2"] == by_gid[b"g2"][3]

    async def test_limit_counts_due_groups_and_vanished_ones_are_dropped(
        self, redis: aioredis.Redis
    ) -> None:
        await redis.zadd(DUE, {"gone": T0 - 1})  # its hash was deleted
        await group(redis, "g1", T0)
        await group(redis, "g2", T0)
        count, rows = await claim(redis, T0, "A:0", limit=2)
        assert (2, [b"g1"]) == (count, gids(rows))
        assert None is await redis.zscore(DUE, "gone")
        assert T0 == await redis.zscore(DUE, "g2")

    async def test_urgent_groups_are_taken_first_and_lose_the_mark(
        self, redis: aioredis.Redis
    ) -> None:
        for i in range(5):
            await group(redis, f"warn{i}", T0 - 10 + i)  # a backlog due before the page
        await group(redis, "page", T0)
        await redis.zadd(URGENT, {"page": T0})
        count, rows = await claim(redis, T0, "A:0", limit=2)
        assert (2, [b"page", b"warn0"]) == (count, gids(rows))
        assert 0 == await redis.zcard(URGENT)

    async def test_an_urgent_claim_takes_only_urgent_groups(self, redis: aioredis.Redis) -> None:
        for i in range(3):
            await group(redis, f"warn{i}", T0 - 10 + i)
        await group(redis, "page", T0)
        await redis.zadd(URGENT, {"page": T0})
        count, rows = await claim(redis, T0, "A:0", limit=2, urgent_only=True)
        assert (1, [b"page"]) == (count, gids(rows))
        assert 3 == await redis.zcount(DUE, "-inf", T0)  # the backlog is left to the rounds
        assert (0, []) == await claim(redis, T0, "A:1", urgent_only=True)

    async def test_an_urgent_group_another_flush_holds_waits_with_its_lease(
        self, redis: aioredis.Redis
    ) -> None:
        await group(redis, "page", T0, lease="B:0", lease_until=repr(T0 + 20))
        await redis.zadd(URGENT, {"page": T0})
        count, rows = await claim(redis, T0 + 1, "A:0")
        assert (1, []) == (count, rows)
        assert (T0 + 20, T0 + 20) == (
            await redis.zscore(DUE, "page"),
            await redis.zscore(URGENT, "page"),
        )
        assert (0, []) == await claim(redis, T0 + 2, "A:1")  # not taken again meanwhile

    async def test_dispatchers_claim_a_group_once_after_group_wait(self, h: Harness) -> None:
        alert = await h.fire(service="db")
        other = h.replica()
        assert [] == (await h.dispatcher.claim(T0 + 4)).groups
        mine = await h.dispatcher.claim(T0 + 5)
        assert [[alert.fingerprint]] == [g.fingerprints for g in mine.groups]
        assert [] == (await other.claim(T0 + 5)).groups


class TestKeysBuilt:
    """On the partition's Cluster slot, the keys a claim builds (its groups' group:, gm: and
    nflog:, found by the script itself) are the only undeclared ones, all in its slot."""

    async def test_only_the_claimed_groups_keys_are_built(self, slot: SlotHarness) -> None:
        alert = await slot.fire(service="db")
        [target] = slot.rt.router.groups(alert)
        slot.now = T0 + 5
        async with watch(slot.redis) as seen:
            assert 1 == len((await slot.dispatcher.claim(T0 + 5)).groups)
        s, gid = slot.store, target.gid
        built = {s.group_key(gid), s.members_key(gid), slot.dispatcher.nflog_key("hook", gid)}
        assert built == {k.decode() for k in seen.undeclared}
        assert {s.due_key, s.copies_key, s.urgent_key} == {k.decode() for k in seen.declared}
        assert {SLOT} == {key_slot(k) for k in seen.touched}
