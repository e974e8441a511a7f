"""Rules through Redis: window aggregates against a reference, and every lifecycle feature
end to end, from the stream to a real webhook receiver.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from alertd.engine.aggregates import AGGREGATES, RELATIVE_ACCURACY
from alertd.engine.evaluator import Evaluator
from alertd.engine.windows import (
    MemoryWindows,
    RedisWindows,
    SeriesWindow,
    plan_of,
    series_value,
)
from alertd.model import Event
from alertd.ruletest import MemoryAlerts
from alertd.storage import keys
from alertd.storage.partitions import Partitions
from tests.conftest import DaemonFactory, Receiver, wait_for
from tests.conftest import stored_alerts as every_alert
from tests.test_aggregates import reference
from tests.test_e2e import hook
from tests.test_lifecycle import make_rule

T0 = 1_700_000_000.0
PREFIX = keys.state_prefix("alertd:")  # the daemon's state keys


def samples_for(seed: int, n: int, now: float, span_s: float) -> list[tuple[float, float]]:
    """(value, ts) over the last span_s seconds: signs, zero, tiny and large magnitudes."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        shape = rng.random()
        if shape < 0.1:
            value = 0.0
        elif shape < 0.6:
            value = rng.lognormvariate(0, 3)
        elif shape < 0.8:
            value = -rng.lognormvariate(2, 1)
        else:
            value = rng.uniform(-1e6, 1e6)
        out.append((value, now - rng.uniform(0, span_s)))
    return out


async def merge_in_batches(
    windows: RedisWindows, rule: Any, samples: list[tuple[float, float]], now: float, batches: int
) -> SeriesWindow:
    plan = plan_of(rule)
    merged: list[SeriesWindow] = []
    for b in range(batches):
        batch = SeriesWindow(labels={"service": "api"})
        for value, ts in samples[b::batches]:
            batch.add(value, ts, plan.width_ms, sketch=plan.needs_sketch)
        merged, _ = await windows.merge([(rule, "fp1", batch)], now)
    return merged[0]


class TestRedisWindowsMatchReference:
    """Every aggregate, stored in Redis batch by batch and read back, equals the naive one."""

    @pytest.mark.parametrize("kind", AGGREGATES)
    @pytest.mark.parametrize("seed", [1, 2, 3])
    async def test_aggregate(self, redis: aioredis.Redis, kind: str, seed: int) -> None:
        rule = make_rule(aggregate=kind, window="1m", group_by=["service"], critical="> 0")
        plan = plan_of(rule)
        now = T0 + seed
        samples = samples_for(seed, 300, now, span_s=120)  # about half are outside the window
        windows = RedisWindows(Partitions.single(redis, PREFIX))
        merged = await merge_in_batches(windows, rule, samples, now, batches=4)
        (read,) = await windows.read([(rule, "fp1")], now)

        first = plan.first_bucket(now)
        inside = [(v, ts) for v, ts in samples if plan.bucket_of(ts) >= first]
        if kind == "age":
            inside = samples  # age is the newest sample's, whatever the window
        expected = reference(kind, inside, plan.window_s, now)
        for actual in (series_value(rule, merged, now), series_value(rule, read, now)):
            assert actual is not None
            if kind in ("p50", "p90", "p95", "p99"):
                assert abs(actual - expected) <= RELATIVE_ACCURACY * abs(expected) * (1 + 1e-9)
            elif kind in ("sum", "avg", "rate"):
                magnitude = math.fsum(abs(v) for v, _ in inside)
                scale = {"sum": 1.0, "avg": 1 / len(inside), "rate": 1 / plan.window_s}[kind]
                assert math.isclose(
                    expected, actual, rel_tol=1e-9, abs_tol=1e-12 * magnitude * scale
                )
            else:
                assert expected == actual
        assert read is not None and {"service": "api"} == read.labels

    async def test_window_empties_and_the_hash_expires(self, redis: aioredis.Redis) -> None:
        rule = make_rule(aggregate="avg", window="1m", critical="> 0")
        windows = RedisWindows(Partitions.single(redis, PREFIX))
        await merge_in_batches(windows, rule, [(5.0, T0)], T0, batches=1)
        assert [None] == [
            series_value(rule, w, T0 + 63) for w in await windows.read([(rule, "fp1")], T0 + 63)
        ]
        ttl_ms = await redis.pttl(windows.key(rule, "fp1"))
        assert 60_000 < ttl_ms <= 60_000 + 2 * plan_of(rule).width_ms + 60_000

    async def test_a_changed_window_starts_afresh(self, redis: aioredis.Redis) -> None:
        windows = RedisWindows(Partitions.single(redis, PREFIX))
        five = make_rule(aggregate="sum", window="5m", critical="> 0")
        await merge_in_batches(windows, five, [(5.0, T0)], T0, batches=1)
        ten = make_rule(aggregate="sum", window="10m", critical="> 0")
        assert [None] == await windows.read([(ten, "fp1")], T0)
        avg = make_rule(aggregate="avg", window="5m", critical="> 0")
        (kept,) = await windows.read([(avg, "fp1")], T0)  # sum and avg keep the same buckets
        assert 5.0 == series_value(avg, kept, T0)


