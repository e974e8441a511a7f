"""The clock judges only the alerts that can change, not every live alert each tick.

Each judgement stores when its alert can next change with no new sample
(`clock_at`); `tick` reads only the alerts due. These tests pin down when that
is, that the Redis index follows the alerts, and that a new config still
judges every live alert once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from alertd.alerts import AlertStore
from alertd.engine.evaluator import Evaluator, RedisAlertWriter, clock_of
from alertd.engine.lifecycle import step
from alertd.engine.windows import MemoryWindows, RedisWindows, SeriesWindow, plan_of
from alertd.model import Event
from alertd.notify.routing import Router
from alertd.ruletest import MemoryAlerts
from alertd.settings import Rule, load_config
from alertd.storage import keys
from alertd.storage.partitions import Partitions
from tests.test_lifecycle import T0, make_rule  # T0: a whole second, buckets start on it


def window_with(rule: Rule, *samples: tuple[float, float]) -> SeriesWindow:
    plan = plan_of(rule)
    win = SeriesWindow(labels={})
    for value, ts in samples:
        win.add(value, ts, plan.width_ms)
    return win


class TestClockOf:
    def test_a_firing_alert_waits_for_its_oldest_sample_to_leave_the_window(self) -> None:
        rule = make_rule(critical="> 10", window="5m")  # buckets of 10 s
        win = window_with(rule, (20.0, T0 + 3), (30.0, T0 + 42))
        alert, _ = step(rule, {}, None, 25.0, T0 + 42)
        # the bucket [T0, T0+10) leaves the 5 m window at T0 + 310
        assert T0 + 310 == clock_of(rule, alert, win, T0 + 42)

    def test_a_pending_alert_is_due_when_its_for_ends(self) -> None:
        rule = make_rule(critical="> 10", window="5m", **{"for": "1m"})
        win = window_with(rule, (20.0, T0))
        alert, _ = step(rule, {}, None, 20.0, T0)
        assert alert is not None and "pending" == alert.state
        assert T0 + 60 == clock_of(rule, alert, win, T0)

    def test_a_grace_is_due_when_it_ends(self) -> None:
        rule = make_rule(critical="> 10", window="5m", keep_firing_for="2m")
        fired, _ = step(rule, {}, None, 20.0, T0)
        kept, _ = step(rule, {}, fired, 1.0, T0 + 30)
        assert kept is not None and "firing" == kept.state
        win = window_with(rule, (20.0, T0), (1.0, T0 + 30))
        assert T0 + 150 == clock_of(rule, kept, win, T0 + 30)

    def test_an_age_alert_is_judged_on_every_tick(self) -> None:
        rule = make_rule(aggregate="age", critical="> 60", window="10m")
        alert, _ = step(rule, {}, None, 90.0, T0)
        assert T0 == clock_of(rule, alert, None, T0)

    def test_nothing_to_judge_once_resolved(self) -> None:
        rule = make_rule(critical="> 10")
        assert clock_of(rule, None, None, T0) is None


class TestTick:
    async def test_a_steady_alert_is_not_judged_again_until_it_can_change(self) -> None:
        rule = make_rule(critical="> 10", window="1m")  # buckets of 2 s
        alerts = MemoryAlerts()
        evaluator = Evaluator([rule], MemoryWindows(), alerts, log_changes=False)
        await evaluator.ingest([Event("m", 20.0, {}, T0)], T0)
        await evaluator.tick(T0 + 1)  # a new config's first tick judges every live alert
        judged = evaluator.evaluations["R"]
        for second in range(2, 61):  # (the next sweep of every alert is at 61 s)
            await evaluator.tick(T0 + second)
        assert judged == evaluator.evaluations["R"]
        assert "firing" == (await alerts.live_alerts())[0].state
        await evaluator.tick(T0 + 62)  # the sample's bucket has left the window
        assert judged + 1 == evaluator.evaluations["R"]
        assert [] == [a for a in await alerts.live_alerts() if a.state != "resolved"]


@pytest.fixture
async def store(redis: aioredis.Redis) -> AlertStore:
    return AlertStore(Partitions.single(redis, "c:"))


class TestRedisIndex:
    async def test_due_returns_only_what_is_due_and_forgets_resolved_alerts(
        self, store: AlertStore, redis: aioredis.Redis, tmp_path: Path
    ) -> None:
        rule = make_rule(critical="> 10", window="1m")
        (tmp_path / "alertd.toml").write_text('[redis]\nkey_prefix = "c:"\n')
        router = Router(load_config(tmp_path / "alertd.toml", env={}))
        writer = RedisAlertWriter(store, lambda: router)
        windows = RedisWindows(Partitions.single(redis, "c:"))
        evaluator = Evaluator([rule], windows, writer, log_changes=False)
        await evaluator.ingest([Event("m", 20.0, {"host": "a"}, T0)], T0)
        await evaluator.ingest([Event("m", 30.0, {"host": "a"}, T0 + 30)], T0 + 30)
        # the first sample's bucket leaves the 1 m window at 62 s: nothing to judge before
        assert [] == await store.due(T0 + 61)
        (alert,) = await store.due(T0 + 62)
        assert "firing" == alert.state
        await evaluator.tick(T0 + 62)  # first tick: a sweep; the second sample is in
        assert [] == await store.due(T0 + 91)
        assert [alert.fingerprint] == [a.fingerprint for a in await store.due(T0 + 92)]
        await evaluator.tick(T0 + 92)  # now the window is empty: resolved
        assert [] == await store.due(T0 + 10_000)
        assert 0 == await redis.zcard(keys.alerts_clock("c:"))

    async def test_an_entry_whose_alert_is_gone_is_dropped(
        self, store: AlertStore, redis: aioredis.Redis
    ) -> None:
        await redis.zadd(keys.alerts_clock("c:"), {"nosuchalert": T0})
        assert [] == await store.due(T0)
        assert 0 == await redis.zcard(keys.alerts_clock("c:"))
