"""The six scenarios. Each returns its raw figures (a dict per repetition) for the JSON file.

1 ceiling     a plain consumer: XREADGROUP COUNT 1000, orjson decode, pipelined XACK
2 throughput  alertd on a pre-published backlog over rules/default.toml, until lag 0 and
              pending 0; paired with a ceiling run on the same stream in the same repetition
3 latency     one threshold-crossing event at a time: XADD -> webhook arrival; Alertmanager:
              POST /api/v2/alerts -> arrival, same receiver, group_wait 0s
4 fanout      N alerts, each its own group, and M alerts in G groups: time until the receiver
              has every alert, duplicate notifications, peak RSS; alertd and Alertmanager
5 memory      alertd's RSS idle, once every series was seen, and after the whole backlog
6 storm       a page during a storm: N new warning alerts (one group each) delivered while
              probes (one new critical alert each) are sent along the delivery's progress;
              the probes' latency beside the same probes idle, and beside Alertmanager
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis

from bench import configs, publish
from bench.procs import REPO, Proc, Procs, free_port
from bench.report import percentile

STREAM = "alertd:events"
GROUP = "alertd"
CEILING_GROUP = "bench-ceiling"


@dataclass(frozen=True)
class Sizes:
    throughput_events: int
    series: tuple[int, ...]
    latency_probes: int
    latency_warmup: int
    fanout_each: int
    fanout_grouped: int
    fanout_groups: int
    throughput_cap_s: float  # a run still draining after this is stopped and marked capped
    fanout_cap_s: float
    storm_alerts: int
    storm_probes: int
    storm_cap_s: float


FULL = Sizes(1_000_000, (1_000, 100_000), 200, 5, 100_000, 10_000, 100, 60, 180, 20_000, 50, 180)
# Alertmanager alone needs ~200 s per repetition for 100,000 one-alert groups here: the
# default run scales that case down to fit ~15 minutes; --full keeps it.
DEFAULT = dataclasses.replace(FULL, fanout_each=20_000)
QUICK = Sizes(50_000, (1_000, 10_000), 30, 3, 2_000, 1_000, 10, 60, 60, 5_000, 50, 60)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Bench:
    """What the scenarios share: sizes, processes, the receiver, Alertmanager."""

    workdir: Path
    procs: Procs
    sizes: Sizes
    reps: int
    form: str
    per_entry: int
    log_level: str
    rules: Path
    systems: tuple[str, ...] = ("alertd", "alertmanager")
    cluster: bool = False  # throughput on a Redis Cluster (--cluster)
    alertmanager: str | None = None
    alertmanager_skip: str | None = None
    receiver: Proc | None = None
    http: aiohttp.ClientSession | None = None
    _commands: dict[tuple[str, int, int], list[bytes]] = field(default_factory=dict)

    def runs(self, system: str) -> bool:
        if system == "alertmanager":
            return "alertmanager" in self.systems and self.alertmanager is not None
        return system in self.systems

    @property
    def receiver_url(self) -> str:
        assert self.receiver is not None
        return f"http://127.0.0.1:{self.receiver.port}"

    async def start(self) -> None:
        self.receiver = self.procs.receiver()
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64), timeout=aiohttp.ClientTimeout(total=None)
        )

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
        self.procs.close()

    # --- receiver ---------------------------------------------------------------

    async def rx(self, method: str, path: str, **params: Any) -> dict[str, Any]:
        assert self.http is not None
        async with self.http.request(method, self.receiver_url + path, params=params) as resp:
            resp.raise_for_status()
            data: dict[str, Any] = await resp.json()
            return data

    async def rx_reset(self) -> None:
        await self.rx("POST", "/_bench/reset")

    # --- processes --------------------------------------------------------------

    async def start_alertd_notify(self, redis: Proc) -> Proc:
        port = free_port()
        cfg = configs.alertd_notify(
            self.workdir,
            f"redis://127.0.0.1:{redis.port}/0",
            port,
            f"{self.receiver_url}/alertd",
            self.log_level,
        )
        proc = self.procs.alertd(cfg, port)
        await self.wait_http(f"http://127.0.0.1:{port}/health/ready", proc)
        return proc

    async def start_alertmanager(self) -> Proc:
        assert self.alertmanager is not None
        cfg = configs.alertmanager(self.workdir, f"{self.receiver_url}/am")
        proc = self.procs.alertmanager(self.alertmanager, cfg)
        await self.wait_http(f"http://127.0.0.1:{proc.port}/-/ready", proc)
        return proc

    async def wait_http(self, url: str, proc: Proc, timeout_s: float = 30) -> None:
        assert self.http is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited; its log ends:\n{proc.tail()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with self.http.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{url} not ready after {timeout_s}s; log:\n{proc.tail()}")

    def stop(self, proc: Proc) -> None:
        code = proc.stop()
        if proc in self.procs.started:
            self.procs.started.remove(proc)
        if code not in (0, -15):
            log(f"{proc.name} exited with {code}; its log ends:\n{proc.tail()}")

    def throughput_commands(self, n_events: int, series: int) -> list[bytes]:
        key = (self.form, n_events, series)
        if key not in self._commands:
            self._commands.clear()  # one stream's worth held at a time
            self._commands[key] = list(
                publish.throughput_commands(STREAM, n_events, series, self.form, self.per_entry)
            )
        return self._commands[key]


async def stream_node(nodes: list[Proc]) -> Proc:
    """Of a Cluster's masters, the one serving the event stream (one Redis: itself)."""
    if len(nodes) == 1:
        return nodes[0]
    r = await redis_client(nodes[0])
    try:
        slot = int(await r.execute_command("CLUSTER", "KEYSLOT", STREAM))
        for start, end, master, *_ in await r.execute_command("CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                port = int(master[1])
                return next(n for n in nodes if n.port == port)
    finally:
        await r.aclose()
    raise RuntimeError("no master serves the event stream")


async def redis_client(proc: Proc) -> aioredis.Redis:
    return aioredis.Redis(port=proc.port, socket_timeout=60)


async def group_info(r: aioredis.Redis, group: str) -> dict[str, Any] | None:
    try:
        groups = await r.xinfo_groups(STREAM)
    except aioredis.ResponseError:
        return None
    for g in groups:
        name = g.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == group:
            return dict(g)
    return None


# --- 1. ceiling -------------------------------------------------------------------------


async def run_ceiling(r: aioredis.Redis, n_entries: int) -> dict[str, Any]:
    """XREADGROUP COUNT 1000, orjson decode, pipelined XACK: nothing else."""
    await r.xgroup_create(STREAM, CEILING_GROUP, id="0")
    events = entries = 0
    started = time.perf_counter()
    while entries < n_entries:
        rows = await r.xreadgroup(CEILING_GROUP, "ceiling", {STREAM: ">"}, count=1000)
        ids = []
        for _, batch in rows or []:
            for eid, fields in batch:
                ids.append(eid)
                data = fields.get(b"data")
                if data is None:
                    events += 1
                else:
                    parsed = orjson.loads(data)
                    events += len(parsed) if isinstance(parsed, list) else 1
        if not ids:
            raise RuntimeError(f"ceiling consumer ran dry at {entries} of {n_entries} entries")
        async with r.pipeline(transaction=False) as pipe:
            pipe.xack(STREAM, CEILING_GROUP, *ids)
            await pipe.execute()
        entries += len(ids)
    elapsed = time.perf_counter() - started
    return {"events": events, "elapsed_s": elapsed, "events_per_s": events / elapsed}


# --- 2. throughput (and the memory figures of 5) -------------------------------------


async def run_alertd_backlog(
    bench: Bench,
    redis: Proc,
    r: aioredis.Redis,
    n_events: int,
    n_entries: int,
    series: int,
    nodes: list[Proc] | None = None,
) -> dict[str, Any]:
    """alertd on a waiting backlog: events/s from its group's creation to lag 0, pending 0.

    `nodes`: the masters of a Cluster (`redis` is the one serving the stream).
    """
    port = free_port()
    nodes = nodes or [redis]
    cfg = configs.alertd_throughput(
        bench.workdir,
        f"redis://127.0.0.1:{redis.port}/0",
        port,
        bench.rules,
        bench.log_level,
        'mode = "cluster"' if len(nodes) > 1 else "",
    )
    node_cpu0 = [n.cpu() for n in nodes]
    spawned = time.perf_counter()
    proc = bench.procs.alertd(cfg, port, wait=False)
    out: dict[str, Any] = {"events": n_events, "capped": False}
    try:
        while True:  # the daemon creates its group just before it starts consuming
            if not proc.alive():
                raise RuntimeError(f"alertd exited; log:\n{proc.tail()}")
            if await group_info(r, GROUP) is not None:
                break
            await asyncio.sleep(0.005)
        started = time.perf_counter()
        out["startup_s"] = started - spawned
        cpu0 = proc.cpu()
        rss_at_series = None
        while True:
            await asyncio.sleep(0.05)
            g = await group_info(r, GROUP)
            now = time.perf_counter()
            assert g is not None
            read = int(g.get("entries-read") or 0)
            pending = int(g.get("pending") or 0)
            lag = g.get("lag")
            if rss_at_series is None and read - pending >= min(series, n_entries):
                rss_at_series = proc.rss()
                out["rss_at_series_bytes"] = rss_at_series
                out["rss_at_series_done_entries"] = read - pending
            if lag == 0 and pending == 0 and read >= n_entries:
                break
            if now - started > bench.sizes.throughput_cap_s:
                out["capped"] = True
                out["events"] = (read - pending) * n_events // n_entries
                break
            if not proc.alive():
                raise RuntimeError(f"alertd exited; log:\n{proc.tail()}")
        elapsed = now - started
        out["elapsed_s"] = elapsed
        out["events_per_s"] = out["events"] / elapsed
        out["alertd_cpu_s"] = proc.cpu() - cpu0
        node_cpu = [n.cpu() - c0 for n, c0 in zip(nodes, node_cpu0, strict=True)]
        out["redis_cpu_s"] = sum(node_cpu)
        out["redis_cpu_by_node_s"] = node_cpu
        out["rss_drained_bytes"] = proc.rss()
        await asyncio.sleep(1.0)
        out["rss_settled_bytes"] = proc.rss()
        out["peak_rss_bytes"] = proc.peak_rss()
        out["dead_letters"] = int(await r.xlen("alertd:dead"))
    finally:
        bench.stop(proc)
    return out


async def throughput(bench: Bench, with_ceiling: bool, only_series: int | None = None) -> Any:
    sizes = bench.sizes
    result: dict[str, Any] = {}
    for series in sizes.series:
        if only_series is not None and series != only_series:
            continue
        n_events = sizes.throughput_events
        n_entries = publish.entries_for(n_events, bench.per_entry)
        log(
            f"throughput: generating {n_entries:,} entries ({n_events:,} events, {series:,} series)"
        )
        commands = bench.throughput_commands(n_events, series)
        nodes = bench.procs.redis_cluster() if bench.cluster else [bench.procs.redis()]
        redis = await stream_node(nodes)
        r = await redis_client(redis)
        reps: list[dict[str, Any]] = []
        try:
            for rep in range(bench.reps):
                for node in nodes:
                    one = await redis_client(node)
                    await one.flushall()
                    await one.aclose()
                t = time.perf_counter()
                await asyncio.to_thread(publish.pipeline, redis.port, commands)
                rec: dict[str, Any] = {"publish_s": time.perf_counter() - t}
                if with_ceiling:
                    rec["ceiling"] = await run_ceiling(r, n_entries)
                rec["alertd"] = await run_alertd_backlog(
                    bench, redis, r, n_events, n_entries, series, nodes
                )
                a = rec["alertd"]
                line = f"throughput {series:,} series rep {rep + 1}/{bench.reps}: alertd "
                line += f"{a['events_per_s']:,.0f} ev/s"
                if a["capped"]:
                    line += f" (capped after {a['elapsed_s']:.0f}s at {a['events']:,} events)"
                if with_ceiling:
                    c = rec["ceiling"]["events_per_s"]
                    line += f", ceiling {c:,.0f} ev/s, ratio {a['events_per_s'] / c:.3f}"
                line += f"; alertd cpu {a['alertd_cpu_s']:.1f}s redis cpu {a['redis_cpu_s']:.1f}s"
                line += f" in {a['elapsed_s']:.1f}s; rss {a['rss_settled_bytes'] / 2**20:.0f} MiB"
                if len(nodes) > 1:
                    shares = [c / max(a["redis_cpu_s"], 1e-9) for c in a["redis_cpu_by_node_s"]]
                    line += "; redis cpu by master " + " ".join(f"{x:.0%}" for x in shares)
                log(line)
                reps.append(rec)
                if a["capped"] and rep + 1 < bench.reps:
                    log("throughput: capped, so the remaining repetitions are skipped")
                    break
        finally:
            await r.aclose()
            for node in nodes:
                bench.procs.stop(node)
        result[f"series_{series}"] = {
            "series": series,
            "events": n_events,
            "entries": n_entries,
            "form": bench.form,
            "events_per_entry": bench.per_entry,
            "reps": reps,
        }
    return result


async def ceiling_only(bench: Bench) -> Any:
    result: dict[str, Any] = {}
    for series in bench.sizes.series:
        n_events = bench.sizes.throughput_events
        n_entries = publish.entries_for(n_events, bench.per_entry)
        commands = bench.throughput_commands(n_events, series)
        redis = bench.procs.redis()
        r = await redis_client(redis)
        reps = []
        try:
            for rep in range(bench.reps):
                await r.flushall()
                await asyncio.to_thread(publish.pipeline, redis.port, commands)
                c = await run_ceiling(r, n_entries)
                log(f"ceiling {series:,} series rep {rep + 1}: {c['events_per_s']:,.0f} ev/s")
                reps.append({"ceiling": c})
        finally:
            await r.aclose()
            bench.procs.stop(redis)
        result[f"series_{series}"] = {"series": series, "events": n_events, "reps": reps}
    return result


# --- 3. latency -------------------------------------------------------------------------


def _latency_summary(samples: list[float], timeouts: int) -> dict[str, Any]:
    if not samples:
        return {"samples_s": [], "timeouts": timeouts}
    return {
        "p50_s": percentile(samples, 50),
        "p95_s": percentile(samples, 95),
        "p99_s": percentile(samples, 99),
        "max_s": max(samples),
        "timeouts": timeouts,
        "samples_s": samples,
    }


async def _probe(
    bench: Bench, tag: str, n: int, send: Callable[[str], Awaitable[None]]
) -> tuple[list[float], int]:
    """`n` probes one at a time: from just before `send(id)` to the receiver's arrival."""
    samples, timeouts = [], 0
    for i in range(n):
        aid = f"{tag}-{i}"
        sent = time.time()
        await send(aid)
        at = (await bench.rx("GET", "/_bench/arrival", id=aid, timeout_s=PROBE_TIMEOUT_S))["at"]
        if at is None:
            timeouts += 1
            if timeouts >= MAX_TIMEOUTS:
                log(f"latency: {timeouts} probes never arrived; giving up on this repetition")
                break
        else:
            samples.append(at - sent)
    return samples, timeouts


def _xadd_probe(r: aioredis.Redis, metric: str) -> Callable[[str], Awaitable[None]]:
    """A probe sender: one XADD of a `metric` event crossing its rule, labelled `id`."""

    async def send(aid: str) -> None:
        body = orjson.dumps({"name": metric, "value": 1, "labels": {"id": aid}})
        await r.xadd(STREAM, {"data": body})

    return send


async def _probe_alertd(
    bench: Bench, r: aioredis.Redis, tag: str, n: int
) -> tuple[list[float], int]:
    return await _probe(bench, tag, n, _xadd_probe(r, "bench_latency"))


async def _probe_alertmanager(bench: Bench, am: Proc, tag: str, n: int) -> tuple[list[float], int]:
    assert bench.http is not None
    http = bench.http
    url = f"http://127.0.0.1:{am.port}/api/v2/alerts"

    async def send(aid: str) -> None:
        alert = [
            {
                "labels": {"alertname": "BenchLatency", "id": aid, "severity": "critical"},
                "annotations": {"summary": f"latency probe {aid}"},
            }
        ]
        async with http.post(url, data=orjson.dumps(alert), headers=_JSON) as resp:
            resp.raise_for_status()

    return await _probe(bench, tag, n, send)


_JSON = {"Content-Type": "application/json"}
PROBE_TIMEOUT_S = 10.0
MAX_TIMEOUTS = 3  # a daemon that lost three probes is broken: no point waiting for 200


async def latency(bench: Bench) -> Any:
    sizes = bench.sizes
    redis = bench.procs.redis()
    r = await redis_client(redis)
    out: dict[str, Any] = {"probes": sizes.latency_probes, "alertd": [], "alertmanager": []}
    try:
        for rep in range(bench.reps):
            head = f"latency rep {rep + 1}/{bench.reps}:"
            if bench.runs("alertd"):
                await r.flushall()
                await bench.rx_reset()
                proc = await bench.start_alertd_notify(redis)
                try:
                    await _probe_alertd(bench, r, f"w{rep}", sizes.latency_warmup)
                    samples, timeouts = await _probe_alertd(
                        bench, r, f"a{rep}", sizes.latency_probes
                    )
                finally:
                    bench.stop(proc)
                out["alertd"].append(_latency_summary(samples, timeouts))
                log(f"{head} {_latency_line('alertd', out['alertd'][-1])}")
            if bench.runs("alertmanager"):
                await bench.rx_reset()
                am = await bench.start_alertmanager()
                try:
                    await _probe_alertmanager(bench, am, f"w{rep}", sizes.latency_warmup)
                    samples, timeouts = await _probe_alertmanager(
                        bench, am, f"m{rep}", sizes.latency_probes
                    )
                finally:
                    bench.stop(am)
                out["alertmanager"].append(_latency_summary(samples, timeouts))
                log(f"{head} {_latency_line('alertmanager', out['alertmanager'][-1])}")
    finally:
        await r.aclose()
        bench.procs.stop(redis)
    return out


def _latency_line(who: str, s: dict[str, Any]) -> str:
    if not s.get("samples_s"):
        return f"{who}: no probe arrived ({s['timeouts']} timeouts)"
    return (
        f"{who} p50 {s['p50_s'] * 1000:.1f} ms p95 {s['p95_s'] * 1000:.1f} ms"
        f" p99 {s['p99_s'] * 1000:.1f} ms, {s['timeouts']} timeouts"
    )


# --- 4. fan-out -------------------------------------------------------------------------


def _fanout_alerts(case: str, n: int, groups: int) -> Iterator[dict[str, str]]:
    for i in range(n):
        if case == "each":
            yield {"id": f"e{i}"}
        else:
            yield {"id": f"g{i}", "grp": f"grp{i % groups}"}


async def _await_all(
    bench: Bench, proc: Proc, n: int, started_wall: float, cap_s: float
) -> dict[str, Any]:
    """Wait until the receiver holds n distinct alerts (or the cap); then let duplicates show."""
    rx_cpu0 = bench.receiver.cpu() if bench.receiver is not None else 0.0
    deadline = time.monotonic() + cap_s - (time.time() - started_wall)  # the cap counts publishing
    while True:
        stats = await bench.rx("GET", "/_bench/until", unique=n, timeout_s=2)
        if stats["unique"] >= n or time.monotonic() > deadline:
            break
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited; log:\n{proc.tail()}")
    capped = stats["unique"] < n
    peak = proc.peak_rss()
    cpu = proc.cpu()
    rx_cpu = (bench.receiver.cpu() - rx_cpu0) if bench.receiver is not None else None
    # group_interval is 1s: a re-sent group would show within a few seconds.
    await asyncio.sleep(3.0)
    final = await bench.rx("GET", "/_bench/stats")
    return {
        "alerts": n,
        "received_unique": stats["unique"],
        "capped": capped,
        "all_received_s": (stats["last_new_at"] - started_wall) if not capped else None,
        "notifications": final["notifications"],
        "duplicates": final["duplicates"],
        "peak_rss_bytes": max(peak, proc.peak_rss()),
        "cpu_s": cpu,
        "receiver_cpu_s": rx_cpu,
    }


async def _fanout_alertd(
    bench: Bench, redis: Proc, r: aioredis.Redis, case: str, n: int, groups: int
) -> dict[str, Any]:
    metric = "bench_fanout_each" if case == "each" else "bench_fanout_grouped"
    key = STREAM.encode()
    commands = [
        publish.xadd_command(
            key, {b"data": orjson.dumps({"name": metric, "value": 1, "labels": labels})}
        )
        for labels in _fanout_alerts(case, n, groups)
    ]
    await r.flushall()
    await bench.rx_reset()
    proc = await bench.start_alertd_notify(redis)
    try:
        redis_cpu0 = redis.cpu()
        started = time.time()
        await asyncio.to_thread(publish.pipeline, redis.port, commands)
        published_s = time.time() - started
        res = await _await_all(bench, proc, n, started, bench.sizes.fanout_cap_s)
        res["publish_s"] = published_s
        res["redis_cpu_s"] = redis.cpu() - redis_cpu0
    finally:
        bench.stop(proc)
    return res


async def _fanout_alertmanager(bench: Bench, case: str, n: int, groups: int) -> dict[str, Any]:
    assert bench.http is not None
    name = "FanoutEach" if case == "each" else "FanoutGrouped"
    alerts = [
        {"labels": {"alertname": name, "severity": "critical", **labels}}
        for labels in _fanout_alerts(case, n, groups)
    ]
    batches = _batches(alerts)
    await bench.rx_reset()
    am = await bench.start_alertmanager()
    url = f"http://127.0.0.1:{am.port}/api/v2/alerts"
    try:
        started = time.time()
        await _post_batches(bench, url, batches)
        posted_s = time.time() - started
        res = await _await_all(bench, am, n, started, bench.sizes.fanout_cap_s)
        res["publish_s"] = posted_s
    finally:
        bench.stop(am)
    return res


def _batches(alerts: list[dict[str, Any]]) -> list[bytes]:
    """Alertmanager's request bodies: 100 alerts each (serialised before any timer starts)."""
    return [orjson.dumps(alerts[i : i + 100]) for i in range(0, len(alerts), 100)]


async def _post_batches(bench: Bench, url: str, batches: list[bytes]) -> None:
    """POST /api/v2/alerts, 4 requests in flight."""
    assert bench.http is not None
    http = bench.http
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)

    async def poster() -> None:
        while not queue.empty():
            body = queue.get_nowait()
            async with http.post(url, data=body, headers=_JSON) as resp:
                resp.raise_for_status()

    await asyncio.gather(*(poster() for _ in range(4)))


