"""merge_windows.lua: shared sliding windows of series, merged and read through RedisWindows."""

from __future__ import annotations

import redis.asyncio as aioredis

from alertd.engine.windows import RedisWindows, SeriesWindow, plan_of, series_value
from alertd.settings import Rule
from alertd.storage import keys
from alertd.storage.partitions import Partitions
from tests.test_lifecycle import T0, make_rule

PREFIX = "t:"
LABELS = {"host": "a"}


def batch(rule: Rule, *samples: tuple[float, float]) -> SeriesWindow:
    """A consumed batch of one series: (value, ts) samples."""
    plan = plan_of(rule)
    window = SeriesWindow(labels=dict(LABELS))
    for value, ts in samples:
        window.add(value, ts, plan.width_ms, sketch=plan.needs_sketch)
    return window


async def merge(
    windows: RedisWindows, rule: Rule, now: float, *samples: tuple[float, float]
) -> SeriesWindow:
    [merged], _ = await windows.merge([(rule, "fp1", batch(rule, *samples))], now)
    return merged


class TestMergeWindows:
    """Batches add up per series, old buckets leave with the window, late samples never win."""

    async def test_batches_add_up_and_read_back(self, redis: aioredis.Redis) -> None:
        rule = make_rule(aggregate="sum", window="1m", critical="> 0")
        windows = RedisWindows(Partitions.single(redis, PREFIX))
        await merge(windows, rule, T0 + 1, (1.0, T0), (2.0, T0 + 1))
        merged = await merge(windows, rule, T0 + 3, (4.0, T0 + 3))
        assert 7.0 == series_value(rule, merged, T0 + 3)
        assert LABELS == merged.labels
        ttl_ms = windows.ttl_ms(plan_of(rule))  # the series expires once idle
        assert ttl_ms - 10_000 < await redis.pttl(windows.key(rule, "fp1")) <= ttl_ms
        [read] = await windows.read([(rule, "fp1")], T0 + 3)
        assert read is not None
        assert (7.0, LABELS, T0 + 3) == (
            series_value(rule, read, T0 + 3),
            read.labels,
            read.newest_ts,
        )

    async def test_buckets_that_left_the_window_are_dropped(self, redis: aioredis.Redis) -> None:
        rule = make_rule(aggregate="sum", window="1m", critical="> 0")
        windows = RedisWindows(Partitions.single(redis, PREFIX))
        await merge(windows, rule, T0, (1.0, T0))
        await merge(windows, rule, T0 + 50, (2.0, T0 + 50))
        key = windows.key(rule, "fp1")
        old = f"{plan_of(rule).bucket_of(T0)}s".encode()
        assert old in await redis.hkeys(key)
        [read] = await windows.read([(rule, "fp1")], T0 + 70)
        assert 2.0 == series_value(rule, read, T0 + 70)
        assert old not in await redis.hkeys(key)

    async def test_newest_time_and_last_value_ignore_late_samples(
        self, redis: aioredis.Redis
    ) -> None:
        rule = make_rule(aggregate="last", window="1m", critical="> 0")
        windows = RedisWindows(Partitions.single(redis, PREFIX))
        await merge(windows, rule, T0 + 5, (9.0, T0 + 5))
        merged = await merge(windows, rule, T0 + 6, (1.0, T0 + 4.5))  # late, same bucket
        assert (9.0, T0 + 5) == (series_value(rule, merged, T0 + 6), merged.newest_ts)
        assert repr(T0 + 5).encode() == await redis.hget(windows.key(rule, "fp1"), "T")

    async def test_min_and_max_keep_the_extreme_across_batches(self, redis: aioredis.Redis) -> None:
        windows = RedisWindows(Partitions.single(redis, PREFIX))
        for kind, first, second, kept in (("max", 5.0, 3.0, 5.0), ("min", 3.0, 5.0, 3.0)):
            rule = make_rule(name=kind, aggregate=kind, window="1m", critical="> 0")
            await merge(windows, rule, T0, (first, T0))
            merged = await merge(windows, rule, T0 + 1, (second, T0 + 1))  # the same bucket
            assert kept == series_value(rule, merged, T0 + 1)

    async def test_read_writes_nothing(self, redis: aioredis.Redis) -> None:
        rule = make_rule(aggregate="max", window="1m", critical="> 0")
        windows = RedisWindows(Partitions.single(redis, PREFIX))
        assert [None] == await windows.read([(rule, "fp1")], T0)
        assert 0 == await redis.exists(windows.key(rule, "fp1"))
        await merge(windows, rule, T0, (5.0, T0))
        await redis.pexpire(windows.key(rule, "fp1"), 5_000)
        [read] = await windows.read([(rule, "fp1")], T0)
        assert 5.0 == series_value(rule, read, T0)
        assert await redis.pttl(windows.key(rule, "fp1")) <= 5_000

    async def test_merge_answers_each_series_stored_alert(self, redis: aioredis.Redis) -> None:
        rule = make_rule(aggregate="sum", window="1m", critical="> 0")
        windows = RedisWindows(Partitions.single(redis, PREFIX))
        alerts = keys.alerts(PREFIX)
        await redis.hset(alerts, "fp1", "A1")
        updates = [(rule, "fp1", batch(rule, (1.0, T0))), (rule, "fp2", batch(rule, (1.0, T0)))]
        _, stored = await windows.merge(updates, T0, with_alerts=True)
        assert [b"A1", None] == stored


class TestManySeries:
    """A batch of many series is merged in several calls on one connection, in order."""

    async def test_every_series_gets_its_own_window(self, redis: aioredis.Redis) -> None:
        rule = make_rule(aggregate="sum", window="1m", critical="> 0")
        other = make_rule(name="R2", aggregate="max", window="1m", critical="> 0")
        windows = RedisWindows(Partitions.single(redis, PREFIX))
        n = 2_500  # more than CHUNK * PIPELINE_CALLS series
        updates = [
            (rule if i % 2 else other, f"fp{i}", batch(rule, (float(i), T0))) for i in range(n)
        ]
        merged, _ = await windows.merge(updates, T0, with_alerts=True)
        values = [series_value(r, w, T0) for (r, _, _), w in zip(updates, merged, strict=True)]
        assert [float(i) for i in range(n)] == values

    async def test_redis_that_lost_its_scripts_merges_once(self, redis: aioredis.Redis) -> None:
        rule = make_rule(aggregate="sum", window="1m", critical="> 0")
        windows = RedisWindows(Partitions.single(redis, PREFIX))
        await merge(windows, rule, T0, (1.0, T0))
        await redis.script_flush()
        merged = await merge(windows, rule, T0 + 1, (2.0, T0 + 1))
        assert 3.0 == series_value(rule, merged, T0 + 1)
