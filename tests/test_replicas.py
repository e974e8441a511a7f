"""Several daemons on one Redis behave as one: each group flushed once, nothing lost in between.

The first classes drive Dispatchers directly on a clock the test moves, and
stop them between the steps of a flush (claim, read, plan, commit) to replay
the races; the last runs three real daemons on one stream.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from alertd.model import fingerprint
from alertd.notify.dispatcher import Runtime, plan_group
from tests.conftest import DaemonFactory, Receiver, wait_for
from tests.test_dispatch import PREFIX, T0, Harness, summary, write_config
from tests.test_e2e import hook
from tests.test_grouping_e2e import settle

LEASE_S = 30.0


@pytest.fixture
async def h(redis: aioredis.Redis, tmp_path: Path) -> Harness:
    return Harness(redis, write_config(tmp_path))


async def step_flush(h: Harness, claim: Any, between: Any = None) -> int:
    """A's flush in its steps, running `between` after reading and before committing."""
    d = h.dispatcher
    ctx = await d.context(h.now)
    snaps = await d.read(claim, ctx.rt)
    if between is not None:
        await between()
    return await d.commit(claim.token, [plan_group(s, ctx) for s in snaps], h.now)


class TestLease:
    """A group is flushed by one replica at a time; a dead replica's groups are taken over."""

    async def test_leased_group_is_not_flushed_by_another(self, h: Harness) -> None:
        await h.fire(service="a")
        h.now = T0 + 5
        claim = await h.dispatcher.claim(h.now)
        assert 1 == len(claim.gids)
        assert [] == await h.flush(T0 + 5, h.replica())
        await h.dispatcher.flush(claim, T0 + 5)
        assert [("hook", "first", "firing", 1)] == summary(await h.queued())

    async def test_dead_replica_is_covered_when_its_lease_ends(self, h: Harness) -> None:
        await h.fire(service="a")
        h.now = T0 + 5
        await h.dispatcher.claim(h.now)  # ... and the replica dies here
        other = h.replica()
        assert [] == await h.flush(T0 + 5 + LEASE_S - 0.1, other)
        assert [("hook", "first", "firing", 1)] == summary(await h.flush(T0 + 5 + LEASE_S, other))

    async def test_late_commit_after_takeover_is_refused(self, h: Harness) -> None:
        await h.fire(service="a")
        h.now = T0 + 5
        claim = await h.dispatcher.claim(h.now)
        other = h.replica()

        async def taken_over() -> None:
            await other.flush_due()

        h.now = T0 + 5 + LEASE_S
        assert 0 == await step_flush(h, claim, taken_over)
        assert 1 == len(await h.queued())
        assert [] == await h.flush(T0 + 5 + LEASE_S + 10)

    async def test_late_commit_leaves_the_group_to_its_new_holder(self, h: Harness) -> None:
        a = await h.fire(service="a")
        await h.flush(T0 + 5)
        await h.resolve(a)
        h.now = T0 + 15
        claim = await h.dispatcher.claim(h.now)

        async def taken_over_then_a_new_alert() -> None:
            h.now = T0 + 15 + LEASE_S
            assert 1 == len(await h.flush(h.now, h.replica()))  # told resolved; group dropped
            await h.fire(service="b")  # the group again, waiting group_wait

        await step_flush(h, claim, taken_over_then_a_new_alert)
        assert [] == await h.flush(h.now + 4.9)
        assert [("hook", "first", "firing", 1)] == summary(await h.flush(h.now + 0.1))

    async def test_reload_elsewhere_does_not_take_a_leased_group(
        self, h: Harness, tmp_path: Path
    ) -> None:
        await h.fire(service="a")
        await h.flush(T0 + 5)
        h.now = T0 + 6
        await h.fire(service="b")
        h.now = T0 + 15
        claim = await h.dispatcher.claim(h.now)
        other = h.replica()
        assert [] == await h.flush(T0 + 15, other)
        reloaded = tmp_path / "reloaded"
        reloaded.mkdir()
        h.rt = Runtime.build(write_config(reloaded, notify="resolve_silenced = false"))
        assert [] == await h.flush(T0 + 16, other)  # every told group made due: not this one
        await h.dispatcher.flush(claim, T0 + 15)
        assert [("hook", "changed", "firing", 2)] == summary(await h.queued())

    async def test_concurrent_replicas_flush_each_group_once(self, h: Harness) -> None:
        for i in range(120):
            await h.fire(alertname=f"Rule{i}", service="a")
        replicas = [h.replica(batch_groups=16) for _ in range(3)]
        h.now = T0 + 5
        await asyncio.gather(*(r.flush_due() for r in replicas))
        sent = await h.queued()
        assert 120 == len(sent)
        assert 120 == len({n.group_key for n in sent})
        assert 120 == sum(r.notifications_created for r in replicas)


