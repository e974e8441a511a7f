"""commit_groups.lua: a flush's writes, all or nothing, only while its lease holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from alertd.notify.dispatcher import Claim
from alertd.storage import keys
from alertd.storage.scripts import lua
from tests.lua.conftest import SLOT, SlotHarness
from tests.lua.touched import watch
from tests.test_dispatch import PREFIX, T0, Harness, write_config

DUE = keys.groups_due(PREFIX)
COPIES = keys.alert_copies(PREFIX)
COPIES_SEQ = keys.alert_copies_seq(PREFIX)
URGENT = keys.groups_urgent(PREFIX)
STREAM = keys.outbox(PREFIX, "hook")
LOG = keys.nflog(PREFIX, "hook", "g1")
NOW = T0 + 10


@pytest.fixture
async def h(redis: aioredis.Redis, tmp_path: Path) -> Harness:
    return Harness(redis, write_config(tmp_path))


async def leased(redis: aioredis.Redis, gid: str = "g1", **fields: str) -> None:
    """A group holding f1 (whose copy, as last filed, is R1), leased to A:0 until NOW + 30."""
    lease = {"key": gid, "lease": "A:0", "lease_until": repr(NOW + 30), **fields}
    await redis.hset(keys.group(PREFIX, gid), mapping=lease)
    await redis.sadd(keys.group_members(PREFIX, gid), "f1")
    await redis.sadd(keys.alert_groups(PREFIX, "f1"), gid)
    await redis.hset(COPIES, "f1", "R1")
    await redis.hset(COPIES_SEQ, "f1", 1)
    await redis.zadd(DUE, {gid: NOW + 30})


@dataclass
class Plan:
    """A group's flush as Dispatcher.commit passes it: one notice to `hook`, forgets."""

    gid: str = "g1"
    expected: str = ""
    forgets: list[list[str]] = field(default_factory=list)  # [fingerprint, alert as told]
    interval_s: float = 10
    sleep_s: float = 3600

    def args(self, call: keys.ScriptKeys) -> list[Any]:
        log = call.at(keys.nflog(PREFIX, "hook", self.gid))
        notices = [[log, self.expected, "E1", call.at(STREAM), "N1"]]
        forgets = [[fp, raw, call.at(keys.alert_groups(PREFIX, fp))] for fp, raw in self.forgets]
        group, members = keys.group(PREFIX, self.gid), keys.group_members(PREFIX, self.gid)
        timing = [repr(self.interval_s), repr(self.sleep_s)]
        return [self.gid, *timing, notices, forgets, call.at(group), call.at(members)]


def plan(
    gid: str = "g1",
    expected: str = "",
    forgets: list[list[str]] | None = None,
    interval_s: float = 10,
    sleep_s: float = 3600,
) -> Plan:
    return Plan(gid, expected, forgets or [], interval_s, sleep_s)


async def commit(redis: aioredis.Redis, token: str, *plans: Plan) -> list[int]:
    script = redis.register_script(lua("commit_groups"))
    call = keys.ScriptKeys([DUE, URGENT, COPIES, COPIES_SEQ])
    groups = orjson.dumps([p.args(call) for p in plans])
    result: list[int] = await script(keys=call.keys, args=[token, repr(NOW), 600, groups])
    return result


async def group(redis: aioredis.Redis, gid: str = "g1") -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = await redis.hgetall(keys.group(PREFIX, gid))
    return fields


class TestAllOrNothing:
    """A flush writes only under its own lease and over the logs it read; else nothing."""

    async def test_commit_with_a_lost_lease_writes_nothing(self, redis: aioredis.Redis) -> None:
        await leased(redis)
        before = await group(redis)
        assert [-1, 0] == await commit(redis, "B:0", plan(forgets=[["f1", "R1"]]))
        assert (None, 0) == (await redis.get(LOG), await redis.xlen(STREAM))
        assert before == await group(redis)
        assert NOW + 30 == await redis.zscore(DUE, "g1")
        assert {b"f1"} == await redis.smembers(keys.group_members(PREFIX, "g1"))

    async def test_a_moved_log_writes_nothing_and_is_due_now(self, redis: aioredis.Redis) -> None:
        await leased(redis)
        await redis.set(LOG, "E0")  # another flush told the channel since this one read
        assert [2, 0] == await commit(redis, "A:0", plan(expected="", forgets=[["f1", "R1"]]))
        assert (b"E0", 0) == (await redis.get(LOG), await redis.xlen(STREAM))
        assert {b"key": b"g1"} == await group(redis)  # no last_flush, lease let go
        assert {b"f1"} == await redis.smembers(keys.group_members(PREFIX, "g1"))
        assert NOW == await redis.zscore(DUE, "g1")

    async def test_a_moved_log_on_an_empty_group_is_not_told_as_sent(
        self, redis: aioredis.Redis
    ) -> None:
        await leased(redis)
        await redis.delete(keys.group_members(PREFIX, "g1"))
        await redis.set(LOG, "E0")
        assert [2, 0] == await commit(redis, "A:0", plan(expected=""))
        assert (b"E0", 0) == (await redis.get(LOG), await redis.xlen(STREAM))

    async def test_a_replica_whose_lease_lapsed_queues_nothing(self, h: Harness) -> None:
        await h.fire(service="db")
        first, second = h.replica(lease_s=1), h.replica(lease_s=1)
        stale = await first.claim(T0 + 5)
        fresh = await second.claim(T0 + 6)  # first's lease ended at T0 + 6
        assert (1, 1) == (len(stale.groups), len(fresh.groups))
        assert 0 == await first.flush(stale, T0 + 6)
        assert 1 == await second.flush(fresh, T0 + 6)
        assert 1 == len(await h.queued())


