"""Sliding windows of series, as time buckets in Redis.

Each series of each rule is one Redis hash `{prefix}w:{fingerprint}:{version}`,
where `version` changes with what the rule measures (metric, divide_by, match,
group_by, bucket width, what a bucket keeps): an edited rule starts afresh
instead of misreading buckets written under another layout. Fields are
`<bucket index><field>`: `c` count, `s` sum, `n` min, `x` max, `t`/`v` the
newest sample's time and value, `q<key>` sketch counts (percentiles); a `D`
after the index marks the denominator of a `divide_by` rule. A bucket keeps
only what the rule's aggregate needs. `L` holds the series' labels and `T` the
time of its newest sample (for `age`, which keeps no buckets at all).

A consumed batch is pre-aggregated in process, then merged with one Lua call
per touched series, all in one pipeline: atomic per series, so replicas can
share a series. The call also drops buckets that left the window and returns
the window already folded into one bucket (plus the denominator's) placed at
its oldest bucket's index (when the value can next change with no sample), so
a batch costs one round trip and little decoding. Hashes expire when a series
goes idle; series of `age` rules are indexed in `{prefix}series:{rule}:{version}`
(a sorted set by newest sample) for clock evaluation.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from alertd.engine.aggregates import Bucket, aggregate
from alertd.redisconn import pack_command
from alertd.settings import Rule
from alertd.storage import keys
from alertd.storage.partitions import Partitions
from alertd.storage.scripts import lua

AGE_TTL_S = 7 * 86400  # a silent heartbeat is remembered this long
# What a bucket keeps in Redis, by aggregate: its count plus one of these.
_STORAGE = {
    "sum": "s",
    "avg": "s",
    "rate": "s",
    "min": "n",
    "max": "x",
    "last": "t",
    "count": "c",
    "p50": "q",
    "p90": "q",
    "p95": "q",
    "p99": "q",
    "age": "a",  # no buckets: `T` is all an age needs
}

# Series per script call: bounds how long one call holds Redis (a few ms).
CHUNK = 100
# Script calls per write: the first merges are on the wire after this many.
PIPELINE_CALLS = 10


@dataclass(frozen=True, slots=True)
class WindowPlan:
    """How one rule's series are bucketed and stored; computed once per rule."""

    kind: str  # the aggregate (sum with divide_by)
    storage: str  # what a bucket keeps in Redis (see _STORAGE)
    width_ms: int
    window_ms: int
    window_s: float
    divide_by: bool
    version: str  # part of every Redis key of the rule's series

    @property
    def is_age(self) -> bool:
        return self.kind == "age"

    @property
    def needs_sketch(self) -> bool:
        return self.storage == "q"

    def first_bucket(self, now: float) -> int:
        """The oldest bucket index still inside the window at `now`."""
        return (int(now * 1000) - self.window_ms) // self.width_ms

    def bucket_of(self, ts: float) -> int:
        return int(ts * 1000) // self.width_ms


