"""A dead daemon's work is taken over within `daemon.takeover`, not after `claim_idle`."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis

from tests.conftest import DaemonFactory, Receiver, keys_like, wait_for
from tests.test_outbox import (
    HOOK,
    ROUTE,
    RULES,
    SERIES,
    crash,
    ids_seen,
    publish_series,
    queued_ids,
)

TAKEOVER_S = 2.0


def slow_claim(daemons: DaemonFactory) -> None:
    """claim_idle alone would take 30 s: only the takeover can be this quick."""
    config = daemons.dir / "alertd.toml"
    quick = f'claim_idle = "30s"\ntakeover = "{TAKEOVER_S:g}s"\n'
    config.write_text(config.read_text().replace('claim_idle = "1s"\n', quick))


def told(receiver: Receiver) -> set[str]:
    return {a["labels"]["series"] for b in receiver.bodies() for a in b["alerts"]}


class TestNotifications:
    """Notifications a killed daemon held reach receivers under their ids, within takeover."""

    @pytest.mark.parametrize(("level", "lane"), [("warning", "outbox"), ("critical", "urgent")])
    async def test_killed_holder_taken_over(
        self,
        daemons: DaemonFactory,
        redis: aioredis.Redis,
        receiver: Receiver,
        level: str,
        lane: str,
    ) -> None:
        """Pages (the urgent lane) as well as the rest (the outbox)."""
        daemons.write(RULES.replace("warning", level), HOOK.format(url=receiver.url), ROUTE)
        slow_claim(daemons)
        receiver.default = (503, {}, "down")
        await daemons.start(consumer="first")
        await daemons.start(consumer="second")
        await publish_series(redis, SERIES)

        async def all_queued() -> set[str]:
            ids = await queued_ids(redis, lane=lane)
            return ids if len(ids) == SERIES else set()

        queued = await wait_for(all_queued)
        await wait_for(lambda: len(ids_seen(receiver)) >= SERIES)  # each tried at least once
        holders = set()
        for stream in await keys_like(redis, f"alertd:{{p*}}:{lane}:hook"):  # every partition's
            held = await redis.xpending(stream, "alertd")
            holders |= {c["name"].decode().split(":")[0] for c in held["consumers"] if c["pending"]}
        victim = next(a for a in daemons.apps if a.consumer_name in holders)
        await crash(daemons, victim)
        killed_at, killed_wall = time.monotonic(), time.time()

        receiver.default = (200, {}, "ok")
        after_crash = len(receiver.received)
        await wait_for(lambda: queued <= ids_seen(receiver, after_crash), timeout_s=15)
        took_s = time.monotonic() - killed_at
        first_s = min(r.at for r in receiver.received[after_crash:]) - killed_wall
        print(
            f"kill -9 to the first notification sent again {first_s:.2f} s, to all {took_s:.2f} s"
        )
        assert took_s < TAKEOVER_S + 4  # takeover + a few seconds


class TestEvents:
    """Events a dead consumer read but never acknowledged are processed within takeover."""

    async def test_pending_events_of_a_dead_consumer(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(RULES, HOOK.format(url=receiver.url), ROUTE)
        slow_claim(daemons)
        # A consumer that read two events and died (it never had a heartbeat).
        await redis.xgroup_create("alertd:events", "alertd", id="0", mkstream=True)
        await redis.xadd("alertd:events", {"name": "load", "value": "500", "series": "late1"})
        await redis.xadd("alertd:events", {"name": "load", "value": "500", "series": "late2"})
        await redis.xreadgroup("alertd", "ghost", {"alertd:events": ">"}, count=2)
        assert 2 == (await redis.xpending("alertd:events", "alertd"))["pending"]

        started = time.monotonic()
        await daemons.start(consumer="alive")
        await wait_for(lambda: {"late1", "late2"} <= told(receiver), timeout_s=15)
        assert time.monotonic() - started < TAKEOVER_S + 4
        assert 0 == (await redis.xpending("alertd:events", "alertd"))["pending"]

    async def test_a_daemon_back_since_it_was_judged_dead_keeps_its_events(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        """The verdict "dead" can be seconds old: a daemon restarted under its name since
        processes its own pending events, and they must not be claimed from it."""
        daemons.write(RULES, HOOK.format(url=receiver.url), ROUTE)
        slow_claim(daemons)
        app = await daemons.start(consumer="alive")
        await redis.xadd("alertd:events", {"name": "load", "value": "500", "series": "back"})
        await redis.xreadgroup("alertd", "back", {"alertd:events": ">"}, count=1)
        await redis.set("alertd:{p0}:daemon:back", "1", px=60_000)  # its heartbeat again

        consumer = app.consumer
        consumer._dead.add("back")  # what an earlier heartbeat round concluded
        assert [] == await consumer._claim_dead()
        [held] = await redis.xpending_range("alertd:events", "alertd", "-", "+", 10)
        assert b"back" == held["consumer"]
