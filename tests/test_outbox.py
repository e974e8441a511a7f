"""The outbox: a notification survives a crash of the daemon and is delivered once, same id."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from alertd.notify.outbox import GROUP, Outbox
from alertd.storage.partitions import Partitions
from tests.conftest import DaemonFactory, Receiver, RedisServer, free_port, keys_like, wait_for
from tests.test_delivery import make_notification, outbox_empty

RULES = """
[[rules]]
name = "Over"
metric = "load"
group_by = ["series"]
warning = "> 100"
"""
# Warnings: these tests hold and take over entries of the channel's outbox. A critical
# page takes the urgent lane (test_urgent_lane.py), read and taken over the same way.

HOOK = """
[channels.hook]
type = "webhook"
url = "{url}/hook"
[channels.hook.retry]
attempts = 100
initial_backoff = "50ms"
max_backoff = "200ms"
"""

ROUTE = '\n[[routes]]\nchannels = ["hook"]\ngroup_by = ["alertname", "series"]\n'
SERIES = 6  # a burst the channel holds all at once


async def queued_ids(
    redis: aioredis.Redis, channel: str = "hook", lane: str = "outbox"
) -> set[str]:
    """Ids queued on the channel's outbox in any partition (`lane="urgent"`: on its
    urgent lane)."""
    ids = set()
    for stream in await keys_like(redis, f"alertd:{{p*}}:{lane}:{channel}"):
        ids |= {orjson.loads(f[b"n"])["id"] for _, f in await redis.xrange(stream)}
    return ids


async def publish_series(redis: aioredis.Redis, count: int) -> None:
    for i in range(count):
        await redis.xadd("alertd:events", {"name": "load", "value": "500", "series": f"s{i}"})


def ids_seen(receiver: Receiver, since: int = 0) -> set[str]:
    return {r.json()["id"] for r in receiver.received[since:]}


async def crash(daemons: DaemonFactory, app: Any) -> None:
    """What kill -9 leaves behind: nothing acknowledged, nothing flushed, nothing closed nicely."""
    daemons.apps.remove(app)
    if app._scheduler is not None:
        app._scheduler.shutdown(wait=False)
    tasks = [*app._tasks, *app.workers._busy]
    tasks += list(app.workers._tasks.values())
    for t in tasks:
        t.cancel()
    await asyncio.wait(tasks, timeout=2)
    # Python 3.11's wait_for can swallow a cancel: such a loop must not haunt later tests.
    app.stopping.set()
    app.workers._stop.set()
    await asyncio.wait(tasks, timeout=5)
    await app.channel_ctx.http.close()
    await app.redis.aclose()
    if app.routed is not app.redis:
        await app.routed.aclose()


class TestCrashResume:
    """Killing the daemon while a receiver is down loses nothing: a restart delivers it all."""

    async def test_killed_daemon_resumed_by_another(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(RULES, HOOK.format(url=receiver.url), ROUTE)
        receiver.default = (503, {}, "down")
        first = await daemons.start(consumer="first")
        await publish_series(redis, SERIES)

        async def all_queued() -> set[str]:
            ids = await queued_ids(redis)
            return ids if len(ids) == SERIES else set()

        queued = await wait_for(all_queued)
        await wait_for(lambda: len(ids_seen(receiver)) >= 4)  # several in hand
        attempted = ids_seen(receiver)
        await crash(daemons, first)

        receiver.default = (200, {}, "ok")
        after_crash = len(receiver.received)
        second = await daemons.start(consumer="second")

        await wait_for(lambda: ids_seen(receiver, after_crash) == queued, timeout_s=10)
        await wait_for(outbox_empty(redis, "hook"))
        assert attempted <= queued
        assert SERIES == len(receiver.received[after_crash:])
        delivered = second.metrics.registry.get_sample_value(
            "alertd_notifications_total", {"channel": "hook", "result": "delivered"}
        )
        assert SERIES == delivered
        assert [] == await redis.xrange("alertd:dead")

    async def test_restart_under_the_same_name_resumes_at_once(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        """A daemon with a fixed `consumer` name takes back its own entries without waiting."""
        config = daemons.write(channels=HOOK.format(url=receiver.url))
        # Claiming would take a minute: only reading its own pending entries is this quick.
        config.write_text(config.read_text().replace('claim_idle = "1s"', 'claim_idle = "60s"'))
        receiver.default = (503, {}, "down")
        app = await daemons.start(consumer="web-1")
        n = make_notification("hook")
        await Outbox(Partitions.single(redis, "alertd:{p0}:")).enqueue(n)
        await wait_for(lambda: receiver.received)
        await crash(daemons, app)

        receiver.default = (200, {}, "ok")
        after_crash = len(receiver.received)
        await daemons.start(consumer="web-1")
        await wait_for(lambda: ids_seen(receiver, after_crash) == {n.id}, timeout_s=10)


def write_daemon_config(tmp: Path, redis_url: str, receiver: Receiver) -> Path:
    (tmp / "rules").mkdir()
    (tmp / "channels").mkdir()
    (tmp / "rules" / "r.toml").write_text(RULES)
    (tmp / "channels" / "c.toml").write_text(HOOK.format(url=receiver.url))
    cfg = tmp / "alertd.toml"
    cfg.write_text(
        f'[redis]\nurl = "{redis_url}"\n'
        '[daemon]\nblock = "100ms"\neval_interval = "200ms"\nclaim_idle = "1s"\n'
        'shutdown_timeout = "1s"\n'
        f'[http]\nlisten = "127.0.0.1:{free_port()}"\n'
        '[notify]\ngroup_wait = "0s"\ngroup_interval = "1s"\n' + ROUTE
    )
    return cfg


def start_daemon(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTD_")}
    alertd = Path(sys.executable).parent / "alertd"
    return subprocess.Popen(
        [str(alertd), "run", "--config", str(cfg)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=env,
    )


class TestKillNine:
    """`kill -9` of a real `alertd run` process: the next process delivers what was left."""

    async def test_sigkill_then_restart_delivers_everything(
        self, tmp_path: Path, redis_server: RedisServer, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        cfg = write_daemon_config(tmp_path, redis_server.url, receiver)
        log = tmp_path / "daemon.log"
        receiver.default = (503, {}, "down")
        proc = start_daemon(cfg, log)
        try:
            await wait_for(lambda: b"alertd started" in log.read_bytes(), timeout_s=15)
            await publish_series(redis, SERIES)

            async def all_queued() -> set[str]:
                ids = await queued_ids(redis)
                return ids if len(ids) == SERIES else set()

            queued = await wait_for(all_queued)
            await wait_for(lambda: len(ids_seen(receiver)) >= 4)
            os.kill(proc.pid, signal.SIGKILL)
            assert -signal.SIGKILL == await asyncio.to_thread(proc.wait, 10)

            receiver.default = (200, {}, "ok")
            after_kill = len(receiver.received)
            proc = start_daemon(cfg, log)
            await wait_for(lambda: ids_seen(receiver, after_kill) == queued, timeout_s=15)
            await wait_for(outbox_empty(redis, "hook"))
            assert SERIES == len(receiver.received[after_kill:])
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.wait, 15)


class TestStoredBeforeSent:
    """A notification is in Redis for as long as it is not confirmed, and gone after."""

    async def test_in_the_outbox_during_the_attempt_and_removed_after(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(channels=HOOK.format(url=receiver.url))
        await daemons.start()
        receiver.delay_s = 0.5
        n = make_notification("hook")
        await Outbox(Partitions.single(redis, "alertd:{p0}:")).enqueue(n)

        await wait_for(lambda: receiver.received)
        assert {n.id} == await queued_ids(redis)
        pending = await redis.xpending("alertd:{p0}:outbox:hook", GROUP)
        assert 1 == pending["pending"]
        await wait_for(outbox_empty(redis, "hook"))
        assert 0 == (await redis.xpending("alertd:{p0}:outbox:hook", GROUP))["pending"]


class TestReplicas:
    """Two replicas share an outbox: a slow delivery is not taken over and sent twice."""

    async def test_delivery_slower_than_claim_idle_is_sent_once(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(channels=HOOK.format(url=receiver.url))
        await daemons.start(consumer="a")
        await daemons.start(consumer="b")
        receiver.delay_s = 2.5  # claim_idle is 1s
        n = make_notification("hook")
        await Outbox(Partitions.single(redis, "alertd:{p0}:")).enqueue(n)

        await wait_for(outbox_empty(redis, "hook"), timeout_s=10)
        assert [n.id] == [r.json()["id"] for r in receiver.received]

    async def test_many_notifications_two_replicas_each_sent_once(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(channels=HOOK.format(url=receiver.url))
        await daemons.start(consumer="a")
        await daemons.start(consumer="b")
        outbox = Outbox(Partitions.single(redis, "alertd:{p0}:"))
        ns = [make_notification("hook", series=f"s{i}") for i in range(40)]
        for n in ns:
            await outbox.enqueue(n)

        await wait_for(outbox_empty(redis, "hook"))
        assert sorted(n.id for n in ns) == sorted(r.json()["id"] for r in receiver.received)

    async def test_an_entry_taken_over_is_left_to_its_new_holder(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        config = daemons.write(channels=HOOK.format(url=receiver.url))
        config.write_text(config.read_text().replace('claim_idle = "1s"', 'claim_idle = "3s"'))
        app = await daemons.start(consumer="a")
        receiver.delay_s = 2.0
        await Outbox(Partitions.single(redis, "alertd:{p0}:")).enqueue(make_notification("hook"))
        await wait_for(lambda: receiver.received)
        [(entry_id, _)] = await redis.xrange("alertd:{p0}:outbox:hook")

        await redis.xclaim("alertd:{p0}:outbox:hook", GROUP, "other", 0, [entry_id])
        await wait_for(lambda: app.workers.health["hook"].in_flight == 0, timeout_s=2)
        [held] = await redis.xpending_range("alertd:{p0}:outbox:hook", GROUP, "-", "+", 10)
        assert (entry_id, b"other") == (held["message_id"], held["consumer"])
        await redis.xack("alertd:{p0}:outbox:hook", GROUP, entry_id)  # the new holder is done
        await redis.xdel("alertd:{p0}:outbox:hook", entry_id)
        outcomes = [s.labels for m in app.metrics.notifications.collect() for s in m.samples]
        assert [] == outcomes


class TestOutboxPrimitives:
    """The Redis steps the workers build on."""

    async def test_touch_only_by_the_holder(self, redis: aioredis.Redis) -> None:
        outbox = Outbox(Partitions.single(redis, "alertd:{p0}:"))
        await outbox.enqueue(make_notification("hook"))
        [(entry_id, _)] = await outbox.read("hook", "holder", 1, 10)

        assert ([], [entry_id]) == (
            await outbox.touch_many("hook", "holder", [entry_id]),
            await outbox.touch_many("hook", "stranger", [entry_id]),
        )

    async def test_touch_many_reports_what_the_holder_lost(self, redis: aioredis.Redis) -> None:
        outbox = Outbox(Partitions.single(redis, "alertd:{p0}:"))
        for series in ("a", "b", "c"):
            await outbox.enqueue(make_notification("hook", series=series))
        held = [entry_id for entry_id, _ in await outbox.read("hook", "holder", 3, 10)]
        await redis.xclaim("alertd:{p0}:outbox:hook", GROUP, "other", 0, [held[1]])
        await redis.xack("alertd:{p0}:outbox:hook", GROUP, held[2])
        await asyncio.sleep(0.05)

        assert [held[1], held[2]] == await outbox.touch_many("hook", "holder", held)
        [mine] = await redis.xpending_range(
            "alertd:{p0}:outbox:hook", GROUP, "-", "+", 10, "holder"
        )
        assert (held[0], True) == (mine["message_id"].decode(), mine["time_since_delivered"] < 50)

    async def test_claim_takes_only_idle_entries(self, redis: aioredis.Redis) -> None:
        outbox = Outbox(Partitions.single(redis, "alertd:{p0}:"))
        n = make_notification("hook")
        await outbox.enqueue(n)
        await outbox.read("hook", "dead", 1, 10)

        assert [] == await outbox.claim("hook", "live", min_idle_ms=60_000)
        claimed = await outbox.claim("hook", "live", min_idle_ms=0)
        assert [n.id] == [c.id for _, c in claimed if c is not None]

    async def test_enqueue_once_per_key(self, redis: aioredis.Redis) -> None:
        outbox = Outbox(Partitions.single(redis, "alertd:{p0}:"))
        first = await outbox.enqueue_once("k", b"v", 60, [make_notification("log")])
        second = await outbox.enqueue_once("k", b"v", 60, [make_notification("log")])
        assert (True, False, 1) == (first, second, await outbox.depth("log"))

    async def test_enqueue_if_only_when_the_key_holds_the_value(
        self, redis: aioredis.Redis
    ) -> None:
        outbox = Outbox(Partitions.single(redis, "alertd:{p0}:"))
        await redis.set("k", b"mine")
        other = await outbox.enqueue_if("k", b"theirs", [make_notification("log")])
        mine = await outbox.enqueue_if("k", b"mine", [make_notification("log")])
        assert (False, True, 1, 0) == (
            other,
            mine,
            await outbox.depth("log"),
            await redis.exists("k"),
        )

    async def test_prune_forgets_idle_consumers_with_nothing_pending(
        self, redis: aioredis.Redis
    ) -> None:
        outbox = Outbox(Partitions.single(redis, "alertd:{p0}:"))
        await outbox.enqueue(make_notification("hook", series="a"))
        await outbox.enqueue(make_notification("hook", series="b"))
        await outbox.read("hook", "busy", 1, 10)
        [(entry_id, _)] = await outbox.read("hook", "idle", 1, 10)
        await redis.xack("alertd:{p0}:outbox:hook", GROUP, entry_id)
        await asyncio.sleep(0.05)

        assert ["idle"] == await outbox.prune_consumers("hook", idle_ms=10)
