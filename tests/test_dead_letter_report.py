"""A page that cannot be delivered is reported where an operator looks: a log line saying
it was dead-lettered and why, /health's channel entry, and `alertd dlq list`."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from tests.conftest import Receiver, RedisServer, free_port, wait_for
from tests.test_daemon_start import CONFIG, daemon, env_with, records, start
from tests.test_delivery import FAST_RETRY, dead_letters
from tests.test_test_alert import alertd

__all__ = ["daemon"]  # the fixture, used by name

RULES = """
[[rules]]
name = "DiskFull"
metric = "disk_used_percent"
window = "1m"
critical = "> 90"
"""


def health(listen: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{listen}/health", timeout=5) as resp:
        result: dict[str, Any] = json.loads(resp.read())
    return result


class TestDeadLetterReported:
    """HTTP 401 from a receiver: the cause is in the log, /health and the dlq table."""

    async def test_cause_everywhere(
        self,
        tmp_path: Path,
        redis_server: RedisServer,
        redis: aioredis.Redis,
        receiver: Receiver,
        daemon: list[Any],
    ) -> None:
        receiver.default = (401, {}, "bad signature")
        listen = f"127.0.0.1:{free_port()}"
        config = (
            CONFIG.replace('channels = ["log"]', 'channels = ["hook"]')
            + '[notify]\ngroup_wait = "0s"\n'
            + f'[redis]\nurl = "{redis_server.url}"\n'
            + f'[channels.hook]\ntype = "webhook"\nurl = "{receiver.url}/hook?token=t0psecret"\n'
            + f"[channels.hook.retry]\n{FAST_RETRY}"
        )
        env = env_with(ALERTD_HTTP_LISTEN=listen)
        log = start(tmp_path, env, daemon, config, RULES)
        await wait_for(lambda: any(r.get("event") == "alertd started" for r in records(log)), 20)

        await redis.xadd("alertd:events", {"name": "disk_used_percent", "value": "97"})

        await wait_for(lambda: dead_letters(redis), timeout_s=20)
        [line] = [r for r in records(log) if "dead-lettered" in str(r.get("event"))]
        assert (
            "delivery failed; notification dead-lettered",
            "error",
            "hook",
            "permanent failure",
            "HTTP 401: bad signature",
        ) == (line["event"], line["level"], line["channel"], line["reason"], line["error"])
        assert line["notification_id"]

        checks = health(listen)["checks"]["channels"]["hook"]
        assert ("HTTP 401: bad signature", "degraded") == (checks["last_error"], checks["status"])
        assert health(listen)["checks"]["channels"]["log"]["last_error"] is None

        run = await alertd(tmp_path / "alertd.toml", "dlq", "list")
        assert 0 == run.code, run.stderr
        assert run.stdout.splitlines()[1].endswith("permanent failure: HTTP 401: bad signature")
        assert "t0psecret" not in log.read_text() + json.dumps(checks) + run.stdout
