"""A new page does not wait behind a storm: each channel's urgent lane (outbox.py)."""

from __future__ import annotations

import redis.asyncio as aioredis

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
