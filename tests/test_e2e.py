"""End to end: events on the stream become notifications at a real webhook receiver."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from tests.conftest import DaemonFactory, Receiver, wait_for


# Every test here runs on one Redis and on a Cluster, with the same assertions.
@pytest.fixture
def redis(topology_redis: Any) -> Any:
    return topology_redis


@pytest.fixture
def daemons(topology_daemons: DaemonFactory) -> DaemonFactory:
    return topology_daemons


RULES = """
[[rules]]
name = "QueueBacklog"
metric = "queue_depth"
window = "1m"
group_by = ["service", "queue"]
warning = "> 1000"
critical = "> 5000"
summary = "{service}/{queue}: {value:.0f} waiting"
"""


def hook(receiver: Receiver) -> str:
    return f"""
[channels.hook]
type = "webhook"
url = "{receiver.url}/hook"
[channels.hook.retry]
initial_backoff = "50ms"
max_backoff = "200ms"
"""


ROUTE = '\n[[routes]]\nchannels = ["hook"]\n'


async def xadd_flat(redis: aioredis.Redis, name: str, value: float, **labels: str) -> None:
    await redis.xadd("alertd:events", {"name": name, "value": str(value), **labels})


async def xadd_json(redis: aioredis.Redis, data: object) -> None:
    await redis.xadd("alertd:events", {"data": orjson.dumps(data)})


class TestFiringAndResolved:
    """A threshold crossing reaches the webhook, and so does its recovery."""

    async def test_flat_entries_fire_then_resolve(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(RULES, hook(receiver), ROUTE)
        await daemons.start()
        await xadd_flat(redis, "queue_depth", 7000, service="billing", queue="emails")
        await wait_for(lambda: receiver.bodies("/hook"))
        firing = receiver.bodies("/hook")[0]
        assert "firing" == firing["status"]
        alert = firing["alerts"][0]
        expected_labels = {
            "alertname": "QueueBacklog",
            "severity": "critical",
            "service": "billing",
            "queue": "emails",
        }
        assert expected_labels == alert["labels"]
        assert 7000 == alert["value"]
        assert "billing/emails: 7000 waiting" == alert["annotations"]["summary"]

        await xadd_flat(redis, "queue_depth", 10, service="billing", queue="emails")
        await wait_for(lambda: len(receiver.bodies("/hook")) >= 2)
        resolved = receiver.bodies("/hook")[1]
        assert "resolved" == resolved["status"]
        assert "resolved" == resolved["alerts"][0]["status"]
        assert resolved["id"] != firing["id"]
        # Rendered with the value it resolved at, not the one it fired with.
        assert 10 == resolved["alerts"][0]["value"]
        assert "billing/emails: 10 waiting" == resolved["alerts"][0]["annotations"]["summary"]

    async def test_json_entries_and_arrays_fire(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(RULES, hook(receiver), ROUTE)
        await daemons.start()
        await xadd_json(
            redis,
            [
                {"name": "queue_depth", "value": 1500, "labels": {"service": "a", "queue": "q"}},
                {"name": "queue_depth", "value": 9000, "labels": {"service": "b", "queue": "q"}},
            ],
        )
        await wait_for(lambda: receiver.bodies("/hook"))
        body = receiver.bodies("/hook")[0]
        got = {a["labels"]["service"]: a["labels"]["severity"] for a in body["alerts"]}
        assert {"a": "warning", "b": "critical"} == got

    async def test_severity_change_is_notified_at_once(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(RULES, hook(receiver), ROUTE, group_interval="1h")
        await daemons.start()
        await xadd_flat(redis, "queue_depth", 2000, service="s", queue="q")
        await wait_for(lambda: receiver.bodies("/hook"))
        await xadd_flat(redis, "queue_depth", 6000, service="s", queue="q")
        await wait_for(lambda: len(receiver.bodies("/hook")) >= 2, timeout_s=5)
        second = receiver.bodies("/hook")[1]
        assert "critical" == second["alerts"][0]["labels"]["severity"]
        assert (
            second["alerts"][0]["fingerprint"]
            == receiver.bodies("/hook")[0]["alerts"][0]["fingerprint"]
        )


class TestBadEntries:
    """Garbage on the stream is dead-lettered with a reason; good events around it still work."""

    async def test_bad_entries_dead_lettered_good_ones_processed(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(RULES, hook(receiver), ROUTE)
        await daemons.start()
        await redis.xadd("alertd:events", {"name": "bad name!", "value": "1"})
        await redis.xadd("alertd:events", {"name": "queue_depth", "value": "nan"})
        await redis.xadd("alertd:events", {"data": b"{not json"})
        await redis.xadd("alertd:events", {"other": "x"})
        await xadd_json(
            redis,
            [
                {"name": "queue_depth", "value": 8000, "labels": {"service": "s", "queue": "q"}},
                {"name": "queue_depth", "value": "high"},
            ],
        )
        await xadd_flat(redis, "queue_depth", 1, service="t", queue="q")
        await wait_for(lambda: receiver.bodies("/hook"))

        async def five_dead() -> list[object]:
            rows = await redis.xrange("alertd:dead")
            return rows if len(rows) >= 5 else []

        rows = await wait_for(five_dead)
        reasons = [f[b"reason"].decode() for _, f in rows]
        assert all(f[b"source"] == b"event" for _, f in rows)
        assert any("name" in r for r in reasons)
        assert any("finite" in r for r in reasons)
        assert any("JSON" in r for r in reasons)
        assert any(r.startswith("[1]") and "value" in r for r in reasons)

        async def nothing_pending() -> bool:
            info = await redis.xpending("alertd:events", "alertd")
            return info["pending"] == 0

        await wait_for(nothing_pending)
        assert ["s"] == [a["labels"]["service"] for a in receiver.bodies("/hook")[0]["alerts"]]


class TestClaim:
    """Entries left pending by a dead consumer are claimed and processed by a live one."""

    async def test_second_consumer_claims_pending(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(RULES, hook(receiver), ROUTE)
        await redis.xgroup_create("alertd:events", "alertd", id="0", mkstream=True)
        await xadd_flat(redis, "queue_depth", 7000, service="claimed", queue="q")
        # A consumer that read the entry and died before acknowledging it.
        await redis.xreadgroup("alertd", "dead-consumer", {"alertd:events": ">"}, count=10)
        assert 1 == (await redis.xpending("alertd:events", "alertd"))["pending"]

        await daemons.start(consumer="live-consumer")
        await wait_for(lambda: receiver.bodies("/hook"), timeout_s=10)
        assert "claimed" == receiver.bodies("/hook")[0]["alerts"][0]["labels"]["service"]

        async def nothing_pending() -> bool:
            return (await redis.xpending("alertd:events", "alertd"))["pending"] == 0

        await wait_for(nothing_pending)