class TestReplicasShareWindows:
    """Two replicas taking turns on one series see one window, the same as one would."""

    async def test_halves_merge_into_one_window(self, redis: aioredis.Redis) -> None:
        rule = make_rule(aggregate="p90", window="1m", critical="> 0")
        samples = samples_for(7, 200, T0, span_s=50)
        replicas = [
            Evaluator(
                [rule],
                RedisWindows(Partitions.single(redis, PREFIX)),
                MemoryAlerts(),
                log_changes=False,
            )
            for _ in range(2)
        ]
        for i, (value, ts) in enumerate(samples):
            await replicas[i % 2].ingest([Event("m", value, {}, ts)], T0)
        (window,) = await RedisWindows(Partitions.single(redis, PREFIX)).read(
            [(rule, replicas[0].fingerprint_of(rule, ()))], T0
        )
        actual = series_value(rule, window, T0)
        expected = reference("p90", samples, 60.0, T0)
        assert actual is not None
        assert abs(actual - expected) <= RELATIVE_ACCURACY * abs(expected) * (1 + 1e-9)


class TestRatio:
    """divide_by is sum over sum in the window; below min_denominator, or at zero, no value."""

    @pytest.mark.parametrize(
        ("errors", "requests", "expected"),
        [
            ([1, 2, 3], [50, 50, 100], 6 / 200),
            ([5], [10, 20], None),  # 30 < min_denominator
            ([5], [], None),
            ([], [100], 0.0),
            ([7], [0, 0], None),
        ],
    )
    async def test_ratio(
        self,
        redis: aioredis.Redis,
        errors: list[float],
        requests: list[float],
        expected: float | None,
    ) -> None:
        rule = make_rule(
            metric="errors", divide_by="requests", min_denominator=50, critical="> 0.01"
        )
        evaluator = Evaluator(
            [rule], RedisWindows(Partitions.single(redis, PREFIX)), MemoryAlerts()
        )
        events = [Event("errors", v, {}, T0 - i) for i, v in enumerate(errors)]
        events += [Event("requests", v, {}, T0 - i) for i, v in enumerate(requests)]
        await evaluator.ingest(events, T0)
        fp = evaluator.fingerprint_of(rule, ())
        (window,) = await RedisWindows(Partitions.single(redis, PREFIX)).read([(rule, fp)], T0)
        assert expected == series_value(rule, window, T0)


# --- end to end -------------------------------------------------------------------------


ROUTE = '\n[[routes]]\nchannels = ["hook"]\n'


