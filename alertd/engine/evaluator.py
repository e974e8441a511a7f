"""Rules applied to batches of events and to the clock.

`ingest` pre-aggregates a batch per series, merges it into the Redis windows
(one pipeline), evaluates only the series the batch touched, and writes each
alert change with compare-and-set (one pipeline). `tick` evaluates on the
clock what arrivals cannot: `for`, `keep_firing_for`, `age`, emptying windows,
and alerts whose rule was removed or no longer produces their series.

The clock does not read every live alert each time: each judgement also
stores when the alert can next change without a new sample (`clock_at`: its
`for` or `keep_firing_for` ends, its oldest sample leaves the window), and a
tick judges only the alerts due by then. A full sweep of every live alert
runs on a new config (a start or a reload) and every SWEEP_EVERY_S, so a rule
change or an alert written before the index existed is judged as well.

Timestamps: a sample from the future (a producer's clock ahead of ours)
counts as arriving now; a sample older than its rule's window changes nothing
and is skipped, except for `age`, where it can only make a series look older.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Container, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import orjson
import structlog

from alertd.alerts import AlertStore
from alertd.engine.aggregates import Bucket
from alertd.engine.lifecycle import Change, held_severity, retire, series_fingerprint, step
from alertd.engine.windows import OnMerged, SeriesWindow, WindowPlan, plan_of, series_value
from alertd.matchers import matches_all
from alertd.model import Alert, Event
from alertd.notify.routing import Router
from alertd.posted import expire_due, is_posted
from alertd.settings import Rule

if TYPE_CHECKING:
    from alertd.cardinality import SeriesGuard

log = structlog.get_logger("alertd.engine")

# Changes a receiver hears about; the others only update stored state.
NOTIFY_CHANGES = frozenset((Change.FIRED, Change.SEVERITY, Change.RESOLVED))
# Compare-and-set rounds before a change is given up (logged): each lost round means
# another replica moved the same alert in between, so this is only reached under a storm.
MAX_ATTEMPTS = 5
# The changes of one batch logged one line each; a storm's others are counted in one line
# (a line per alert took a third of a storm's ingest CPU; the alerts API shows each).
LOGGED_CHANGES = 100
_FP_CACHE_MAX = 200_000
SWEEP_EVERY_S = 60.0
# Alert changes are routed and serialized this many at a time, the event loop turning
# in between (a storm's 10,000 held it for 50-80 ms).
WRITE_SLICE = 500
# A batch read ahead is pre-aggregated this many events at a time, the event loop
# turning in between (a catch-up batch at once held it for a tenth of a second).
PREPARE_SLICE = 1000


class Windows(Protocol):
    async def merge(
        self,
        updates: list[tuple[Rule, str, SeriesWindow]],
        now: float,
        with_alerts: bool = False,
        merged: OnMerged | None = None,
    ) -> tuple[list[SeriesWindow], list[bytes | None] | None]: ...
    async def read(
        self, series: list[tuple[Rule, str]], now: float
    ) -> list[SeriesWindow | None]: ...
    async def age_series(
        self, rule: Rule, now: float, partitions: Iterable[int] | None = None
    ) -> list[tuple[str, float]]: ...


class AlertWriter(Protocol):
    """Where alert changes go: Redis (AlertStore) in the daemon, memory in `rules test`."""

    # Whether windows read the stored alerts in their merge (they are kept beside them).
    with_alerts: bool

    async def get_raw(self, fingerprints: list[str]) -> list[bytes | None]: ...
    async def write(self, changes: list[PendingWrite], now: float) -> list[bool]: ...
    async def live_alerts(self, partitions: Iterable[int] | None = None) -> list[Alert]: ...
    async def due(self, now: float, partitions: Iterable[int] | None = None) -> list[Alert]:
        """Live alerts (of these partitions: None for all) whose `clock_at` is reached
        (some, when very many are)."""
        ...

    async def reschedule(self, clock: dict[str, float]) -> None:
        """Set `clock_at` of alerts judged without a change."""
        ...


@dataclass(slots=True)
class PendingWrite:
    """One alert change, applied only if the stored alert is still `expected`."""

    fingerprint: str
    expected: bytes
    alert: Alert | None
    change: Change
    rule: str
    labels: dict[str, str]
    # (window key version, newest sample time) the change was judged on, if any
    window: tuple[str, float] | None = None
    # when the clock must next judge the alert; None once it is no longer live
    clock_at: float | None = None


class RedisAlertWriter:
    """AlertWriter on the shared AlertStore, filing notify-worthy changes into groups."""

    def __init__(self, store: AlertStore, router: Callable[[], Router]) -> None:
        self.store = store
        self.router = router
        self.with_alerts = True

    async def get_raw(self, fingerprints: list[str]) -> list[bytes | None]:
        return await self.store.get_raw(fingerprints)

    async def write(self, changes: list[PendingWrite], now: float) -> list[bool]:
        router = self.router()
        args = []
        for i, w in enumerate(changes):
            if i and not i % WRITE_SLICE:
                await asyncio.sleep(0)  # a storm's changes: let the loop turn (pages)
            # The groups holding a firing alert show its latest value: a value that moved
            # refreshes their copies (they hear nothing of it).
            alert = w.alert
            refresh = w.change is Change.UPDATED and alert is not None and alert.state == "firing"
            filed = w.change in NOTIFY_CHANGES or refresh
            targets = router.groups(alert) if alert is not None and filed else []
            guard = None
            if w.window is not None:
                version, newest = w.window
                guard = (self.store.window_key(w.fingerprint, version), newest)
            args.append(
                self.store.apply_args(
                    w.fingerprint,
                    w.expected,
                    w.alert,
                    targets,
                    w.change is Change.SEVERITY,
                    now,
                    guard,
                    w.clock_at,
                    refresh,
                )
            )
        return await self.store.apply_many(args)

    async def live_alerts(self, partitions: Iterable[int] | None = None) -> list[Alert]:
        return await self.store.all(partitions)

    async def due(self, now: float, partitions: Iterable[int] | None = None) -> list[Alert]:
        return await self.store.due(now, partitions)

    async def reschedule(self, clock: dict[str, float]) -> None:
        await self.store.reschedule(clock)


# One series to judge: its rule, fingerprint and window (None: no data, or not read yet).
Item = tuple[Rule, str, SeriesWindow | None]


class _Reader:
    """A rule reading one metric (its own, or its divide_by), with what ingest needs of
    it per event at hand rather than behind properties."""

    __slots__ = (
        "denominator",
        "fingerprints",
        "group_by",
        "is_age",
        "name",
        "one_key",
        "rule",
        "sketch",
        "width_ms",
    )

    def __init__(
        self,
        rule: Rule,
        plan: WindowPlan,
        denominator: bool,
        group_by: tuple[str, ...],
        fingerprints: dict[tuple[str, ...], str],
    ) -> None:
        self.rule = rule
        self.name = rule.name
        self.denominator = denominator
        self.group_by = group_by
        self.one_key = group_by[0] if len(group_by) == 1 else None  # the common case, faster
        self.fingerprints = fingerprints  # shared by the rule's readers
        self.is_age = plan.is_age
        self.width_ms = plan.width_ms
        self.sketch = plan.needs_sketch


class Evaluator:
    """Evaluates one config's rules; rebuilt on reload (state lives in Redis)."""

    def __init__(
        self,
        rules: list[Rule],
        windows: Windows,
        writer: AlertWriter,
        on_change: Callable[[list[PendingWrite]], Awaitable[None]] | None = None,
        log_changes: bool = True,
        series_guard: SeriesGuard | None = None,
        in_flight: dict[int, Container[str]] | None = None,
    ) -> None:
        self.rules = {r.name: r for r in rules}
        self.series_guard = series_guard
        self.windows = windows
        self.writer = writer
        self.on_change = on_change
        self.log_changes = log_changes
        self.by_metric: dict[str, list[_Reader]] = {}
        # Events of these may go before a batch in progress (ingest_first).
        self.paging_metrics = _paging_metrics(rules)
        # The series of each ingest in progress (shared by the evaluators of reloads)
        self.in_flight: dict[int, Container[str]] = {} if in_flight is None else in_flight
        # (group_by values) -> series fingerprint, per rule: a hash per event is the
        # costliest step of ingest otherwise.
        self._fingerprints: dict[str, dict[tuple[str, ...], str]] = {}
        for rule in rules:
            plan = plan_of(rule)
            fps = self._fingerprints.setdefault(rule.name, {})
            for metric, denominator in ((rule.spec.metric, False), (rule.spec.divide_by, True)):
                if metric:
                    reader = _Reader(rule, plan, denominator, tuple(rule.spec.group_by), fps)
                    self.by_metric.setdefault(metric, []).append(reader)
        self.evaluations: dict[str, int] = {}
        self._prepared: dict[
            int, tuple[list[Event], float, dict[str, tuple[Rule, SeriesWindow]]]
        ] = {}
        self.lost_writes = 0
        self._next_sweep = -math.inf  # a new config judges every live alert first

    def fingerprint_of(self, rule: Rule, values: tuple[str, ...]) -> str:
        fps = self._fingerprints.setdefault(rule.name, {})
        fp = fps.get(values)
        if fp is None:
            if len(fps) >= _FP_CACHE_MAX:
                fps.clear()
            labels = dict(zip(rule.spec.group_by, values, strict=True))
            fp = fps[values] = series_fingerprint(rule, labels)
        return fp

    def _aggregate(
        self,
        events: Iterable[Event],
        now: float,
        touched: dict[str, tuple[Rule, SeriesWindow]] | None = None,
    ) -> dict[str, tuple[Rule, SeriesWindow]]:
        """The batch pre-aggregated per series: fingerprint -> (rule, its samples); with
        `touched`, added to it (the same batch's earlier events)."""
        touched = {} if touched is None else touched
        # Per rule, the oldest sample time still inside its window: an older sample
        # cannot change the value and is skipped (ages keep every sample time).
        oldest: dict[str, float] = {}
        for name, rule in self.rules.items():
            plan = plan_of(rule)
            start = plan.first_bucket(now) * plan.width_ms / 1000
            oldest[name] = -math.inf if plan.is_age else start
        for ev in events:
            readers = self.by_metric.get(ev.name)
            if not readers:
                continue
            ts = ev.ts if ev.ts <= now else now
            labels = ev.labels
            for r in readers:
                rule = r.rule
                if rule.match and not matches_all(rule.match, labels):
                    continue
                if ts < oldest[r.name]:
                    continue
                if r.one_key is not None:
                    values: tuple[str, ...] = (labels.get(r.one_key, ""),)
                else:
                    values = tuple([labels.get(k, "") for k in r.group_by])
                fp = r.fingerprints.get(values) or self.fingerprint_of(rule, values)
                entry = touched.get(fp)
                if entry is None:
                    series = dict(zip(r.group_by, values, strict=True))
                    entry = touched[fp] = (rule, SeriesWindow(series, {}, {}, ts))
                window = entry[1]
                if ts > window.newest_ts:
                    window.newest_ts = ts
                if r.is_age:  # an age needs the newest time only, no buckets
                    continue
                # SeriesWindow.add, inlined: this runs once per event and rule
                buckets = window.den if r.denominator else window.num
                index = int(ts * 1000) // r.width_ms
                b = buckets.get(index)
                if r.sketch:
                    if b is None:
                        b = buckets[index] = Bucket()
                    b.add(ev.value, ts)
                elif b is None:  # a bucket's first sample, as add_summary counts it
                    value = ev.value
                    buckets[index] = Bucket(1, 0.0 + value, value, value, ts, value)
                else:
                    b.add_summary(ev.value, ts)
        return touched

    async def prepare(self, events: list[Event], now: float) -> None:
        """Pre-aggregate a batch ahead of its turn (nothing is stored), so that
        `ingest(events, now)` starts from it: the consumer does this while Redis merges
        the batch before."""
        touched: dict[str, tuple[Rule, SeriesWindow]] = {}
        for start in range(0, len(events), PREPARE_SLICE):
            if start:
                await asyncio.sleep(0)
            self._aggregate(events[start : start + PREPARE_SLICE], now, touched)
        if len(self._prepared) >= 8:  # prepared, then never ingested (a failure, a stop)
            self._prepared.clear()
        self._prepared[id(events)] = (events, now, touched)

    async def ingest(self, events: Iterable[Event], now: float) -> list[PendingWrite]:
        """Fold a batch into the windows and evaluate the series it touched."""
        prepared = self._prepared.pop(id(events), None)
        if prepared is not None and prepared[0] is events and prepared[1] == now:
            touched = prepared[2]
        else:
            touched = self._aggregate(events, now)
        return await self._ingest(touched, events, now)

    async def ingest_first(self, events: list[Event], now: float) -> bool:
        """Ingest events read after a batch still in progress, beside it, unless one of
        their series is in it (or in another ingest in progress): then nothing is done,
        and False says they wait their turn. Each series' samples stay in order; the
        consumer offers only the events of rules that page (`paging_metrics`)."""
        touched = self._aggregate(events, now)
        if any(fp in series for series in self.in_flight.values() for fp in touched):
            return False
        await self._ingest(touched, events, now)
        return True

    async def _ingest(
        self, touched: dict[str, tuple[Rule, SeriesWindow]], events: Iterable[Event], now: float
    ) -> list[PendingWrite]:
        if not touched:
            return []
        key = id(touched)
        self.in_flight[key] = touched  # before any await: ingest_first checks it
        try:
            return await self._merge_and_evaluate(touched, events, now)
        finally:
            del self.in_flight[key]

    async def _merge_and_evaluate(
        self, touched: dict[str, tuple[Rule, SeriesWindow]], events: Iterable[Event], now: float
    ) -> list[PendingWrite]:
        if self.series_guard is not None:
            touched = await self.series_guard.admit(touched, events, now)
        if not touched:
            return []
        updates = [(rule, fp, win) for fp, (rule, win) in touched.items()]
        judged: list[Judgement | None] = [None] * len(updates)

        def judge(i: int, window: SeriesWindow, raw: bytes | None) -> None:
            # as each answer arrives: Redis merges the next series meanwhile
            rule, fp, _ = updates[i]
            judged[i] = _judge((rule, fp, window), raw, now)

        merged, stored = await self.windows.merge(updates, now, self.writer.with_alerts, judge)
        items: list[Item] = [
            (rule, fp, win) for (rule, fp, _), win in zip(updates, merged, strict=True)
        ]
        return await self._evaluate(items, now, stored=stored, judged=judged)

    async def tick(self, now: float, partitions: Iterable[int] | None = None) -> list[PendingWrite]:
        """Clock evaluation: live alerts that are due (or all, on a sweep), and `age`
        series past a threshold; of these partitions (None: all)."""
        todo: dict[str, Rule] = {}
        orphans: list[Alert] = []
        expiring: list[Alert] = []
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY_S
            alerts = await self.writer.live_alerts(partitions)
        else:
            alerts = await self.writer.due(now, partitions)
        for alert in alerts:
            if alert.state == "resolved" or "self_alert" in alert.meta:  # alertd.selfalerts
                continue
            if is_posted(alert):  # no rule judges it: it ends at its endsAt (alertd.posted)
                if expire_due(alert, now)[1] is Change.RESOLVED:
                    expiring.append(alert)
                continue
            rule = self.rules.get(alert.rule)
            if rule is None or alert.fingerprint != self._series_of(rule, alert):
                orphans.append(alert)
            else:
                todo[alert.fingerprint] = rule
        for rule in self.rules.values():
            if not plan_of(rule).is_age:
                continue
            for fp, newest_ts in await self.windows.age_series(rule, now, partitions):
                # Most heartbeats are healthy and have no alert: judge them from the index.
                if fp not in todo and held_severity(rule, now - newest_ts, None)[0] is not None:
                    todo[fp] = rule
        done = await self._retire(orphans, now) if orphans else []
        done += await self._retire(expiring, now, expire_due) if expiring else []
        if todo:
            series = list(todo.items())
            windows = await self.windows.read([(rule, fp) for fp, rule in series], now)
            items: list[Item] = [
                (rule, fp, win) for (fp, rule), win in zip(series, windows, strict=True)
            ]
            done += await self._evaluate(items, now, reschedule=True)
        return done

    def _series_of(self, rule: Rule, alert: Alert) -> str:
        """The fingerprint the rule gives the alert's series now (it moves when labels do)."""
        values = tuple(alert.labels.get(k, "") for k in rule.spec.group_by)
        return self.fingerprint_of(rule, values)

    async def _retire(
        self,
        alerts: list[Alert],
        now: float,
        end: Callable[[Alert, float], tuple[Alert | None, Change]] = retire,
    ) -> list[PendingWrite]:
        """End alerts whose rule is gone or no longer yields their series (or, with
        `end`, that end otherwise)."""
        by_fp = {a.fingerprint: a for a in alerts}
        raws = await self.writer.get_raw(list(by_fp))
        writes = []
        for fp, raw in zip(by_fp, raws, strict=True):
            # Judged as stored now: a sender may have posted the alert again since.
            alert = Alert.from_dict(orjson.loads(raw)) if raw is not None else None
            if alert is None or alert.state == "resolved":
                continue
            new, change = end(alert, now)
            if change is not Change.NONE:
                writes.append(
                    PendingWrite(fp, raw or b"", new, change, alert.rule, dict(alert.labels))
                )
        # A lost compare-and-set means someone else moved the alert: the next tick decides.
        results = await self.writer.write(writes, now) if writes else []
        done = [w for w, ok in zip(writes, results, strict=True) if ok]
        await self._report(done)
        return done

    async def _evaluate(
        self,
        batch: list[Item],
        now: float,
        reschedule: bool = False,
        stored: list[bytes | None] | None = None,
        judged: list[Judgement | None] | None = None,
    ) -> list[PendingWrite]:
        """Step every series and write the changes with compare-and-set.

        A series whose write lost the race is judged again on a fresh read of both its
        alert and its window: whoever moved the alert may have merged newer samples.
        With `reschedule`, the live alerts judged unchanged get their next `clock_at`
        (a write sets it for the changed ones). Without, an unchanged alert keeps the
        one it has: new samples can only put its next change later. `stored`: the
        batch's alerts as the window merge read them (saves the first read); `judged`:
        the series already judged on them, where not None.
        """
        done: list[PendingWrite] = []
        clock: dict[str, float] = {}
        for rule, _, _ in batch:
            self.evaluations[rule.name] = self.evaluations.get(rule.name, 0) + 1
        for attempt in range(MAX_ATTEMPTS):
            if attempt == 0 and stored is not None:
                raw = stored
            else:
                raw = await self.writer.get_raw([fp for _, fp, _ in batch])
            first = judged if attempt == 0 and stored is not None and judged else None
            writes = []
            for i, (item, r) in enumerate(zip(batch, raw, strict=True)):
                done_early = first[i] if first is not None else None
                write, clock_at = done_early or _judge(item, r, now)
                if write is not None:
                    writes.append(write)
                elif clock_at is not None:
                    clock[item[1]] = clock_at
            if not writes:
                break
            results = await self.writer.write(writes, now)
            done.extend(w for w, ok in zip(writes, results, strict=True) if ok)
            lost = {w.fingerprint for w, ok in zip(writes, results, strict=True) if not ok}
            if not lost:
                break
            retry = [(rule, fp) for rule, fp, _ in batch if fp in lost]
            if attempt == MAX_ATTEMPTS - 1:
                self.lost_writes += len(retry)
                log.warning(
                    "alert changes lost to concurrent writers; the next evaluation retries",
                    fingerprints=sorted(lost)[:10],
                    count=len(lost),
                )
                break
            windows = await self.windows.read(retry, now)
            batch = [(rule, fp, win) for (rule, fp), win in zip(retry, windows, strict=True)]
        if reschedule and clock:
            await self.writer.reschedule(clock)
        await self._report(done)
        return done

    async def _report(self, done: list[PendingWrite]) -> None:
        if self.log_changes:
            told = [
                w for w in done if w.change is not Change.UPDATED and w.change is not Change.NONE
            ]
            for w in told[:LOGGED_CHANGES]:
                log.info(
                    "alert " + w.change.value,
                    rule=w.rule,
                    fingerprint=w.fingerprint,
                    labels=w.alert.labels if w.alert else None,
                    severity=w.alert.severity if w.alert else None,
                    value=w.alert.value if w.alert else None,
                )
            if len(told) > LOGGED_CHANGES:
                rest = told[LOGGED_CHANGES:]
                log.info(
                    "alert changes not logged one by one",
                    count=len(rest),
                    changes=dict(Counter(w.change.value for w in rest)),
                    rules=dict(Counter(w.rule for w in rest)),
                )
        if self.on_change is not None and done:
            await self.on_change(done)