class TestChangesDuringFlush:
    """What changes while a group is being flushed is notified later, never lost or doubled."""

    async def test_severity_change_during_flush_flushes_again_at_once(self, h: Harness) -> None:
        await h.fire(service="a")
        h.now = T0 + 5
        claim = await h.dispatcher.claim(h.now)

        async def escalate() -> None:
            await h.fire("critical", service="a")
            assert [] == (await h.replica().claim(h.now)).gids  # still leased

        await step_flush(h, claim, escalate)
        assert [("hook", "first", "firing", 1)] == summary(await h.queued())
        sent = await h.flush(T0 + 5, h.replica())
        assert [("hook", "severity_changed", "firing", 1)] == summary(sent)
        assert "critical" == sent[0].alerts[0].severity

    async def test_change_during_a_flush_of_a_quiet_group_is_not_slept_through(
        self, h: Harness
    ) -> None:
        await h.fire(service="a")
        await h.flush(T0 + 5)
        h.now = T0 + 6
        await h.fire(service="b")
        h.now = T0 + 15
        claim = await h.dispatcher.claim(h.now)

        async def third() -> None:
            await h.fire(service="c")

        await step_flush(h, claim, third)
        assert [("hook", "changed", "firing", 2)] == summary(await h.queued())
        assert [("hook", "changed", "firing", 3)] == summary(await h.flush(T0 + 25))

    async def test_reload_between_claim_and_flush_tells_the_new_channels(
        self, h: Harness, tmp_path: Path
    ) -> None:
        await h.fire(service="a")
        h.now = T0 + 5
        claim = await h.dispatcher.claim(h.now)  # read the logs of the old route's channels
        h.rt = Runtime.build(write_config(tmp_path, '[[routes]]\nchannels = ["hook", "pager"]\n'))
        await h.dispatcher.flush(claim, h.now)
        assert [("hook", "first", "firing", 1), ("pager", "first", "firing", 1)] == sorted(
            summary(await h.queued())
        )

    async def test_alert_added_between_read_and_commit(self, h: Harness) -> None:
        await h.fire(service="a")
        h.now = T0 + 5
        claim = await h.dispatcher.claim(h.now)

        async def another() -> None:
            await h.fire(service="b")

        await step_flush(h, claim, another)
        assert [("hook", "first", "firing", 1)] == summary(await h.queued())
        assert [("hook", "changed", "firing", 2)] == summary(await h.flush(T0 + 15))

    async def test_alert_resolved_between_read_and_commit(self, h: Harness) -> None:
        a = await h.fire(service="a")
        h.now = T0 + 5
        claim = await h.dispatcher.claim(h.now)

        async def resolve() -> None:
            await h.resolve(a)

        await step_flush(h, claim, resolve)
        assert [("hook", "first", "firing", 1)] == summary(await h.queued())
        assert [("hook", "resolved", "resolved", 1)] == summary(await h.flush(T0 + 15))
        assert [] == await h.store.all()

    async def test_resolved_alert_firing_again_before_commit_stays(self, h: Harness) -> None:
        a = await h.fire(service="a")
        await h.flush(T0 + 5)
        await h.resolve(a)
        h.now = T0 + 15
        claim = await h.dispatcher.claim(h.now)

        async def refire() -> None:
            await h.fire(service="a")

        await step_flush(h, claim, refire)
        assert [("hook", "resolved", "resolved", 1)] == summary(await h.queued())
        assert [("hook", "first", "firing", 1)] == summary(await h.flush(T0 + 25))


async def leftovers(h: Harness) -> dict[str, int]:
    """Alert and group state still in Redis (empty once every resolution was told)."""
    counts = {
        "alerts": await h.redis.hlen(f"{PREFIX}alerts"),
        "ga": await h.redis.hlen(f"{PREFIX}ga"),
        "groups:due": await h.redis.zcard(f"{PREFIX}groups:due"),
    }
    for pattern in ("ag", "group", "gm"):
        counts[pattern] = len(await h.redis.keys(f"{PREFIX}{pattern}:*"))
    return {k: n for k, n in counts.items() if n}


