"""HTTP surface (placeholder: health and metrics only until the full API lands)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from alertd.app import App


async def start_http(app: App) -> web.AppRunner:
    http = web.Application()

    async def live(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(app.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    http.router.add_get("/health/live", live)
    http.router.add_get("/metrics", metrics)
    runner = web.AppRunner(http, access_log=None)
    await runner.setup()
    s = app.config.settings.http
    await web.TCPSite(runner, s.host, s.port).start()
    return runner