async def fanout(bench: Bench) -> Any:
    sizes = bench.sizes
    cases = [
        ("each", sizes.fanout_each, sizes.fanout_each),
        ("grouped", sizes.fanout_grouped, sizes.fanout_groups),
    ]
    redis = bench.procs.redis()
    r = await redis_client(redis)
    out: dict[str, Any] = {}
    try:
        for case, n, groups in cases:
            rec: dict[str, Any] = {"alerts": n, "groups": groups, "alertd": [], "alertmanager": []}
            out[case] = rec
            for rep in range(bench.reps):
                head = f"fan-out {n:,} alerts in {groups:,} groups rep {rep + 1}/{bench.reps}:"
                capped = False
                if bench.runs("alertd"):
                    a = await _fanout_alertd(bench, redis, r, case, n, groups)
                    rec["alertd"].append(a)
                    capped = a["capped"]
                    log(f"{head} {_fanout_line('alertd', a)}")
                if bench.runs("alertmanager"):
                    m = await _fanout_alertmanager(bench, case, n, groups)
                    rec["alertmanager"].append(m)
                    capped = capped or m["capped"]
                    log(f"{head} {_fanout_line('alertmanager', m)}")
                if capped and rep + 1 < bench.reps:
                    log(f"{head} capped: the remaining repetitions of this case are skipped")
                    rec["skipped_reps"] = bench.reps - rep - 1
                    break
    finally:
        await r.aclose()
        bench.procs.stop(redis)
    return out


