"""`python -m bench` (`make bench`): start what is needed, run the scenarios, print one table.

The JSON file of raw figures goes to bench/results/latest.json (git-ignored).
See bench/README.md for what each scenario measures and how targets are judged.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report, scenarios
from bench.procs import MIB, REPO, Procs, default_python
from bench.report import (
    Row,
    fmt_busy,
    fmt_int,
    fmt_mib,
    fmt_ms,
    fmt_pct,
    fmt_rate,
    fmt_ratio,
    fmt_s,
    fmt_us,
)
from bench.scenarios import DEFAULT, FULL, QUICK, Bench, Sizes, log

SCENARIOS = ("ceiling", "throughput", "latency", "fanout", "memory", "storm")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    size.add_argument(
        "--full", action="store_true", help="the fan-out at 100,000 one-alert groups too"
    )
    p.add_argument(
        "--only", action="append", choices=SCENARIOS, help="run only this scenario (repeatable)"
    )
    p.add_argument("--reps", type=int, default=3, help="repetitions of each scenario (3)")
    p.add_argument("--events", type=int, help="throughput backlog size (default 1,000,000)")
    p.add_argument(
        "--series", help="comma-separated series counts of the backlogs (default 1000,100000)"
    )
    p.add_argument("--fanout-each", type=int, help="fan-out alerts, one group each (100,000)")
    p.add_argument("--fanout-grouped", type=int, help="fan-out alerts in --fanout-groups (10,000)")
    p.add_argument("--fanout-groups", type=int, help="groups of the grouped fan-out (100)")
    p.add_argument("--probes", type=int, help="latency probes per repetition (200)")
    p.add_argument(
        "--storm-alerts", type=int, help="storm: warning alerts, one group each (20,000)"
    )
    p.add_argument("--storm-probes", type=int, help="storm: probes sent during it (50)")
    p.add_argument("--throughput-cap", type=float, help="seconds before a backlog run is capped")
    p.add_argument("--fanout-cap", type=float, help="seconds before a fan-out run is capped")
    p.add_argument("--storm-cap", type=float, help="seconds before a storm run is capped")
    p.add_argument(
        "--form",
        choices=("json", "flat"),
        default="json",
        help="stream entry form: JSON field `data` (default) or flat fields",
    )
    p.add_argument(
        "--per-entry", type=int, default=1, help="events per JSON entry (an array when > 1)"
    )
    p.add_argument(
        "--cluster",
        action="store_true",
        help="throughput on a 3-master Redis Cluster (redis.mode = cluster), not one Redis",
    )
    p.add_argument("--log-level", default="info", help="alertd's logging.level (info)")
    p.add_argument("--alertd-src", type=Path, help="run alertd from this source tree (PYTHONPATH)")
    p.add_argument("--python", default=default_python(), help="python of the venv to run")
    p.add_argument("--no-alertmanager", action="store_true", help="skip Alertmanager")
    p.add_argument(
        "--systems",
        default="alertd,alertmanager",
        help="who runs latency and fan-out: alertd, alertmanager or both (default both)",
    )
    p.add_argument("--no-install", action="store_true", help="never apt-get install Alertmanager")
    p.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "latest.json", help="JSON path"
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    p.add_argument(
        "--profile",
        type=Path,
        help="py-spy record every alertd process into this directory (folded stacks)",
    )
    args = p.parse_args(argv)
    if args.form == "flat" and args.per_entry != 1:
        p.error("--per-entry needs --form json")
    return args


def sizes_of(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else FULL if args.full else DEFAULT
    changes: dict[str, Any] = {}
    if args.events:
        changes["throughput_events"] = args.events
    if args.series:
        changes["series"] = tuple(int(s) for s in args.series.split(","))
    for arg, name in (
        ("fanout_each", "fanout_each"),
        ("fanout_grouped", "fanout_grouped"),
        ("fanout_groups", "fanout_groups"),
        ("probes", "latency_probes"),
        ("throughput_cap", "throughput_cap_s"),
        ("fanout_cap", "fanout_cap_s"),
        ("storm_alerts", "storm_alerts"),
        ("storm_probes", "storm_probes"),
        ("storm_cap", "storm_cap_s"),
    ):
        if getattr(args, arg):
            changes[name] = getattr(args, arg)
    return dataclasses.replace(base, **changes)


def meta(args: argparse.Namespace, sizes: Sizes) -> dict[str, Any]:
    def git(*cmd: str) -> str:
        try:
            root = args.alertd_src or REPO
            return subprocess.run(
                ["git", "-C", str(root), *cmd], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv[1:],
        "alertd_src": str(args.alertd_src or REPO),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--", "alertd")),
        "python": subprocess.run(
            [args.python, "--version"], capture_output=True, text=True
        ).stdout.strip(),
        "redis": redis_version,
        "host": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_at_start": os.getloadavg(),
        },
        "sizes": dataclasses.asdict(sizes),
        "reps": args.reps,
        "form": args.form,
        "events_per_entry": args.per_entry,
        "alertd_log_level": args.log_level,
    }


async def run_scenarios(bench: Bench, only: set[str], sc: dict[str, Any]) -> None:
    """Run the selected scenarios in order, each one's figures into `sc` as it ends."""
    procs = bench.procs
    if "throughput" in only:
        procs.profile_tag = "throughput"
        sc["throughput"] = await scenarios.throughput(bench, with_ceiling=True)
    elif "ceiling" in only:
        sc["throughput"] = await scenarios.ceiling_only(bench)
    if "memory" in only:
        procs.profile_tag = "memory"
        sc["memory_idle"] = await scenarios.memory_idle(bench)
        if "throughput" not in only:
            sc["throughput"] = await scenarios.throughput(
                bench, with_ceiling="ceiling" in only, only_series=max(bench.sizes.series)
            )
    if "latency" in only:
        procs.profile_tag = "latency"
        sc["latency"] = await scenarios.latency(bench)
    if "fanout" in only:
        procs.profile_tag = "fanout"
        sc["fanout"] = await scenarios.fanout(bench)
    if "storm" in only:
        procs.profile_tag = "storm"
        sc["storm"] = await scenarios.storm(bench)


