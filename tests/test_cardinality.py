"""The cardinality guard (SPEC section 4, `max_series`) against a real daemon and Redis."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from alertd.cardinality import RESOLVE_AFTER_S, SERIES_LIMIT_ALERT
from tests.conftest import DaemonFactory, Receiver, wait_for
from tests.test_e2e import ROUTE, hook

RULES = """
[[rules]]
name = "PerRequest"
metric = "latency"
window = "5m"
group_by = ["request_id"]
critical = "> 10"
max_series = {max_series}
"""


def metric_values(text: str, name: str) -> dict[str, float]:
    """rule label -> value of the samples called `name`."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[sample.labels.get("rule", "")] = sample.value
    return out


async def get(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return await resp.text()


async def publish(redis: aioredis.Redis, ids: range, value: float = 50) -> None:
    pipe = redis.pipeline(transaction=False)
    for i in ids:
        pipe.xadd("alertd:events", {"name": "latency", "value": str(value), "request_id": f"r{i}"})
    await pipe.execute()


async def consumed_all(redis: aioredis.Redis) -> bool:
    groups = await redis.xinfo_groups("alertd:events")
    return bool(groups) and groups[0]["lag"] == 0 and groups[0]["pending"] == 0


class TestSeriesLimit:
    """A rule admits series first come up to max_series; the rest are counted, not stored."""

    async def test_unbounded_label_is_capped_and_reported(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(rules=RULES.format(max_series=5), channels=hook(receiver), extra=ROUTE)
        app = await daemons.start(http=True)
        url = f"http://{app.config.settings.http.listen}"
        await publish(redis, range(5))
        await wait_for(lambda: consumed_all(redis), timeout_s=20)
        await publish(redis, range(5, 2000))
        await wait_for(lambda: consumed_all(redis), timeout_s=60)

        text = await get(f"{url}/metrics")
        assert {"PerRequest": 5.0} == metric_values(text, "alertd_series")
        assert {"PerRequest": 1995.0} == metric_values(text, "alertd_series_limited_total")
        alerts = orjson.loads(await get(f"{url}/api/v1/alerts"))["alerts"]
        rule_alerts = sorted(
            a["labels"]["request_id"] for a in alerts if "request_id" in a["labels"]
        )
        assert ["r0", "r1", "r2", "r3", "r4"] == rule_alerts
        # Nothing per refused series is kept in Redis: only the 5 admitted windows.
        window_keys = [k async for k in redis.scan_iter(match="alertd:{p*}:w:*", count=1000)]
        assert 5 == len(window_keys)

        dead = await redis.xrange("alertd:dead")
        reasons = [f[b"reason"].decode() for _, f in dead]
        assert reasons and {"series limit of rule PerRequest reached (5)"} == set(reasons)
        assert len(reasons) <= 3  # at most one per rule per second, however many events
        payload = orjson.loads(dead[0][1][b"payload"])
        assert "latency" == orjson.loads(payload["data"])["name"]

        def limit_pages() -> list[dict[str, Any]]:
            return [
                a
                for body in receiver.bodies("/hook")
                for a in body["alerts"]
                if a["labels"]["alertname"] == SERIES_LIMIT_ALERT
            ]

        pages = await wait_for(limit_pages, timeout_s=20)
        expected = {"alertname": SERIES_LIMIT_ALERT, "rule": "PerRequest", "severity": "warning"}
        assert expected == pages[0]["labels"]
        assert "firing" == pages[0]["status"]

    async def test_limit_alert_resolves_on_an_idle_stream(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(rules=RULES.format(max_series=2), channels=hook(receiver), extra=ROUTE)
        skew = [0.0]
        await daemons.start(clock=lambda: time.time() + skew[0])
        await publish(redis, range(5))

        def limit_states() -> list[str]:
            return [
                a["status"]
                for body in receiver.bodies("/hook")
                for a in body["alerts"]
                if a["labels"]["alertname"] == SERIES_LIMIT_ALERT
            ]

        await wait_for(lambda: "firing" in limit_states(), timeout_s=20)
        skew[0] = RESOLVE_AFTER_S + 1  # no event since: only the housekeeping can see it
        await wait_for(lambda: "resolved" in limit_states(), timeout_s=30)

    async def test_admitted_series_keep_working(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        """At the limit, an admitted series still resolves and fires as its samples say."""
        daemons.write(rules=RULES.format(max_series=2), channels=hook(receiver), extra=ROUTE)
        app = await daemons.start(http=True)
        url = f"http://{app.config.settings.http.listen}"
        await publish(redis, range(2))
        await wait_for(lambda: consumed_all(redis), timeout_s=20)
        await publish(redis, range(2, 50))
        await publish(redis, range(1), value=1)  # r0 recovers

        async def r0_state() -> str | None:
            alerts = orjson.loads(await get(f"{url}/api/v1/alerts"))["alerts"]
            states = [a["state"] for a in alerts if a["labels"].get("request_id") == "r0"]
            return None if states else "gone"

        # `last` of r0 is now 1: its alert resolves and leaves the current alerts.
        assert "gone" == await wait_for(r0_state, timeout_s=20)
        alerts = orjson.loads(await get(f"{url}/api/v1/alerts"))["alerts"]
        assert ["r1"] == [a["labels"]["request_id"] for a in alerts if "request_id" in a["labels"]]


class TestAlertsPagination:
    """GET /api/v1/alerts answers in pages: limit and cursor, next_cursor while more follow."""

    async def test_pages_cover_every_alert_once(
        self, daemons: DaemonFactory, redis: aioredis.Redis
    ) -> None:
        daemons.write(rules=RULES.format(max_series=100))
        app = await daemons.start(http=True)
        url = f"http://{app.config.settings.http.listen}/api/v1/alerts"
        await publish(redis, range(25))
        await wait_for(lambda: consumed_all(redis), timeout_s=20)

        whole = orjson.loads(await get(url))
        assert (25, False) == (len(whole["alerts"]), "next_cursor" in whole)
        seen: list[str] = []
        cursor = ""
        pages = 0
        while True:
            page = orjson.loads(
                await get(f"{url}?limit=10" + (f"&cursor={cursor}" if cursor else ""))
            )
            seen += [a["fingerprint"] for a in page["alerts"]]
            pages += 1
            if "next_cursor" not in page:
                break
            cursor = page["next_cursor"]
        assert (3, [a["fingerprint"] for a in whole["alerts"]]) == (pages, seen)

    async def test_bad_limit_and_cursor_are_400(self, daemons: DaemonFactory) -> None:
        daemons.write(rules=RULES.format(max_series=100))
        app = await daemons.start(http=True)
        url = f"http://{app.config.settings.http.listen}/api/v1/alerts"
        async with aiohttp.ClientSession() as session:
            for query in ("limit=0", "limit=abc", "limit=999999", "cursor=%%%"):
                async with session.get(f"{url}?{query}") as resp:
                    assert (400, True) == (resp.status, "error" in await resp.json()), query


class TestV2AlertsPagination:
    """GET /api/v2/alerts keeps Alertmanager's bare list; pages follow X-Next-Cursor."""

    async def test_pages_cover_every_alert_once(
        self, daemons: DaemonFactory, redis: aioredis.Redis
    ) -> None:
        daemons.write(rules=RULES.format(max_series=100))
        app = await daemons.start(http=True)
        url = f"http://{app.config.settings.http.listen}/api/v2/alerts"
        await publish(redis, range(25))
        await wait_for(lambda: consumed_all(redis), timeout_s=20)

        async with aiohttp.ClientSession() as session:
            async with session.get(url) as resp:
                whole = await resp.json()
                assert (25, None) == (len(whole), resp.headers.get("X-Next-Cursor"))
            seen: list[str] = []
            pages, cursor = 0, ""
            while True:
                query = "?limit=10" + (f"&cursor={cursor}" if cursor else "")
                async with session.get(url + query) as resp:
                    seen += [a["fingerprint"] for a in await resp.json()]
                    cursor = resp.headers.get("X-Next-Cursor", "")
                pages += 1
                if not cursor:
                    break
        assert (3, sorted(a["fingerprint"] for a in whole)) == (pages, sorted(seen))
        assert len(seen) == len(set(seen))
