"""Delivery workers take the outbox in batches: side by side, few writes, same guarantees."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from alertd.model import Notification
from alertd.notify.outbox import GROUP, Outbox
from alertd.storage.partitions import Partitions
from tests.conftest import DaemonFactory, Receiver, wait_for
from tests.test_delivery import make_notification, outbox_empty, outbox_len, webhook
from tests.test_outbox import crash

PATIENT = 'attempts = 100\ninitial_backoff = "50ms"\nmax_backoff = "200ms"\n'


async def enqueue_at_once(redis: aioredis.Redis, ns: list[Notification]) -> None:
    """Queue `ns` in one MULTI, so a worker's next read finds them all."""
    outbox = Outbox(Partitions.single(redis, "alertd:{p0}:"))
    for receiver in {n.receiver for n in ns}:
        await outbox.ensure_group(receiver)
    async with redis.pipeline(transaction=True) as pipe:
        for n in ns:
            outbox.add_to(pipe, n)
        await pipe.execute()


async def command_calls(redis: aioredis.Redis, command: str) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def delivered(app: Any) -> float:
    value = app.metrics.registry.get_sample_value(
        "alertd_notifications_total", {"channel": "hook", "result": "delivered"}
    )
    return value or 0.0


class TestBurst:
    """A burst for one channel is sent side by side and acknowledged in a few writes."""

    async def test_burst_in_hand_at_once_and_acknowledged_together(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(channels=webhook("hook", f"{receiver.url}/hook"))
        app = await daemons.start()
        receiver.delay_s = 1.0
        ns = [make_notification("hook", series=f"s{i}") for i in range(40)]
        await redis.config_resetstat()
        await enqueue_at_once(redis, ns)

        await wait_for(outbox_empty(redis, "hook"), timeout_s=10)
        arrivals = [r.at for r in receiver.received]
        assert sorted(n.id for n in ns) == sorted(r.json()["id"] for r in receiver.received)
        # All sent before the first answer came back, not a few at a time.
        assert max(arrivals) - min(arrivals) < receiver.delay_s
        # Outcomes finishing together share a MULTI: far fewer XACKs than notifications.
        assert await command_calls(redis, "xack") <= 10
        assert (len(ns), 0) == (delivered(app), app.workers.health["hook"].in_flight)


class TestTakeover:
    """The heartbeat of a batch keeps each entry its own, and lets go of one taken over."""

    async def test_an_entry_taken_over_mid_batch_is_left_the_rest_recorded(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        config = daemons.write(channels=webhook("hook", f"{receiver.url}/hook"))
        config.write_text(config.read_text().replace('claim_idle = "1s"', 'claim_idle = "3s"'))
        app = await daemons.start(consumer="a")
        receiver.delay_s = 2.0
        await enqueue_at_once(redis, [make_notification("hook", series=f"s{i}") for i in range(5)])
        await wait_for(lambda: len(receiver.received) == 5)
        entry_ids = [eid for eid, _ in await redis.xrange("alertd:{p0}:outbox:hook")]
        taken = entry_ids[2]

        await redis.xclaim("alertd:{p0}:outbox:hook", GROUP, "other", 0, [taken])
        await wait_for(lambda: app.workers.health["hook"].in_flight == 0, timeout_s=4)
        await wait_for(lambda: delivered(app) == 4)

        async def only_taken_pending() -> bool:
            # The outcomes are written a moment after the deliveries are counted.
            pending = await redis.xpending_range("alertd:{p0}:outbox:hook", GROUP, "-", "+", 10)
            return [(taken, b"other")] == [(p["message_id"], p["consumer"]) for p in pending]

        await wait_for(only_taken_pending, timeout_s=2)
        assert [taken] == [eid for eid, _ in await redis.xrange("alertd:{p0}:outbox:hook")]
        failed = app.metrics.registry.get_sample_value(
            "alertd_notifications_total", {"channel": "hook", "result": "failed"}
        )
        assert failed is None

    async def test_two_replicas_share_a_slow_burst_each_sent_once(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(channels=webhook("hook", f"{receiver.url}/hook"))
        await daemons.start(consumer="a")
        await daemons.start(consumer="b")
        receiver.delay_s = 2.5  # longer than claim_idle (1s)
        ns = [make_notification("hook", series=f"s{i}") for i in range(30)]
        await enqueue_at_once(redis, ns)

        await wait_for(outbox_empty(redis, "hook"), timeout_s=15)
        assert sorted(n.id for n in ns) == sorted(r.json()["id"] for r in receiver.received)


class TestRestart:
    """A restart under the same consumer name takes back all it held at once."""

    async def test_every_pending_entry_resumed_without_waiting_for_claim_idle(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        config = daemons.write(channels=webhook("hook", f"{receiver.url}/hook", retry=PATIENT))
        config.write_text(config.read_text().replace('claim_idle = "1s"', 'claim_idle = "60s"'))
        receiver.default = (503, {}, "down")
        app = await daemons.start(consumer="web-1")
        ns = [make_notification("hook", series=f"s{i}") for i in range(8)]
        await enqueue_at_once(redis, ns)
        await wait_for(lambda: {r.json()["id"] for r in receiver.received} == {n.id for n in ns})
        await crash(daemons, app)

        receiver.default = (200, {}, "ok")
        after_crash = len(receiver.received)
        await daemons.start(consumer="web-1")
        await wait_for(outbox_empty(redis, "hook"), timeout_s=10)
        resent = sorted(r.json()["id"] for r in receiver.received[after_crash:])
        assert (sorted(n.id for n in ns), 0) == (resent, await outbox_len(redis, "hook"))