def bucket_ms(rule: Rule) -> int:
    """Bucket width: a thirtieth of the window, at least 100 ms."""
    return max(100, int(rule.spec.window.total_seconds() * 1000) // 30)


def _make_plan(rule: Rule) -> WindowPlan:
    spec = rule.spec
    kind = spec.aggregate_kind
    storage = _STORAGE[kind]
    window_ms = int(spec.window.total_seconds() * 1000)
    width = bucket_ms(rule)
    measured = {
        "metric": spec.metric,
        "divide_by": spec.divide_by,
        "match": sorted(spec.match.items()),
        "group_by": spec.group_by,
        "storage": storage,
        # an age keeps no buckets: its window changes nothing stored
        "width_ms": 0 if storage == "a" else width,
    }
    version = hashlib.blake2b(orjson.dumps(measured), digest_size=4).hexdigest()
    return WindowPlan(
        kind, storage, width, window_ms, window_ms / 1000, spec.divide_by is not None, version
    )


# id(rule) -> (rule, plan): the rule is kept so an id is never reused while cached.
_PLANS: dict[int, tuple[Rule, WindowPlan]] = {}


def plan_of(rule: Rule) -> WindowPlan:
    """The rule's WindowPlan (cached: this runs once per event)."""
    hit = _PLANS.get(id(rule))
    if hit is not None and hit[0] is rule:
        return hit[1]
    if len(_PLANS) > 10_000:  # many reloads: drop the rules of old configs
        _PLANS.clear()
    plan = _make_plan(rule)
    _PLANS[id(rule)] = (rule, plan)
    return plan


@dataclass(slots=True)
class SeriesWindow:
    """The buckets of one series, keyed by bucket index."""

    labels: dict[str, str]
    num: dict[int, Bucket] = field(default_factory=dict)
    den: dict[int, Bucket] = field(default_factory=dict)
    newest_ts: float = -math.inf

    def add(
        self,
        value: float,
        ts: float,
        width_ms: int,
        denominator: bool = False,
        sketch: bool = True,
    ) -> None:
        """Count one sample; `sketch=False` skips the percentile sketch when no rule reads it."""
        index = int(ts * 1000) // width_ms
        buckets = self.den if denominator else self.num
        b = buckets.get(index)
        if b is None:
            b = buckets[index] = Bucket()
        if sketch:
            b.add(value, ts)
        else:
            b.add_summary(value, ts)
        if ts > self.newest_ts:
            self.newest_ts = ts

    def merge(self, other: SeriesWindow) -> None:
        for mine, theirs in ((self.num, other.num), (self.den, other.den)):
            for index, b in theirs.items():
                if index in mine:
                    mine[index].merge(b)
                else:
                    mine[index] = Bucket(
                        b.count, b.sum, b.min, b.max, b.last_ts, b.last_value, dict(b.sketch)
                    )
        self.newest_ts = max(self.newest_ts, other.newest_ts)
        self.labels = other.labels or self.labels

    def prune(self, first: int) -> None:
        """Forget buckets older than `first`."""
        for buckets in (self.num, self.den):
            for index in [i for i in buckets if i < first]:
                del buckets[index]


def series_value(rule: Rule, window: SeriesWindow | None, now: float) -> float | None:
    """The rule's value for this series at `now`; None when there is nothing to judge."""
    if window is None:
        return None
    plan = plan_of(rule)
    if plan.is_age:
        return now - window.newest_ts if window.newest_ts > -math.inf else None
    first = plan.first_bucket(now)
    num = [b for i, b in window.num.items() if i >= first]
    if plan.divide_by:
        denominator = sum(b.sum for i, b in window.den.items() if i >= first and b.count)
        if denominator == 0:
            return None
        min_denominator = rule.spec.min_denominator
        if min_denominator is not None and denominator < min_denominator:
            return None
        return sum(b.sum for b in num) / denominator
    return aggregate(plan.kind, num, plan.window_s, now)


# A bucket as the merge script reads it, by storage kind: `index|count|x|y`. The tag
# after the index marks a denominator bucket ("D"; only `sum` keeps one).
_OPS: dict[str, Callable[[int, str, Bucket], str]] = {
    "s": lambda index, tag, b: f"{index}{tag}|{b.count}|{b.sum!r}|",
    "t": lambda index, tag, b: f"{index}|{b.count}|{b.last_ts!r}|{b.last_value!r}",
    "n": lambda index, tag, b: f"{index}|{b.count}|{b.min!r}|",
    "x": lambda index, tag, b: f"{index}|{b.count}|{b.max!r}|",
    "q": lambda index, tag, b: (
        f"{index}|{b.count}|{','.join([f'{k}:{n}' for k, n in b.sketch.items()])}|"
    ),
    "c": lambda index, tag, b: f"{index}|{b.count}||",
}


def encode_ops(plan: WindowPlan, window: SeriesWindow) -> str:
    """A batch's buckets as the merge script reads them, joined by `;`."""
    op = _OPS.get(plan.storage)
    if op is None:  # an age keeps no buckets
        return ""
    num, den = window.num, window.den
    if len(num) == 1 and not den:  # the common case: a batch brings one bucket
        for index, b in num.items():
            return op(index, "", b)
    parts = [op(index, "", b) for index, b in num.items()]
    parts += [op(index, "D", b) for index, b in den.items()]
    return ";".join(parts)


def decode_window(
    raw: Sequence[bytes], first: int, storage: str, labels: dict[str, str] | None = None
) -> SeriesWindow | None:
    """The script's answer for one series: its window folded into one bucket, at the
    index of its oldest bucket in the window (`first` or later).

    `labels`, when the caller knows them, saves decoding the stored ones.
    """
    if not raw:
        return None
    if labels is None:
        labels = orjson.loads(raw[0]) if raw[0] else {}
    num: dict[int, Bucket] = {}
    den: dict[int, Bucket] = {}
    window = SeriesWindow(labels, num, den, float(raw[1]) if raw[1] else -math.inf)
    at = int(raw[2]) if raw[2] else first
    count = int(raw[3])
    # Buckets built with their fields in order (count, sum, min, max, last_ts,
    # last_value): this runs once per series merged.
    if count:
        if storage == "s":
            num[at] = Bucket(count, float(raw[4]))
        elif storage == "t":
            num[at] = Bucket(count, 0.0, math.inf, -math.inf, float(raw[4]), float(raw[5]))
        elif storage == "n":
            num[at] = Bucket(count, 0.0, float(raw[4]))
        elif storage == "x":
            num[at] = Bucket(count, 0.0, math.inf, float(raw[4]))
        elif storage == "q":
            sketch = {raw[j].decode(): int(raw[j + 1]) for j in range(4, len(raw), 2)}
            num[at] = Bucket(count, sketch=sketch)
        else:
            num[at] = Bucket(count)
    if storage == "s":
        den_count = int(raw[5])
        if den_count:
            den[at] = Bucket(den_count, float(raw[6]))
    return window


# Called with a merged series' position in the batch, its whole window, and its stored
# alert (None when there is none, or the merge does not read alerts).
OnMerged = Callable[[int, "SeriesWindow", bytes | None], None]

# A script call's series (positions), first bucket in the window, and storage kind.
_Call = tuple[list[int], int, str]
# A script call: its keys, its arguments, and its _Call.
_Script = tuple[list[str], list[Any], _Call]


class RedisWindows:
    """Window state shared by every replica, each series in its partition."""

    def __init__(self, partitions: Partitions) -> None:
        self.partitions = partitions
        # Sent by SHA on a connection of its own (_evalsha), not through redis-py's call.
        self._script = partitions.home.register_script(lua("merge_windows"))

    def key(self, rule: Rule, fingerprint: str) -> str:
        prefix = self.partitions.prefix(self.partitions.of_series(fingerprint))
        return keys.window(prefix, fingerprint, plan_of(rule).version)

    def series_key(self, rule: Rule, partition: int) -> str:
        prefix = self.partitions.prefix(partition)
        return keys.age_series(prefix, rule.name, plan_of(rule).version)

    def ttl_ms(self, plan: WindowPlan) -> int:
        if plan.is_age:
            return AGE_TTL_S * 1000
        return plan.window_ms + 2 * plan.width_ms + 60_000

    async def merge(
        self,
        updates: list[tuple[Rule, str, SeriesWindow]],
        now: float,
        with_alerts: bool = False,
        merged: OnMerged | None = None,
    ) -> tuple[list[SeriesWindow], list[bytes | None] | None]:
        """Merge each (rule, fingerprint, batch window) and return the whole windows, in order.

        `with_alerts`: each series' stored alert as well (kept beside its window), read
        in the same step; else None. `merged` is called with each series' position,
        window and stored alert as soon as they are read, while Redis merges the next
        series.
        """

        def packed(i: int) -> str:
            rule, fp, win = updates[i]
            labels = orjson.dumps(win.labels).decode()
            return f"{win.newest_ts!r}\t{fp}\t{labels}\t" + encode_ops(plan_of(rule), win)

        windows, stored = await self._run(
            [(rule, fp) for rule, fp, _ in updates],
            packed,
            now,
            [w.labels for _, _, w in updates],
            with_alerts,
            merged,
        )
        # A merge always leaves a hash behind, so every answer holds a window.
        whole = [
            w or SeriesWindow(labels=win.labels)
            for w, (_, _, win) in zip(windows, updates, strict=True)
        ]
        return whole, stored if with_alerts else None

    async def read(self, series: list[tuple[Rule, str]], now: float) -> list[SeriesWindow | None]:
        """The windows of (rule, fingerprint) pairs at `now`; None where a series has none."""
        windows, _ = await self._run(series, None, now)
        return windows

    async def _run(
        self,
        series: list[tuple[Rule, str]],
        packed: Callable[[int], str] | None,
        now: float,
        known: list[dict[str, str]] | None = None,
        with_alerts: bool = False,
        merged: OnMerged | None = None,
    ) -> tuple[list[SeriesWindow | None], list[bytes | None]]:
        """One script call per rule, partition and CHUNK series; all of a client's on one
        connection, the clients at once.

        Every call is on the wire before the first answer is read, and Redis answers in
        order: it runs the later merges while alertd decodes the first answers.
        """
        if not series:
            return [], []
        with_alerts = with_alerts and packed is not None
        out: list[SeriesWindow | None] = [None] * len(series)
        stored: list[bytes | None] = [None] * len(series) if with_alerts else []

        def take(answer: Any, call: _Call) -> None:
            chunk, first, storage = call
            if with_alerts:
                answer, alerts = answer
                for i, raw_alert in zip(chunk, alerts, strict=True):
                    stored[i] = raw_alert
            for i, raw in zip(chunk, answer, strict=True):
                out[i] = decode_window(raw, first, storage, known[i] if known else None)
            if merged is not None and known is not None:
                for i in chunk:
                    merged(
                        i, out[i] or SeriesWindow(labels=known[i]), stored[i] if stored else None
                    )

        by_client: dict[int, tuple[Redis, list[_Script]]] = {}
        for partition, call in self._calls(series, packed, now, with_alerts):
            client = self.partitions.client(partition)
            by_client.setdefault(id(client), (client, []))[1].append(call)

        async def run(client: Redis, calls: list[_Script]) -> None:
            missing = await self._evalsha(client, iter(calls), take)
            if missing:  # first use, or Redis restarted: none of these calls ran
                await client.script_load(self._script.script)
                if await self._evalsha(client, iter(missing), take):
                    raise NoScriptError("merge_windows.lua was not kept after SCRIPT LOAD")

        await asyncio.gather(*(run(client, calls) for client, calls in by_client.values()))
        return out, stored

    async def _evalsha(
        self, client: Redis, calls: Iterator[_Script], take: Callable[[Any, _Call], None]
    ) -> list[_Script]:
        """Send every call (PIPELINE_CALLS per write), then hand each answer to `take` in
        order; the calls Redis did not know the script for."""
        pool = client.connection_pool
        conn = await pool.get_connection()
        try:
            sent: list[_Script] = []
            while group := list(itertools.islice(calls, PIPELINE_CALLS)):
                sha = self._script.sha.encode()
                commands = [
                    pack_command([b"EVALSHA", sha, b"%d" % len(t), *_encoded(t), *_encoded(a)])
                    for t, a, _ in group
                ]
                await conn.send_packed_command(b"".join(commands))
                sent.extend(group)
            missing: list[_Script] = []
            failed: ResponseError | None = None
            for script in sent:
                try:
                    answer = await conn.read_response()
                except NoScriptError:
                    missing.append(script)
                    continue
                except ResponseError as exc:  # the other answers are read all the same
                    failed = failed or exc
                    continue
                take(answer, script[2])
        except BaseException:
            await conn.disconnect(nowait=True)  # answers may be left unread
            raise
        finally:
            await pool.release(conn)
        if failed is not None:
            raise failed
        return missing

    def _calls(
        self,
        series: list[tuple[Rule, str]],
        packed: Callable[[int], str] | None,
        now: float,
        with_alerts: bool,
    ) -> Iterator[tuple[int, _Script]]:
        """(partition, (keys, args) of each script call, and what its answers are
        decoded with)."""
        of_series = self.partitions.of_series
        by_rule: dict[tuple[str, int], list[int]] = {}
        for i, (rule, fp) in enumerate(series):
            by_rule.setdefault((rule.name, of_series(fp)), []).append(i)
        for (_, partition), positions in by_rule.items():
            rule = series[positions[0]][0]
            plan = plan_of(rule)
            first = plan.first_bucket(now)
            indexed = plan.is_age and packed is not None
            prefix = self.partitions.prefix(partition)
            for start in range(0, len(positions), CHUNK):
                chunk = positions[start : start + CHUNK]
                touched = [self.series_key(rule, partition)] if indexed else []
                if with_alerts:
                    touched.append(keys.alerts(prefix))
                touched += [keys.window(prefix, series[i][1], plan.version) for i in chunk]
                args: list[Any] = [
                    self.ttl_ms(plan) if packed is not None else 0,
                    first,
                    plan.storage,
                    "1" if indexed else "0",
                    "1" if with_alerts else "0",
                ]
                if packed is not None:
                    args.append("\n".join([packed(i) for i in chunk]))
                yield partition, (touched, args, (chunk, first, plan.storage))

    async def age_series(
        self, rule: Rule, now: float, partitions: Iterable[int] | None = None
    ) -> list[tuple[str, float]]:
        """(fingerprint, newest sample time) of the rule's series (in these partitions:
        None for all), forgetting long-silent ones."""
        parts = range(self.partitions.count) if partitions is None else partitions
        out: list[tuple[str, float]] = []
        for client, ps in self.partitions.by_client(parts):
            async with client.pipeline(transaction=False) as pipe:
                for p in ps:
                    key = self.series_key(rule, p)
                    pipe.zremrangebyscore(key, "-inf", now - AGE_TTL_S)
                    pipe.zrange(key, 0, -1, withscores=True)
                answers = await pipe.execute()
            for members in answers[1::2]:
                out += [(m.decode(), float(score)) for m, score in members]
        return out


class MemoryWindows:
    """The same windows in process, for `alertd rules test` and tests (no Redis needed)."""

    def __init__(self) -> None:
        self.windows: dict[tuple[str, str], SeriesWindow] = {}
        self.by_rule: dict[tuple[str, str], set[str]] = {}

    async def merge(
        self,
        updates: list[tuple[Rule, str, SeriesWindow]],
        now: float,
        with_alerts: bool = False,
        merged: OnMerged | None = None,
    ) -> tuple[list[SeriesWindow], list[bytes | None] | None]:
        out = []
        for rule, fp, win in updates:
            plan = plan_of(rule)
            key = (fp, plan.version)
            current = self.windows.get(key)
            if current is None:
                current = self.windows[key] = SeriesWindow(labels=win.labels)
            current.merge(win)
            current.prune(plan.first_bucket(now))
            self.by_rule.setdefault((rule.name, plan.version), set()).add(fp)
            out.append(current)
        return out, None  # alerts are not kept here

    async def read(self, series: list[tuple[Rule, str]], now: float) -> list[SeriesWindow | None]:
        return [self.windows.get((fp, plan_of(rule).version)) for rule, fp in series]

    async def age_series(
        self, rule: Rule, now: float, partitions: Iterable[int] | None = None
    ) -> list[tuple[str, float]]:
        version = plan_of(rule).version
        fps = sorted(self.by_rule.get((rule.name, version), ()))
        return [(fp, self.windows[(fp, version)].newest_ts) for fp in fps]


def _encoded(values: Iterable[Any]) -> list[bytes]:
    return [str(v).encode() for v in values]
