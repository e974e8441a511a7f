"""The webhook receiver both alertd and Alertmanager post to, in a process of its own.

`python -m bench.receiver --port P`. It timestamps each request as it arrives
(before reading the body), and keeps, per alert (its `id` label), the first
arrival time, plus per group which alerts it has delivered, to count
duplicates: a notification none of whose firing alerts is new for its group.

Control endpoints (JSON), used by the bench process:
    POST /_bench/reset                  forget everything
    GET  /_bench/stats                  counts so far
    GET  /_bench/arrival?id=X&timeout_s=T   long-poll: when alert X first arrived
    GET  /_bench/until?unique=N&timeout_s=T long-poll: stats once N distinct alerts arrived

`stats` and `until` take an optional `prefix=P`: then `prefix_unique` and
`prefix_last_new_at` count only the alerts whose id starts with P, and `until`
waits for N of those (the storm scenario tells its storm from its probes so).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

import orjson
from aiohttp import web


class Record:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.first_at: dict[str, float] = {}
        self.by_group: dict[str, set[str]] = {}
        self.notifications = 0
        self.alerts = 0
        self.duplicates = 0
        self.first_request_at: float | None = None
        self.last_new_at: float | None = None
        self.waiters: dict[str, list[asyncio.Future[float]]] = {}
        self.count_waiters: list[tuple[int, str, asyncio.Future[None]]] = []
        # per id prefix asked about: [distinct alerts, arrival of the last new one]
        self.prefixes: dict[str, list[Any]] = {}

    def prefix_count(self, prefix: str) -> list[Any]:
        if prefix not in self.prefixes:
            ats = [at for aid, at in self.first_at.items() if aid.startswith(prefix)]
            self.prefixes[prefix] = [len(ats), max(ats, default=None)]
        return self.prefixes[prefix]

    def stats(self, prefix: str | None = None) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if prefix is not None:
            count, last = self.prefix_count(prefix)
            extra = {"prefix_unique": count, "prefix_last_new_at": last}
        return {
            **extra,
            "notifications": self.notifications,
            "alerts": self.alerts,
            "unique": len(self.first_at),
            "duplicates": self.duplicates,
            "groups": len(self.by_group),
            "first_request_at": self.first_request_at,
            "last_new_at": self.last_new_at,
        }

    def add(self, body: dict[str, Any], at: float) -> None:
        self.notifications += 1
        if self.first_request_at is None:
            self.first_request_at = at
        group = self.by_group.setdefault(str(body.get("groupKey", "")), set())
        new = False
        for alert in body.get("alerts", []):
            if alert.get("status") != "firing":
                continue
            self.alerts += 1
            aid = str((alert.get("labels") or {}).get("id", ""))
            if aid not in group:
                group.add(aid)
                new = True
            if aid not in self.first_at:
                self.first(aid, at)
        if not new:
            self.duplicates += 1
        if self.count_waiters:
            keep: list[tuple[int, str, asyncio.Future[None]]] = []
            for n, prefix, waiter in self.count_waiters:
                if self.prefix_count(prefix)[0] >= n and not waiter.done():
                    waiter.set_result(None)
                elif not waiter.done():
                    keep.append((n, prefix, waiter))
            self.count_waiters = keep

    def first(self, aid: str, at: float) -> None:
        """Alert `aid` arrived for the first time."""
        self.first_at[aid] = at
        self.last_new_at = at
        for prefix, count in self.prefixes.items():
            if aid.startswith(prefix):
                count[0] += 1
                count[1] = at
        for fut in self.waiters.pop(aid, []):
            if not fut.done():
                fut.set_result(at)


def build_app() -> web.Application:
    rec = Record()

    async def hook(request: web.Request) -> web.Response:
        at = time.time()
        body = await request.read()
        try:
            rec.add(orjson.loads(body), at)
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            return web.Response(status=400, text="bad json")
        return web.Response(text="ok")

    async def reset(request: web.Request) -> web.Response:
        rec.reset()
        return web.json_response({"ok": True})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(rec.stats(request.query.get("prefix")))

    async def arrival(request: web.Request) -> web.Response:
        aid = request.query["id"]
        timeout_s = float(request.query.get("timeout_s", "10"))
        if aid in rec.first_at:
            return web.json_response({"at": rec.first_at[aid]})
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        rec.waiters.setdefault(aid, []).append(fut)
        try:
            at = await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            return web.json_response({"at": None})
        return web.json_response({"at": at})

    async def until(request: web.Request) -> web.Response:
        n = int(request.query["unique"])
        timeout_s = float(request.query.get("timeout_s", "60"))
        prefix = request.query.get("prefix")
        if rec.prefix_count(prefix or "")[0] < n:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            rec.count_waiters.append((n, prefix or "", fut))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, timeout_s)
        return web.json_response(rec.stats(prefix))

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post("/_bench/reset", reset)
    app.router.add_get("/_bench/stats", stats)
    app.router.add_get("/_bench/arrival", arrival)
    app.router.add_get("/_bench/until", until)
    app.router.add_post("/{tail:.*}", hook)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="bench webhook receiver")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(
        build_app(),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
