"""The daemon's log as an on-call engineer reads it: which alert fired (its labels), no
colour codes in pipes and files, no Python reprs, `group` always the group key."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import orjson
import redis as syncredis

from tests.conftest import RedisServer, free_port
from tests.test_daemon_start import CONFIG, daemon, env_with, records, start, wait_for_record
from tests.test_test_alert import alertd

__all__ = ["daemon"]  # the fixture, used by name

RULES = """
[[rules]]
name = "QueueBacklog"
metric = "queue_depth"
window = "1m"
group_by = ["service"]
critical = "> 5000"
summary = "{service}: {value} messages waiting"
"""
FAST = CONFIG + '[notify]\ngroup_wait = "0s"\ngroup_interval = "1s"\n'
ANSI = re.compile(r"\x1b\[")


def fire(redis_url: str, value: int) -> None:
    client = syncredis.Redis.from_url(redis_url)
    client.xadd("alertd:events", {"name": "queue_depth", "value": str(value), "service": "billing"})
    client.close()


def wait_for_text(log: Path, needle: str, timeout_s: float = 20) -> str:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log.read_text()
        if needle in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not in {log.read_text()[-2000:]}")


class TestJsonLog:
    """JSON lines name the alert's labels and give `group` one type."""

    def test_fired_names_labels_and_group_is_a_string(
        self, tmp_path: Path, redis_server: RedisServer, daemon: list[Any]
    ) -> None:
        syncredis.Redis.from_url(redis_server.url).flushall()
        env = env_with(
            ALERTD_REDIS_URL=redis_server.url, ALERTD_HTTP_LISTEN=f"127.0.0.1:{free_port()}"
        )
        log = start(tmp_path, env, daemon, FAST, RULES)
        wait_for_record(log, "alertd started")

        fire(redis_server.url, 7000)

        fired = wait_for_record(log, "alert fired")
        assert {"alertname": "QueueBacklog", "service": "billing", "severity": "critical"} == (
            fired["labels"]
        )
        wait_for_record(log, "notification")
        groups = {type(r["group"]).__name__ for r in records(log) if "group" in r}
        assert {"str"} == groups


class TestConsoleLog:
    """The console format, written to a file, has no ANSI codes and no dict reprs."""

    def test_plain_text(self, tmp_path: Path, redis_server: RedisServer, daemon: list[Any]) -> None:
        syncredis.Redis.from_url(redis_server.url).flushall()
        env = env_with(
            ALERTD_REDIS_URL=redis_server.url, ALERTD_HTTP_LISTEN=f"127.0.0.1:{free_port()}"
        )
        log = start(tmp_path, env, daemon, FAST + '[logging]\nformat = "console"\n', RULES)
        wait_for_text(log, "alertd started")

        fire(redis_server.url, 7000)

        text = wait_for_text(log, "[warning  ] notification")
        assert [] == ANSI.findall(text)
        line = next(x for x in text.splitlines() if "[warning  ] notification" in x)
        assert "{'" not in line and "['" not in line, line
        assert "summary=billing: 7000.0 messages waiting" in line
        assert "labels=(service=billing alertname=QueueBacklog severity=critical)" in line
        assert "group='{}:{alertname=\"QueueBacklog\"}'" in line
        fired = next(x for x in text.splitlines() if "alert fired" in x)
        assert "labels='service=billing alertname=QueueBacklog severity=critical'" in fired


class TestTestAlertLog:
    """`alertd test-alert` under a JSON config writes the log channel's line as JSON."""

    async def test_stderr_is_json(self, tmp_path: Path, redis_server: RedisServer) -> None:
        cfg = tmp_path / "alertd.toml"
        cfg.write_text(f'[redis]\nurl = "{redis_server.url}"\n[logging]\nformat = "json"\n')

        run = await asyncio.wait_for(alertd(cfg, "test-alert", "--channel", "log"), 30)

        assert 0 == run.code, run.stderr
        [line] = run.stderr.strip().splitlines()
        record = orjson.loads(line)
        assert ("notification", "log") == (record["event"], record["channel"])
        assert [] == ANSI.findall(run.stderr)