async def publish(redis: aioredis.Redis, name: str, value: float, **labels: str) -> float:
    """One flat entry; returns when it was published."""
    at = time.time()
    await redis.xadd("alertd:events", {"name": name, "value": repr(value), **labels})
    return at


async def processed(redis: aioredis.Redis) -> bool:
    """Every published entry was read and acknowledged."""
    groups = await redis.xinfo_groups("alertd:events")
    pending = (await redis.xpending("alertd:events", "alertd"))["pending"]
    return bool(groups) and groups[0]["lag"] == 0 and pending == 0


def as_events(name: str, values: list[float]) -> bytes:
    """One JSON-array stream entry: a batch the daemon takes in one go."""
    return orjson.dumps([{"name": name, "value": v} for v in values])


def told(receiver: Receiver) -> list[tuple[str, str, Any]]:
    """(status, severity, value) of each alert in each notification, in order."""
    return [
        (a["status"], a["labels"]["severity"], a["value"])
        for body in receiver.bodies("/hook")
        for a in body["alerts"]
    ]


def told_n(receiver: Receiver, n: int) -> Any:
    return lambda: len(receiver.bodies("/hook")) >= n


async def stored_alerts(redis: aioredis.Redis) -> list[dict[str, Any]]:
    return list((await every_alert(redis)).values())