async def run(args: argparse.Namespace) -> int:
    sizes = sizes_of(args)
    only = set(args.only or SCENARIOS)
    workdir = Path(tempfile.mkdtemp(prefix="alertd-bench-"))
    procs = Procs(workdir, args.python, args.alertd_src, args.profile)
    bench = Bench(
        workdir=workdir,
        procs=procs,
        sizes=sizes,
        reps=args.reps,
        form=args.form,
        per_entry=args.per_entry,
        log_level=args.log_level,
        rules=(args.alertd_src or REPO) / "rules" / "default.toml",
        systems=tuple(x.strip() for x in args.systems.split(",") if x.strip()),
        cluster=args.cluster,
    )
    results: dict[str, Any] = {"meta": meta(args, sizes), "scenarios": {}}
    needs_am = bool(only & {"latency", "fanout", "storm"})
    if args.no_alertmanager:
        bench.alertmanager_skip = "--no-alertmanager was given"
    elif needs_am:
        bench.alertmanager, bench.alertmanager_skip = scenarios.find_alertmanager(
            not args.no_install
        )
    results["alertmanager"] = {
        "binary": bench.alertmanager,
        "version": scenarios.alertmanager_version(bench.alertmanager)
        if bench.alertmanager
        else None,
        "skipped": bench.alertmanager_skip,
    }
    if needs_am and bench.alertmanager is None:
        log(f"Alertmanager: SKIPPED: {bench.alertmanager_skip}")
    started = time.monotonic()
    sc = results["scenarios"]
    try:
        await bench.start()
        await run_scenarios(bench, only, sc)
    except BaseException as exc:
        results["error"] = f"{type(exc).__name__}: {exc}"
        log(f"run failed: {results['error']}")
        raise
    finally:
        await bench.close()
        results["elapsed_s"] = time.monotonic() - started
        rows = build_rows(results, sizes, only, bench.alertmanager_skip)
        results["table"] = [
            {
                "scenario": r.scenario,
                "figure": r.figure,
                "values": r.values,
                "median": report.median([v for v in r.values if v is not None]),
                "target": r.target,
                "met": r.met,
                "note": r.note,
            }
            for r in rows
        ]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1, default=str))
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"work directory kept: {workdir}")
    print()
    print(
        f"alertd bench: {args.reps} repetitions, medians with min-max; "
        f"{time.monotonic() - started:.0f}s; alertd from {results['meta']['alertd_src']}"
    )
    if bench.alertmanager_skip and needs_am:
        print(f"Alertmanager SKIPPED: {bench.alertmanager_skip}")
    elif bench.alertmanager:
        print(f"Alertmanager: {results['alertmanager']['version']}")
    print(report.table(rows))
    print(f"\nraw figures: {args.out}")
    return 0


