"""Reloading rules without a restart: app.reload(), file changes, SIGHUP, the API.

A bad edit keeps the running rules; a good one applies at once; the state of
rules that did not change (windows, pending timers, firing alerts) survives.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import redis.asyncio as aioredis

from alertd.app import App
from alertd.storage import keys
from tests.conftest import DaemonFactory, Receiver, keys_like, wait_for
from tests.test_rules_e2e import ROUTE, hook, publish, stored_alerts, told, told_n

PREFIX = keys.state_prefix("alertd:")  # the daemon's state keys

QUEUE = """
[[rules]]
name = "Backlog"
metric = "queue_depth"
window = "1m"
group_by = ["queue"]
critical = "> {threshold}"
"""

OTHER = """
[[rules]]
name = "Hot"
metric = "temp"
window = "1m"
critical = "> 50"
"""


def write_rules(daemons: DaemonFactory, text: str) -> None:
    """Replace the rule file the way an editor does, with a new modification time."""
    path = daemons.dir / "rules" / "test.toml"
    before = path.stat().st_mtime_ns if path.exists() else 0
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.utime(tmp, ns=(before + 10_000_000, before + 10_000_000))
    tmp.replace(path)


def failed_reloads(app: App) -> float | None:
    registry = app.metrics.registry
    return registry.get_sample_value("alertd_config_reloads_total", {"result": "error"})


def thresholds(app: App) -> list[float]:
    return [
        r.spec.critical.threshold
        for r in app.config.rules
        if r.name == "Backlog" and r.spec.critical is not None
    ]


class TestBadEdit:
    """A rule file that does not validate changes nothing, and says where it is wrong."""

    async def test_old_rules_keep_firing(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(QUEUE.format(threshold=1000), hook(receiver), ROUTE)
        app = await daemons.start()
        write_rules(daemons, QUEUE.format(threshold="x") + 'threshhold = "> 3"\n')
        error = await app.reload()
        assert error is not None
        assert "rules/test.toml" in error
        assert "critical" in error and "threshhold" in error
        assert error == app.last_reload_error
        assert [1000.0] == thresholds(app)

        await publish(redis, "queue_depth", 2000, queue="emails")
        await wait_for(told_n(receiver, 1))
        assert [("firing", "critical", 2000)] == told(receiver)

    async def test_bad_file_on_disk_is_reported_once_then_fixed(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(QUEUE.format(threshold=1000), hook(receiver), ROUTE)
        app = await daemons.start()
        write_rules(daemons, "[[rules]]\nname = 'Broken'\n")
        await app.watch_files()
        assert app.last_reload_error is not None and "rules/test.toml" in app.last_reload_error
        assert 1 == failed_reloads(app)
        await app.watch_files()  # the same broken file is not reloaded on every check
        assert 1 == failed_reloads(app)

        write_rules(daemons, QUEUE.format(threshold=10))
        await app.watch_files()
        assert (None, [10.0]) == (app.last_reload_error, thresholds(app))


class TestGoodEdit:
    """An edited rule applies without a restart, to the data already in its window."""

    async def test_app_reload(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(QUEUE.format(threshold=5000), hook(receiver), ROUTE)
        app = await daemons.start()
        await publish(redis, "queue_depth", 2000, queue="emails")
        write_rules(daemons, QUEUE.format(threshold=1000))
        assert await app.reload() is None
        await publish(redis, "queue_depth", 1500, queue="emails")
        await wait_for(told_n(receiver, 1))
        assert [("firing", "critical", 1500)] == told(receiver)

    async def test_file_change_is_noticed(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(QUEUE.format(threshold=5000), hook(receiver), ROUTE)
        app = await daemons.start()
        write_rules(daemons, QUEUE.format(threshold=1000))
        await wait_for(lambda: [1000.0] == thresholds(app), timeout_s=8)  # checked every 2s
        await publish(redis, "queue_depth", 2000, queue="emails")
        await wait_for(told_n(receiver, 1))
        assert [("firing", "critical", 2000)] == told(receiver)

    async def test_window_of_a_rule_with_new_thresholds_is_kept(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        rules = '[[rules]]\nname = "Sum"\nmetric = "n"\naggregate = "sum"\nwindow = "1m"\n'
        daemons.write(rules + 'critical = "> 100"\n', hook(receiver), ROUTE)
        app = await daemons.start()
        await publish(redis, "n", 8)
        write_rules(daemons, rules + 'critical = "> 12"\n')
        assert await app.reload() is None
        await publish(redis, "n", 8)
        await wait_for(told_n(receiver, 1))
        assert [("firing", "critical", 16)] == told(receiver)


class TestStateSurvives:
    """Alerts of rules that did not change carry on as if nothing happened."""

    async def test_firing_alert_is_not_told_again(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(QUEUE.format(threshold=1000), hook(receiver), ROUTE)
        app = await daemons.start()
        await publish(redis, "queue_depth", 2000, queue="emails")
        await wait_for(told_n(receiver, 1))
        write_rules(daemons, QUEUE.format(threshold=1000) + OTHER)
        reloaded_at = time.time()
        assert await app.reload() is None
        await publish(redis, "queue_depth", 2500, queue="emails")

        async def flushed_since_reload() -> bool:
            keys = await keys_like(redis, "alertd:{p*}:group:*")  # in every partition
            flushes = [await redis.hget(k, "last_flush") for k in keys]
            return bool(keys) and all(f is not None and float(f) > reloaded_at for f in flushes)

        await wait_for(flushed_since_reload)  # the group was looked at again, and kept quiet
        assert [("firing", "critical", 2000)] == told(receiver)

    async def test_pending_timer_is_not_restarted(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        rules = '[[rules]]\nname = "Slow"\nmetric = "temp"\nwindow = "1m"\nfor = "1s"\n'
        rules += 'critical = "> 50"\n'
        daemons.write(rules, hook(receiver), ROUTE)
        app = await daemons.start()
        published = await publish(redis, "temp", 80)
        (before,) = await wait_for(lambda: stored_alerts(redis))
        write_rules(daemons, rules + OTHER)
        assert await app.reload() is None
        (after,) = await stored_alerts(redis)
        assert before["meta"]["pending_since"] == after["meta"]["pending_since"]
        await wait_for(told_n(receiver, 1))
        assert receiver.received[0].at - published >= 1.0


class TestRemovedRule:
    """Alerts of a rule that was deleted resolve, and receivers are told."""

    async def test_removed_rule_resolves_its_alerts(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(QUEUE.format(threshold=1000), hook(receiver), ROUTE)
        app = await daemons.start()
        await publish(redis, "queue_depth", 2000, queue="emails")
        await wait_for(told_n(receiver, 1))
        write_rules(daemons, OTHER)
        assert await app.reload() is None
        await wait_for(told_n(receiver, 2))
        assert [("firing", "critical", 2000), ("resolved", "critical", 2000)] == told(receiver)


class TestApiReload:
    """POST /api/v1/reload applies a good edit and refuses a bad one."""

    async def test_post(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(QUEUE.format(threshold=5000), hook(receiver), ROUTE)
        app = await daemons.start(http=True)
        url = f"http://{app.config.settings.http.listen}/api/v1/reload"
        async with aiohttp.ClientSession() as session:
            write_rules(daemons, "[[rules]]\nname = 'Broken'\n")
            async with session.post(url) as resp:
                assert 400 == resp.status
                assert any("rules/test.toml" in d for d in (await resp.json())["details"])
            write_rules(daemons, QUEUE.format(threshold=1000))
            async with session.post(url) as resp:
                assert 200 == resp.status
        await publish(redis, "queue_depth", 2000, queue="emails")
        await wait_for(told_n(receiver, 1))
        assert [("firing", "critical", 2000)] == told(receiver)


class TestSighup:
    """`kill -HUP` reloads a running `alertd run`."""

    async def test_sighup(self, daemons: DaemonFactory, redis: aioredis.Redis) -> None:
        cfg = daemons.write(QUEUE.format(threshold=5000))
        log = daemons.dir / "daemon.log"
        proc = run_daemon(cfg, log)
        try:
            await wait_for(lambda: b"alertd started" in log.read_bytes(), timeout_s=15)
            write_rules(daemons, QUEUE.format(threshold=5000) + OTHER)
            proc.send_signal(signal.SIGHUP)
            await wait_for(lambda: reloaded_with(log, 2), timeout_s=10)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert 0 == await asyncio.to_thread(proc.wait, 15)


def run_daemon(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTD_")}
    return subprocess.Popen(
        [sys.executable, "-m", "alertd", "run", "--config", str(cfg)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=env,
    )


def reloaded_with(log: Path, rules: int) -> bool:
    for line in log.read_bytes().splitlines():
        if b"configuration reloaded" in line:
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                return f"rules={rules}".encode() in line
            return bool(entry.get("rules") == rules)
    return False
