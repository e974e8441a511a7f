"""The cardinality guard : at most `max_series` series per rule.

Series are admitted first come. Each rule's admitted series live in one Redis
sorted set (fingerprint -> when last seen), changed only by one single-key Lua
step, so replicas share the count and a cluster keeps it on one slot. A series
that has seen no sample for longer than its rule could still care about
(window + for + keep_firing_for, plus a margin; a week for `age` rules) is let
go when the set is full, so churn (pods that come and go) does not fill it for
good.

An event that would create one series more is not evaluated for that rule:
it is counted in `alertd_series_limited_total{rule}`, dead-lettered (at most
one dead letter per rule per second across replicas), and the self-alert
`AlertdSeriesLimit{rule}` (severity warning) is written like any rule's alert,
so it is routed, grouped, silenced and delivered as usual. It resolves once
no event has been refused for RESOLVE_AFTER_S.

The common case costs no round trip: each replica remembers the series it saw
admitted, and only refreshes their time in Redis every so often.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from alertd.deadletters import DeadLetters
from alertd.engine.evaluator import AlertWriter, PendingWrite
from alertd.engine.windows import SeriesWindow
from alertd.logthrottle import ThrottledLog
from alertd.matchers import matches_all
from alertd.metrics import Metrics
from alertd.model import Alert, Event
from alertd.selfalerts import self_alert, set_self_alert
from alertd.storage import keys, scripts
from alertd.storage.scripts import lua

if TYPE_CHECKING:
    from alertd.settings import Rule

log = structlog.get_logger("alertd.cardinality")
throttled = ThrottledLog(log)  # a rule at its limit refuses events all day long

SERIES_LIMIT_ALERT = "AlertdSeriesLimit"
AGE_IDLE_S = 7 * 86400.0  # age rules remember a silent series this long (as their index does)
IDLE_MARGIN_S = 600.0
DEAD_LETTER_EVERY_MS = 1000
RESOLVE_AFTER_S = 300.0


class SeriesKeys:
    """The guard's keys (named in alertd/storage/keys.py)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def admitted(self, rule: str) -> str:
        return keys.admitted_series(self.prefix, rule)

    def dead_letter_slot(self, rule: str) -> str:
        return keys.series_dead_letter_slot(self.prefix, rule)


def idle_s(rule: Rule) -> float:
    """How long a series without samples still counts against its rule."""
    spec = rule.spec
    if spec.aggregate_kind == "age":
        return AGE_IDLE_S
    held = spec.window + spec.for_ + spec.keep_firing_for
    return held.total_seconds() + IDLE_MARGIN_S


def events_in(window: SeriesWindow) -> int:
    """Samples a batch brought to one series (an `age` series keeps no buckets: one)."""
    n = sum(b.count for b in window.num.values()) + sum(b.count for b in window.den.values())
    return n or 1


def limit_alert(rule: str, max_series: int, now: float) -> Alert:
    return self_alert(
        SERIES_LIMIT_ALERT,
        {"rule": rule},
        "warning",
        f"rule {rule} reached its series limit ({max_series}); "
        "events for new series are not evaluated",
        "A label in the rule's group_by probably holds unbounded values "
        "(ids, timestamps). Fix the producer or the rule's group_by, or raise max_series.",
        float(max_series),
        now,
    )