def _fanout_line(who: str, res: dict[str, Any]) -> str:
    t = res["all_received_s"]
    when = f"all in {t:.2f}s" if t is not None else f"capped: {res['received_unique']:,} received"
    return (
        f"{who} {when}, {res['notifications']:,} notifications, {res['duplicates']} duplicates,"
        f" peak rss {res['peak_rss_bytes'] / 2**20:.0f} MiB, cpu {res['cpu_s']:.1f}s"
    )


# --- 5. memory --------------------------------------------------------------------------


async def memory_idle(bench: Bench) -> list[dict[str, Any]]:
    redis = bench.procs.redis()
    r = await redis_client(redis)
    out = []
    try:
        for rep in range(bench.reps):
            await r.flushall()
            port = free_port()
            cfg = configs.alertd_throughput(
                bench.workdir,
                f"redis://127.0.0.1:{redis.port}/0",
                port,
                bench.rules,
                bench.log_level,
            )
            proc = bench.procs.alertd(cfg, port)
            try:
                await bench.wait_http(f"http://127.0.0.1:{port}/health/ready", proc)
                await asyncio.sleep(3.0)  # a few clock ticks and one housekeeping pass
                rec = {"rss_bytes": proc.rss(), "peak_rss_bytes": proc.peak_rss()}
            finally:
                bench.stop(proc)
            log(f"memory idle rep {rep + 1}/{bench.reps}: {rec['rss_bytes'] / 2**20:.1f} MiB")
            out.append(rec)
    finally:
        await r.aclose()
        bench.procs.stop(redis)
    return out


