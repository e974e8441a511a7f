"""Outboxes per partition: a daemon delivers the streams of the partitions it serves,
its channels' slots shared by every lane of every partition."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from alertd.model import Notification
from alertd.notify import workers as workers_module
from alertd.notify.outbox import GROUP, Outbox
from alertd.storage.partitions import Partitions
from tests.conftest import DaemonFactory, Receiver, wait_for
from tests.test_delivery import make_notification, webhook

PARTITIONS = 3  # on the test Cluster, {p0} and {p1} share a master; {p2} has its own


def outbox_of(redis: aioredis.Redis) -> Outbox:
    return Outbox(Partitions(redis, "alertd:", PARTITIONS))


async def queue_in(redis: aioredis.Redis, partition: int, ns: list[Notification]) -> None:
    """Queue `ns` in the partition's streams, as a group's flush there does (one MULTI,
    through the client of the partition: on a Cluster, one pinned to its slot)."""
    outbox = outbox_of(redis)
    try:
        for n in ns:
            await outbox.ensure_group_of(n, partition)
        async with outbox.partitions.client(partition).pipeline(transaction=True) as pipe:
            for n in ns:
                pipe.xadd(outbox.stream_of(n, partition), {"n": orjson.dumps(n.to_dict())})
            await pipe.execute()
    finally:
        await outbox.partitions.aclose()


def queued_in(redis: aioredis.Redis, partition: int, channel: str) -> Callable[[], Awaitable[int]]:
    async def count() -> int:
        outbox = outbox_of(redis)
        return sum(
            [
                await redis.xlen(outbox.stream(channel, urgent, partition))
                for urgent in (False, True)
            ]
        )

    return count


def ids_received(receiver: Receiver) -> set[str]:
    return {r.json()["id"] for r in receiver.received}


def delivered(app: Any, channel: str = "hook") -> float:
    value = app.metrics.registry.get_sample_value(
        "alertd_notifications_total", {"channel": channel, "result": "delivered"}
    )
    return value or 0.0


def readers(app: Any, names: tuple[str, ...] = ("hook",)) -> set[tuple[str, bool, int]]:
    """The channels' readers running: (channel, urgent, partition)."""
    return {k for k, task in app.workers._tasks.items() if k[0] in names and not task.done()}


async def start(daemons: DaemonFactory, receiver: Receiver, channels: str = "") -> Any:
    daemons.redis_extra += f"\npartitions = {PARTITIONS}\n"
    daemons.write(channels=channels or webhook("hook", f"{receiver.url}/hook"))
    return await daemons.start()