class TestResolvedUntilTold:
    """A resolution stays until every group holding the alert has told it."""

    async def test_pending_again_and_gone_before_the_flush(self, h: Harness) -> None:
        a = await h.fire(service="a")
        await h.flush(T0 + 5)
        h.now = T0 + 6
        resolved = await h.resolve(a)
        h.now = T0 + 7
        await h.go_pending(resolved)
        h.now = T0 + 8
        await h.write(a.fingerprint, None, notify=False)  # pending cleared: the alert is gone
        sent = await h.flush(T0 + 15)
        assert [("hook", "resolved", "resolved", 1)] == summary(sent)
        assert T0 + 6 == sent[0].alerts[0].ends_at
        assert {} == await leftovers(h)

    async def test_pending_again_does_not_hide_the_resolution(self, h: Harness) -> None:
        a = await h.fire(service="a")
        await h.flush(T0 + 5)
        await h.go_pending(await h.resolve(a))
        assert [("hook", "resolved", "resolved", 1)] == summary(await h.flush(T0 + 15))
        assert ["pending"] == [x.state for x in await h.store.all()]

    async def test_alert_in_two_groups_is_kept_until_both_told(
        self, tmp_path: Path, redis: Any
    ) -> None:
        routes = (
            '[[routes]]\nchannels = ["hook"]\ncontinue = true\n'
            '[[routes]]\nchannels = ["pager"]\ngroup_interval = "1m"\n'
        )
        h = Harness(redis, write_config(tmp_path, routes))
        a = await h.fire(service="a")
        assert ["hook", "pager"] == sorted(n.receiver for n in await h.flush(T0 + 5))
        h.now = T0 + 6
        await h.resolve(a)
        assert ["hook"] == [n.receiver for n in await h.flush(T0 + 15)]
        # The alert is over, but the groups' copy of its resolution stays until both told.
        assert [] == await h.store.all()
        copies = await h.redis.hvals(h.store.copies_key)
        assert ["resolved"] == [orjson.loads(raw)["state"] for raw in copies]
        assert ["pager"] == [n.receiver for n in await h.flush(T0 + 65)]
        assert {} == await h.redis.hgetall(h.store.copies_key)


RULES = """
[[rules]]
name = "QueueBacklog"
metric = "queue_depth"
window = "1m"
group_by = ["service", "queue"]
warning = "> 1000"
"""


ROUTE = '\n[[routes]]\nchannels = ["hook"]\ngroup_by = ["alertname", "service", "queue"]\n'
QUEUES = [(f"svc{i % 5}", f"q{i}") for i in range(50)]


def told_firing(receiver: Receiver) -> Counter[str]:
    return Counter(
        a["fingerprint"]
        for body in receiver.bodies("/hook")
        for a in body["alerts"]
        if a["status"] == "firing"
    )


async def run_fleet(
    daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver, consumers: list[str]
) -> Counter[str]:
    """Start daemons, publish one event per queue (one entry each), wait until all is told."""
    apps = [await daemons.start(consumer=c) for c in consumers]
    for service, queue in QUEUES:
        await redis.xadd(
            "alertd:events",
            {"name": "queue_depth", "value": "2000", "service": service, "queue": queue},
        )
    await wait_for(lambda: len(told_firing(receiver)) == len(QUEUES))
    await settle(redis, len(QUEUES))
    for app in apps:
        await daemons.stop(app)
    return told_firing(receiver)


class TestThreeDaemons:
    """Three daemons in one consumer group notify each firing alert exactly once, like one."""

    # On one Redis and on a Cluster, with the same assertions.
    @pytest.fixture
    def redis(self, topology_redis: Any) -> Any:
        return topology_redis

    @pytest.fixture
    def daemons(self, topology_daemons: DaemonFactory) -> DaemonFactory:
        return topology_daemons

    async def test_same_notifications_as_one_daemon(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(RULES, hook(receiver), ROUTE)
        expected = {
            fingerprint({"alertname": "QueueBacklog", "service": s, "queue": q}): 1
            for s, q in QUEUES
        }
        one = await run_fleet(daemons, redis, receiver, ["solo"])
        assert expected == dict(one)

        await redis.flushall()
        receiver.reset()
        three = await run_fleet(daemons, redis, receiver, ["r1", "r2", "r3"])
        assert expected == dict(three)
