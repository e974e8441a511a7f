"""The console's page and assets as served by alertd, and the alert fields the page groups by."""

from __future__ import annotations

from typing import Any

import aiohttp
import redis.asyncio as aioredis

from tests.conftest import DaemonFactory, Receiver, wait_for
from tests.test_e2e import hook, xadd_flat

RULES = """
[[rules]]
name = "QueueBacklog"
metric = "queue_depth"
group_by = ["service", "queue"]
warning = "> 1000"
"""

ROUTES = """
[[time_intervals]]
name = "always"
times = ["00:00-24:00"]

[[routes]]
match = { service = "billing" }
channels = ["hook"]
group_by = ["alertname", "service"]
mute_during = ["always"]
continue = true

[[routes]]
channels = ["log"]
"""


async def start(daemons: DaemonFactory, receiver: Receiver, token: str = "") -> Any:
    cfg = daemons.write(RULES, hook(receiver), ROUTES)
    if token:
        cfg.write_text(cfg.read_text().replace("[http]\n", f'[http]\ntoken = "{token}"\n'))
    app = await daemons.start(http=True)
    return app, f"http://127.0.0.1:{app.config.settings.http.port}"


class TestPageServed:
    """GET / answers the console from the package, without a token, locked to its own origin."""

    async def test_page_and_assets_without_token(
        self, daemons: DaemonFactory, receiver: Receiver
    ) -> None:
        _, url = await start(daemons, receiver, token="t0ken")
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/") as r:
                assert 200 == r.status
                assert "text/html" == r.content_type
                assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
                assert "script-src 'self'" in r.headers["Content-Security-Policy"]
                page = await r.text()
            assert '<script src="/console/console.js" defer></script>' in page
            for asset, ctype in [
                ("console.js", "text/javascript"),
                ("console.css", "text/css"),
                ("favicon.svg", "image/svg+xml"),
            ]:
                async with session.get(f"{url}/console/{asset}") as r:
                    assert (200, ctype) == (r.status, r.content_type)
            async with session.get(url + "/api/v1/alerts") as r:
                assert 401 == r.status  # the data keeps the API's rules

    async def test_unknown_asset_is_a_json_404(
        self, daemons: DaemonFactory, receiver: Receiver
    ) -> None:
        _, url = await start(daemons, receiver)
        async with aiohttp.ClientSession() as session, session.get(url + "/console/x.js") as r:
            assert 404 == r.status
            assert "not found" == (await r.json())["error"]


class TestAlertGroups:
    """Each alert says which groups it is notified in and which time interval mutes it now."""

    async def test_groups_and_muted_by(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        _, url = await start(daemons, receiver)
        await xadd_flat(redis, "queue_depth", 2000, service="billing", queue="emails")

        async def alerts() -> list[dict[str, Any]]:
            async with aiohttp.ClientSession() as session, session.get(url + "/api/v1/alerts") as r:
                body: dict[str, list[dict[str, Any]]] = await r.json()
            return body["alerts"]

        [alert] = await wait_for(alerts)
        expected = [
            {
                "groupKey": '{}/{service="billing"}:{alertname="QueueBacklog",service="billing"}',
                "groupLabels": {"alertname": "QueueBacklog", "service": "billing"},
                "channels": ["hook"],
                "mutedBy": ["always"],
            },
            {
                "groupKey": '{}[1]:{alertname="QueueBacklog"}',
                "groupLabels": {"alertname": "QueueBacklog"},
                "channels": ["log"],
                "mutedBy": [],
            },
        ]
        assert expected == alert["groups"]
        assert ["always"] == alert["mutedBy"]
