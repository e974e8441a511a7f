"""hold_partition.lua: the partition's lease and its fencing tokens, through Ownership."""

from __future__ import annotations

import redis.asyncio as aioredis

from alertd.ownership import Ownership
from alertd.storage import keys
from alertd.storage.partitions import Partitions
from alertd.storage.scripts import lua

PREFIX = keys.state_prefix("t:")  # the one partition's
LEASE = keys.partition_lease(PREFIX)
FENCE = keys.partition_fence(PREFIX)


def one_partition(redis: aioredis.Redis) -> Partitions:
    return Partitions(redis, "t:", 1)


class TestHoldPartition:
    """One daemon at a time holds the lease; each new holder's token beats every earlier one."""

    async def test_first_caller_takes_the_lease_others_get_zero(
        self, redis: aioredis.Redis
    ) -> None:
        a = Ownership(one_partition(redis), "a", takeover_s=10)
        b = Ownership(one_partition(redis), "b", takeover_s=10)
        await a.beat()
        await b.beat()
        assert (1, 0) == (a.token_of(0), b.token_of(0))
        assert b"a:1" == await redis.get(LEASE)

    async def test_the_holder_keeps_its_token_and_renews_the_ttl(
        self, redis: aioredis.Redis
    ) -> None:
        a = Ownership(one_partition(redis), "a", takeover_s=10)
        await a.beat()
        await redis.pexpire(LEASE, 50)  # nearly lapsed
        await a.beat()
        assert 1 == a.token_of(0)
        assert 9_000 < await redis.pttl(LEASE) <= 10_000
        assert b"1" == await redis.get(FENCE)  # a renewal hands out no new token

    async def test_successive_owners_get_increasing_tokens(self, redis: aioredis.Redis) -> None:
        a = Ownership(one_partition(redis), "a", takeover_s=10)
        b = Ownership(one_partition(redis), "b", takeover_s=10)
        await a.beat()
        await redis.delete(LEASE)  # a's lease lapsed
        await b.beat()
        await a.beat()
        assert (2, 0) == (b.token_of(0), a.token_of(0))
        await redis.delete(LEASE)
        await a.beat()
        assert 3 == a.token_of(0)

    async def test_lease_has_the_requested_ttl(self, redis: aioredis.Redis) -> None:
        hold = redis.register_script(lua("hold_partition"))
        assert 1 == await hold(keys=[LEASE, FENCE], args=["host:7", 1500])
        assert 1 == await hold(keys=[LEASE, FENCE], args=["host:7", 1500])  # owner with a colon
        assert 0 == await hold(keys=[LEASE, FENCE], args=["host", 1500])
        assert 1_000 < await redis.pttl(LEASE) <= 1_500
