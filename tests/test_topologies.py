"""alertd on a Redis Cluster and on Sentinel: the same alerts, the same notifications."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio import RedisCluster

from tests.conftest import DaemonFactory, Receiver, wait_for
from tests.test_e2e import ROUTE, RULES, hook


@pytest.fixture
async def cluster_client(redis_cluster: Any) -> AsyncIterator[Any]:
    client = RedisCluster.from_url(redis_cluster.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
async def cluster_daemons(
    tmp_path: Path, redis_cluster: Any, cluster_client: Any
) -> AsyncIterator[DaemonFactory]:
    factory = DaemonFactory(tmp_path, redis_cluster.url, redis_extra='mode = "cluster"')
    yield factory
    for app in list(factory.apps):
        await factory.stop(app)


def firing_and_resolved(receiver: Receiver) -> list[tuple[str, str]]:
    return [(b["status"], b["alerts"][0]["labels"]["queue"]) for b in receiver.bodies("/hook")]


class TestCluster:
    """On a 3-master Cluster an alert fires and resolves as on one Redis."""

    async def test_fires_and_resolves(
        self, cluster_daemons: DaemonFactory, cluster_client: Any, receiver: Receiver
    ) -> None:
        cluster_daemons.write(RULES, hook(receiver), ROUTE)
        await cluster_daemons.start()
        fields = {"name": "queue_depth", "value": "7000", "service": "b", "queue": "q"}
        await cluster_client.xadd("alertd:events", fields)
        await wait_for(lambda: receiver.bodies("/hook"))
        await cluster_client.xadd("alertd:events", {**fields, "value": "1"})
        await wait_for(lambda: len(receiver.bodies("/hook")) >= 2)
        assert [("firing", "q"), ("resolved", "q")] == firing_and_resolved(receiver)

    async def test_bad_entry_is_dead_lettered(
        self, cluster_daemons: DaemonFactory, cluster_client: Any, receiver: Receiver
    ) -> None:
        cluster_daemons.write(RULES, hook(receiver), ROUTE)
        await cluster_daemons.start()
        await cluster_client.xadd("alertd:events", {"value": "1"})  # no name
        [(_, letter)] = await wait_for(lambda: cluster_client.xrange("alertd:dead"))
        assert b"event" == letter[b"source"]
        assert 0 == (await cluster_client.xpending("alertd:events", "alertd"))["pending"]


class TestSentinel:
    """With mode = "sentinel" alertd follows the master the Sentinels name."""

    async def test_failover_without_restart(
        self, tmp_path: Path, sentinel_set: Any, receiver: Receiver
    ) -> None:
        factory = DaemonFactory(
            tmp_path,
            "redis://127.0.0.1:1/0",  # the address is the Sentinels' to tell
            redis_extra=(
                'mode = "sentinel"\n'
                f'sentinels = ["127.0.0.1:{sentinel_set.sentinel_port}"]\n'
                f'master = "{sentinel_set.name}"'
            ),
        )
        factory.write(RULES, hook(receiver), ROUTE)
        await factory.start()
        try:
            fields = {"name": "queue_depth", "value": "7000", "service": "b", "queue": "q1"}
            master = aioredis.Redis(port=sentinel_set.master.port)
            await master.xadd("alertd:events", fields)
            await master.aclose()
            await wait_for(lambda: receiver.bodies("/hook"))

            sentinel_set.kill_master()
            promoted = aioredis.Redis(port=sentinel_set.replica.port)
            await promoted.xadd("alertd:events", {**fields, "queue": "q2"})
            await promoted.aclose()
            await wait_for(lambda: len(receiver.bodies("/hook")) >= 2, timeout_s=30)
            assert ("firing", "q2") == firing_and_resolved(receiver)[-1]
        finally:
            for app in list(factory.apps):
                await factory.stop(app)
