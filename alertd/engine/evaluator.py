"""Rules applied to batches of events and to the clock.

`ingest` pre-aggregates a batch per series, merges it into the Redis windows
(one pipeline), evaluates only the series the batch touched, and writes each
alert change with compare-and-set (one pipeline). `tick` evaluates on the
clock what arrivals cannot: `for`, `keep_firing_for`, `age`, emptying windows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import orjson
import structlog

from alertd.alerts import AlertStore
from alertd.engine.lifecycle import Change, series_fingerprint, step
from alertd.engine.windows import SeriesWindow, bucket_ms, series_value
from alertd.matchers import matches_all
from alertd.model import Alert, Event
from alertd.notify.routing import Router
from alertd.settings import Rule

log = structlog.get_logger("alertd.engine")

# Changes a receiver hears about; the others only update stored state.
NOTIFY_CHANGES = frozenset((Change.FIRED, Change.SEVERITY, Change.RESOLVED))


class Windows(Protocol):
    async def merge(
        self, updates: list[tuple[Rule, str, SeriesWindow]], now: float
    ) -> list[SeriesWindow]: ...
    async def read(self, fingerprints: list[str]) -> list[SeriesWindow | None]: ...
    async def age_series(self, rule: Rule, now: float) -> list[str]: ...


class AlertWriter(Protocol):
    """Where alert changes go: Redis (AlertStore) in the daemon, memory in `rules test`."""

    async def get_raw(self, fingerprints: list[str]) -> list[bytes | None]: ...
    async def write(self, changes: list[PendingWrite], now: float) -> list[bool]: ...
    async def live_alerts(self) -> list[Alert]: ...


@dataclass(slots=True)
class PendingWrite:
    fingerprint: str
    expected: bytes
    alert: Alert | None
    change: Change
    rule: Rule
    labels: dict[str, str]


class RedisAlertWriter:
    """AlertWriter on the shared AlertStore, filing notify-worthy changes into groups."""

    def __init__(self, store: AlertStore, router: Callable[[], Router]) -> None:
        self.store = store
        self.router = router

    async def get_raw(self, fingerprints: list[str]) -> list[bytes | None]:
        return await self.store.get_raw(fingerprints)

    async def write(self, changes: list[PendingWrite], now: float) -> list[bool]:
        router = self.router()
        args = []
        for w in changes:
            targets = (
                router.groups(w.alert) if w.alert is not None and w.change in NOTIFY_CHANGES else []
            )
            args.append(
                self.store.apply_args(
                    w.fingerprint, w.expected, w.alert, targets, w.change is Change.SEVERITY, now
                )
            )
        return await self.store.apply_many(args)

    async def live_alerts(self) -> list[Alert]:
        return await self.store.all()


class Evaluator:
    """Evaluates one config's rules; rebuilt on reload (state lives in Redis)."""

    def __init__(
        self,
        rules: list[Rule],
        windows: Windows,
        writer: AlertWriter,
        on_change: Callable[[list[PendingWrite]], Awaitable[None]] | None = None,
    ) -> None:
        self.rules = {r.name: r for r in rules}
        self.windows = windows
        self.writer = writer
        self.on_change = on_change
        self.by_metric: dict[str, list[tuple[Rule, bool]]] = {}
        for rule in rules:
            self.by_metric.setdefault(rule.spec.metric, []).append((rule, False))
            if rule.spec.divide_by:
                self.by_metric.setdefault(rule.spec.divide_by, []).append((rule, True))
        self.evaluations: dict[str, int] = {}

    async def ingest(self, events: Iterable[Event], now: float) -> list[PendingWrite]:
        """Fold a batch into the windows and evaluate the series it touched."""
        touched: dict[str, tuple[Rule, SeriesWindow]] = {}
        for ev in events:
            for rule, denominator in self.by_metric.get(ev.name, ()):
                if rule.match and not matches_all(rule.match, ev.labels):
                    continue
                labels = {k: ev.labels.get(k, "") for k in rule.spec.group_by}
                fp = series_fingerprint(rule, labels)
                entry = touched.get(fp)
                if entry is None:
                    entry = touched[fp] = (rule, SeriesWindow(labels=labels))
                entry[1].add(ev.value, ev.ts, bucket_ms(rule), denominator)
        if not touched:
            return []
        updates = [(rule, fp, win) for fp, (rule, win) in touched.items()]
        merged = await self.windows.merge(updates, now)
        return await self._evaluate(
            [(rule, fp, win) for (rule, fp, _), win in zip(updates, merged, strict=True)], now
        )

    async def tick(self, now: float) -> list[PendingWrite]:
        """Clock evaluation: live alerts of any rule, and every series of `age` rules."""
        todo: dict[str, Rule] = {}
        for alert in await self.writer.live_alerts():
            rule = self.rules.get(alert.rule)
            if rule is not None and alert.state != "resolved":
                todo[alert.fingerprint] = rule
        for rule in self.rules.values():
            if rule.spec.aggregate == "age" and not rule.spec.divide_by:
                for fp in await self.windows.age_series(rule, now):
                    todo[fp] = rule
        fps = list(todo)
        windows = await self.windows.read(fps)
        batch = [(todo[fp], fp, win) for fp, win in zip(fps, windows, strict=True)]
        return await self._evaluate(batch, now)

    async def _evaluate(
        self, batch: list[tuple[Rule, str, SeriesWindow | None]], now: float
    ) -> list[PendingWrite]:
        done: list[PendingWrite] = []
        for _attempt in range(5):
            if not batch:
                break
            raw = await self.writer.get_raw([fp for _, fp, _ in batch])
            writes: list[PendingWrite] = []
            for (rule, fp, win), prev_raw in zip(batch, raw, strict=True):
                self.evaluations[rule.name] = self.evaluations.get(rule.name, 0) + 1
                prev = Alert.from_dict(orjson.loads(prev_raw)) if prev_raw else None
                labels = win.labels if win is not None else _labels_of(prev, rule)
                value = series_value(rule, win, now)
                new, change = step(rule, labels, prev, value, now)
                if new is None and prev is not None and prev.state == "resolved":
                    continue  # resolved and quiet: it stays until its groups have told receivers
                if (new is None and prev is None) or (
                    new is not None and prev is not None and new.to_dict() == prev.to_dict()
                ):
                    continue
                writes.append(PendingWrite(fp, prev_raw or b"", new, change, rule, labels))
            if not writes:
                break
            results = await self.writer.write(writes, now)
            retry = {w.fingerprint for w, ok in zip(writes, results, strict=True) if not ok}
            done.extend(w for w, ok in zip(writes, results, strict=True) if ok)
            batch = [item for item in batch if item[1] in retry]
        for w in done:
            if w.change is not Change.UPDATED:
                log.info(
                    "alert " + w.change.value,
                    rule=w.rule.name,
                    fingerprint=w.fingerprint,
                    severity=w.alert.severity if w.alert else None,
                    value=w.alert.value if w.alert else None,
                )
        if self.on_change is not None and done:
            await self.on_change(done)
        return done


def _labels_of(alert: Alert | None, rule: Rule) -> dict[str, str]:
    """A series' labels from its alert, when its window has already expired."""
    if alert is None:
        return {}
    return {k: alert.labels.get(k, "") for k in rule.spec.group_by}
