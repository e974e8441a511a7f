"""Window aggregates against a naive reference over the raw samples."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alertd.engine.aggregates import (
    AGGREGATES,
    RELATIVE_ACCURACY,
    Bucket,
    aggregate,
    quantile,
    sketch_key,
    sketch_value,
)

Sample = tuple[float, float]  # (value, ts)

# The sketch files every |value| at or below this under zero (see aggregates._MIN_POSITIVE).
MIN_POSITIVE = 1e-9
# Float rounding at a log-bucket edge can put an estimate a few ulps past the 1% bound.
ULP_SLACK = 1 + 1e-9
PERCENTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}

values = st.one_of(
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, MIN_POSITIVE, -MIN_POSITIVE, 2e-9, -2e-9, 1.0, -1.0, 1e9, -1e9]),
)
timestamps = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
windows_s = st.floats(min_value=0.001, max_value=86_400, allow_nan=False, allow_infinity=False)


@st.composite
def bucketed_samples(draw: st.DrawFn, min_size: int = 1) -> tuple[list[Sample], list[Bucket]]:
    """Samples spread randomly over 1-6 buckets (some maybe empty).

    The samples come back in the order the buckets see them when merged in sequence
    (bucket by bucket, then insertion order): that order breaks ties for `last`.
    """
    samples = draw(st.lists(st.tuples(values, timestamps), min_size=min_size, max_size=60))
    n_buckets = draw(st.integers(min_value=1, max_value=6))
    where = draw(
        st.lists(
            st.integers(min_value=0, max_value=n_buckets - 1),
            min_size=len(samples),
            max_size=len(samples),
        )
    )
    buckets = [Bucket() for _ in range(n_buckets)]
    for (value, ts), i in zip(samples, where, strict=True):
        buckets[i].add(value, ts)
    order = sorted(range(len(samples)), key=lambda k: (where[k], k))
    return [samples[k] for k in order], buckets


def reference(kind: str, samples: Sequence[Sample], window_s: float, now: float) -> float:
    """The aggregate computed the obvious way over the raw samples."""
    vals = [v for v, _ in samples]
    if kind == "last":
        newest = max(ts for _, ts in samples)
        return [v for v, ts in samples if ts == newest][-1]
    if kind in PERCENTILES:
        return exact_percentile(vals, PERCENTILES[kind])
    by_kind = {
        "min": lambda: min(vals),
        "max": lambda: max(vals),
        "avg": lambda: math.fsum(vals) / len(vals),
        "sum": lambda: math.fsum(vals),
        "count": lambda: float(len(vals)),
        "rate": lambda: math.fsum(vals) / window_s,
        "age": lambda: now - max(ts for _, ts in samples),
    }
    return by_kind[kind]()


def exact_percentile(vals: Sequence[float], q: float) -> float:
    return sorted(vals)[math.floor(q * (len(vals) - 1))]


def assert_within_accuracy(exact: float, estimate: float | None) -> None:
    assert estimate is not None
    if abs(exact) <= MIN_POSITIVE:
        assert estimate == 0.0
    else:
        assert abs(estimate - exact) <= RELATIVE_ACCURACY * abs(exact) * ULP_SLACK


class TestAggregatesMatchReference:
    """Every aggregate over merged buckets equals the one over the raw samples."""

    @settings(max_examples=200, deadline=None)
    @given(data=bucketed_samples(), window_s=windows_s, now=timestamps)
    def test_exact_aggregates(
        self, data: tuple[list[Sample], list[Bucket]], window_s: float, now: float
    ) -> None:
        samples, buckets = data
        for kind in ("last", "min", "max", "count", "age"):
            assert reference(kind, samples, window_s, now) == aggregate(
                kind, buckets, window_s, now
            ), kind

    @settings(max_examples=200, deadline=None)
    @given(data=bucketed_samples(), window_s=windows_s)
    def test_sums_and_averages(
        self, data: tuple[list[Sample], list[Bucket]], window_s: float
    ) -> None:
        samples, buckets = data
        # Buckets sum in a different order than fsum, so large values that cancel leave
        # rounding error relative to the magnitudes summed, not to the (tiny) result.
        magnitude = math.fsum(abs(v) for v, _ in samples)
        scale = {"sum": 1.0, "avg": 1 / len(samples), "rate": 1 / window_s}
        for kind, factor in scale.items():
            actual = aggregate(kind, buckets, window_s, 0.0)
            assert actual is not None
            expected = reference(kind, samples, window_s, 0.0)
            assert math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-12 * magnitude * factor)

    @settings(max_examples=200, deadline=None)
    @given(data=bucketed_samples())
    def test_percentiles_within_one_percent(self, data: tuple[list[Sample], list[Bucket]]) -> None:
        samples, buckets = data
        for kind in PERCENTILES:
            assert_within_accuracy(
                reference(kind, samples, 60.0, 0.0), aggregate(kind, buckets, 60.0, 0.0)
            )

    @settings(max_examples=200, deadline=None)
    @given(data=bucketed_samples(min_size=0), window_s=windows_s, now=timestamps)
    def test_every_kind_is_covered(
        self, data: tuple[list[Sample], list[Bucket]], window_s: float, now: float
    ) -> None:
        samples, buckets = data
        for kind in AGGREGATES:
            actual = aggregate(kind, buckets, window_s, now)
            if not samples:
                assert actual is None, kind
            else:
                assert actual is not None, kind


class TestMerge:
    """Splitting samples over buckets and merging them loses nothing."""

    @settings(max_examples=200, deadline=None)
    @given(data=bucketed_samples(min_size=0))
    def test_merged_equals_one_bucket(self, data: tuple[list[Sample], list[Bucket]]) -> None:
        samples, buckets = data
        merged = Bucket()
        for bucket in buckets:
            merged.merge(bucket)
        single = Bucket()
        for value, ts in samples:
            single.add(value, ts)
        assert single.count == merged.count
        assert single.min == merged.min
        assert single.max == merged.max
        assert single.last_ts == merged.last_ts
        assert single.last_value == merged.last_value
        assert single.sketch == merged.sketch
        magnitude = math.fsum(abs(v) for v, _ in samples)
        assert math.isclose(single.sum, merged.sum, rel_tol=1e-9, abs_tol=1e-12 * magnitude)

    def test_merging_an_empty_bucket_changes_nothing(self) -> None:
        bucket = Bucket()
        bucket.add(5.0, 10.0)
        before = dataclasses.replace(bucket, sketch=dict(bucket.sketch))
        bucket.merge(Bucket())
        assert before == bucket


class TestLast:
    """`last` is the value with the newest timestamp, whatever order events arrived in."""

    @settings(max_examples=200, deadline=None)
    @given(
        samples=st.lists(
            st.tuples(values, timestamps), min_size=1, max_size=40, unique_by=lambda s: s[1]
        ),
        seed=st.integers(min_value=0, max_value=2**32),
    )
    def test_newest_timestamp_wins(self, samples: list[Sample], seed: int) -> None:
        expected = max(samples, key=lambda s: s[1])[0]
        shuffled = list(samples)
        random.Random(seed).shuffle(shuffled)
        one = Bucket()
        for value, ts in shuffled:
            one.add(value, ts)
        many = [Bucket() for _ in shuffled]
        for bucket, (value, ts) in zip(many, shuffled, strict=True):
            bucket.add(value, ts)
        assert expected == aggregate("last", [one], 60.0, 0.0)
        assert expected == aggregate("last", many, 60.0, 0.0)

    def test_late_event_does_not_replace_newer(self) -> None:
        bucket = Bucket()
        bucket.add(1.0, 100.0)
        bucket.add(2.0, 50.0)
        assert aggregate("last", [bucket], 60.0, 200.0) == 1.0

    def test_equal_timestamps_take_the_later_arrival(self) -> None:
        bucket = Bucket()
        bucket.add(1.0, 100.0)
        bucket.add(2.0, 100.0)
        assert aggregate("last", [bucket], 60.0, 200.0) == 2.0


class TestEmpty:
    """A window without samples has no value, for every aggregate."""

    @pytest.mark.parametrize("kind", AGGREGATES)
    @pytest.mark.parametrize("n_buckets", [0, 1, 3])
    def test_none_for_every_kind(self, kind: str, n_buckets: int) -> None:
        assert aggregate(kind, [Bucket() for _ in range(n_buckets)], 60.0, 1000.0) is None

    def test_quantile_of_empty_sketch(self) -> None:
        assert quantile({}, 0.5) is None


class TestRate:
    """`rate` is the sum of values per second over the rule's window."""

    def test_sum_over_window(self) -> None:
        a, b = Bucket(), Bucket()
        for ts in range(10):
            a.add(2.0, float(ts))
        b.add(10.0, 30.0)
        assert aggregate("rate", [a, b], 60.0, 60.0) == 0.5

    def test_window_must_be_positive(self) -> None:
        bucket = Bucket()
        bucket.add(1.0, 0.0)
        with pytest.raises(ValueError, match="window_s"):
            aggregate("rate", [bucket], 0.0, 0.0)