# --- 6. a page during a storm -----------------------------------------------------------

STORM_PREFIX = "s-"  # the storm's alert ids; probes are "p<rep>-<i>" (storm), "i<rep>-<i>" (idle)
SETTLE_S = 3.0  # after the last alert arrived: time for a duplicate notification to show


async def _storm_progress(
    bench: Bench, proc: Proc, want: int, deadline: float, storm: asyncio.Task[Any]
) -> dict[str, Any]:
    """The receiver's stats once `want` storm alerts arrived, or at the deadline."""
    while True:
        left = deadline - time.monotonic()
        stats = await bench.rx(
            "GET",
            "/_bench/until",
            unique=want,
            prefix=STORM_PREFIX,
            timeout_s=max(0.0, min(2.0, left)),
        )
        if stats["prefix_unique"] >= want or left <= 0:
            return stats
        if storm.done():
            storm.result()  # a storm that failed to publish raises here, not at the cap
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited; log:\n{proc.tail()}")


async def _storm(
    bench: Bench,
    proc: Proc,
    tag: str,
    start_storm: Callable[[], Awaitable[None]],
    send_probe: Callable[[str], Awaitable[None]],
) -> dict[str, Any]:
    """Start the storm; send probe i once about i/(probes+1) of it has arrived; wait for all.

    A probe's latency: the receiver's arrival stamp minus the time just before its send.
    """
    n, probes, cap_s = bench.sizes.storm_alerts, bench.sizes.storm_probes, bench.sizes.storm_cap_s
    rx_cpu0 = bench.receiver.cpu() if bench.receiver is not None else 0.0
    started = time.time()
    deadline = time.monotonic() + cap_s

    async def timed_storm() -> float:
        await start_storm()
        return time.time() - started

    sent: dict[str, float] = {}

    async def probe(aid: str) -> None:
        sent[aid] = time.time()
        await send_probe(aid)

    storm = asyncio.create_task(timed_storm())
    # A probe is not awaited before the next is due: Alertmanager answers a POST in up to a
    # second under the storm, and waiting for it would push the later probes past the storm.
    sending: list[asyncio.Task[None]] = []
    progress: list[int] = []  # storm alerts received when each probe was sent
    after_storm = after_cap = received = 0
    try:
        for i in range(1, probes + 1):
            due = round(i * n / (probes + 1))
            # Under a burst the receiver answers late: the probes whose mark the last answer
            # already passed go out together, without asking again.
            if received < due:
                stats = await _storm_progress(bench, proc, due, deadline, storm)
                received = stats["prefix_unique"]
            progress.append(received)
            after_storm += received >= n
            after_cap += received < n and time.monotonic() >= deadline
            sending.append(asyncio.create_task(probe(f"{tag}-{i}")))
        # Bounded: a send still hanging at the cap is cancelled below and its probe lost.
        await asyncio.wait(sending, timeout=max(PROBE_TIMEOUT_S, deadline - time.monotonic()))
        for sender in sending:
            if sender.done():
                sender.result()  # a send that failed raises here
        done, _ = await asyncio.wait({storm}, timeout=max(0.0, deadline - time.monotonic()))
        publish_s = storm.result() if done else None
        stats = await _storm_progress(bench, proc, n, deadline, storm)
    finally:
        for task in [storm, *sending]:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    # all delivered (perhaps after the cap: the probes may have kept the check back)
    delivered_s = stats["prefix_last_new_at"] - started if stats["prefix_unique"] >= n else None
    capped = delivered_s is None or delivered_s > cap_s

    async def latency(aid: str) -> float | None:
        # a probe may take as long as the storm's cap, and at least PROBE_TIMEOUT_S
        wait_s = max(sent[aid] + PROBE_TIMEOUT_S, started + cap_s) - time.time()
        got = await bench.rx("GET", "/_bench/arrival", id=aid, timeout_s=max(0.0, wait_s))
        return None if got["at"] is None else float(got["at"]) - sent[aid]

    arrived = await asyncio.gather(*(latency(aid) for aid in sent))
    samples = [x for x in arrived if x is not None]
    peak, cpu = proc.peak_rss(), proc.cpu()
    rx_cpu = (bench.receiver.cpu() - rx_cpu0) if bench.receiver is not None else None
    await asyncio.sleep(SETTLE_S)
    final = await bench.rx("GET", "/_bench/stats", prefix=f"{tag}-")
    storm_final = await bench.rx("GET", "/_bench/stats", prefix=STORM_PREFIX)
    missing = n + probes - final["unique"]
    extra = final["alerts"] - final["unique"]  # alerts delivered more than once
    return {
        "alerts": n,
        "capped": capped,
        "storm_cap_s": cap_s,
        "storm_s": None if capped else delivered_s,
        "storm_delivered_s": delivered_s,
        "storm_received_at_cap": stats["prefix_unique"],
        "storm_received": storm_final["prefix_unique"],
        "publish_s": publish_s,
        "probes_sent": len(sent),
        "probes_received": final["prefix_unique"],
        "probes_after_storm": after_storm,
        "probes_after_cap": after_cap,  # sent at once when the cap passed mid-storm
        "probe_progress": progress,
        **_latency_summary(samples, len(sent) - len(samples)),
        "notifications": final["notifications"],
        "alerts_received": final["alerts"],
        "duplicates": final["duplicates"],
        "missing": missing,
        "extra_copies": extra,
        "exactly_once": missing == 0 and extra == 0 and final["duplicates"] == 0,
        "peak_rss_bytes": max(peak, proc.peak_rss()),
        "cpu_s": cpu,
        "receiver_cpu_s": rx_cpu,
    }


