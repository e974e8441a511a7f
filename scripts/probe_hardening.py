"""Reproduce the findings of issue 19 against `alertd run` and print one figure per finding.

    python scripts/probe_hardening.py [--src DIR] [--only NAME,...]

`--src` is the source tree whose `alertd` package runs (default: this checkout), so the
same script measures a build before and after a change:

    git archive <commit> | tar -x -C /tmp/before
    python scripts/probe_hardening.py --src /tmp/before

Everything is loopback and bounded: a private redis-server per probe, a webhook
receiver in this process, at most 1,100 client connections and 20,000 events.
Needs redis-server on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
SLACK_PATH = "/services/T0PROBE/B0PROBE/probeSECRETpath"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(pred: Callable[[], Awaitable[Any]], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = await pred()
        if result:
            return result
        await asyncio.sleep(0.05)
    return None


class Receiver:
    """Webhook receiver: records bodies; the Slack path answers 400 echoing the request."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.path.startswith("/services/"):
            return web.Response(status=400, text=f"invalid path {request.path}")
        self.bodies.append(body)
        return web.Response(text="ok")

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Receiver]:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        try:
            yield self
        finally:
            await runner.cleanup()


class Setup:
    """A private redis-server and one `alertd run` from `src`, in a temp dir."""

    def __init__(self, src: Path, rules: str, channels: str, extra: str = "", nofile: int = 0):
        self.src, self.rules, self.channels, self.extra, self.nofile = (
            src,
            rules,
            channels,
            extra,
            nofile,
        )
        self.dir = Path(tempfile.mkdtemp(prefix="alertd-probe-"))
        self.redis_port = free_port()
        self.http_port = free_port()
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.log = self.dir / "alertd.log"
        self.procs: list[subprocess.Popen[bytes]] = []

    def config(self) -> Path:
        (self.dir / "rules").mkdir(exist_ok=True)
        (self.dir / "channels").mkdir(exist_ok=True)
        (self.dir / "rules" / "r.toml").write_text(self.rules)
        (self.dir / "channels" / "c.toml").write_text(self.channels)
        cfg = self.dir / "alertd.toml"
        cfg.write_text(
            f'[redis]\nurl = "redis://127.0.0.1:{self.redis_port}/0"\n'
            '[daemon]\nblock = "100ms"\neval_interval = "200ms"\nshutdown_timeout = "3s"\n'
            f'[http]\nlisten = "127.0.0.1:{self.http_port}"\n'
            '[notify]\ngroup_wait = "0s"\ngroup_interval = "1s"\n' + self.extra
        )
        return cfg

    def check(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "alertd", "check", "--config", str(self.config())],
            env=self.env(),
            cwd=self.dir,  # not this checkout: `python -m` would import its alertd first
            capture_output=True,
            text=True,
            timeout=60,
        )

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTD_")}
        env["PYTHONPATH"] = str(self.src)
        return env

    async def __aenter__(self) -> Setup:
        binary = shutil.which("redis-server") or "redis-server"
        self.procs.append(
            subprocess.Popen(  # noqa: ASYNC220 (a fork takes no time worth a thread here)
                [
                    binary,
                    "--port",
                    str(self.redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.dir),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        self.redis = aioredis.Redis(port=self.redis_port)
        await until(self._redis_up, 10)
        cfg = self.config()
        nofile = self.nofile

        def limit() -> None:
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.daemon = subprocess.Popen(  # noqa: ASYNC220 (as above)
            [sys.executable, "-m", "alertd", "run", "--config", str(cfg)],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env=self.env(),
            cwd=self.dir,
            preexec_fn=limit,
        )
        self.procs.insert(0, self.daemon)
        await until(lambda: self.status("/health/ready", 200), 30)
        return self

    async def _redis_up(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except Exception:
            return False

    async def __aexit__(self, *_: object) -> None:
        for p in self.procs:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        await self.redis.aclose()
        shutil.rmtree(self.dir, ignore_errors=True)

    async def request(
        self, method: str, path: str, timeout_s: float = 5, **kw: Any
    ) -> tuple[int, bytes, dict[str, str]]:
        try:
            async with (
                aiohttp.ClientSession() as s,
                s.request(
                    method, self.base + path, timeout=aiohttp.ClientTimeout(total=timeout_s), **kw
                ) as r,
            ):
                return r.status, await r.read(), dict(r.headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, type(exc).__name__.encode(), {}

    async def status(self, path: str, expected: int) -> bool:
        return (await self.request("GET", path, timeout_s=2))[0] == expected

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.daemon.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return 0.0

    async def redis_mib(self) -> float:
        return round((await self.redis.info("memory"))["used_memory"] / 2**20, 1)

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()


def hook(receiver: Receiver) -> str:
    return (
        f'[channels.hook]\ntype = "webhook"\nurl = "{receiver.url}/hook"\n'
        '[channels.hook.retry]\nattempts = 2\ninitial_backoff = "50ms"\nmax_backoff = "100ms"\n'
    )


RULE = """
[[rules]]
name = "Probe"
metric = "probe"
window = "5m"
group_by = ["service"]
critical = "> 10"
"""
ROUTE = '[[routes]]\nchannels = ["hook"]\n'


async def page_after(setup: Setup, receiver: Receiver, timeout_s: float) -> float | None:
    """Publish one event; seconds until its page reaches the receiver (None: never)."""
    before = len(receiver.bodies)
    started = time.monotonic()
    await setup.redis.xadd("alertd:events", {"name": "probe", "value": "50", "service": "x"})

    async def arrived() -> bool:
        return len(receiver.bodies) > before

    return round(time.monotonic() - started, 2) if await until(arrived, timeout_s) else None


async def probe_half_open(src: Path) -> dict[str, Any]:
    async with Receiver().running() as rx, Setup(src, RULE, hook(rx), ROUTE, nofile=1024) as setup:
        writers = []
        for _ in range(1100):
            try:
                _, w = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", setup.http_port), 2
                )
                w.write(b"GET /health/ready HT")
                writers.append(w)
            except (OSError, TimeoutError):
                pass
        ready = [await setup.status("/health/ready", 200) for _ in range(3)]
        page_s = await page_after(setup, rx, 25)
        for w in writers:
            w.close()
        lines = setup.log_lines()
        return {
            "clients_connected": len(writers),
            "ready_during": f"{sum(ready)}/3",
            "page_s": page_s,
            "log_lines": len(lines),
            "emfile_lines": sum("Too many open files" in ln for ln in lines),
        }


async def probe_redos(src: Path) -> dict[str, Any]:
    async with Receiver().running() as rx, Setup(src, RULE, hook(rx), ROUTE) as setup:
        body = {"matchers": {"service": "~(a+)+$"}, "duration": "1h", "createdBy": "probe"}
        await setup.request("POST", "/api/v1/silences", json=body)
        worst = 0.0
        value = "a" * 25 + "!"
        await setup.redis.xadd("alertd:events", {"name": "probe", "value": "50", "service": value})
        started = time.monotonic()
        while time.monotonic() - started < 15 and not rx.bodies:
            t = time.monotonic()
            await setup.request("GET", "/health/live", timeout_s=30)
            worst = max(worst, time.monotonic() - t)
            await asyncio.sleep(0.05)
        return {
            "label_chars": len(value),
            "max_live_s": round(worst, 3),
            "page_s": round(time.monotonic() - started, 2) if rx.bodies else None,
        }


async def probe_template_width(src: Path) -> dict[str, Any]:
    rules = RULE + 'summary = "{value:>20000000}"\n'
    async with Receiver().running() as rx:
        setup = Setup(src, rules, hook(rx), ROUTE)
        checked = setup.check()
        out: dict[str, Any] = {"check_exit": checked.returncode}
        if checked.returncode != 0:
            shutil.rmtree(setup.dir, ignore_errors=True)
            return out | {"check_says": (checked.stdout + checked.stderr).strip()[:160]}
        async with setup:
            await page_after(setup, rx, 30)
            out["webhook_body_mib"] = round(max(map(len, rx.bodies), default=0) / 2**20, 1)
            out["redis_mib"] = await setup.redis_mib()
        return out


async def probe_cardinality(src: Path) -> dict[str, Any]:
    async with Receiver().running() as rx, Setup(src, RULE, hook(rx), ROUTE) as setup:
        redis0, rss0 = await setup.redis_mib(), setup.rss_mib()
        pipe = setup.redis.pipeline(transaction=False)
        for i in range(20_000):
            pipe.xadd("alertd:events", {"name": "probe", "value": "50", "service": f"s{i}"})
        await pipe.execute()

        async def consumed() -> bool:
            g = (await setup.redis.xinfo_groups("alertd:events"))[0]
            return g["lag"] == 0 and g["pending"] == 0

        started = time.monotonic()
        await until(consumed, 300)
        took = round(time.monotonic() - started, 1)
        await until(lambda: asyncio.sleep(0, bool(rx.bodies)), 60)
        status, alerts, _ = await setup.request("GET", "/api/v1/alerts", timeout_s=60)
        return {
            "events": 20_000,
            "consume_s": took,
            "redis_mib": f"{redis0} -> {await setup.redis_mib()}",
            "rss_mib": f"{rss0} -> {setup.rss_mib()}",
            "alerts": len(orjson.loads(alerts)["alerts"]) if status == 200 else status,
            "api_alerts_mib": round(len(alerts) / 2**20, 2),
            "largest_webhook_mib": round(max(map(len, rx.bodies), default=0) / 2**20, 2),
        }


async def probe_cross_site(src: Path) -> dict[str, Any]:
    async with Setup(src, RULE, "") as setup:
        body = b'{"matchers": {"service": "x"}, "duration": "1h", "createdBy": "evil"}'
        headers = {"Content-Type": "text/plain", "Origin": "http://evil.example"}
        status, _, _ = await setup.request("POST", "/api/v1/silences", data=body, headers=headers)
        rebound = {"Host": "rebind.evil.example:9099", "Content-Type": "application/json"}
        st2, _, _ = await setup.request("POST", "/api/v1/silences", data=body, headers=rebound)
        return {"text_plain_foreign_origin": status, "rebound_host": st2}


async def probe_secret_echo(src: Path) -> dict[str, Any]:
    async with Receiver().running() as rx:
        channels = (
            f'[channels.slk]\ntype = "slack"\nwebhook_url = "{rx.url}{SLACK_PATH}"\n'
            "[channels.slk.retry]\nattempts = 1\n"
        )
        async with Setup(src, RULE, channels, '[[routes]]\nchannels = ["slk"]\n') as setup:
            await setup.redis.xadd(
                "alertd:events", {"name": "probe", "value": "50", "service": "x"}
            )

            async def dead() -> int:
                return await setup.redis.xlen("alertd:dead")

            await until(dead, 20)
            _, answer, _ = await setup.request("POST", "/api/v1/test-alert", json={})
            dead_text = repr(await setup.redis.xrange("alertd:dead"))
            return {
                "in_log": sum(SLACK_PATH in ln for ln in setup.log_lines()),
                "in_dead_letters": dead_text.count(SLACK_PATH),
                "in_test_alert_answer": answer.decode().count(SLACK_PATH),
            }


async def probe_oom(src: Path) -> dict[str, Any]:
    async with Receiver().running() as rx, Setup(src, RULE, hook(rx), ROUTE) as setup:
        pipe = setup.redis.pipeline(transaction=True)
        pipe.config_set("maxmemory-policy", "noeviction")
        for i in range(2300):
            pipe.xadd("alertd:events", {"name": "probe", "value": "50", "service": f"s{i % 5}"})
        pipe.config_set("maxmemory", "1")
        await pipe.execute()
        await asyncio.sleep(3)  # the figure: what the probes say a few seconds into the stall
        ready, _, _ = await setup.request("GET", "/health/ready")
        health_status, health, _ = await setup.request("GET", "/health")
        g = (await setup.redis.xinfo_groups("alertd:events"))[0]
        await setup.redis.config_set("maxmemory", "0")
        return {
            "ready_status": ready,
            "health": f"{health_status} {orjson.loads(health).get('status')}",
            "entries_waiting": int(g["pending"]) + int(g["lag"] or 0),
            "pages_during": len(rx.bodies),
        }


async def probe_smaller(src: Path) -> dict[str, Any]:
    async with Setup(src, RULE, "") as setup:
        raw = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 10000 + b"\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", setup.http_port)
        writer.write(raw)
        head = (await asyncio.wait_for(reader.read(4096), 5)).decode("latin-1")
        writer.close()
        content_type = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in head.split("\r\n")
                if ln.lower().startswith("content-type")
            ),
            "",
        )
        body = {"matchers": {"service": "x"}, "duration": "99999999999d", "createdBy": "p"}
        st, answer, _ = await setup.request("POST", "/api/v1/silences", json=body)
        await setup.redis.xadd(
            "alertd:events", {"data": '{"name": "x", "labels": {"bad-name": "1"}}'}
        )
        await asyncio.sleep(1)
        _, metrics, _ = await setup.request("GET", "/metrics")
        reasons = [
            ln
            for ln in metrics.decode().splitlines()
            if ln.startswith("alertd_events_invalid_total")
        ]
        return {
            "long_header_content_type": content_type,
            "huge_duration": f"{st} {orjson.loads(answer).get('details')}",
            "bad_label_name_reason": reasons,
        }


PROBES = {
    "half_open": probe_half_open,
    "redos": probe_redos,
    "template_width": probe_template_width,
    "cardinality": probe_cardinality,
    "cross_site": probe_cross_site,
    "secret_echo": probe_secret_echo,
    "oom": probe_oom,
    "smaller": probe_smaller,
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=ROOT)
    parser.add_argument("--only", default=",".join(PROBES))
    args = parser.parse_args()
    for name in args.only.split(","):
        started = time.monotonic()
        try:
            result = await PROBES[name](args.src.resolve())
        except Exception as exc:  # one probe failing must not hide the others' figures
            result = {"probe_error": f"{type(exc).__name__}: {exc}"[:300]}
        result["probe_s"] = round(time.monotonic() - started, 1)
        print(orjson.dumps({name: result}).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
