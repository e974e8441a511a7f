"""Resource bounds of one daemon: its memory idle, after 100k and after 1M events, and the
Redis keys of idle series expiring on their own.

A standalone script: it starts its own redis-server (on a free port, in a temporary
directory) and `alertd run` as a subprocess with the shipped rules/default.toml, then
publishes events (flat XADD, pipelined in batches) spread over ~1000 series of those
rules, a few of them above their thresholds. It never lets the daemon fall more than
`--max-backlog` entries behind, so what is measured is the daemon processing, not a
backlog waiting in Redis. It prints the daemon's RSS (VmRSS from /proc/<pid>/status)
and peak RSS (VmHWM) at each mark, the throughput, Redis' memory, and checks that every
window key (`alertd:{pN}:w:*`) has a TTL that counts down while its series is idle, then
(unless --no-wait-expiry) waits for the shortest-lived ones to disappear.

    .venv/bin/python bench/memory.py                 # 1M events, ~1000 series
    .venv/bin/python bench/memory.py --events 200000 --no-wait-expiry
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
STREAM = "alertd:events"
GROUP = "alertd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0])
    return out


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


# --- the series ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One series of a shipped rule: the event it takes, and whether it runs hot."""

    name: str
    labels: dict[str, str]
    value: Callable[[random.Random], float]


def series_of_default_rules(n_services: int, n_hosts: int, rng: random.Random) -> list[Series]:
    """~1000 series over rules/default.toml; about 2% sit above a threshold."""

    def hot() -> bool:
        return rng.random() < 0.02

    out: list[Series] = []
    for i in range(n_services):
        svc = {"service": f"svc-{i:03d}"}
        bad = hot()
        out.append(Series("http_requests_total", svc, lambda r: 100.0))
        out.append(
            Series(
                "http_errors_total",
                svc,
                (lambda r: 9.0) if bad else (lambda r: r.choice((0, 0, 1))),
            )
        )
        slow = hot()
        out.append(
            Series(
                "http_request_duration_seconds",
                svc,
                (lambda r: r.uniform(1.5, 3)) if slow else (lambda r: r.uniform(0.01, 0.5)),
            )
        )
        for q in ("emails", "jobs"):
            deep = hot()
            out.append(
                Series(
                    "queue_depth",
                    {**svc, "queue": q},
                    (lambda r: r.uniform(6000, 9000)) if deep else (lambda r: r.uniform(0, 500)),
                )
            )
        if i % 2 == 0:
            out.append(Series("db_heartbeat", svc, lambda r: 1.0))
    for i in range(n_hosts):
        host = {"host": f"host-{i:03d}"}
        for metric, normal, high in (
            ("memory_used_percent", (30, 80), (90, 99)),
            ("cpu_used_percent", (5, 60), (80, 99)),
        ):
            lo, hi = high if hot() else normal
            out.append(Series(metric, host, lambda r, lo=lo, hi=hi: r.uniform(lo, hi)))
        lo, hi = (1, 4) if hot() else (20, 80)
        out.append(
            Series(
                "disk_free_percent",
                {**host, "mountpoint": "/"},
                lambda r, lo=lo, hi=hi: r.uniform(lo, hi),
            )
        )
    return out


def events(series: list[Series], rng: random.Random) -> Iterator[dict[str, str]]:
    """Flat stream entries, round-robin over the series, forever."""
    while True:
        for s in series:
            yield {"name": s.name, "value": f"{s.value(rng):.3f}", **s.labels}


# --- processes ----------------------------------------------------------------------------