async def _storm_alertd(
    bench: Bench, redis: Proc, r: aioredis.Redis, rep: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(storm, idle): the storm by one pipelined XADD; then the probes again, one at a time,
    on the same daemon once the storm is delivered (a fresh one if it was not by the cap)."""
    n, probes = bench.sizes.storm_alerts, bench.sizes.storm_probes
    key = STREAM.encode()
    commands = [
        publish.xadd_command(
            key,
            {
                b"data": orjson.dumps(
                    {"name": "bench_storm", "value": 1, "labels": {"id": f"{STORM_PREFIX}{i}"}}
                )
            },
        )
        for i in range(n)
    ]
    page = _xadd_probe(r, "bench_page")

    async def storm() -> None:
        await asyncio.to_thread(publish.pipeline, redis.port, commands)

    await r.flushall()
    await bench.rx_reset()
    proc = await bench.start_alertd_notify(redis)
    try:
        res = await _storm(bench, proc, f"p{rep}", storm, page)
        idle_on = "same daemon"
        if res["storm_delivered_s"] is None:
            bench.stop(proc)
            await r.flushall()
            await bench.rx_reset()
            proc = await bench.start_alertd_notify(redis)
            await _probe(bench, f"w{rep}", bench.sizes.latency_warmup, page)
            idle_on = "fresh daemon"
        samples, timeouts = await _probe(bench, f"i{rep}", probes, page)
    finally:
        bench.stop(proc)
    return res, {**_latency_summary(samples, timeouts), "on": idle_on}


async def _storm_alertmanager(bench: Bench, rep: int) -> dict[str, Any]:
    """The storm by POST /api/v2/alerts (100 per request, 4 in flight), probes by one POST."""
    assert bench.http is not None
    http = bench.http
    n = bench.sizes.storm_alerts

    def alert(name: str, aid: str, severity: str) -> dict[str, Any]:
        return {
            "labels": {"alertname": name, "id": aid, "severity": severity},
            "annotations": {"summary": f"{name} {aid}"},
        }

    batches = _batches([alert("StormWarn", f"{STORM_PREFIX}{i}", "warning") for i in range(n)])
    await bench.rx_reset()
    am = await bench.start_alertmanager()
    url = f"http://127.0.0.1:{am.port}/api/v2/alerts"

    async def storm() -> None:
        await _post_batches(bench, url, batches)

    async def page(aid: str) -> None:
        body = orjson.dumps([alert("StormPage", aid, "critical")])
        async with http.post(url, data=body, headers=_JSON) as resp:
            resp.raise_for_status()

    try:
        return await _storm(bench, am, f"p{rep}", storm, page)
    finally:
        bench.stop(am)


async def storm(bench: Bench) -> Any:
    sizes = bench.sizes
    redis = bench.procs.redis()
    r = await redis_client(redis)
    out: dict[str, Any] = {
        "alerts": sizes.storm_alerts,
        "probes": sizes.storm_probes,
        "alertd": [],
        "alertd_idle": [],
        "alertmanager": [],
    }
    try:
        for rep in range(bench.reps):
            head = f"storm {sizes.storm_alerts:,} alerts rep {rep + 1}/{bench.reps}:"
            if bench.runs("alertd"):
                a, idle = await _storm_alertd(bench, redis, r, rep)
                out["alertd"].append(a)
                out["alertd_idle"].append(idle)
                log(f"{head} {_storm_line('alertd', a)}")
                log(f"{head} {_latency_line('alertd idle (' + idle['on'] + ')', idle)}")
            capped = bool(out["alertd"]) and out["alertd"][-1]["capped"]
            if bench.runs("alertmanager"):
                m = await _storm_alertmanager(bench, rep)
                out["alertmanager"].append(m)
                capped = capped or m["capped"]
                log(f"{head} {_storm_line('alertmanager', m)}")
            if capped and rep + 1 < bench.reps:
                log(f"{head} capped: the remaining repetitions are skipped")
                out["skipped_reps"] = bench.reps - rep - 1
                break
    finally:
        await r.aclose()
        bench.procs.stop(redis)
    return out


def _storm_line(who: str, res: dict[str, Any]) -> str:
    t = res["storm_s"]
    when = f"storm in {t:.2f}s" if t is not None else f"capped after {res['storm_cap_s']:.0f}s"
    line = f"{when}; probes: {_latency_line(who, res)}"
    if res["probes_after_storm"]:
        line += f", {res['probes_after_storm']} sent after the storm was delivered"
    if res["probes_after_cap"]:
        line += f", {res['probes_after_cap']} sent at once at the cap"
    return (
        f"{line}; {res['notifications']:,} notifications, {res['missing']} missing,"
        f" {res['extra_copies']} delivered twice, {res['duplicates']} duplicate notifications"
    )


# --- Alertmanager -----------------------------------------------------------------------


def find_alertmanager(install: bool) -> tuple[str | None, str | None]:
    """(binary, None) or (None, why it is skipped)."""
    for name in ("prometheus-alertmanager", "alertmanager"):
        path = shutil.which(name)
        if path:
            return path, None
    if not install:
        return None, "prometheus-alertmanager is not installed (and --no-install was given)"
    if shutil.which("apt-get") is None:
        return None, "prometheus-alertmanager is not installed and there is no apt-get"
    if os.geteuid() != 0:
        return None, "prometheus-alertmanager is not installed and installing it needs root"
    log("Alertmanager: not installed; trying apt-get install prometheus-alertmanager")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    error = "unknown error"
    for attempt in range(2):
        if attempt:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
        try:
            done = subprocess.run(
                ["apt-get", "install", "-y", "-q", "prometheus-alertmanager"],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
        except subprocess.TimeoutExpired:
            return None, "apt-get install prometheus-alertmanager timed out"
        if done.returncode == 0:
            path = shutil.which("prometheus-alertmanager")
            if path:
                return path, None
        lines = (done.stderr or done.stdout).strip().splitlines()
        error = lines[-1] if lines else error
    return None, f"apt-get install prometheus-alertmanager failed: {error}"


def alertmanager_version(binary: str) -> str:
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def default_rules() -> Path:
    return REPO / "rules" / "default.toml"
