"""The notification history answers "was anyone told, when, and did it arrive?"."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis

from alertd.model import NotifyReason, fingerprint
from alertd.notify.history import History, record_of
from tests.conftest import DaemonFactory, Receiver, wait_for
from tests.service_stubs import Services
from tests.test_channel_slack import make_alert, make_notification
from tests.test_cli_check import alertd
from tests.test_e2e import RULES, xadd_flat

CHANNELS = """
[channels.hook]
type = "webhook"
url = "{receiver}/hook"
[channels.pager]
type = "pagerduty"
routing_key = "not-a-32-character-key"
url = "{pagerduty}"
fallback = "hook"
[channels.quiet]
type = "webhook"
url = "{receiver}/quiet"
rate_limit = "1/1h"
"""
ROUTE = '\n[[routes]]\nchannels = ["hook", "pager", "quiet"]\n'
LABELS = {"alertname": "QueueBacklog", "service": "billing", "queue": "emails"}


async def api(app: Any, query: str = "") -> tuple[int, Any]:
    url = f"http://{app.config.settings.http.listen}/api/v1/notifications{query}"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.json()


class TestEndToEnd:
    """Every notification of a run is listed, newest first, with what became of it."""

    async def test_delivered_dead_lettered_held_and_fallback_copies(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver, services: Services
    ) -> None:
        channels = CHANNELS.format(receiver=receiver.url, pagerduty=services.pagerduty)
        config = daemons.write(RULES, channels, ROUTE)
        app = await daemons.start(http=True)

        await xadd_flat(redis, "queue_depth", 7000, service="billing", queue="emails")
        await wait_for(lambda: len(receiver.bodies("/hook")) >= 2, timeout_s=20)
        await xadd_flat(redis, "queue_depth", 10, service="billing", queue="emails")
        await wait_for(lambda: len(receiver.bodies("/hook")) >= 4, timeout_s=20)

        async def settled() -> Any:
            status, body = await api(app)
            done = [n for n in body["notifications"] if n["outcome"] != "pending"]
            return body if status == 200 and len(done) == 8 else None

        body = await wait_for(settled, timeout_s=20)
        got = sorted((n["channel"], n["status"], n["outcome"]) for n in body["notifications"])
        assert [
            ("hook", "firing", "delivered"),
            ("hook", "firing", "delivered"),  # the pager's fallback copy
            ("hook", "resolved", "delivered"),
            ("hook", "resolved", "delivered"),
            ("pager", "firing", "dead-lettered"),
            ("pager", "resolved", "dead-lettered"),
            ("quiet", "firing", "delivered"),
            ("quiet", "resolved", "held"),  # over its 1/1h rate limit
        ] == got
        queued = [n["queued_at"] for n in body["notifications"]]
        assert sorted(queued, reverse=True) == queued
        dead = [n for n in body["notifications"] if n["outcome"] == "dead-lettered"]
        assert all("Length of 'routing_key' is incorrect" in n["last_error"] for n in dead)
        assert all(n["delivered_at"] is None and n["attempts"] == 1 for n in dead)
        delivered = [n for n in body["notifications"] if n["outcome"] == "delivered"]
        assert all(n["delivered_at"] >= n["queued_at"] for n in delivered)
        fp = fingerprint(LABELS)
        assert all([fp] == n["fingerprints"] and 1 == n["alerts"] for n in body["notifications"])

        assert 2 == len((await api(app, "?channel=pager"))[1]["notifications"])
        assert 2 == len((await api(app, "?outcome=dead-lettered"))[1]["notifications"])
        assert 8 == len((await api(app, f"?fingerprint={fp}"))[1]["notifications"])
        assert ["quiet"] == [
            n["channel"] for n in (await api(app, "?outcome=held"))[1]["notifications"]
        ]
        assert 0 == len((await api(app, "?fingerprint=0000"))[1]["notifications"])
        assert 0 == len((await api(app, "?since=2099-01-01T00:00:00Z"))[1]["notifications"])
        assert 8 == len((await api(app, "?since=1h"))[1]["notifications"])

        cli = await asyncio.to_thread(
            alertd, "notifications", "--config", str(config), "--json", cwd=config.parent
        )
        assert body == orjson.loads(cli.stdout)
        table = await asyncio.to_thread(
            alertd,
            "notifications",
            "--channel",
            "pager",
            "--config",
            str(config),
            cwd=config.parent,
        )
        lines = table.stdout.splitlines()
        assert lines[0].startswith("QUEUED")
        assert 2 == sum("dead-lettered" in line for line in lines[1:])

    async def test_bad_filters_are_400_and_one_cli_line(
        self, daemons: DaemonFactory, receiver: Receiver, services: Services
    ) -> None:
        channels = CHANNELS.format(receiver=receiver.url, pagerduty=services.pagerduty)
        config = daemons.write(RULES, channels, ROUTE)
        app = await daemons.start(http=True)
        for query in ("?outcome=lost", "?since=yesterday", "?limit=0"):
            status, body = await api(app, query)
            assert 400 == status
            assert {"error", "details"} == set(body)
        cli = await asyncio.to_thread(
            alertd,
            "notifications",
            "--since",
            "yesterday",
            "--config",
            str(config),
            cwd=config.parent,
        )
        assert 1 == cli.returncode
        assert 1 == len(cli.stderr.splitlines())
        assert "Traceback" not in cli.stderr


class TestStore:
    """Records move forward only and leave after the retention."""

    async def test_a_late_pending_does_not_undo_delivered(self, redis: aioredis.Redis) -> None:
        history = History(redis, "alertd:", lambda: 3600.0)
        n = make_notification([make_alert()])
        n.created_at = time.time()
        await history.record(n, "delivered", delivered_at=time.time())
        await history.queued([n])
        assert ["delivered"] == [r["outcome"] for r in await history.list()]

    async def test_records_past_retention_are_dropped(self, redis: aioredis.Redis) -> None:
        now = [time.time()]
        history = History(redis, "alertd:", lambda: 60.0, clock=lambda: now[0])
        old = make_notification([make_alert()])
        old.created_at = now[0] - 120
        await history.queued([old])
        assert [] == await history.list()  # already outside the window it is listed from
        now[0] += 5
        fresh = make_notification([make_alert(1)])
        fresh.id = "01JD3X5Y0C9Q8V7N6M5K4J3H2H"
        fresh.created_at = now[0]
        await history.queued([fresh])
        assert [fresh.id] == [r["id"] for r in await history.list()]
        assert 1 == await redis.zcard(history.keys.index)
        assert 1 == await redis.hlen(history.keys.records)

    async def test_a_held_one_says_when_its_digest_arrived(self, redis: aioredis.Redis) -> None:
        history = History(redis, "alertd:", lambda: 3600.0)
        n = make_notification([make_alert()])
        n.created_at = time.time()
        await history.queued([n], outcome="held")
        digest = make_notification([make_alert()])
        digest.id, digest.reason = "01JD3X5Y0C9Q8V7N6M5K4J3DIG", NotifyReason.DIGEST
        digest.created_at, digest.extra = time.time(), {"held_ids": [n.id]}

        await history.record(digest, "delivered", delivered_at=digest.created_at)
        # The rate limiter's own note, landing after the delivery, changes nothing.
        await history.record_many([(n, record_of(n, "held", digest=digest.id))])

        held = await history.list(outcome="held")
        assert [(n.id, digest.id)] == [(r["id"], r["digest"]) for r in held]
        assert held[0]["delivered_at"] is not None
