"""Sliding windows of series, as time buckets in Redis.

Each series of each rule is one Redis hash `{prefix}w:{fingerprint}`. Its
fields are `<bucket index><field>`: `c` count, `s` sum, `n` min, `x` max, `t`/`v`
last sample's time and value, `q<key>` sketch counts (percentiles); a `D`
after the index marks the denominator of a `divide_by` rule. `L` holds the
series' labels and `T` the time of its newest sample (for `age`).

A consumed batch is pre-aggregated in process, then merged with one Lua call
per touched series, all in one pipeline: atomic per series, so replicas can
share a series, and the call returns the whole window for evaluation. Hashes
expire when a series goes idle; old buckets are pruned when a new one starts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis

from alertd.engine.aggregates import Bucket, aggregate
from alertd.settings import Rule

AGE_TTL_S = 7 * 86400  # a silent heartbeat is remembered this long
_NEEDS_SKETCH = frozenset(("p50", "p90", "p95", "p99"))

MERGE_LUA = """
local key = KEYS[1]
local prefix = ARGV[3]
local fresh = redis.call('HEXISTS', key, prefix .. 'c') == 0
local i = 6
while i <= #ARGV do
  local op, f, v = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if op == '+' then
    redis.call('HINCRBYFLOAT', key, f, v)
  elseif op == 'i' then
    redis.call('HINCRBY', key, f, v)
  elseif op == '<' then
    local cur = redis.call('HGET', key, f)
    if (not cur) or tonumber(v) < tonumber(cur) then redis.call('HSET', key, f, v) end
  elseif op == '>' then
    local cur = redis.call('HGET', key, f)
    if (not cur) or tonumber(v) > tonumber(cur) then redis.call('HSET', key, f, v) end
  elseif op == 't' then
    local cur = redis.call('HGET', key, f)
    if (not cur) or tonumber(v) >= tonumber(cur) then
      redis.call('HSET', key, f, v, ARGV[i + 4], ARGV[i + 5])
    end
    i = i + 3
  end
  i = i + 3