def start_redis(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    args = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    args += ["--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [binary, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


CONFIG = """
[redis]
url = "redis://127.0.0.1:{redis_port}/0"
[daemon]
consumer = "bench"
[http]
listen = "127.0.0.1:{http_port}"
[paths]
rules = ["{rules}"]
channels = []
[logging]
level = "error"
"""


def start_daemon(workdir: Path, config: Path) -> subprocess.Popen[bytes]:
    binary = Path(sys.executable).parent / "alertd"
    cmd = [str(binary)] if binary.exists() else [sys.executable, "-m", "alertd"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTD_")}
    with (workdir / "alertd.log").open("ab") as log:
        return subprocess.Popen(
            [*cmd, "run", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env
        )


def wait_ready(http_port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    url = f"http://127.0.0.1:{http_port}/health/ready"
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"alertd exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit("alertd did not become ready")
        time.sleep(0.2)


def consumed(client: redis.Redis) -> int:
    """Entries the group has read and acknowledged."""
    for g in client.xinfo_groups(STREAM):
        if g["name"].decode() == GROUP:
            return int(g.get("entries-read") or 0) - int(g["pending"])
    return 0


# --- TTLs ---------------------------------------------------------------------------------


def window_ttls(client: redis.Redis) -> dict[bytes, int]:
    keys = list(client.scan_iter(match="alertd:{p*}:w:*", count=1000))
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.pttl(k)
    return dict(zip(keys, pipe.execute(), strict=True))


def check_ttls(client: redis.Redis, wait_expiry: bool) -> list[str]:
    """Problems with window key expiry (empty when every key expires on its own)."""
    problems: list[str] = []
    ttls = window_ttls(client)
    if not ttls:
        return ["no window keys (alertd:{p*}:w:*) at all"]
    forever = [k for k, t in ttls.items() if t < 0]
    if forever:
        problems.append(f"{len(forever)} window keys without a TTL, e.g. {forever[0]!r}")
    day_ms = 86_400_000
    short = {k: t for k, t in ttls.items() if 0 < t <= day_ms}
    long = {k: t for k, t in ttls.items() if t > day_ms}
    print(f"window keys: {len(ttls)}; TTL <= 1 day: {len(short)}, longer (age rules): {len(long)}")
    if short:
        vals = sorted(short.values())
        print(
            f"  short TTLs: min {vals[0] / 1000:.0f}s, median {vals[len(vals) // 2] / 1000:.0f}s, "
            f"max {vals[-1] / 1000:.0f}s (window + margin)"
        )
    if long:
        print(f"  age-rule TTLs: max {max(long.values()) / day_ms:.1f} days")

    # Idle series are not refreshed: their TTLs count down.
    sample = list(ttls)[:: max(1, len(ttls) // 50)]
    time.sleep(3)
    pipe = client.pipeline(transaction=False)
    for k in sample:
        pipe.pttl(k)
    later = dict(zip(sample, pipe.execute(), strict=True))
    refreshed = [k for k in sample if later[k] > 0 and later[k] > ttls[k] - 2500]
    if refreshed:
        problems.append(f"{len(refreshed)} of {len(sample)} idle window keys had their TTL reset")
    else:
        print(f"  {len(sample)} sampled idle keys: TTL counted down by >= 2.5 s in 3 s")

    if wait_expiry and short:
        soonest = min(short.values())
        group = {k for k, t in short.items() if t <= soonest + 5_000}
        wait_s = (max(short[k] for k in group)) / 1000 + 2
        print(f"  waiting {wait_s:.0f}s for the {len(group)} shortest-lived keys to expire ...")
        time.sleep(wait_s)
        left = sum(client.exists(k) for k in group)
        if left:
            problems.append(f"{left} of {len(group)} window keys still exist past their TTL")
        else:
            print(f"  all {len(group)} expired; window keys now: {len(window_ttls(client))}")
    return problems


# --- main ---------------------------------------------------------------------------------

Row = tuple[str, dict[str, int], int]


def publish(
    client: redis.Redis,
    daemon: subprocess.Popen[bytes],
    gen: Iterator[dict[str, str]],
    args: argparse.Namespace,
    rows: list[Row],
) -> tuple[int, float]:
    """Publish `args.events` in pipelines, never more than max_backlog ahead; measure the mark."""
    published = 0
    marked = False
    started = last_print = time.monotonic()
    while published < args.events:
        n = min(args.batch, args.events - published)
        pipe = client.pipeline(transaction=False)
        for _ in range(n):
            pipe.xadd(STREAM, next(gen))
        pipe.execute()
        published += n
        while True:
            done = consumed(client)
            if not marked and done >= args.mark:
                marked = True
                rows.append((f"{args.mark // 1000}k events", proc_status(daemon.pid), done))
                print(f"{done:,} events: RSS {mib(rows[-1][1]['VmRSS'])}")
            if published - done <= args.max_backlog:
                break
            time.sleep(0.05)
        if time.monotonic() - last_print > 10:
            last_print = time.monotonic()
            rss = mib(proc_status(daemon.pid)["VmRSS"])
            print(f"  {done:,} consumed ({done / (last_print - started):,.0f}/s), RSS {rss}")
        if daemon.poll() is not None:
            raise SystemExit(f"alertd exited with {daemon.returncode}")
    while consumed(client) < published:
        time.sleep(0.1)
    return published, time.monotonic() - started


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--services", type=int, default=100, help="services (x5.5 series each)")
    p.add_argument("--hosts", type=int, default=150, help="hosts (x3 series each)")
    p.add_argument("--batch", type=int, default=1000, help="XADDs per pipeline")
    p.add_argument("--max-backlog", type=int, default=50_000)
    p.add_argument("--mark", type=int, default=100_000, help="the intermediate measurement")
    p.add_argument("--no-wait-expiry", dest="wait_expiry", action="store_false")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()

    rng = random.Random(1)
    series = series_of_default_rules(args.services, args.hosts, rng)
    workdir = Path(tempfile.mkdtemp(prefix="alertd-memory-"))
    redis_port, http_port = free_port(), free_port()
    config = workdir / "alertd.toml"
    config.write_text(
        CONFIG.format(
            redis_port=redis_port, http_port=http_port, rules=ROOT / "rules" / "default.toml"
        )
    )
    redis_proc = start_redis(workdir, redis_port)
    daemon: subprocess.Popen[bytes] | None = None
    client = redis.Redis(port=redis_port)
    problems: list[str] = []
    rows: list[Row] = []
    try:
        daemon = start_daemon(workdir, config)
        wait_ready(http_port, daemon)
        time.sleep(5)  # let start-up settle: imports, first ticks
        rows.append(("idle", proc_status(daemon.pid), 0))
        print(f"daemon pid {daemon.pid}; {len(series)} series; work dir {workdir}")
        print(f"idle: RSS {mib(rows[-1][1]['VmRSS'])}")

        published, elapsed = publish(client, daemon, events(series, rng), args, rows)
        rows.append((f"{published / 1e6:g}M events", proc_status(daemon.pid), published))
        print(f"{published:,} events: RSS {mib(rows[-1][1]['VmRSS'])}; {elapsed:.1f}s")
        time.sleep(10)
        rows.append(("idle again, 10 s later", proc_status(daemon.pid), published))

        info = client.info("memory")
        alerts = sum(client.hlen(k) for k in client.scan_iter(match="alertd:{p*}:alerts"))
        dead = client.xlen("alertd:dead") if client.exists("alertd:dead") else 0
        print()
        print(f"{'mark':<24}{'RSS':>12}{'peak RSS':>12}")
        for label, st, _ in rows:
            print(f"{label:<24}{mib(st['VmRSS']):>12}{mib(st['VmHWM']):>12}")
        print(
            f"throughput: {published / elapsed:,.0f} events/s over {elapsed:.1f}s "
            f"(backlog kept under {args.max_backlog:,})"
        )
        print(
            f"redis: used_memory {info['used_memory_human']} (stream of {client.xlen(STREAM):,} "
            f"entries included), {client.dbsize():,} keys, {alerts} alerts, {dead} dead letters"
        )
        problems += check_ttls(client, args.wait_expiry)
        if daemon.poll() is not None:
            problems.append(f"alertd exited with {daemon.returncode}")
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        client.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