def _paging_metrics(rules: list[Rule]) -> frozenset[str]:
    """The metrics that feed rules with a critical level, and the other metrics of each
    rule they feed (so that no series has samples on both sides of ingest_first)."""
    metrics = {m for r in rules if r.spec.critical is not None for m in _metrics_of(r)}
    while True:
        more = {m for r in rules if not metrics.isdisjoint(_metrics_of(r)) for m in _metrics_of(r)}
        if more <= metrics:
            return frozenset(metrics)
        metrics |= more


def _metrics_of(rule: Rule) -> tuple[str, ...]:
    spec = rule.spec
    return (spec.metric, spec.divide_by) if spec.divide_by else (spec.metric,)


# What a series needs: its write (None: its alert stays as stored), and its clock_at.
Judgement = tuple[PendingWrite | None, float | None]


def _judge(item: Item, prev_raw: bytes | None, now: float) -> Judgement:
    """The write one series needs at `now` (None when its alert stays as stored), and
    when the clock must next judge its alert (None when it is not live)."""
    rule, fp, win = item
    prev = Alert.from_dict(orjson.loads(prev_raw)) if prev_raw else None
    labels = win.labels if win is not None else _labels_of(prev, rule)
    new, change = step(rule, labels, prev, series_value(rule, win, now), now)
    if new is None and (prev is None or prev.state == "resolved"):
        # Inactive; a resolved alert stays until its groups have told receivers.
        return None, None
    clock_at = clock_of(rule, new, win, now)
    if new is not None and prev is not None and new.to_dict() == prev.to_dict():
        return None, clock_at
    judged = None
    if win is not None and math.isfinite(win.newest_ts):
        judged = (plan_of(rule).version, win.newest_ts)
    write = PendingWrite(fp, prev_raw or b"", new, change, rule.name, labels, judged, clock_at)
    return write, clock_at


