"""Channel health: failure counts in /health; AlertdChannelFailing through the other channels."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from alertd.model import fingerprint
from alertd.notify.channel_health import FAILING_AFTER, FAILING_ALERT
from alertd.notify.outbox import Outbox
from alertd.storage.partitions import Partitions
from tests.conftest import DaemonFactory, Receiver, free_port, wait_for
from tests.test_delivery import dead_letters_at_least, make_notification, outbox_len, webhook

FAILING_LABELS = {"alertname": FAILING_ALERT, "channel": "bad", "severity": "critical"}
BAD_RETRY = 'attempts = 1\ntimeout = "1s"\n'


class BadReceiver:
    """The `bad` channel's receiver: a closed port until `start()`, then a 200 server."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/bad"
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def ok(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", ok)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def bad() -> AsyncIterator[BadReceiver]:
    server = BadReceiver()
    yield server
    await server.stop()


def settled(redis: aioredis.Redis, apps: list[Any]) -> Callable[[], Awaitable[bool]]:
    """Nothing queued for either channel and no delivery in hand in any replica."""

    async def check() -> bool:
        queued = await outbox_len(redis, "bad") + await outbox_len(redis, "good")
        return queued == 0 and not any(app.workers._busy for app in apps)

    return check


def failing_bodies(receiver: Receiver, status: str) -> list[dict[str, Any]]:
    return [
        b
        for b in receiver.bodies("/good")
        if b["groupLabels"].get("alertname") == FAILING_ALERT and b["status"] == status
    ]


class TestChannelFailingAlert:
    """A channel that keeps failing is reported once through the others, and resolved later."""

    async def test_raised_once_by_two_replicas_then_resolved(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver, bad: BadReceiver
    ) -> None:
        channels = webhook("bad", bad.url, retry=BAD_RETRY) + webhook(
            "good", f"{receiver.url}/good"
        )
        daemons.write(channels=channels)
        apps = [await daemons.start(consumer="a"), await daemons.start(consumer="b")]
        outbox = Outbox(Partitions.single(redis, "alertd:{p0}:"))
        for i in range(FAILING_AFTER + 2):
            await outbox.enqueue(make_notification("bad", series=f"s{i}"))

        await wait_for(dead_letters_at_least(redis, FAILING_AFTER + 2))
        await wait_for(lambda: failing_bodies(receiver, "firing"))
        await wait_for(settled(redis, apps))
        [firing] = failing_bodies(receiver, "firing")
        alert = firing["alerts"][0]
        assert FAILING_LABELS == alert["labels"]
        assert "good" == firing["receiver"]
        assert "connection failed" in alert["annotations"]["description"]
        assert "failing" in {app.workers.health["bad"].status for app in apps}

        await bad.start()
        await outbox.enqueue(make_notification("bad", series="back"))
        [resolved] = await wait_for(lambda: failing_bodies(receiver, "resolved"))
        assert (FAILING_LABELS, "resolved", alert["startsAt"]) == (
            resolved["alerts"][0]["labels"],
            resolved["alerts"][0]["status"],
            resolved["alerts"][0]["startsAt"],
        )
        assert fingerprint(FAILING_LABELS) == resolved["alerts"][0]["fingerprint"]
        assert "ok" in {app.workers.health["bad"].status for app in apps}

    async def test_a_new_episode_raises_it_again(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver, bad: BadReceiver
    ) -> None:
        channels = webhook("bad", bad.url, retry=BAD_RETRY) + webhook(
            "good", f"{receiver.url}/good"
        )
        daemons.write(channels=channels)
        app = await daemons.start()
        outbox = Outbox(Partitions.single(redis, "alertd:{p0}:"))
        for i in range(FAILING_AFTER):
            await outbox.enqueue(make_notification("bad", series=f"first{i}"))
        await wait_for(lambda: failing_bodies(receiver, "firing"))
        await bad.start()
        await outbox.enqueue(make_notification("bad", series="back"))
        await wait_for(lambda: failing_bodies(receiver, "resolved"))

        await bad.stop()
        for i in range(FAILING_AFTER):
            await outbox.enqueue(make_notification("bad", series=f"second{i}"))
        await wait_for(lambda: len(failing_bodies(receiver, "firing")) == 2)
        await wait_for(settled(redis, [app]))
        assert (2, 1) == (
            len(failing_bodies(receiver, "firing")),
            len(failing_bodies(receiver, "resolved")),
        )

    async def test_fewer_failures_raise_nothing(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver, bad: BadReceiver
    ) -> None:
        channels = webhook("bad", bad.url, retry=BAD_RETRY) + webhook(
            "good", f"{receiver.url}/good"
        )
        daemons.write(channels=channels)
        app = await daemons.start()
        outbox = Outbox(Partitions.single(redis, "alertd:{p0}:"))
        for i in range(FAILING_AFTER - 1):
            await outbox.enqueue(make_notification("bad", series=f"s{i}"))

        await wait_for(dead_letters_at_least(redis, FAILING_AFTER - 1))
        await wait_for(settled(redis, [app]))
        health = app.workers.health["bad"]
        assert ([], "degraded", FAILING_AFTER - 1) == (
            receiver.bodies("/good"),
            health.status,
            health.consecutive_failures,
        )


class TestHealthEndpoint:
    """GET /health shows per channel its status, consecutive failures and last success."""

    async def test_failing_and_working_channels(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver, bad: BadReceiver
    ) -> None:
        channels = webhook("bad", bad.url, retry=BAD_RETRY) + webhook(
            "good", f"{receiver.url}/good"
        )
        daemons.write(channels=channels)
        app = await daemons.start(http=True)
        outbox = Outbox(Partitions.single(redis, "alertd:{p0}:"))
        await outbox.enqueue(make_notification("good"))
        for i in range(FAILING_AFTER):
            await outbox.enqueue(make_notification("bad", series=f"s{i}"))
        await wait_for(lambda: failing_bodies(receiver, "firing"))

        listen = app.config.settings.http.listen
        async with aiohttp.ClientSession() as http, http.get(f"http://{listen}/health") as resp:
            body = await resp.json()
        checks = body["checks"]["channels"]
        assert ("degraded", "failing", FAILING_AFTER, None) == (
            body["status"],
            checks["bad"]["status"],
            checks["bad"]["consecutive_failures"],
            checks["bad"]["last_success"],
        )
        assert ("ok", 0, True) == (
            checks["good"]["status"],
            checks["good"]["consecutive_failures"],
            checks["good"]["last_success"].endswith("Z"),
        )
