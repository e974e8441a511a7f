"""alertd on a Redis Cluster and on Sentinel: the same alerts, the same notifications."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
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
            "redis:///0",  # the address is the Sentinels' to tell
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


PER_SERIES = '\n[[routes]]\nchannels = ["hook"]\ngroup_by = ["alertname", "queue"]\n'


def firing_ids(receiver: Receiver) -> dict[str, set[str]]:
    """Per queue, the ids of the notifications that told it firing."""
    out: dict[str, set[str]] = {}
    for b in receiver.bodies("/hook"):
        for a in b["alerts"]:
            if a["status"] == "firing":
                out.setdefault(a["labels"]["queue"], set()).add(b["id"])
    return out


class TestClusterFailover:
    """A master failover during a stream of events loses no page and sends none twice."""

    async def test_state_master_killed_mid_stream(
        self, tmp_path: Path, private_cluster: Any, receiver: Receiver
    ) -> None:
        factory = DaemonFactory(
            tmp_path, private_cluster.url, redis_extra='mode = "cluster"\nwait_replicas = 1'
        )
        factory.write(RULES, hook(receiver), PER_SERIES)
        client = RedisCluster.from_url(private_cluster.url)
        await factory.start()
        try:
            queues = [f"q{i}" for i in range(30)]
            for i, queue in enumerate(queues):
                if i == 10:
                    await wait_for(lambda: len(firing_ids(receiver)) >= 5, timeout_s=20)
                    private_cluster.kill(private_cluster.master_of("alertd:{p0}:alerts"))
                fields = {"name": "queue_depth", "value": "7000", "service": "b", "queue": queue}
                await _xadd_retrying(client, fields)
            await wait_for(lambda: set(queues) == set(firing_ids(receiver)), timeout_s=60)
            assert {q: 1 for q in queues} == {
                q: len(ids) for q, ids in firing_ids(receiver).items()
            }
        finally:
            for app in list(factory.apps):
                await factory.stop(app)
            await client.aclose()


async def _xadd_retrying(client: Any, fields: dict[str, str]) -> None:
    """A producer's XADD, retried while the cluster fails over."""
    for _ in range(100):
        try:
            await client.xadd("alertd:events", fields)
            return
        except Exception:  # the producer's side of a failover: try again shortly
            await asyncio.sleep(0.1)
    raise AssertionError("the cluster took no event for 10 s")


# What every master must hold some of: windows, alerts, groups and their members,
# schedules, notification logs and copies of the alerts filed into them.
SPREAD_KINDS = {"w", "alerts", "group", "gm", "ag", "groups", "nflog", "ga"}


class TestClusterSpread:
    """State and work spread over the masters: two daemons share the partitions."""

    async def test_every_master_holds_keys_of_every_kind(
        self, cluster_daemons: DaemonFactory, redis_cluster: Any, receiver: Receiver
    ) -> None:
        cluster_daemons.write(RULES, hook(receiver), PER_SERIES)
        apps = [await cluster_daemons.start(consumer=name) for name in ("a", "b")]
        client = RedisCluster.from_url(redis_cluster.url)
        try:
            queues = [f"q{i}" for i in range(60)]
            for queue in queues:
                fields = {"name": "queue_depth", "value": "7000", "service": "b", "queue": queue}
                await client.xadd("alertd:events", fields)
            await wait_for(lambda: set(queues) == set(firing_ids(receiver)), timeout_s=30)
            # alertd_partitions_owned of each: a fair share, together all 16
            await wait_for(lambda: [app.ownership.owned for app in apps] == [8, 8])
            assert set(range(16)) == apps[0].ownership.owned_partitions | (
                apps[1].ownership.owned_partitions
            )
        finally:
            await client.aclose()
        by_master: dict[int, dict[str, int]] = {}
        for master in redis_cluster.masters():
            node = aioredis.Redis(port=master.port)
            kinds: dict[str, int] = {}
            async for raw in node.scan_iter(match="alertd:{p*}:*", count=1000):
                kind = raw.decode().split(":", 2)[2].split(":")[0]
                kinds[kind] = kinds.get(kind, 0) + 1
            await node.aclose()
            by_master[master.port] = kinds
        for kinds in by_master.values():
            assert SPREAD_KINDS <= set(kinds), sorted(SPREAD_KINDS - set(kinds))
        totals = [sum(kinds.values()) for kinds in by_master.values()]
        print("keys per master:", totals, [f"{t / sum(totals):.0%}" for t in totals])
        assert max(totals) <= 0.6 * sum(totals), totals


class TestWaitReplicas:
    """With wait_replicas = 1, nothing is acknowledged while no replica confirms it."""

    async def test_holds_while_the_replica_is_down(
        self, tmp_path: Path, sentinel_set: Any, receiver: Receiver
    ) -> None:
        master, replica = sentinel_set.master, sentinel_set.replica
        factory = DaemonFactory(tmp_path, master.url, redis_extra="wait_replicas = 1")
        factory.write(RULES, hook(receiver), ROUTE)
        app = await factory.start(http=True)
        client = aioredis.Redis(port=master.port)
        ready = f"http://{app.config.settings.http.listen}/health/ready"
        try:
            fields = {"name": "queue_depth", "value": "7000", "service": "b", "queue": "q1"}
            await client.xadd("alertd:events", fields)
            await wait_for(lambda: receiver.bodies("/hook"))

            replica.stop(signal.SIGKILL)
            await client.xadd("alertd:events", {**fields, "queue": "q2"})

            async def not_ready() -> str:
                async with aiohttp.ClientSession() as http, http.get(ready) as resp:
                    return str((await resp.json()).get("reason", "")) if resp.status == 503 else ""

            assert "wait_replicas" in await wait_for(not_ready, timeout_s=15)
            assert 1 == (await client.xpending("alertd:events", "alertd"))["pending"]
            assert 1 == len(receiver.bodies("/hook"))

            replica.start()  # it resyncs from the master and confirms again
            await wait_for(lambda: len(receiver.bodies("/hook")) >= 2, timeout_s=30)
            assert 0 == (await client.xpending("alertd:events", "alertd"))["pending"]
        finally:
            await client.aclose()
            for one in list(factory.apps):
                await factory.stop(one)