class TestAge:
    """`age` is the seconds since the newest sample."""

    def test_now_minus_newest_ts(self) -> None:
        old, new = Bucket(), Bucket()
        old.add(1.0, 90.0)
        new.add(1.0, 130.0)
        new.add(1.0, 120.0)
        assert aggregate("age", [new, old], 60.0, 200.0) == 70.0


class TestSketch:
    """Percentile estimates stay within 1% of the exact value, signs and zero included."""

    @settings(max_examples=200, deadline=None)
    @given(value=values)
    def test_key_value_round_trip(self, value: float) -> None:
        assert_within_accuracy(value, sketch_value(sketch_key(value)))

    def test_zero_is_exact(self) -> None:
        bucket = Bucket()
        for value in (0.0, -0.0, 0.0):
            bucket.add(value, 0.0)
        assert sketch_key(0.0) == "z"
        assert bucket.sketch == {"z": 3}
        for kind in PERCENTILES:
            assert aggregate(kind, [bucket], 60.0, 0.0) == 0.0

    def test_signs_order_ranks(self) -> None:
        bucket = Bucket()
        for value in (-1000.0, -1.0, 0.0, 1.0, 1000.0):
            bucket.add(value, 0.0)
        estimates = [quantile(bucket.sketch, q) for q in (0.0, 0.25, 0.5, 0.75, 1.0)]
        for exact, estimate in zip((-1000.0, -1.0, 0.0, 1.0, 1000.0), estimates, strict=True):
            assert_within_accuracy(exact, estimate)

    @pytest.mark.parametrize(
        ("q", "expected"), [(0.0, 1.0), (0.5, 50.0), (0.99, 99.0), (1.0, 100.0)]
    )
    def test_nearest_rank(self, q: float, expected: float) -> None:
        bucket = Bucket()
        for value in range(1, 101):
            bucket.add(float(value), 0.0)
        assert_within_accuracy(expected, quantile(bucket.sketch, q))

    def test_value_near_float_max(self) -> None:
        bucket = Bucket()
        bucket.add(1.7e308, 0.0)
        assert_within_accuracy(1.7e308, quantile(bucket.sketch, 0.5))

    @pytest.mark.parametrize("key", ["", "x3", "p", "pz"])
    def test_invalid_key(self, key: str) -> None:
        with pytest.raises(ValueError):
            sketch_value(key)

    def test_quantile_out_of_range(self) -> None:
        with pytest.raises(ValueError, match="quantile"):
            quantile({"z": 1}, 1.5)


class TestUnknownKind:
    """A kind outside AGGREGATES is a programming error, not a silent None."""

    def test_raises(self) -> None:
        with pytest.raises(ValueError, match="unknown aggregate"):
            aggregate("median", [], 60.0, 0.0)