# --- the table ------------------------------------------------------------------------


def _get(reps: list[dict[str, Any]], *path: str) -> list[Any]:
    out: list[Any] = []
    for rec in reps:
        cur: Any = rec
        for key in path:
            cur = cur.get(key) if isinstance(cur, dict) else None
        out.append(cur)
    return out


def _at_least(bound: float, v: float) -> bool:
    return v >= bound


def _at_most(bound: float, v: float) -> bool:
    return v <= bound


def _times_am(ratio: list[float | None], of: str = "AM") -> str:
    r = report.median([v for v in ratio if v is not None])
    return f"{r:.2f} x {of}" if r is not None else ""


def rows_throughput(thr: dict[str, Any], sizes: Sizes, only: set[str]) -> list[Row]:
    rows: list[Row] = []
    for data in thr.values():
        reps = data["reps"]
        label = f"{data['series']:,} series, {data['events']:,} events"
        ceiling = _get(reps, "ceiling", "events_per_s")
        if any(v is not None for v in ceiling):
            rows.append(Row(f"1 ceiling ({label})", "plain consumer", ceiling, fmt_rate))
        alertd = _get(reps, "alertd", "events_per_s")
        if "throughput" not in only or not any(v is not None for v in alertd):
            continue
        capped = any(_get(reps, "alertd", "capped"))
        scen = f"2 throughput ({label})"
        note = "capped: rate of the part drained" if capped else ""
        rows.append(Row(scen, "alertd", alertd, fmt_rate, note=note))
        bound = 0.5 if data["series"] == min(sizes.series) else 0.35
        ratio = report.ratios(alertd, ceiling)
        met = report.judge(ratio, functools.partial(_at_least, bound))
        rows.append(Row(scen, "alertd / ceiling", ratio, fmt_ratio, f">= {bound}", met))
        elapsed = _get(reps, "alertd", "elapsed_s")
        events = _get(reps, "alertd", "events")
        busy = [("alertd", "alertd_cpu_s"), ("redis-server", "redis_cpu_s")]
        for who, key in busy:
            cpu = _get(reps, "alertd", key)
            per_event = [None if c is None else c * 1e6 for c in report.ratios(cpu, events)]
            note = "busy " + "/".join(fmt_busy(v) for v in report.ratios(cpu, elapsed) if v)
            rows.append(Row(scen, f"{who} CPU per event", per_event, fmt_us, note=note))
    return rows


def rows_latency(lat: dict[str, Any], am_skip: str | None) -> list[Row]:
    rows: list[Row] = []
    a, m = lat["alertd"], lat["alertmanager"]
    scen = "3 latency (one alert at a time)"
    for q, target, bound in (
        ("p50", "<= AM p50", 1.0),
        ("p95", "", 0.0),
        ("p99", "<= 2 x AM p99", 2.0),
    ):
        av = _get(a, f"{q}_s")
        ratio = report.ratios(av, _get(m, f"{q}_s"))
        met = report.judge(ratio, functools.partial(_at_most, bound)) if target and m else None
        note = (_times_am(ratio) or ("AM skipped" if am_skip else "")) if target else ""
        rows.append(Row(scen, f"alertd {q}", av, fmt_ms, target, met, note))
    for q in ("p50", "p95", "p99"):
        note = "skipped" if am_skip else ""
        rows.append(Row(scen, f"Alertmanager {q}", _get(m, f"{q}_s"), fmt_ms, note=note))
    timeouts = sum(x.get("timeouts", 0) for x in a + m)
    if timeouts:
        rows[-1].note = f"{timeouts} probes timed out"
    return rows


