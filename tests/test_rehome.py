"""Upgrading from state all in partition 0, or changing `redis.partitions`: every key
and entry is moved to its partition, and the groups get their copies of the alerts."""

from __future__ import annotations

import orjson
import redis.asyncio as aioredis

from alertd.storage import keys
from alertd.storage.partitions import Partitions
from alertd.storage.rehome import rehome

OLD = "alertd:{p0}:"


def alert(state: str) -> bytes:
    return orjson.dumps({"state": state})


async def old_layout(redis: aioredis.Redis) -> None:
    """The earlier layout's state: A firing and C resolved in group g1, D pending over a
    resolution g2 still owes, B pending in no group; windows of twenty series."""
    for i in range(20):
        await redis.hset(f"{OLD}w:f{i}:v1", "T", "1")
        await redis.pexpire(f"{OLD}w:f{i}:v1", 60_000)
    await redis.zadd(f"{OLD}series:Beat:v1", {f"f{i}": i for i in range(20)})
    states = {"A": "firing", "B": "pending", "C": "resolved", "D": "pending"}
    await redis.hset(f"{OLD}alerts", mapping={fp: alert(s) for fp, s in states.items()})
    await redis.zadd(f"{OLD}alerts:clock", {"A": 10, "B": 20, "D": 30})
    await redis.hset(f"{OLD}alerts:gone", "D", alert("resolved"))
    for gid, members in (("g1", ["A", "C"]), ("g2", ["D"])):
        await redis.hset(f"{OLD}group:{gid}", "key", gid)
        await redis.sadd(f"{OLD}gm:{gid}", *members)
        await redis.set(f"{OLD}nflog:hook:{gid}", "told")
        await redis.zadd(f"{OLD}groups:due", {gid: 100})
        for fp in members:
            await redis.sadd(f"{OLD}ag:{fp}", gid)


class TestRehome:
    async def test_upgrade_moves_each_key_to_its_partition(self, redis: aioredis.Redis) -> None:
        await old_layout(redis)
        parts = Partitions(redis, "alertd:", 4)
        assert await rehome(parts)

        def at(p: int) -> str:
            return parts.prefix(p)

        for i in range(20):
            fp = f"f{i}"
            assert 1 == await redis.exists(f"{at(parts.of_series(fp))}w:{fp}:v1")
            assert 0 < await redis.pttl(f"{at(parts.of_series(fp))}w:{fp}:v1") <= 60_000
            series = f"{at(parts.of_series(fp))}series:Beat:v1"
            assert float(i) == await redis.zscore(series, fp)
        for fp, state in (("A", "firing"), ("B", "pending"), ("D", "pending")):
            home = at(parts.of_series(fp))
            assert alert(state) == await redis.hget(keys.alerts(home), fp)
        assert 10.0 == await redis.zscore(keys.alerts_clock(at(parts.of_series("A"))), "A")
        stored = [await redis.hget(keys.alerts(at(p)), "C") for p in range(4)]
        assert [None] * 4 == stored  # resolved: only its group's copy is left
        g1, g2 = (keys.partition_of(g, 4) for g in ("g1", "g2"))
        assert {b"A", b"C"} == await redis.smembers(keys.group_members(at(g1), "g1"))
        assert b"told" == await redis.get(keys.nflog(at(g1), "hook", "g1"))
        assert 100.0 == await redis.zscore(keys.groups_due(at(g2)), "g2")
        copies = await redis.hgetall(keys.alert_copies(at(g1)))
        assert {b"A": alert("firing"), b"C": alert("resolved")} == copies
        owed = await redis.hget(keys.alert_copies(at(g2)), "D")
        assert alert("resolved") == owed  # the resolution g2 still owes
        assert {b"g1"} == await redis.smembers(keys.alert_groups(at(g1), "A"))
        leftovers = {k.decode() for k in await redis.keys(f"{OLD}*")}
        assert all(parts.of_series(k.split(":")[3]) == 0 for k in leftovers if ":w:" in k)
        assert f"{OLD}alerts:gone" not in leftovers
        assert not await rehome(parts)  # recorded: nothing to do the next time

    async def test_fewer_partitions_move_queued_notifications_home(
        self, redis: aioredis.Redis
    ) -> None:
        await redis.xadd("alertd:{p3}:outbox:hook", {"n": "N1"})
        await redis.set(keys.layout(OLD), "partitions=4")
        assert await rehome(Partitions(redis, "alertd:", 2))
        assert [b"N1"] == [f[b"n"] for _, f in await redis.xrange(f"{OLD}outbox:hook")]
        assert 0 == await redis.exists("alertd:{p3}:outbox:hook")