def clock_of(rule: Rule, alert: Alert | None, win: SeriesWindow | None, now: float) -> float | None:
    """The earliest time after `now` at which `alert` can change with no new sample.

    None when it is not live. Between samples a value changes only when a bucket
    holding samples leaves the window, and a state when `for` or `keep_firing_for`
    ends; an `age` grows all the time, so its alerts are judged on every tick.
    """
    if alert is None or alert.state == "resolved":
        return None
    plan = plan_of(rule)
    if plan.is_age:
        return now
    at = math.inf
    spec = rule.spec
    if alert.state == "pending":
        at = alert.meta.get("pending_since", alert.starts_at) + spec.for_.total_seconds()
    keep_s = spec.keep_firing_for.total_seconds()
    if keep_s > 0 and "false_since" in alert.meta:
        at = min(at, alert.meta["false_since"] + keep_s)
    if win is not None:
        first = plan.first_bucket(now)
        held = [i for i in (*win.num, *win.den) if i >= first]
        if held:
            # bucket i is inside the window while (t_ms - window_ms) // width_ms <= i
            at = min(at, ((min(held) + 1) * plan.width_ms + plan.window_ms) / 1000)
    return at if math.isfinite(at) else now


def _labels_of(alert: Alert | None, rule: Rule) -> dict[str, str]:
    """A series' labels from its alert, when its window has already expired."""
    if alert is None:
        return {}
    return {k: alert.labels.get(k, "") for k in rule.spec.group_by}