def rows_fanout(fan: dict[str, Any], am_skip: str | None) -> list[Row]:
    rows: list[Row] = []
    for case, data in fan.items():
        a, m = data["alertd"], data["alertmanager"]
        scen = f"4 fan-out ({data['alerts']:,} alerts, {data['groups']:,} groups)"
        ratio = report.ratios(_get(a, "all_received_s"), _get(m, "all_received_s"))
        bound = 1 / 3 if case == "each" else 1.0
        met = report.judge(ratio, functools.partial(_at_most, bound)) if m else None
        notes = [_times_am(ratio)]
        capped = [x for x in a if x.get("capped")]
        if capped:
            met = False
            got = capped[0]["received_unique"]
            notes.insert(0, f"capped: {got:,} of {data['alerts']:,} received by the cap")
        target = "<= AM / 3" if case == "each" else "<= AM"
        at = _get(a, "all_received_s")
        rows.append(
            Row(
                scen, "alertd: all received", at, fmt_s, target, met, "; ".join(filter(None, notes))
            )
        )
        skipped = "skipped" if am_skip else ""
        rows.append(Row(scen, "AM: all received", _get(m, "all_received_s"), fmt_s, note=skipped))
        dup = _get(a, "duplicates")
        rows.append(
            Row(scen, "alertd duplicates", dup, fmt_int, "0", report.judge(dup, lambda v: v == 0))
        )
        rows.append(Row(scen, "AM duplicates", _get(m, "duplicates"), fmt_int))
        ar, mr = _get(a, "peak_rss_bytes"), _get(m, "peak_rss_bytes")
        if case == "each":
            rr = report.ratios(ar, mr)
            met = report.judge(rr, lambda v: v <= 0.25) if m else None
            rows.append(Row(scen, "alertd peak RSS", ar, fmt_mib, "<= AM / 4", met, _times_am(rr)))
        else:
            rows.append(Row(scen, "alertd peak RSS", ar, fmt_mib))
        rows.append(Row(scen, "AM peak RSS", mr, fmt_mib))
        rows.append(Row(scen, "alertd notifications", _get(a, "notifications"), fmt_int))
        rows.append(Row(scen, "AM notifications", _get(m, "notifications"), fmt_int))
    return rows


def rows_memory(idle: list[dict[str, Any]] | None, big: dict[str, Any] | None) -> list[Row]:
    rows: list[Row] = []
    if idle is not None:
        v = _get(idle, "rss_bytes")
        met = report.judge(v, lambda x: x <= 80 * MIB)
        rows.append(Row("5 memory", "alertd idle", v, fmt_mib, "<= 80 MiB", met))
    if big is None:
        return rows
    reps = big["reps"]
    at = _get(reps, "alertd", "rss_at_series_bytes")
    end = _get(reps, "alertd", "rss_settled_bytes")
    n = big["series"]
    met = report.judge(at, lambda x: x <= 250 * MIB)
    rows.append(Row("5 memory", f"alertd at {n:,} series", at, fmt_mib, "<= 250 MiB", met))
    done = max([e for e in _get(reps, "alertd", "events") if e is not None] or [0])
    rows.append(Row("5 memory", f"alertd after {done:,} events", end, fmt_mib))
    growth = [
        None if x is None or y is None else 100 * (y - x) / x for x, y in zip(at, end, strict=True)
    ]
    met = report.judge(growth, lambda g: g <= 5.0)
    rows.append(Row("5 memory", "growth from then to the end", growth, fmt_pct, "<= +5%", met))
    return rows


