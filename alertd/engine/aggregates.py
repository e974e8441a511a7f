"""Window aggregates over pre-aggregated buckets: last, min, max, avg, sum, count, rate,
percentiles and age.

Pure and on the hot path: every event lands in a `Bucket` via `Bucket.add`, and a rule's
value is `aggregate(kind, buckets_in_window, ...)`. Percentiles come from a DDSketch-style
log-bucket sketch (relative error at most `RELATIVE_ACCURACY`) kept as a plain
`dict[str, int]` so the window store can keep it in a Redis hash as it is.
Values are finite (NaN and infinities are rejected at ingestion).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

AGGREGATES: tuple[str, ...] = (
    "last",
    "min",
    "max",
    "avg",
    "sum",
    "count",
    "rate",
    "p50",
    "p90",
    "p95",
    "p99",
    "age",
)
RELATIVE_ACCURACY = 0.01

# |values| at or below this all share the zero key: a log bucket per tiny magnitude would
# only grow the sketch, and no threshold an operator writes tells them apart.
_MIN_POSITIVE = 1e-9
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_INV_LOG_GAMMA = 1 / math.log(_GAMMA)
# Key i holds (gamma^(i-1), gamma^i]; this point is within RELATIVE_ACCURACY of both ends.
_REP_FACTOR = 2 / (_GAMMA + 1)
_QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}

_log = math.log
_ceil = math.ceil
# Key strings by log-bucket index, filled on first use: formatting an int costs about a
# third of Bucket.add. Bounded: finite floats span under 37k indexes per sign.
_POSITIVE_KEYS: dict[int, str] = {}
_NEGATIVE_KEYS: dict[int, str] = {}


def _new_key(sign: str, index: int, cache: dict[int, str]) -> str:
    key = cache[index] = f"{sign}{index}"
    return key


@dataclass(slots=True)
class Bucket:
    """Pre-aggregated samples of one series in one time slice."""

    count: int = 0
    sum: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    last_ts: float = -math.inf
    last_value: float = 0.0
    sketch: dict[str, int] = field(default_factory=dict)

    def add(self, value: float, ts: float) -> None:
        """Count one sample; on equal timestamps the sample added later is `last`."""
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        # Events can arrive out of order: `last` is the newest by ts, not by arrival.
        if ts >= self.last_ts:
            self.last_ts = ts
            self.last_value = value
        # sketch_key inlined: this runs once per event.
        if value > _MIN_POSITIVE:
            i = _ceil(_log(value) * _INV_LOG_GAMMA)
            key = _POSITIVE_KEYS.get(i) or _new_key("p", i, _POSITIVE_KEYS)
        elif value < -_MIN_POSITIVE:
            i = _ceil(_log(-value) * _INV_LOG_GAMMA)
            key = _NEGATIVE_KEYS.get(i) or _new_key("n", i, _NEGATIVE_KEYS)
        else:
            key = "z"
        sketch = self.sketch
        sketch[key] = sketch.get(key, 0) + 1

    def add_summary(self, value: float, ts: float) -> None:
        """`add` without the sketch, for rules that never ask for a percentile."""
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if ts >= self.last_ts:
            self.last_ts = ts
            self.last_value = value

    def merge(self, other: Bucket) -> None:
        """Fold `other` into this bucket; on equal `last_ts` the other bucket's `last` wins."""
        self._merge_summary(other)
        sketch = self.sketch
        for key, n in other.sketch.items():
            sketch[key] = sketch.get(key, 0) + n

    def _merge_summary(self, other: Bucket) -> None:
        if other.count == 0:
            return
        self.count += other.count
        self.sum += other.sum
        if other.min < self.min:
            self.min = other.min
        if other.max > self.max:
            self.max = other.max
        if other.last_ts >= self.last_ts:
            self.last_ts = other.last_ts
            self.last_value = other.last_value


