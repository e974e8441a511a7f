"""A channel's `rate_limit`: over it, notifications are held and sent as one digest."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError

from alertd.channels.registry import parse_channel_config
from alertd.model import NotifyReason
from alertd.notify.ratelimit import build_digest
from tests.conftest import DaemonFactory, Receiver, keys_like, wait_for
from tests.test_channel_slack import make_alert, make_notification
from tests.test_e2e import RULES

SERVICES = [f"s{i:02d}" for i in range(50)]
CHANNEL = """
[channels.hook]
type = "webhook"
url = "{url}/hook"
rate_limit = "5/10s"
"""
ROUTE = '\n[[routes]]\nchannels = ["hook"]\ngroup_by = ["alertname", "service"]\n'


async def publish_all(redis: aioredis.Redis, value: float) -> None:
    events = [
        {"name": "queue_depth", "value": value, "labels": {"service": s, "queue": "q"}}
        for s in SERVICES
    ]
    await redis.xadd("alertd:events", {"data": orjson.dumps(events)})


class TestFlappingStorm:
    """50 groups flapping into a 5/10s channel: the limit holds, every group is told, none lost."""

    @pytest.mark.timeout(150)
    async def test_fifty_groups_flapping(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(RULES, CHANNEL.format(url=receiver.url), ROUTE)
        app = await daemons.start()

        def held() -> float:
            value = app.metrics.registry.get_sample_value(
                "alertd_notifications_held", {"channel": "hook"}
            )
            return value or 0.0

        for value in (7000, 10, 7000, 10, 7000):
            await publish_all(redis, value)
            await wait_for(lambda: len(receiver.received) >= 5, timeout_s=30)
        await wait_for(lambda: held() > 0, timeout_s=30)
        await wait_for(lambda: app.history.list(outcome="held"), timeout_s=10)
        started = receiver.received[0].at

        async def settled() -> list[dict[str, Any]] | None:
            records = await app.history.list(limit=10_000)
            left = await redis.llen("alertd:{p0}:held:hook")
            pending = [r for r in records if r["outcome"] == "pending"]
            # Held ones go out in a digest queued in an outbox: delivered once it is empty.
            streams = await keys_like(redis, "alertd:{p*}:outbox:hook")
            streams += await keys_like(redis, "alertd:{p*}:urgent:hook")
            queued = sum([await redis.xlen(k) for k in streams])
            # History is written beside delivery, not before it: a digest can be delivered
            # before the records naming it are written. Wait for every record's last word.
            unsettled = [r for r in records if not r["delivered_at"]]
            done = records and not left and not pending and not queued and not unsettled
            return records if done else None

        records = await wait_for(settled, timeout_s=90, interval_s=0.2)
        await wait_for(lambda: held() == 0, timeout_s=5)

        # At most 5 messages in any 10 s (less half a second for delivery jitter).
        times = sorted(r.at for r in receiver.received)
        busiest = max(sum(1 for t in times if start <= t < start + 9.5) for start in times)
        assert busiest <= 5, [round(t - started, 2) for t in times]

        # Every group is named in a message.
        bodies = receiver.bodies("/hook")
        named = {a["labels"]["service"] for b in bodies for a in b["alerts"]}
        assert set(SERVICES) == named

        # Nothing lost: each notification was delivered, itself or held and in a digest.
        delivered_ids = {b["id"] for b in bodies}
        assert [] == [r for r in records if r["outcome"] not in ("delivered", "held")]
        held_ones = [r for r in records if r["outcome"] == "held"]
        assert held_ones
        assert [] == [r for r in records if r.get("digest", r["id"]) not in delivered_ids]
        assert all(r["delivered_at"] for r in records)
        # And the last word on every group is its final state: firing.
        last_of: dict[str, str] = {}
        for b in sorted(bodies, key=lambda b: b["id"]):
            for a in b["alerts"]:
                last_of[a["labels"]["service"]] = a["status"]
        assert {s: "firing" for s in SERVICES} == last_of


class TestDigest:
    """A digest stands for each held group's latest notification."""

    def test_latest_per_group_and_names_every_group(self) -> None:
        older = make_notification([make_alert(0)])
        newer = make_notification([make_alert(0, state="resolved")])
        newer.id, newer.created_at = "B", older.created_at + 1
        other = make_notification([make_alert(1)])
        other.id, other.group_key = "C", '{}:{alertname="Other"}'

        digest = build_digest("hook", [newer, older, other], time.time())

        assert NotifyReason.DIGEST == digest.reason
        assert ["B", "C"] == sorted(g["id"] for g in digest.extra["digest"])
        assert ["firing", "resolved"] == sorted(a.state for a in digest.alerts)
        assert "firing" == digest.status

    @pytest.mark.parametrize("text", ["5", "x/1m", "0/1m", "5/0s", "5/soon"])
    def test_bad_rate_limits_are_config_errors(self, text: str) -> None:
        with pytest.raises(ValidationError):
            parse_channel_config({"type": "log", "rate_limit": text})