class SeriesGuard:
    """Admits series per rule up to `max_series`; shared by every Evaluator of an App."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        dead: DeadLetters,
        metrics: Metrics,
        writer: AlertWriter,
        on_change: Callable[[list[PendingWrite]], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.keys = SeriesKeys(prefix)
        self.dead = dead
        self.metrics = metrics
        self.writer = writer
        self.on_change = on_change
        self.clock = clock
        self._script = redis.register_script(lua("admit_series"))
        # rule -> fingerprint -> when this replica last refreshed it in Redis; holds only
        # admitted series, so it is bounded by the rules' max_series.
        self._seen: dict[str, dict[str, float]] = {}
        self._last_refused: dict[str, float] = {}  # rule -> when (self-alert raised)
        self._next_dead_letter: dict[str, float] = {}

    async def admit(
        self,
        touched: dict[str, tuple[Rule, SeriesWindow]],
        events: Iterable[Event],
        now: float,
    ) -> dict[str, tuple[Rule, SeriesWindow]]:
        """`touched` without the series over their rule's limit."""
        ask: dict[str, list[str]] = {}
        rules: dict[str, Rule] = {}
        # per rule: its series seen, and seen since when they are asked again
        recent: dict[str, tuple[dict[str, float], float]] = {}
        for fp, (rule, _) in touched.items():
            name = rule.name
            known = recent.get(name)
            if known is None:
                known = recent[name] = (self._seen.get(name, {}), now - idle_s(rule) / 4)
            at = known[0].get(fp)
            if at is None or at < known[1]:
                ask.setdefault(name, []).append(fp)
                rules[name] = rule
        if ask:
            refused = await self._ask(ask, rules, now)
            if refused:
                by_rule: dict[str, list[SeriesWindow]] = {}
                for fp in refused:
                    rule, window = touched[fp]
                    self.metrics.series_limited.labels(rule.name).inc(events_in(window))
                    by_rule.setdefault(rule.name, []).append(window)
                touched = {fp: v for fp, v in touched.items() if fp not in refused}
                for name, windows in by_rule.items():
                    await self._refused(rules[name], windows, events, now)
        if self._last_refused:
            await self.resolve_quiet(now)
        return touched

    async def _ask(self, ask: dict[str, list[str]], rules: dict[str, Rule], now: float) -> set[str]:
        """Admit what fits, in one round trip; the fingerprints refused."""
        refused: set[str] = set()
        pipe = self.redis.pipeline(transaction=False)
        for name, fps in ask.items():
            rule = rules[name]
            args = [rule.spec.max_series, repr(now), repr(now - idle_s(rule)), int(idle_s(rule))]
            scripts.queue(pipe, self._script, [self.keys.admitted(name)], [*args, *fps])
        replies = await scripts.execute(pipe)
        for (name, fps), reply in zip(ask.items(), replies, strict=True):
            self.metrics.series.labels(name).set(int(reply[0]))
            seen = self._seen.setdefault(name, {})
            for fp, ok in zip(fps, reply[1:], strict=True):
                if int(ok):
                    seen[fp] = now
                else:
                    seen.pop(fp, None)
                    refused.add(fp)
        return refused

    async def _refused(
        self, rule: Rule, windows: list[SeriesWindow], events: Iterable[Event], now: float
    ) -> None:
        first = rule.name not in self._last_refused
        self._last_refused[rule.name] = now
        if now >= self._next_dead_letter.get(rule.name, 0.0):
            self._next_dead_letter[rule.name] = now + DEAD_LETTER_EVERY_MS / 1000
            await self._dead_letter(rule, _an_event_of(rule, windows[0].labels, events))
        if first:
            alert = limit_alert(rule.name, rule.spec.max_series, now)
            await set_self_alert(self.writer, alert, True, now, self.on_change)

    async def _dead_letter(self, rule: Rule, event: dict[str, object] | None) -> None:
        """One dead letter for the rule, unless another replica wrote one this second."""
        reason = f"series limit of rule {rule.name} reached ({rule.spec.max_series})"
        try:
            slot = self.keys.dead_letter_slot(rule.name)
            if not await self.redis.set(slot, b"1", nx=True, px=DEAD_LETTER_EVERY_MS):
                return
            payload = {"data": orjson.dumps(event).decode()} if event else {}
            fields = self.dead.event_fields("", orjson.dumps(payload).decode(), reason, stream="")
            await self.dead.add(fields)
            self.metrics.dead_letters.labels("event").inc()
        except RedisError as exc:
            log.warning("could not dead-letter a refused series", rule=rule.name, error=str(exc))
        throttled.warning(f"limit:{rule.name}", reason, rule=rule.name)

    async def resolve_quiet(self, now: float) -> None:
        """Resolve the self-alert of rules that refused nothing for RESOLVE_AFTER_S (on
        events, and from the daemon's housekeeping, so an idle stream resolves it too)."""
        for name, at in list(self._last_refused.items()):
            if now - at < RESOLVE_AFTER_S:
                continue
            del self._last_refused[name]
            alert = limit_alert(name, 0, now)
            await set_self_alert(self.writer, alert, False, now, self.on_change)


def _an_event_of(
    rule: Rule, series: dict[str, str], events: Iterable[Event]
) -> dict[str, object] | None:
    """The batch's first event of a refused series (for its dead letter)."""
    if not isinstance(events, list | tuple):  # an iterator was consumed by the evaluator
        return None
    metrics = {rule.spec.metric, rule.spec.divide_by}
    for ev in events:
        if ev.name not in metrics or any(ev.labels.get(k, "") != v for k, v in series.items()):
            continue
        if not rule.match or matches_all(rule.match, ev.labels):
            return {"name": ev.name, "value": ev.value, "labels": ev.labels, "ts": ev.ts}
    return None