class TestServed:
    """The workers read the streams of the partitions they serve, and only those."""

    async def test_entries_of_two_partitions_are_both_delivered(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        app = await start(daemons, receiver)
        app.workers.set_partitions({0, 1})
        home = [make_notification("hook", series="home")]
        other = [make_notification("hook", series="other")]
        page = [make_notification("hook", series="page", severity="critical")]
        assert page[0].urgent
        await queue_in(redis, 0, home)
        await queue_in(redis, 1, other)
        await queue_in(redis, 1, page)

        sent = {n.id for n in [*home, *other, *page]}
        await wait_for(lambda: sent == ids_received(receiver))
        for p in (0, 1):
            await wait_for(lambda p=p: _zero(queued_in(redis, p, "hook")))
        await wait_for(lambda: delivered(app) == 3)
        # Acknowledged in the streams they were read from: nothing pending anywhere.
        outbox = outbox_of(redis)
        for p in (0, 1):
            for urgent in (False, True):
                info = await redis.xpending(outbox.stream("hook", urgent, p), GROUP)
                assert 0 == info["pending"]
        assert 3 == len(receiver.received)

    async def test_a_partition_not_served_is_not_delivered_until_it_is(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        app = await start(daemons, receiver)
        app.workers.set_partitions({0})
        assert {("hook", False, 0), ("hook", True, 0)} == readers(app)
        other = make_notification("hook", series="other")
        home = make_notification("hook", series="home")
        await queue_in(redis, 1, [other])
        await queue_in(redis, 0, [home])

        # Queued after it, delivered: the workers are at work, and left partition 1 alone.
        await wait_for(lambda: home.id in ids_received(receiver))
        await wait_for(lambda: _zero(queued_in(redis, 0, "hook")))
        assert other.id not in ids_received(receiver)
        assert 1 == await queued_in(redis, 1, "hook")()

        app.workers.set_partitions({0, 1})
        await wait_for(lambda: other.id in ids_received(receiver))
        await wait_for(lambda: _zero(queued_in(redis, 1, "hook")))
        assert [home.id, other.id] == [r.json()["id"] for r in receiver.received]

    async def test_a_partition_given_up_finishes_what_it_holds(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        app = await start(daemons, receiver)
        app.workers.set_partitions({0, 1})
        receiver.delay_s = 1.0
        held = make_notification("hook", series="held")
        await queue_in(redis, 1, [held])
        await wait_for(lambda: held.id in ids_received(receiver))

        app.workers.set_partitions({0})  # while its delivery is in hand
        assert all(p == 0 for _, _, p in readers(app))
        await wait_for(lambda: delivered(app) == 1, timeout_s=5)
        # Its outcome recorded in its partition's stream: nothing left for a new owner.
        await wait_for(lambda: _zero(queued_in(redis, 1, "hook")))
        info = await redis.xpending(outbox_of(redis).stream("hook", False, 1), GROUP)
        assert 0 == info["pending"]

        later = make_notification("hook", series="later")
        home = make_notification("hook", series="home")
        await queue_in(redis, 1, [later])
        await queue_in(redis, 0, [home])
        await wait_for(lambda: home.id in ids_received(receiver), timeout_s=5)
        assert later.id not in ids_received(receiver)
        assert 1 == await queued_in(redis, 1, "hook")()

    async def test_a_reload_starts_a_new_channel_in_every_partition_served(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        app = await start(daemons, receiver)
        app.workers.set_partitions({0, 1})
        daemons.write(
            channels=webhook("hook", f"{receiver.url}/hook")
            + webhook("more", f"{receiver.url}/more")
        )
        await app.reload()
        assert {(name, urgent, p) for name in ("hook", "more") for urgent in (False, True)
                for p in (0, 1)} == readers(app, ("hook", "more"))  # fmt: skip
        n = make_notification("more", series="other")
        await queue_in(redis, 1, [n])
        await wait_for(lambda: n.id in ids_received(receiver))
        await wait_for(lambda: _zero(queued_in(redis, 1, "more")))


class TestTopologies:
    """On one Redis and on a Cluster (where each partition has a client of its own)."""

    @pytest.fixture
    def daemons(self, topology_daemons: DaemonFactory) -> DaemonFactory:
        return topology_daemons

    @pytest.fixture
    def redis(self, topology_redis: Any) -> Any:
        return topology_redis

    async def test_delivered_from_each_partition_and_removed_from_its_stream(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        app = await start(daemons, receiver)
        app.workers.set_partitions({0, 1, 2})
        ns = {
            p: [
                make_notification("hook", series=f"p{p}"),
                make_notification("hook", series=f"p{p}-page", severity="critical"),
            ]
            for p in (0, 1, 2)
        }
        for p in (0, 1, 2):
            await queue_in(redis, p, ns[p])

        sent = {n.id for p in (0, 1, 2) for n in ns[p]}
        await wait_for(lambda: sent == ids_received(receiver))
        for p in (0, 1, 2):
            await wait_for(lambda p=p: _zero(queued_in(redis, p, "hook")))
        await wait_for(lambda: delivered(app) == 6)
        assert 0 == await app.outbox.depth("hook")


class TestSharedSlots:
    """A channel's in-flight limit is shared by its lanes in every partition."""

    async def test_never_more_in_flight_than_the_channels_limit(
        self,
        daemons: DaemonFactory,
        redis: aioredis.Redis,
        receiver: Receiver,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        limit = 4
        monkeypatch.setitem(workers_module.IN_FLIGHT_BY_TYPE, "webhook", limit)
        app = await start(daemons, receiver)
        app.workers.set_partitions({0, 1})
        receiver.delay_s = 0.3
        ns = {p: [make_notification("hook", series=f"p{p}-{i}") for i in range(8)] for p in (0, 1)}
        most = 0
        done = asyncio.Event()

        async def watch() -> None:
            nonlocal most
            while not done.is_set():
                lanes = [lane for lane in app.workers._lanes.values() if lane.name == "hook"]
                in_hand = sum(len(lane.held) for lane in lanes)
                most = max(most, in_hand, app.workers.health["hook"].in_flight)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        try:
            await queue_in(redis, 0, ns[0])
            await queue_in(redis, 1, ns[1])
            sent = {n.id for p in (0, 1) for n in ns[p]}
            await wait_for(lambda: sent == ids_received(receiver), timeout_s=10)
            await wait_for(lambda: delivered(app) == len(sent))
        finally:
            done.set()
            await watcher
        assert limit == most  # the limit was reached, never passed
        # Requests in progress at each arrival (each takes delay_s): never above the limit.
        arrivals = sorted(r.at for r in receiver.received)
        overlap = [
            sum(1 for b in arrivals if a - receiver.delay_s + 0.05 < b <= a) for a in arrivals
        ]
        assert max(overlap) <= limit


class TestOutboxPartitions:
    """Each partition has its streams; the home partition's take what is not a group's."""

    async def test_streams_depth_and_consumer_primitives_by_partition(
        self, redis: aioredis.Redis
    ) -> None:
        outbox = outbox_of(redis)
        assert "alertd:{p1}:outbox:hook" == outbox.stream("hook", partition=1)
        assert "alertd:{p1}:urgent:hook" == outbox.stream("hook", True, 1)
        assert "alertd:{p0}:outbox:hook" == outbox.stream("hook")
        await outbox.enqueue(make_notification("hook", series="home"))
        assert 1 == await redis.xlen("alertd:{p0}:outbox:hook")
        await queue_in(redis, 1, [make_notification("hook", series=f"s{i}") for i in range(2)])
        await queue_in(redis, 1, [make_notification("hook", severity="critical")])
        assert 4 == await outbox.depth("hook")

        [(first, _)] = await outbox.read("hook", "dead", 1, 10, partition=1)
        assert [] == await outbox.touch_many("hook", "dead", [first], partition=1)
        assert [first] == await outbox.touch_many("hook", "dead", [first])  # not in p0's
        [(claimed, n)] = await outbox.claim("hook", "live", 0, partition=1)
        assert (first, "hook") == (claimed, n.receiver if n else None)
        [(_, page)] = await outbox.read("hook", "live", 1, 10, urgent=True, partition=1)
        assert page is not None and page.urgent
        assert ["dead"] == await outbox.prune_consumers("hook", 0, partition=1)


async def _zero(count: Callable[[], Awaitable[int]]) -> bool:
    return 0 == await count()
