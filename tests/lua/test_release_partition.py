"""release_partition.lua: giving the partition's lease up, only as its holder."""

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


class TestReleasePartition:
    """Only the current holder (owner and token) frees the lease; anyone else changes nothing."""

    async def test_holder_releases(self, redis: aioredis.Redis) -> None:
        release = redis.register_script(lua("release_partition"))
        await redis.set(LEASE, "a:3")
        assert 1 == await release(keys=[LEASE], args=["a:3"])
        assert None is await redis.get(LEASE)

    async def test_a_stale_token_or_another_owner_does_not_release(
        self, redis: aioredis.Redis
    ) -> None:
        release = redis.register_script(lua("release_partition"))
        await redis.set(LEASE, "a:3")
        assert 0 == await release(keys=[LEASE], args=["a:2"])
        assert 0 == await release(keys=[LEASE], args=["b:3"])
        assert b"a:3" == await redis.get(LEASE)

    async def test_a_former_owner_leaving_keeps_the_new_owners_lease(
        self, redis: aioredis.Redis
    ) -> None:
        a = Ownership(one_partition(redis), "a", takeover_s=10)
        b = Ownership(one_partition(redis), "b", takeover_s=10)
        await a.beat()
        await redis.delete(LEASE)  # a's lease lapsed, a has not noticed yet
        await b.beat()
        await a.leave()
        assert b"b:2" == await redis.get(LEASE)
        await b.leave()
        assert None is await redis.get(LEASE)
        await a.beat()
        assert 3 == a.token_of(0)  # releasing never resets the fence