class TestForEndToEnd:
    """A `for` rule is told only once the condition held that long, with no further samples."""

    async def test_fires_on_the_clock(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        rules = '[[rules]]\nname = "Hot"\nmetric = "temp"\nfor = "1s"\ncritical = "> 50"\n'
        daemons.write(rules, hook(receiver), ROUTE)
        await daemons.start()
        at = await publish(redis, "temp", 80)

        async def pending() -> bool:
            return ["pending"] == [a["state"] for a in await stored_alerts(redis)]

        await wait_for(pending)
        await wait_for(told_n(receiver, 1))
        assert [("firing", "critical", 80)] == told(receiver)
        assert receiver.received[0].at - at >= 1.0


class TestKeepFiringForEndToEnd:
    """keep_firing_for delays the resolved notification, not the firing one."""

    async def test_resolution_waits(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        rules = (
            '[[rules]]\nname = "Hot"\nmetric = "temp"\nwindow = "1m"\n'
            'keep_firing_for = "1500ms"\ncritical = "> 50"\n'
        )
        daemons.write(rules, hook(receiver), ROUTE)
        await daemons.start()
        await publish(redis, "temp", 80)
        await wait_for(told_n(receiver, 1))
        cleared = await publish(redis, "temp", 10)
        await wait_for(told_n(receiver, 2))
        assert [("firing", "critical", 80), ("resolved", "critical", 10)] == told(receiver)
        assert receiver.received[1].at - cleared >= 1.5


class TestHysteresisEndToEnd:
    """A critical alert stays critical until its recovery condition holds."""

    async def test_held_then_released(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        rules = (
            '[[rules]]\nname = "Hot"\nmetric = "temp"\nwindow = "1m"\n'
            'warning = "> 10"\ncritical = "> 50"\ncritical_recovery = "< 30"\n'
        )
        daemons.write(rules, hook(receiver), ROUTE, group_interval="1h")
        await daemons.start()
        await publish(redis, "temp", 60)
        await wait_for(told_n(receiver, 1))
        await publish(redis, "temp", 40)

        async def stored_value(value: float) -> list[dict[str, Any]]:
            alerts = await stored_alerts(redis)
            return alerts if [value] == [a["value"] for a in alerts] else []

        (held,) = await wait_for(lambda: stored_value(40))
        assert "critical" == held["severity"]
        await publish(redis, "temp", 20)
        await wait_for(told_n(receiver, 2))
        assert [("firing", "critical", 60), ("firing", "warning", 20)] == told(receiver)


class TestEscalationEndToEnd:
    """warning -> critical -> warning reaches the receiver at once, as one alert."""

    async def test_up_and_down(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        rules = (
            '[[rules]]\nname = "Backlog"\nmetric = "queue_depth"\nwindow = "1m"\n'
            'group_by = ["queue"]\nwarning = "> 1000"\ncritical = "> 5000"\n'
        )
        daemons.write(rules, hook(receiver), ROUTE, group_interval="1h")
        await daemons.start()
        for n, value in enumerate([2000, 7000, 3000], start=1):
            await publish(redis, "queue_depth", value, queue="emails")
            await wait_for(told_n(receiver, n))
        expected = [
            ("firing", "warning", 2000),
            ("firing", "critical", 7000),
            ("firing", "warning", 3000),
        ]
        assert expected == told(receiver)
        fingerprints = {a["fingerprint"] for b in receiver.bodies("/hook") for a in b["alerts"]}
        assert 1 == len(fingerprints)


class TestAgeEndToEnd:
    """A heartbeat that stops fires on the clock; its return resolves the alert."""

    async def test_stop_and_return(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        rules = (
            '[[rules]]\nname = "Silent"\nmetric = "heartbeat"\naggregate = "age"\n'
            'group_by = ["service"]\ncritical = "> 1"\n'
        )
        daemons.write(rules, hook(receiver), ROUTE)
        await daemons.start()
        beat = await publish(redis, "heartbeat", 1, service="db")
        await wait_for(told_n(receiver, 1))
        assert receiver.received[0].at - beat >= 1.0
        [(status, severity, value)] = told(receiver)
        assert ("firing", "critical") == (status, severity)
        assert value > 1
        await publish(redis, "heartbeat", 1, service="db")
        await wait_for(told_n(receiver, 2))
        assert "resolved" == told(receiver)[-1][0]


class TestEmptyWindowEndToEnd:
    """A series that stops reporting resolves once its window empties, on the clock."""

    async def test_resolves_without_new_samples(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        rules = (
            '[[rules]]\nname = "Backlog"\nmetric = "queue_depth"\nwindow = "1s"\n'
            'critical = "> 5000"\n'
        )
        daemons.write(rules, hook(receiver), ROUTE)
        await daemons.start()
        at = await publish(redis, "queue_depth", 7000)
        await wait_for(told_n(receiver, 2))
        assert [("firing", "critical", 7000), ("resolved", "critical", None)] == told(receiver)
        assert receiver.received[1].at - at >= 1.0


class TestRestart:
    """A daemon stopped halfway through a window carries on with the same window."""

    async def test_avg_over_a_restart(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        rules = (
            '[[rules]]\nname = "Load"\nmetric = "load"\naggregate = "avg"\nwindow = "1m"\n'
            'warning = "> 40"\ncritical = "> 80"\n'
        )
        daemons.write(rules, hook(receiver), ROUTE)
        first_half = [0.0, 0.0, 0.0]
        second_half = [100.0, 100.0, 100.0]

        app = await daemons.start()
        await redis.xadd("alertd:events", {"data": as_events("load", first_half)})
        await wait_for(lambda: processed(redis))
        await daemons.stop(app)

        await daemons.start()
        await redis.xadd("alertd:events", {"data": as_events("load", second_half)})
        await wait_for(told_n(receiver, 1))
        restarted = told(receiver)

        # The same events through an engine that never stopped.
        rule = make_rule(
            metric="load", aggregate="avg", window="1m", warning="> 40", critical="> 80"
        )
        alerts = MemoryAlerts()
        never_stopped = Evaluator([rule], MemoryWindows(), alerts, log_changes=False)
        now = time.time()
        for batch in (first_half, second_half):
            await never_stopped.ingest([Event("load", v, {}, now) for v in batch], now)
        expected = [("firing", a.severity, a.value) for a in await alerts.live_alerts()]
        assert [("firing", "warning", 50)] == expected
        assert expected == restarted