class TestUrgentMark:
    """A group marked urgent during its flush stays marked, due with it; dropped with it."""

    async def test_the_mark_follows_the_next_flush_time(self, redis: aioredis.Redis) -> None:
        await leased(redis, rush="1")
        await redis.zadd(URGENT, {"g1": NOW + 30})
        assert [1, 1] == await commit(redis, "A:0", plan())
        assert (NOW, NOW) == (await redis.zscore(DUE, "g1"), await redis.zscore(URGENT, "g1"))

    async def test_an_unmarked_group_is_not_marked(self, redis: aioredis.Redis) -> None:
        await leased(redis, rush="1")
        assert [1, 1] == await commit(redis, "A:0", plan())
        assert 0 == await redis.zcard(URGENT)

    async def test_the_mark_goes_with_the_emptied_group(self, redis: aioredis.Redis) -> None:
        await leased(redis)
        await redis.zadd(URGENT, {"g1": NOW + 30})
        assert [0, 1] == await commit(redis, "A:0", plan(forgets=[["f1", "R1"]]))
        assert (None, 0) == (await redis.zscore(DUE, "g1"), await redis.zcard(URGENT))


class TestCommitted:
    """A commit writes logs, outbox and last_flush, reschedules, and drops an emptied group."""

    async def test_commit_writes_log_outbox_and_schedule(self, redis: aioredis.Redis) -> None:
        await leased(redis)
        assert [1, 1] == await commit(redis, "A:0", plan())
        assert b"E1" == await redis.get(LOG)
        assert 590 < await redis.ttl(LOG) <= 600
        assert [b"N1"] == [f[b"n"] for _, f in await redis.xrange(STREAM)]
        assert {b"key": b"g1", b"last_flush": b"%r" % NOW} == await group(redis)
        assert NOW + 3600 == await redis.zscore(DUE, "g1")

    async def test_changes_during_the_lease_bring_the_next_flush_forward(
        self, redis: aioredis.Redis
    ) -> None:
        await leased(redis, "dirty", dirty="1")
        await leased(redis, "rush", rush="1")
        assert [1, 1, 1, 1] == await commit(redis, "A:0", plan("dirty"), plan("rush"))
        expected = [(b"rush", NOW), (b"dirty", NOW + 10)]
        assert expected == await redis.zrange(DUE, 0, -1, withscores=True)

    async def test_told_alerts_are_forgotten_and_the_emptied_group_dropped(
        self, redis: aioredis.Redis
    ) -> None:
        await leased(redis, "g1")
        await leased(redis, "g2")  # f1 is in both groups
        assert [0, 1] == await commit(redis, "A:0", plan("g1", forgets=[["f1", "R1"]]))
        assert ({}, None) == (await group(redis, "g1"), await redis.zscore(DUE, "g1"))
        assert b"R1" == await redis.hget(COPIES, "f1")  # g2 still owes it
        await redis.hset(COPIES, "f1", "R2")  # filed anew after g2 read it as R1
        assert [1, 1] == await commit(redis, "A:0", plan("g2", forgets=[["f1", "R1"]]))
        assert {b"f1"} == await redis.smembers(keys.group_members(PREFIX, "g2"))
        await redis.hset(keys.group(PREFIX, "g2"), "lease", "A:1")
        told = plan("g2", expected="E1", forgets=[["f1", "R2"]])
        assert [0, 1] == await commit(redis, "A:1", told)
        assert (None, None, 0) == (
            await redis.hget(COPIES, "f1"),
            await redis.hget(COPIES_SEQ, "f1"),
            await redis.exists(keys.alert_groups(PREFIX, "f1")),
        )


class TestDeclaredKeys:
    """On the partition's Cluster slot, every key a commit touches is one it declared."""

    async def test_every_key_touched_is_declared(self, slot: SlotHarness) -> None:
        warn = await slot.fire(service="db")
        page = await slot.fire(severity="critical", alertname="CpuHigh", service="web")
        gids = [slot.rt.router.groups(a)[0].gid for a in (warn, page)]
        async with watch(slot.redis) as seen:
            assert 2 == await slot.dispatcher.flush(await claimed(slot, T0 + 5), T0 + 5)
        slot.now = T0 + 6
        await slot.resolve(warn)
        async with watch(slot.redis) as forgot:  # told resolved: forgotten, group dropped
            assert 1 == await slot.dispatcher.flush(await claimed(slot, T0 + 15), T0 + 15)
        assert (set(), set()) == (seen.undeclared, forgot.undeclared)
        s = slot.store
        singles = {s.due_key, s.urgent_key, s.copies_key, s.copies_seq_key}
        streams = {slot.outbox.stream("hook", False), slot.outbox.stream("hook", True)}
        per_group = {
            k
            for g in gids
            for k in (s.group_key(g), s.members_key(g), slot.dispatcher.nflog_key("hook", g))
        }
        forgotten = {s.alert_groups_key(warn.fingerprint)}
        touched = {k.decode() for k in seen.touched | forgot.touched}
        assert singles | streams | per_group | forgotten == touched
        assert {SLOT} == {key_slot(k) for k in seen.declared | forgot.declared}


async def claimed(slot: SlotHarness, now: float) -> Claim:
    slot.now = now
    claim = await slot.dispatcher.claim(now)
    assert claim.groups
    return claim