def sketch_key(value: float) -> str:
    """The sketch key of a value: "p<i>" / "n<i>" for log bucket i of |value|, or "z"."""
    if value > _MIN_POSITIVE:
        i = _ceil(_log(value) * _INV_LOG_GAMMA)
        return _POSITIVE_KEYS.get(i) or _new_key("p", i, _POSITIVE_KEYS)
    if value < -_MIN_POSITIVE:
        i = _ceil(_log(-value) * _INV_LOG_GAMMA)
        return _NEGATIVE_KEYS.get(i) or _new_key("n", i, _NEGATIVE_KEYS)
    return "z"


def sketch_value(key: str) -> float:
    """The value a sketch key stands for: within RELATIVE_ACCURACY of every value in it."""
    if key == "z":
        return 0.0
    sign = key[:1]
    if sign not in ("p", "n"):
        raise ValueError(f"invalid sketch key {key!r}")
    try:
        magnitude = _REP_FACTOR * _GAMMA ** int(key[1:])
    except OverflowError:
        # Only keys of values near the float maximum get here; the maximum is still within
        # RELATIVE_ACCURACY of them.
        magnitude = sys.float_info.max
    return magnitude if sign == "p" else -magnitude


def _key_order(key: str) -> tuple[int, int]:
    """Ascending value order of sketch keys: big negatives first, then zero, then positives."""
    order = _ORDER.get(key)
    if order is None:
        sign = key[:1]
        if sign == "p":
            order = (2, int(key[1:]))
        elif sign == "n":
            order = (0, -int(key[1:]))
        elif key == "z":
            order = (1, 0)
        else:
            raise ValueError(f"invalid sketch key {key!r}")
        if len(_ORDER) < 100_000:  # keys come from a bounded set; this bounds a bad input
            _ORDER[key] = order
    return order


# Sort keys by sketch key: quantile() sorts a series' keys on every evaluation.
_ORDER: dict[str, tuple[int, int]] = {}


def quantile(sketch: Mapping[str, int], q: float) -> float | None:
    """The value at 0-based rank floor(q*(n-1)) of the sketched samples; None when empty."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q!r} is not within [0, 1]")
    counts = {key: n for key, n in sketch.items() if n > 0}
    total = sum(counts.values())
    if total == 0:
        return None
    rank = math.floor(q * (total - 1))
    seen = 0
    for key in sorted(counts, key=_key_order):
        seen += counts[key]
        if seen > rank:
            return sketch_value(key)
    raise AssertionError("unreachable: rank < total")  # pragma: no cover


def _rate(b: Bucket, window_s: float, now: float) -> float:
    if window_s <= 0:
        raise ValueError(f"rate needs a positive window, got window_s={window_s!r}")
    return b.sum / window_s


_SCALAR: dict[str, Callable[[Bucket, float, float], float]] = {
    "last": lambda b, window_s, now: b.last_value,
    "min": lambda b, window_s, now: b.min,
    "max": lambda b, window_s, now: b.max,
    "avg": lambda b, window_s, now: b.sum / b.count,
    "sum": lambda b, window_s, now: b.sum,
    "count": lambda b, window_s, now: float(b.count),
    "rate": _rate,
    "age": lambda b, window_s, now: now - b.last_ts,
}


def aggregate(kind: str, buckets: Sequence[Bucket], window_s: float, now: float) -> float | None:
    """One aggregate over the merged buckets; None when they hold no sample, for every kind."""
    q = _QUANTILES.get(kind)
    if q is not None:
        # Only percentiles pay for merging the sketches.
        if len(buckets) == 1:
            return quantile(buckets[0].sketch, q)
        sketch: dict[str, int] = {}
        for bucket in buckets:
            for key, n in bucket.sketch.items():
                sketch[key] = sketch.get(key, 0) + n
        return quantile(sketch, q)
    scalar = _SCALAR.get(kind)
    if scalar is None:
        raise ValueError(f"unknown aggregate {kind!r} (one of {', '.join(AGGREGATES)})")
    if len(buckets) == 1:  # a window the store already folded
        merged = buckets[0]
    else:
        merged = Bucket()
        for bucket in buckets:
            merged._merge_summary(bucket)
    if merged.count == 0:
        return None
    return scalar(merged, window_s, now)
