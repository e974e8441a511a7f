"""No secret leaks after every kind of delivery error (issue 19).

A real `alertd run` delivers through channels whose secrets sit in URL paths, URL
queries, headers, signing keys and SMTP passwords, to receivers that answer 400 or
500 echoing the whole request, that time out, or that refuse the connection. Then
the log, the API answers, the metrics, the dead letters and every Redis key and value
are searched for every secret.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from tests.conftest import RedisServer, free_port, wait_for
from tests.test_hardening_http import is_ready, spawn_daemon, stop_daemon

SLACK_PATH = "/services/T0SLACKSEC/B0SLACKSEC/xoxSLACKPATHSECRET"
API_KEY = "APIKEYSECRET42"
HEADER_TOKEN = "HEADERSECRET42"
QUERY_TOKEN = "TOKENSECRET42"
SLOW_KEY = "SLOWSECRET42"
DOWN_KEY = "DOWNSECRET42"
SMTP_PASSWORD = "SMTPSECRET42"
API_TOKEN = "APITOKENSECRET42"
SIGNING_KEY = base64.b64encode(b"SIGNINGSECRET42-SIGNINGSECRET42").decode()
SECRETS = [
    SLACK_PATH,
    "T0SLACKSEC",
    "xoxSLACKPATHSECRET",
    API_KEY,
    HEADER_TOKEN,
    QUERY_TOKEN,
    SLOW_KEY,
    DOWN_KEY,
    SMTP_PASSWORD,
    API_TOKEN,
    SIGNING_KEY,
]


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    """A receiver that answers with everything it was sent: path, query, headers, body."""

    async def handle(request: web.Request) -> web.Response:
        if request.path.startswith("/slow"):
            await asyncio.sleep(5)
        text = f"bad request {request.path_qs} headers={dict(request.headers)}"
        text += f" body={(await request.read())[:500]!r}"
        return web.Response(status=500 if request.path.startswith("/e500") else 400, text=text)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def channels(echo: str) -> str:
    down = f"http://127.0.0.1:{free_port()}"
    fast = '[channels.{0}.retry]\nattempts = 2\ninitial_backoff = "10ms"\nmax_backoff = "20ms"\n'
    fast += 'timeout = "300ms"\n'
    return (
        f'[channels.slk]\ntype = "slack"\nwebhook_url = "{echo}{SLACK_PATH}"\n'
        + fast.format("slk")
        + f'[channels.h400]\ntype = "webhook"\nurl = "{echo}/e400/hook?api_key={API_KEY}"\n'
        f'secret = "whsec_{SIGNING_KEY}"\n'
        f'headers = {{ Authorization = "Bearer {HEADER_TOKEN}" }}\n'
        + fast.format("h400")
        + f'[channels.h500]\ntype = "webhook"\nurl = "{echo}/e500/x?token={QUERY_TOKEN}"\n'
        + fast.format("h500")
        + f'[channels.slow]\ntype = "webhook"\nurl = "{echo}/slow?key={SLOW_KEY}"\n'
        + fast.format("slow")
        + f'[channels.down]\ntype = "webhook"\nurl = "{down}/x?key={DOWN_KEY}"\n'
        + fast.format("down")
        + f'[channels.mail]\ntype = "email"\nhost = "127.0.0.1"\nport = {free_port()}\n'
        f'security = "none"\nusername = "alertd"\npassword = "{SMTP_PASSWORD}"\n'
        'from = "alertd@example.com"\nto = ["oncall@example.com"]\n' + fast.format("mail")
    )


def write_config(base: Path, redis_url: str, echo: str, port: int) -> Path:
    (base / "rules").mkdir()
    (base / "channels").mkdir()
    (base / "rules" / "r.toml").write_text(
        '[[rules]]\nname = "QueueBacklog"\nmetric = "queue_depth"\ncritical = "> 10"\n'
    )
    (base / "channels" / "c.toml").write_text(channels(echo))
    cfg = base / "alertd.toml"
    cfg.write_text(
        f'[redis]\nurl = "{redis_url}"\n'
        '[daemon]\nblock = "100ms"\neval_interval = "200ms"\nshutdown_timeout = "3s"\n'
        f'[http]\nlisten = "127.0.0.1:{port}"\ntoken = "{API_TOKEN}"\n'
        '[notify]\ngroup_wait = "0s"\ngroup_interval = "1s"\n'
        '[logging]\nlevel = "debug"\n'
        '[[routes]]\nchannels = ["slk", "h400", "h500", "slow", "down", "mail"]\n'
    )
    return cfg


async def redis_dump(redis: aioredis.Redis) -> str:
    """Every key and every value in Redis, as text."""
    out: list[str] = []
    async for key in redis.scan_iter(count=1000):
        kind = (await redis.type(key)).decode()
        value: Any
        if kind == "string":
            value = await redis.get(key)
        elif kind == "hash":
            value = await redis.hgetall(key)
        elif kind == "stream":
            value = await redis.xrange(key)
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = await redis.smembers(key)
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        else:
            value = kind
        out.append(f"{key!r} {value!r}")
    return "\n".join(out)


class TestSecretScan:
    """Logs, API answers, metrics, dead letters and Redis hold no secret after failures."""

    async def test_no_secret_anywhere_after_every_kind_of_delivery_error(
        self, tmp_path: Path, redis_server: RedisServer, redis: aioredis.Redis, echo: str
    ) -> None:
        port = free_port()
        cfg = write_config(tmp_path, redis_server.url, echo, port)
        log = tmp_path / "alertd.log"
        proc = spawn_daemon(cfg, log)
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        answers: list[str] = []
        try:
            await wait_for(lambda: is_ready(base), timeout_s=30)
            await redis.xadd("alertd:events", {"name": "queue_depth", "value": "50"})

            async def dead_letters() -> int:
                entries = await redis.xrange("alertd:dead")
                channels_dead = {f.get(b"channel") for _, f in entries}
                return len(channels_dead - {None}) >= 6

            await wait_for(dead_letters, timeout_s=60)
            async with aiohttp.ClientSession(headers=auth) as session:
                async with session.post(f"{base}/api/v1/test-alert", json={}) as resp:
                    answers.append(await resp.text())
                    assert 502 == resp.status
                for path in (
                    "/api/v1/dead-letters",
                    "/api/v1/alerts",
                    "/api/v1/rules",
                    "/health",
                    "/health/ready",
                    "/metrics",
                ):
                    async with session.get(f"{base}{path}") as resp:
                        answers.append(await resp.text())
        finally:
            stop_daemon(proc)

        results = orjson.loads(answers[0])["results"]
        assert {"slk", "h400", "h500", "slow", "down", "mail"} <= set(results)
        assert all(not r["ok"] and r["error"] for n, r in results.items() if n != "log")
        places = {
            "log": log.read_text(errors="replace"),
            "api": "\n".join(answers),
            "redis": await redis_dump(redis),
        }
        leaks = {
            (where, secret)
            for where, text in places.items()
            for secret in SECRETS
            if secret in text
        }
        assert set() == leaks
        # The echo reached alertd and was kept, masked: the errors still say what happened.
        assert "HTTP 400: bad request ***" in places["api"]
