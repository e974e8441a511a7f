"""Rule engine throughput: events/s through the real Evaluator, RedisWindows and AlertStore.

Standalone: starts a private redis-server on a free port, loads rules/default.toml,
pre-generates events over N series (every default rule's metric, realistic labels,
about 1% of series past a threshold) and feeds them to `Evaluator.ingest` in batches of
1000 (the daemon's default `batch_size`) on a simulated clock, with a clock `tick` per
simulated second as the daemon does. Prints the median of 3 runs per size.

    .venv/bin/python bench/engine_bench.py [--series 1000 100000] [--runs 3] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alertd.alerts import AlertStore  # noqa: E402
from alertd.engine.evaluator import Evaluator, RedisAlertWriter  # noqa: E402
from alertd.engine.windows import RedisWindows  # noqa: E402
from alertd.model import Event  # noqa: E402
from alertd.notify.routing import Router  # noqa: E402
from alertd.settings import Config, Settings, load_rules  # noqa: E402
from alertd.storage.partitions import Partitions  # noqa: E402

BATCH = 1000
EVENTS_PER_SIM_S = 10_000  # simulated arrival rate: one clock tick per 10 batches
PREFIX = "bench:"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


# (metric, label names, healthy value, value past a threshold); one series = one label set.
SHAPES: list[tuple[str, tuple[str, ...], float, float]] = [
    ("http_requests_total", ("service",), 100.0, 100.0),
    ("http_errors_total", ("service",), 0.0, 20.0),
    ("http_request_duration_seconds", ("service",), 0.2, 3.0),
    ("queue_depth", ("service", "queue"), 10.0, 7000.0),
    ("memory_used_percent", ("host",), 40.0, 90.0),
    ("disk_free_percent", ("host", "mountpoint"), 60.0, 3.0),
    ("cpu_used_percent", ("host",), 30.0, 95.0),
    ("db_heartbeat", ("service",), 1.0, 1.0),
    ("job_failed", ("job",), 1.0, 1.0),
]


def series_labels(n_series: int) -> list[tuple[str, dict[str, str], float, float]]:
    out = []
    for i in range(n_series):
        metric, names, ok, bad = SHAPES[i % len(SHAPES)]
        labels = {name: f"{name}-{i // len(SHAPES)}" for name in names}
        out.append((metric, labels, ok, bad))
    return out


def make_events(n_series: int, n_events: int, seed: int = 7) -> list[list[tuple[Event, float]]]:
    """Batches of (event, offset_s); ~1% of series sit past their threshold."""
    rng = random.Random(seed)
    series = series_labels(n_series)
    hot = set(rng.sample(range(n_series), max(1, n_series // 100)))
    batches: list[list[tuple[Event, float]]] = []
    batch: list[tuple[Event, float]] = []
    for k in range(n_events):
        i = k % n_series if k < n_series else rng.randrange(n_series)
        metric, labels, ok, bad = series[i]
        if metric == "job_failed" and i not in hot:
            metric, value = "job_succeeded", 1.0  # matches no rule: costs a lookup only
        else:
            base = bad if i in hot else ok
            value = base * rng.uniform(0.9, 1.1)
        offset = k / EVENTS_PER_SIM_S
        batch.append((Event(metric, value, labels, 0.0), offset))
        if len(batch) == BATCH:
            batches.append(batch)
            batch = []
    if batch:
        batches.append(batch)
    return batches


async def run_once(url: str, n_series: int, n_events: int, profile: bool) -> tuple[float, float]:
    """(events/s of ingest incl. ticks, seconds of the last tick) on a flushed Redis."""
    rules, errors, _ = load_rules([ROOT / "rules" / "default.toml"], ROOT, os.environ)
    if errors:
        raise SystemExit(f"rules/default.toml: {errors}")
    config = Config(
        path=ROOT / "alertd.toml",
        settings=Settings(),
        rules=rules,
        channels={},
        channel_files={},
    )
    router = Router(config)
    batches = make_events(n_series, n_events)
    redis = Redis.from_url(url)
    await redis.flushall()
    evaluator = Evaluator(
        rules,
        RedisWindows(Partitions.single(redis, PREFIX)),
        RedisAlertWriter(AlertStore(Partitions.single(redis, PREFIX)), lambda: router),
        log_changes=False,
    )
    start_clock = time.time()
    profiler = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if profiler:
        profiler.enable()
    next_tick = 1.0
    last_tick_s = 0.0
    for batch in batches:
        now = start_clock + batch[-1][1]
        events = [Event(e.name, e.value, e.labels, start_clock + off) for e, off in batch]
        await evaluator.ingest(events, now)
        if batch[-1][1] >= next_tick:
            next_tick += 1.0
            t_tick = time.perf_counter()
            await evaluator.tick(now)
            last_tick_s = time.perf_counter() - t_tick
    elapsed = time.perf_counter() - t0
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    await redis.aclose()
    return n_events / elapsed, last_tick_s


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--events", type=int, default=0, help="default: max(200k, 2 x series)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one run per size")
    args = parser.parse_args()
    with redis_server() as url:
        for n_series in args.series:
            n_events = args.events or max(200_000, 2 * n_series)
            rates, ticks = [], []
            for run in range(args.runs):
                rate, tick_s = await run_once(url, n_series, n_events, args.profile and run == 0)
                rates.append(rate)
                ticks.append(tick_s)
            print(
                f"{n_series:>7} series, {n_events} events, batch {BATCH}: "
                f"{statistics.median(rates):>8.0f} events/s median of {args.runs} "
                f"(runs {', '.join(f'{r:.0f}' for r in rates)}); "
                f"clock tick {statistics.median(ticks) * 1000:.0f} ms"
            )


if __name__ == "__main__":
    asyncio.run(main())
