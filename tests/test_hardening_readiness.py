"""Readiness that reflects progress (issue 19), each case against a real Redis misconfigured.

Redis full (maxmemory + noeviction), a read-only replica, refused credentials, and a
consumer that cannot acknowledge: /health/ready answers 503 with the cause, /health is
unhealthy, alertd_redis_up says whether Redis takes writes, and the daemon recovers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from alertd.watchdog import STALLED_ALERT
from tests.conftest import DaemonFactory, Receiver, RedisServer, free_port, wait_for
from tests.test_e2e import ROUTE, hook

RULES = """
[[rules]]
name = "QueueBacklog"
metric = "queue_depth"
window = "1m"
group_by = ["queue"]
critical = "> 10"
"""
PASSWORD = "wr0ng-pa55-7f3a"


async def get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        text = await resp.text()
        is_json = resp.content_type == "application/json"
        return resp.status, orjson.loads(text) if is_json else text


def redis_up(metrics_text: str) -> float | None:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "alertd_redis_up":
                return sample.value
    return None


async def not_ready_because(base: str, words: str) -> dict[str, Any] | None:
    status, body = await get(f"{base}/health/ready")
    if status == 503 and words in body.get("reason", ""):
        return dict(body)
    return None


async def ready(base: str) -> bool:
    return (await get(f"{base}/health/ready"))[0] == 200


def base_of(app: Any) -> str:
    return f"http://{app.config.settings.http.listen}"


@pytest.fixture
async def own_redis(private_redis: RedisServer) -> Any:
    client = aioredis.Redis.from_url(private_redis.url)
    yield client
    await client.aclose()


class TestRedisFull:
    """maxmemory with noeviction: events stall, and the probes say so until Redis has room."""

    async def test_oom_is_not_ready_then_recovers(
        self,
        tmp_path: Path,
        private_redis: RedisServer,
        own_redis: aioredis.Redis,
        receiver: Receiver,
    ) -> None:
        daemons = DaemonFactory(tmp_path, private_redis.url)
        daemons.write(rules=RULES, channels=hook(receiver), extra=ROUTE)
        app = await daemons.start(http=True)
        base = base_of(app)
        try:
            assert await wait_for(lambda: ready(base), timeout_s=20)
            # Events land and, in the same transaction, Redis stops taking writes.
            pipe = own_redis.pipeline(transaction=True)
            pipe.config_set("maxmemory-policy", "noeviction")
            for i in range(50):
                pipe.xadd("alertd:events", {"name": "queue_depth", "value": "50", "queue": f"q{i}"})
            pipe.config_set("maxmemory", "1")
            await pipe.execute()

            body = await wait_for(lambda: not_ready_because(base, "out of memory"), timeout_s=20)
            assert body["reason"].startswith("events cannot be stored")
            status, health = await get(f"{base}/health")
            assert (503, "unhealthy", False) == (
                status,
                health["status"],
                health["checks"]["redis"]["writable"],
            )
            assert 0.0 == redis_up((await get(f"{base}/metrics"))[1])
            assert [] == receiver.bodies("/hook")

            await own_redis.config_set("maxmemory", "0")
            assert await wait_for(lambda: ready(base), timeout_s=20)
            pages = await wait_for(lambda: receiver.bodies("/hook"), timeout_s=30)
            assert "QueueBacklog" == pages[0]["alerts"][0]["labels"]["alertname"]
            assert 1.0 == redis_up((await get(f"{base}/metrics"))[1])
        finally:
            await own_redis.config_set("maxmemory", "0")
            for a in list(daemons.apps):
                await daemons.stop(a)


class TestReadOnlyReplica:
    """Pointed at a replica, alertd is not ready and says to use the master."""

    async def test_readonly_is_not_ready_then_recovers(
        self, tmp_path: Path, private_redis: RedisServer, own_redis: aioredis.Redis
    ) -> None:
        daemons = DaemonFactory(tmp_path, private_redis.url)
        daemons.write(rules=RULES)
        app = await daemons.start(http=True)
        base = base_of(app)
        try:
            assert await wait_for(lambda: ready(base), timeout_s=20)
            await own_redis.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
            body = await wait_for(lambda: not_ready_because(base, "read-only"), timeout_s=20)
            assert "master" in body["reason"]
            await own_redis.execute_command("REPLICAOF", "NO", "ONE")
            assert await wait_for(lambda: ready(base), timeout_s=20)
        finally:
            await own_redis.execute_command("REPLICAOF", "NO", "ONE")
            for a in list(daemons.apps):
                await daemons.stop(a)


class TestWrongPassword:
    """Refused credentials: not ready, unhealthy, not 'joined', the cause logged once."""

    async def test_auth_error_names_the_cause_once(
        self,
        tmp_path: Path,
        private_redis: RedisServer,
        own_redis: aioredis.Redis,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        await own_redis.config_set("requirepass", "the-right-one")
        url = f"redis://:{PASSWORD}@127.0.0.1:{private_redis.port}/0"
        daemons = DaemonFactory(tmp_path, url)
        daemons.write(rules=RULES)
        app = await daemons.start(http=True)
        base = base_of(app)
        try:
            body = await wait_for(lambda: not_ready_because(base, "credentials"), timeout_s=20)
            assert "redis.url" in body["reason"]
            status, health = await get(f"{base}/health")
            assert (503, "unhealthy", False) == (
                status,
                health["status"],
                health["checks"]["consumer"]["joined"],
            )
            for _ in range(5):  # more probes, more checks: still one line naming the cause
                await get(f"{base}/health/ready")
            out = capsys.readouterr().out
            assert 1 == sum("credentials" in line for line in out.splitlines())
            assert PASSWORD not in out
            assert PASSWORD not in orjson.dumps(health).decode()
        finally:
            for a in list(daemons.apps):
                await daemons.stop(a)
            await own_redis.config_set("requirepass", "")


class TestConsumerStalled:
    """A consumer that cannot acknowledge: not ready after the stall limit, AlertdStalled paged."""

    async def test_no_progress_with_backlog_is_not_ready_and_alerts(
        self,
        tmp_path: Path,
        private_redis: RedisServer,
        own_redis: aioredis.Redis,
        receiver: Receiver,
    ) -> None:
        # An ACL that lets alertd do everything but XACK: a real misconfiguration.
        await own_redis.execute_command(
            "ACL", "SETUSER", "alertd", "on", ">alertd-pw", "~*", "&*", "+@all", "-xack"
        )
        url = f"redis://alertd:alertd-pw@127.0.0.1:{private_redis.port}/0"
        daemons = DaemonFactory(tmp_path, url)
        daemons.write(rules=RULES, channels=hook(receiver), extra=ROUTE)
        app = await daemons.start(http=True)
        base = base_of(app)
        try:
            assert await wait_for(lambda: ready(base), timeout_s=20)
            await own_redis.xadd(
                "alertd:events", {"name": "queue_depth", "value": "1", "queue": "a"}
            )
            body = await wait_for(lambda: not_ready_because(base, "no progress"), timeout_s=30)
            assert "entries waiting" in body["reason"]
            status, health = await get(f"{base}/health")
            assert (503, True) == (status, health["checks"]["consumer"]["stalled_s"] >= 5)

            def stalled_pages() -> list[dict[str, Any]]:
                return [
                    a
                    for b in receiver.bodies("/hook")
                    for a in b["alerts"]
                    if a["labels"]["alertname"] == STALLED_ALERT
                ]

            pages = await wait_for(stalled_pages, timeout_s=30)
            assert ("firing", "critical") == (pages[0]["status"], pages[0]["labels"]["severity"])

            await own_redis.execute_command("ACL", "SETUSER", "alertd", "+xack")
            assert await wait_for(lambda: ready(base), timeout_s=30)
            await wait_for(
                lambda: any(p["status"] == "resolved" for p in stalled_pages()), timeout_s=30
            )
        finally:
            for a in list(daemons.apps):
                await daemons.stop(a)