end
if fresh then
  local cutoff = tonumber(ARGV[2])
  local drop = {}
  for _, f in ipairs(redis.call('HKEYS', key)) do
    local b = tonumber(string.match(f, '^(%d+)'))
    if b and b < cutoff then drop[#drop + 1] = f end
  end
  for j = 1, #drop, 500 do
    redis.call('HDEL', key, unpack(drop, j, math.min(j + 499, #drop)))
  end
end
redis.call('HSET', key, 'L', ARGV[4])
local t = redis.call('HGET', key, 'T')
if (not t) or tonumber(ARGV[5]) > tonumber(t) then redis.call('HSET', key, 'T', ARGV[5]) end
redis.call('PEXPIRE', key, ARGV[1])
return redis.call('HGETALL', key)
"""


def bucket_ms(rule: Rule) -> int:
    """Bucket width: a thirtieth of the window, at least 100 ms."""
    return max(100, int(rule.spec.window.total_seconds() * 1000) // 30)


@dataclass(slots=True)
class SeriesWindow:
    """The buckets of one series, keyed by bucket index."""

    labels: dict[str, str]
    num: dict[int, Bucket] = field(default_factory=dict)
    den: dict[int, Bucket] = field(default_factory=dict)
    newest_ts: float = -math.inf

    def add(self, value: float, ts: float, width_ms: int, denominator: bool = False) -> None:
        index = int(ts * 1000) // width_ms
        buckets = self.den if denominator else self.num
        b = buckets.get(index)
        if b is None:
            b = buckets[index] = Bucket()
        b.add(value, ts)
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


def series_value(rule: Rule, window: SeriesWindow | None, now: float) -> float | None:
    """The rule's value for this series at `now`; None when there is nothing to judge."""
    if window is None:
        return None
    spec = rule.spec
    if spec.aggregate == "age" and not spec.divide_by:
        return now - window.newest_ts if window.newest_ts > -math.inf else None
    window_s = spec.window.total_seconds()
    first = int((now - window_s) * 1000) // bucket_ms(rule)
    num = [b for i, b in window.num.items() if i >= first]
    if spec.divide_by:
        den = [b for i, b in window.den.items() if i >= first]
        denominator = sum(b.sum for b in den)
        if not den or denominator == 0:
            return None
        if spec.min_denominator is not None and denominator < spec.min_denominator:
            return None
        return sum(b.sum for b in num) / denominator
    return aggregate(spec.aggregate_kind, num, window_s, now)


def _ops(rule: Rule, window: SeriesWindow) -> list[str]:
    kind = rule.spec.aggregate_kind
    ops: list[str] = []
    for tag, buckets in (("", window.num), ("D", window.den)):
        for index, b in buckets.items():
            p = f"{index}{tag}"
            ops += ["i", p + "c", str(b.count)]
            if kind in ("sum", "avg", "rate") or rule.spec.divide_by:
                ops += ["+", p + "s", repr(b.sum)]
            elif kind == "min":
                ops += ["<", p + "n", repr(b.min)]
            elif kind == "max":
                ops += [">", p + "x", repr(b.max)]
            elif kind == "last":
                ops += ["t", p + "t", repr(b.last_ts), "v", p + "v", repr(b.last_value)]
            elif kind in _NEEDS_SKETCH:
                for key, n in b.sketch.items():
                    ops += ["i", f"{p}q{key}", str(n)]
    return ops


def decode_window(raw: dict[bytes, bytes] | list[bytes]) -> SeriesWindow:
    """A window hash (HGETALL, as a dict or a flat list) back to buckets."""
    items: Iterable[tuple[bytes, bytes]]
    if isinstance(raw, dict):
        items = raw.items()
    else:
        items = zip(raw[::2], raw[1::2], strict=True)
    window = SeriesWindow(labels={})
    for fb, vb in items:
        f = fb.decode()
        if f == "L":
            window.labels = orjson.loads(vb)
            continue
        if f == "T":
            window.newest_ts = float(vb)
            continue
        j = 0
        while j < len(f) and f[j].isdigit():
            j += 1
        index = int(f[:j])
        buckets = window.num
        if f[j] == "D":
            buckets = window.den
            j += 1
        b = buckets.get(index)
        if b is None:
            b = buckets[index] = Bucket()
        _set_field(b, f[j], f[j + 1 :], vb)
    return window


def _set_field(b: Bucket, letter: str, rest: str, raw: bytes) -> None:
    if letter == "c":
        b.count = int(raw)
    elif letter == "s":
        b.sum = float(raw)
    elif letter == "n":
        b.min = float(raw)
    elif letter == "x":
        b.max = float(raw)
    elif letter == "t":
        b.last_ts = float(raw)
    elif letter == "v":
        b.last_value = float(raw)
    elif letter == "q":
        b.sketch[rest] = int(raw)


class RedisWindows:
    """Window state shared by every replica."""

    def __init__(self, redis: Redis, key_prefix: str) -> None:
        self.redis = redis
        self.prefix = key_prefix
        self._merge = redis.register_script(MERGE_LUA)

    def key(self, fingerprint: str) -> str:
        return f"{self.prefix}w:{fingerprint}"

    def series_key(self, rule: Rule) -> str:
        return f"{self.prefix}series:{rule.name}"

    async def merge(
        self, updates: list[tuple[Rule, str, SeriesWindow]], now: float
    ) -> list[SeriesWindow]:
        """Merge each (rule, fingerprint, batch window) and return the whole windows, in order."""
        if not updates:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for rule, fp, win in updates:
            width = bucket_ms(rule)
            window_ms = int(rule.spec.window.total_seconds() * 1000)
            if rule.spec.aggregate == "age":
                ttl_ms = AGE_TTL_S * 1000
                pipe.zadd(self.series_key(rule), {fp: win.newest_ts})
            else:
                ttl_ms = window_ms + 2 * width + 60_000
            current = int(now * 1000) // width
            cutoff = (int(now * 1000) - window_ms) // width - 1
            args: list[Any] = [
                ttl_ms,
                cutoff,
                str(current),
                orjson.dumps(win.labels).decode(),
                repr(win.newest_ts),
                *_ops(rule, win),
            ]
            await self._merge(keys=[self.key(fp)], args=args, client=pipe)
        results = await pipe.execute()
        return [decode_window(r) for r in results if isinstance(r, list)]

    async def read(self, fingerprints: list[str]) -> list[SeriesWindow | None]:
        if not fingerprints:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for fp in fingerprints:
            pipe.hgetall(self.key(fp))
        results = await pipe.execute()
        return [decode_window(r) if r else None for r in results]

    async def age_series(self, rule: Rule, now: float) -> list[str]:
        """Fingerprints of the rule's `age` series, forgetting those silent for AGE_TTL_S."""
        key = self.series_key(rule)
        await self.redis.zremrangebyscore(key, "-inf", now - AGE_TTL_S)
        return [m.decode() for m in await self.redis.zrange(key, 0, -1)]


class MemoryWindows:
    """The same windows in process, for `alertd rules test` (no Redis needed)."""

    def __init__(self) -> None:
        self.windows: dict[str, SeriesWindow] = {}
        self.by_rule: dict[str, set[str]] = {}

    async def merge(
        self, updates: list[tuple[Rule, str, SeriesWindow]], now: float
    ) -> list[SeriesWindow]:
        out = []
        for rule, fp, win in updates:
            current = self.windows.get(fp)
            if current is None:
                current = self.windows[fp] = SeriesWindow(labels=win.labels)
            current.merge(win)
            self.by_rule.setdefault(rule.name, set()).add(fp)
            out.append(current)
        return out

    async def read(self, fingerprints: list[str]) -> list[SeriesWindow | None]:
        return [self.windows.get(fp) for fp in fingerprints]

    async def age_series(self, rule: Rule, now: float) -> list[str]:
        return sorted(self.by_rule.get(rule.name, ()))
