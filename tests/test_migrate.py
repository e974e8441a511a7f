"""Upgrading from the unpartitioned key layout: queued notifications and silences carry over."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from alertd.notify.outbox import Outbox
from alertd.silences import SilenceStore, silence_from_request
from alertd.storage.migrate import old_state_key
from alertd.storage.partitions import Partitions
from tests.conftest import DaemonFactory, Receiver, wait_for
from tests.test_delivery import make_notification
from tests.test_e2e import hook

STREAMS = {"alertd:events", "alertd:dead"}


class TestOldKeys:
    """Only the old layout's state keys are moved, never a stream or a new key."""

    def test_which_keys(self) -> None:
        assert old_state_key("alertd:alerts", "alertd:", STREAMS)
        assert old_state_key("alertd:outbox:hook", "alertd:", STREAMS)
        assert old_state_key("alertd:w:abc:1", "alertd:", STREAMS)
        assert not old_state_key("alertd:events", "alertd:", STREAMS)
        assert not old_state_key("alertd:dead", "alertd:", STREAMS)
        assert not old_state_key("alertd:{p0}:alerts", "alertd:", STREAMS)
        assert not old_state_key("other:alerts", "alertd:", STREAMS)


class TestUpgrade:
    """A daemon started on state of the earlier layout carries on with it."""

    async def test_queued_notification_and_silence_carry_over(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        queued = make_notification("hook")
        # the old layout: no hash tag
        await Outbox(Partitions.single(redis, "alertd:")).enqueue(queued)
        body = {"matchers": {"service": "api"}, "duration": "1h", "createdBy": "me"}
        silence_id = await SilenceStore(redis, "alertd:").create(
            silence_from_request(body, time.time())
        )
        daemons.write(channels=hook(receiver))
        app = await daemons.start()

        await wait_for(lambda: [b["id"] for b in receiver.bodies("/hook")] == [queued.id])
        assert [silence_id] == [s.id for s in await app.silences.active(time.time())]
        assert [] == await redis.keys("alertd:outbox:*")
        assert [] == await redis.keys("alertd:silences")