def rows_storm(st: dict[str, Any], am_skip: str | None) -> list[Row]:
    a, idle, m = st["alertd"], st["alertd_idle"], st["alertmanager"]
    scen = f"6 page during a storm ({st['alerts']:,} warnings, {st['probes']} probes)"
    skipped = "skipped" if am_skip else ""
    rows: list[Row] = []
    for q in ("p50", "p99"):
        av, iv, mv = _get(a, f"{q}_s"), _get(idle, f"{q}_s"), _get(m, f"{q}_s")
        vs_am = report.ratios(av, mv)
        notes = [
            _times_am(vs_am) or ("AM skipped" if am_skip else ""),
            _times_am(report.ratios(av, iv), "idle"),
        ]
        if q == "p50":
            rows.append(
                Row(scen, "alertd storm p50", av, fmt_ms, note="; ".join(filter(None, notes)))
            )
            continue
        lost = sum(x.get("timeouts", 0) for x in a)
        late = sum(x.get("probes_after_storm", 0) for x in a)
        if lost:
            notes.insert(0, f"{lost} probes never arrived")
        if late:
            notes.append(f"{late} probes sent after the storm was delivered")
        at_cap = sum(x.get("probes_after_cap", 0) for x in a)
        if at_cap:
            notes.append(f"{at_cap} probes sent at once at the cap")
        met = report.judge(av, functools.partial(_at_most, 0.1))
        rows.append(
            Row(
                scen,
                "alertd storm p99",
                av,
                fmt_ms,
                "<= 100 ms",
                False if lost else met,
                "; ".join(filter(None, notes)),
            )
        )
        met = report.judge(vs_am, functools.partial(_at_most, 1.0)) if m else None
        rows.append(
            Row(
                scen,
                "alertd / AM storm p99",
                vs_am,
                fmt_ratio,
                "<= 1",
                False if lost and m else met,
            )
        )
    fresh = sum(x.get("on") == "fresh daemon" for x in idle)
    for q in ("p50", "p99"):
        note = f"{fresh} on a fresh daemon (storm not over by the cap)" if fresh else ""
        rows.append(Row(scen, f"alertd idle {q}", _get(idle, f"{q}_s"), fmt_ms, note=note))
    for q in ("p50", "p99"):
        note = skipped
        if q == "p99":
            late = sum(x.get("probes_after_storm", 0) for x in m)
            lost = sum(x.get("timeouts", 0) for x in m)
            at_cap = sum(x.get("probes_after_cap", 0) for x in m)
            extra = [
                f"{lost} probes never arrived" if lost else "",
                f"{late} probes sent after the storm was delivered" if late else "",
                f"{at_cap} probes sent at once at the cap" if at_cap else "",
            ]
            note = "; ".join(filter(None, [note, *extra]))
        rows.append(Row(scen, f"AM storm {q}", _get(m, f"{q}_s"), fmt_ms, note=note))
    at, mt = _get(a, "storm_s"), _get(m, "storm_s")
    capped = [x for x in a if x.get("capped")]
    note = _times_am(report.ratios(at, mt))
    if capped:
        c = capped[0]
        note = f"capped: {c['storm_received_at_cap']:,} of {st['alerts']:,} by the cap"
        if c["storm_delivered_s"] is not None:
            note = f"capped: all in {c['storm_delivered_s']:.1f}s, past the cap"
        note += f" ({c['storm_cap_s']:.0f}s)"
    rows.append(Row(scen, "alertd: storm delivered", at, fmt_s, note=note))
    capped = [x for x in m if x.get("capped")]
    note = skipped or (f"capped after {capped[0]['storm_cap_s']:.0f}s" if capped else "")
    rows.append(Row(scen, "AM: storm delivered", mt, fmt_s, note=note))
    for who, reps in (("alertd", a), ("AM", m)):
        wrong = [
            None if x.get("missing") is None else x["missing"] + x["extra_copies"] for x in reps
        ]
        dup = sum(x.get("duplicates", 0) for x in reps)
        note = f"{dup} duplicate notifications" if dup else ""
        rows.append(Row(scen, f"{who}: alerts not exactly once", wrong, fmt_int, note=note))
    return rows


def build_rows(
    results: dict[str, Any], sizes: Sizes, only: set[str], am_skip: str | None
) -> list[Row]:
    sc = results["scenarios"]
    thr = sc.get("throughput", {})
    rows = rows_throughput(thr, sizes, only)
    if sc.get("latency"):
        rows += rows_latency(sc["latency"], am_skip)
    if sc.get("fanout"):
        rows += rows_fanout(sc["fanout"], am_skip)
    if sc.get("storm"):
        rows += rows_storm(sc["storm"], am_skip)
    big = thr.get(f"series_{max(sizes.series)}") if "memory" in only else None
    rows += rows_memory(sc.get("memory_idle"), big)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130
