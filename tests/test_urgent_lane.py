"""A new page does not wait behind a storm: each channel's urgent lane (outbox.py), and
the consumer's pages first (consumer.py)."""

from __future__ import annotations

import orjson
import redis.asyncio as aioredis

from alertd.engine.evaluator import PendingWrite
from alertd.model import Notification, NotifyReason
from alertd.notify.outbox import Outbox
from alertd.storage.partitions import Partitions
from tests.conftest import DaemonFactory, Receiver, wait_for
from tests.test_delivery import make_notification, outbox_empty, webhook
from tests.test_workers_batch import enqueue_at_once

STORM = 400  # warnings queued before the page: over six rounds of the channel's 64 slots


def arrived(receiver: Receiver) -> list[str]:
    return [r.json()["id"] for r in receiver.received]


class TestUrgentLane:
    async def test_a_page_overtakes_a_storm_of_warnings_and_the_storm_still_drains(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        receiver.delay_s = 0.3  # each answer takes a while: the storm needs seconds
        daemons.write(channels=webhook("hook", f"{receiver.url}/hook"))
        storm = [make_notification("hook", series=f"w{i}") for i in range(STORM)]
        await enqueue_at_once(redis, storm)
        await daemons.start()
        await wait_for(lambda: len(receiver.received) >= 1)

        page = make_notification("hook", series="db", alertname="Down", severity="critical")
        await Outbox(Partitions.single(redis, "alertd:{p0}:")).enqueue(page)
        await wait_for(lambda: page.id in arrived(receiver))
        # Without the lane it would come after every warning queued before it.
        assert arrived(receiver).index(page.id) < STORM // 2

        await wait_for(outbox_empty(redis, "hook"), timeout_s=30)
        ids = arrived(receiver)
        assert sorted(ids) == sorted({n.id for n in [*storm, page]})  # each once, none lost

    async def test_only_news_of_a_critical_alert_is_urgent(self) -> None:
        page = make_notification("hook", severity="critical")
        assert page.urgent
        assert not make_notification("hook", severity="warning").urgent
        for reason in (NotifyReason.REPEAT, NotifyReason.DIGEST, NotifyReason.REPLAY):
            assert not _with(page, reason=reason).urgent
        assert not _with(page, status="resolved", reason=NotifyReason.RESOLVED).urgent


def _with(n: Notification, **changes: object) -> Notification:
    return Notification.from_dict({**n.to_dict(), **changes})


STORM_RULES = """
[[rules]]
name = "StormWarn"
metric = "storm"
window = "10m"
group_by = ["id"]
warning = "> 0"
max_series = 100000

[[rules]]
name = "Down"
metric = "up_failed"
window = "10m"
group_by = ["service"]
critical = "> 0"
"""
STORM_EVENTS = 20_000  # two catch-up reads of the daemon's defaults: seconds of ingest


async def alerts_stored(redis: aioredis.Redis) -> int:
    keys = [key async for key in redis.scan_iter(match="alertd:{p*}:alerts", count=1000)]
    return sum([await redis.hlen(key) for key in keys])


class TestPagesFirstAtIngest:
    async def test_a_page_is_filed_before_a_storm_that_arrived_before_it(
        self, daemons: DaemonFactory, redis: aioredis.Redis
    ) -> None:
        cfg = daemons.write(STORM_RULES)
        # A claim of idle entries, when due, comes before reading on (Consumer._collect):
        # the default's, not the test daemons' 1 s.
        cfg.write_text(cfg.read_text().replace('claim_idle = "1s"', 'claim_idle = "60s"'))
        app = await daemons.start()
        filed: list[str] = []  # the rule of each alert change, as filed for notification
        on_change = app.evaluator.on_change

        async def recorded(writes: list[PendingWrite]) -> None:
            filed.extend(w.rule for w in writes)
            await on_change(writes)

        app.evaluator.on_change = recorded
        stream = app.config.settings.redis.stream
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(STORM_EVENTS):
                event = {"name": "storm", "value": 1, "labels": {"id": f"s{i}"}}
                pipe.xadd(stream, {"data": orjson.dumps(event)})
            await pipe.execute()
        await wait_for(lambda: filed, timeout_s=60)  # the storm is on
        page = {"name": "up_failed", "value": 1, "labels": {"service": "db"}}
        await redis.xadd(stream, {"data": orjson.dumps(page)})

        await wait_for(lambda: len(filed) == STORM_EVENTS + 1, timeout_s=60)
        # Without pages first, it would come after every warning ahead of it.
        assert 1000 < filed[filed.index("Down") :].count("StormWarn")
        assert STORM_EVENTS + 1 == await alerts_stored(redis)
        group = app.config.settings.redis.group
        assert 0 == (await redis.xpending(stream, group))["pending"]  # each acknowledged
