"""End to end: grouping and silences as a webhook receiver sees them."""

from __future__ import annotations

import time

import orjson
import redis.asyncio as aioredis

from tests.conftest import DaemonFactory, Receiver, keys_like, stored_alerts, wait_for
from tests.test_cli_alerts import cli
from tests.test_e2e import hook

RULES = """
[[rules]]
name = "QueueBacklog"
metric = "queue_depth"
window = "1m"
group_by = ["service", "queue"]
warning = "> 1000"
"""

ROUTE = '\n[[routes]]\nchannels = ["hook"]\ngroup_by = ["alertname", "service"]\n'
SERVICES = [f"svc{i}" for i in range(5)]


async def publish_fifty(redis: aioredis.Redis) -> None:
    """Ten queues per service over five services, as one JSON array entry."""
    events = [
        {"name": "queue_depth", "value": 2000, "labels": {"service": s, "queue": f"q{j}"}}
        for s in SERVICES
        for j in range(10)
    ]
    await redis.xadd("alertd:events", {"data": orjson.dumps(events)})


async def settle(redis: aioredis.Redis, groups: int) -> None:
    """Wait until nothing more is coming: every outbox drained, and every group either
    flushed again since now or asleep until its repeat (its receivers know everything).
    """
    since = time.time()

    async def settled() -> bool:
        due: dict[bytes, float] = {}
        flushed = []
        for key in await keys_like(redis, "alertd:{p*}:groups:due"):  # every partition's
            prefix = key.decode().removesuffix("groups:due")
            for gid, at in await redis.zrange(key, 0, -1, withscores=True):
                due[gid] = at
                flushed.append(await redis.hget(f"{prefix}group:{gid.decode()}", "last_flush"))
        streams = [
            *await keys_like(redis, "alertd:{p*}:outbox:*"),
            *await keys_like(redis, "alertd:{p*}:urgent:*"),
        ]
        outboxes = [await redis.xlen(k) for k in streams]
        return (
            groups == len(due)
            and all(
                f is not None and (float(f) > since or at > since + 60)
                for f, at in zip(flushed, due.values(), strict=True)
            )
            and not any(outboxes)
        )

    await wait_for(settled)


def by_service(receiver: Receiver) -> dict[str, int]:
    """Alerts per notification, keyed by the group's service."""
    return {b["groupLabels"]["service"]: len(b["alerts"]) for b in receiver.bodies("/hook")}


class TestFiftyAlertsFiveGroups:
    """Fifty alerts in five groups reach the webhook as five notifications, not fifty."""

    async def test_one_notification_per_group(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(RULES, hook(receiver), ROUTE, group_wait="1s")
        await daemons.start()
        await publish_fifty(redis)
        await wait_for(lambda: len(receiver.bodies("/hook")) >= 5)
        await settle(redis, 5)
        assert 5 == len(receiver.bodies("/hook"))
        assert dict.fromkeys(SERVICES, 10) == by_service(receiver)
        body = receiver.bodies("/hook")[0]
        assert "firing" == body["status"]
        assert {"alertname", "service"} == set(body["groupLabels"])
        assert 10 == len({a["fingerprint"] for a in body["alerts"]})


class TestSilenceFromCli:
    """A silence added with `alertd silence add` mutes its group; the others are notified."""

    async def test_cli_silence_mutes_one_group(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        cfg = daemons.write(RULES, hook(receiver), ROUTE, group_wait="1s")
        await daemons.start()
        code, _, err = await cli("silence", "add", "service=svc2", "--duration", "1h", config=cfg)
        assert 0 == code, err
        await publish_fifty(redis)
        await wait_for(lambda: len(receiver.bodies("/hook")) >= 4)
        await settle(redis, 5)
        assert {s: 10 for s in SERVICES if s != "svc2"} == by_service(receiver)
        assert 50 == len(await stored_alerts(redis))  # silenced alerts are still tracked
