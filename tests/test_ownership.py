"""Ownership: each live daemon owns a fair share of the partitions, each under its own
fenced lease; a dead daemon's partitions go to the survivors, a leaving one's at once."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from alertd.ownership import Ownership
from alertd.storage import keys
from alertd.storage.partitions import Partitions
from tests.conftest import wait_for

N = 8


def partitions(redis: aioredis.Redis) -> Partitions:
    return Partitions(redis, "test:", N)


async def lease_owners(redis: aioredis.Redis, parts: Partitions) -> dict[int, str]:
    """Partition -> the daemon whose lease Redis holds (partitions nobody holds left out)."""
    out: dict[int, str] = {}
    for i in range(parts.count):
        lease = await redis.get(keys.partition_lease(parts.prefix(i)))
        if lease is not None:
            out[i] = lease.decode().rpartition(":")[0]
    return out


async def beat_all(*daemons: Ownership) -> None:
    for d in daemons:
        await d.beat()


async def share_half_and_half(a: Ownership, b: Ownership) -> None:
    """`a` takes every partition, `b` joins: they settle on half each, covering all."""
    await a.beat()
    assert N == a.owned

    async def balanced() -> bool:
        await beat_all(a, b)
        return (a.owned, b.owned) == (N // 2, N // 2)

    await wait_for(balanced, timeout_s=5)
    assert frozenset(range(N)) == a.owned_partitions | b.owned_partitions


class TestOwnership:
    async def test_a_daemon_alone_owns_every_partition_after_one_beat(
        self, redis: aioredis.Redis
    ) -> None:
        parts = partitions(redis)
        a = Ownership(parts, "a", takeover_s=10)
        await a.beat()
        assert N == a.owned
        assert frozenset(range(N)) == a.owned_partitions
        assert all(a.owns(i) and a.token_of(i) == 1 for i in range(N))
        assert {i: "a" for i in range(N)} == await lease_owners(redis, parts)
        assert await redis.exists(keys.daemon_heartbeat(parts.home_prefix, "a"))
        assert [b"a"] == await redis.zrange(keys.daemons(parts.home_prefix), 0, -1)
        await a.beat()  # renewals hand out no new token
        assert all(a.token_of(i) == 1 for i in range(N))

    async def test_two_daemons_share_the_partitions_half_and_half(
        self, redis: aioredis.Redis
    ) -> None:
        a = Ownership(partitions(redis), "a", takeover_s=10)
        b = Ownership(partitions(redis), "b", takeover_s=10)
        await share_half_and_half(a, b)
        assert not a.owned_partitions & b.owned_partitions
        owners = await lease_owners(redis, partitions(redis))
        assert {i: "a" for i in a.owned_partitions} | {i: "b" for i in b.owned_partitions} == owners
        await beat_all(a, b, a, b)  # and it stays so
        assert (N // 2, N // 2) == (a.owned, b.owned)
        assert owners == await lease_owners(redis, partitions(redis))

    async def test_two_daemons_starting_together_split_without_overlap(
        self, redis: aioredis.Redis
    ) -> None:
        a = Ownership(partitions(redis), "a", takeover_s=10)
        b = Ownership(partitions(redis), "b", takeover_s=10)

        async def balanced() -> bool:
            await beat_all(b, a)
            return (a.owned, b.owned) == (N // 2, N // 2)

        await wait_for(balanced, timeout_s=5)
        assert frozenset(range(N)) == a.owned_partitions | b.owned_partitions
        assert not a.owned_partitions & b.owned_partitions

    async def test_a_dead_daemons_partitions_go_to_the_survivor_with_larger_tokens(
        self, redis: aioredis.Redis
    ) -> None:
        takeover_s, beat_s = 0.3, 0.1
        a = Ownership(partitions(redis), "a", takeover_s=takeover_s)
        b = Ownership(partitions(redis), "b", takeover_s=takeover_s)

        async def balanced() -> bool:
            await beat_all(a, b)
            return (a.owned, b.owned) == (N // 2, N // 2)

        await wait_for(balanced, timeout_s=5, interval_s=beat_s)
        await a.beat()  # a's last beat: it dies here
        died = time.monotonic()
        dead_tokens = {i: a.token_of(i) for i in a.owned_partitions}
        assert len(dead_tokens) == N // 2

        async def survivor_owns_all() -> bool:
            await b.beat()
            return b.owned == N

        await wait_for(survivor_owns_all, timeout_s=5, interval_s=beat_s)
        # takeover plus a beat, and room for a slow test machine
        assert time.monotonic() - died < takeover_s + beat_s + 0.5
        assert all(b.token_of(i) > token for i, token in dead_tokens.items())
        assert {i: "b" for i in range(N)} == await lease_owners(redis, partitions(redis))
        assert 0 == a.owned  # its leases have lapsed: the dead one claims nothing
        assert [b"b"] == await redis.zrange(keys.daemons(partitions(redis).home_prefix), 0, -1)

    async def test_a_daemon_that_lost_a_lease_drops_it_at_its_next_beat(
        self, redis: aioredis.Redis
    ) -> None:
        parts = partitions(redis)
        a = Ownership(parts, "a", takeover_s=10)
        await a.beat()
        await redis.set(keys.partition_lease(parts.prefix(3)), "x:99")  # another's now
        await a.beat()
        assert not a.owns(3)
        assert 0 == a.token_of(3)
        assert N - 1 == a.owned

    async def test_leave_frees_everything_for_the_others_next_beat(
        self, redis: aioredis.Redis
    ) -> None:
        parts = partitions(redis)
        a = Ownership(parts, "a", takeover_s=10)
        b = Ownership(partitions(redis), "b", takeover_s=10)

        async def balanced() -> bool:
            await beat_all(a, b)
            return (a.owned, b.owned) == (N // 2, N // 2)

        await wait_for(balanced, timeout_s=5)
        left = {i: a.token_of(i) for i in a.owned_partitions}
        await a.leave()
        assert 0 == a.owned
        assert not await redis.exists(keys.daemon_heartbeat(parts.home_prefix, "a"))
        assert [b"b"] == await redis.zrange(keys.daemons(parts.home_prefix), 0, -1)
        assert set(range(N)) - set(left) == set(await lease_owners(redis, parts))
        await b.beat()
        assert N == b.owned
        assert all(b.token_of(i) > token for i, token in left.items())

    async def test_alive_tells_daemons_with_a_heartbeat(self, redis: aioredis.Redis) -> None:
        a = Ownership(partitions(redis), "a", takeover_s=10)
        await a.beat()
        assert {"a"} == await a.alive(["a", "b"])
        assert set() == await a.alive([])


class TestOwnershipOnACluster:
    """Partitions on three masters: one pipeline per master, the same sharing."""

    async def test_two_daemons_share_partitions_spread_over_masters(
        self, redis_cluster: Any
    ) -> None:
        routed = aioredis.RedisCluster.from_url(redis_cluster.url)
        await routed.flushall()
        parts_a = Partitions(routed, "test:", N)
        parts_b = Partitions(routed, "test:", N)
        try:
            assert len(parts_a.by_client(range(N))) > 1  # the partitions span masters
            a = Ownership(parts_a, "a", takeover_s=10)
            b = Ownership(parts_b, "b", takeover_s=10)
            await share_half_and_half(a, b)
            owners = {i: "a" for i in a.owned_partitions} | {i: "b" for i in b.owned_partitions}
            assert owners == await lease_owners(routed, parts_a)
            await a.leave()
            await b.beat()
            assert N == b.owned
        finally:
            await parts_a.aclose()
            await parts_b.aclose()
            await routed.aclose()
