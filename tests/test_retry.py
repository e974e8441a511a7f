"""The one retry classifier every channel shares, and its backoff."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from alertd.notify.retry import (
    Outcome,
    backoff_s,
    classify_http_status,
    classify_smtp_code,
    http_failure,
    parse_retry_after,
)

NOW_S = 1_795_456_800.0

HTTP_TABLE = [
    (200, Outcome.OK),
    (201, Outcome.OK),
    (204, Outcome.OK),
    (408, Outcome.RETRY),
    (429, Outcome.RETRY),
    (500, Outcome.RETRY),
    (502, Outcome.RETRY),
    (503, Outcome.RETRY),
    (504, Outcome.RETRY),
    (400, Outcome.PERMANENT),
    (401, Outcome.PERMANENT),
    (403, Outcome.PERMANENT),
    (404, Outcome.PERMANENT),
    (410, Outcome.PERMANENT),
    (422, Outcome.PERMANENT),
]

SMTP_TABLE = [
    (250, Outcome.OK),
    (421, Outcome.RETRY),
    (450, Outcome.RETRY),
    (451, Outcome.RETRY),
    (452, Outcome.RETRY),
    (-1, Outcome.RETRY),
    (535, Outcome.PERMANENT),
    (550, Outcome.PERMANENT),
    (552, Outcome.PERMANENT),
    (554, Outcome.PERMANENT),
]


class TestHttpClassifier:
    """Passing faults are retried, refusals go straight to the dead letters."""

    @pytest.mark.parametrize(("status", "expected"), HTTP_TABLE)
    def test_status_code_table(self, status: int, expected: Outcome) -> None:
        """2xx delivered; 408, 429 and 5xx retried; any other 4xx permanent."""
        assert expected == classify_http_status(status)

    def test_failure_carries_retry_after_of_a_429(self) -> None:
        """A 429's Retry-After becomes the least wait before the next attempt."""
        exc = http_failure("hook", 429, "slow down", "3")

        assert (True, 3.0, "HTTP 429: slow down", "hook") == (
            exc.retryable,
            exc.retry_after_s,
            str(exc),
            exc.channel,
        )

    def test_failure_message_is_one_short_line(self) -> None:
        """A receiver's multi-line error page shows as one line of at most 200 characters."""
        exc = http_failure("hook", 400, "bad\n  request\n" + "x" * 500)

        assert (False, None) == (exc.retryable, exc.retry_after_s)
        assert "HTTP 400: bad request " + "x" * (200 - len("bad request ")) == str(exc)


class TestSmtpClassifier:
    """SMTP 4xx (and a dropped connection) is retried; 5xx is permanent."""

    @pytest.mark.parametrize(("code", "expected"), SMTP_TABLE)
    def test_reply_code_table(self, code: int, expected: Outcome) -> None:
        """250 delivered; 421/45x and no reply retried; 535/55x permanent."""
        assert expected == classify_smtp_code(code)


class TestRetryAfter:
    """A receiver's Retry-After is honoured in both of its forms."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [("1", 1.0), (" 120 ", 120.0), ("0.5", 0.5), ("-5", 0.0)],
    )
    def test_delta_seconds(self, value: str, expected: float) -> None:
        """Retry-After: 120 waits 120 seconds (never a negative wait)."""
        assert expected == parse_retry_after(value, now_s=NOW_S)

    def test_http_date(self) -> None:
        """Retry-After as an HTTP date waits until that moment."""
        value = formatdate(NOW_S + 30, usegmt=True)

        assert 30.0 == parse_retry_after(value, now_s=NOW_S)

    def test_http_date_in_the_past_means_now(self) -> None:
        """A date already gone means retry without extra wait."""
        value = formatdate(NOW_S - 30, usegmt=True)

        assert 0.0 == parse_retry_after(value, now_s=NOW_S)

    @pytest.mark.parametrize("value", [None, "", "soon", "Mon, 99 Foo 2026"])
    def test_missing_or_unreadable_is_none(self, value: str | None) -> None:
        """No header, or one that is neither form, imposes no wait."""
        assert None is parse_retry_after(value, now_s=NOW_S)


class TestBackoff:
    """Waits grow exponentially up to the cap, with full jitter."""

    @pytest.mark.parametrize(("initial_s", "max_s"), [(1.0, 60.0), (0.5, 3.0), (2.0, 2.0)])
    def test_within_zero_and_the_exponential_cap(self, initial_s: float, max_s: float) -> None:
        """Retry n waits between 0 and min(max, initial * 2^(n-1)), never more."""
        rng = random.Random(1234)
        for attempt in range(1, 16):
            cap = min(max_s, initial_s * 2 ** (attempt - 1))
            waits = [backoff_s(attempt, initial_s, max_s, rng) for _ in range(200)]

            assert [] == [w for w in waits if not 0.0 <= w <= cap]

    def test_jitter_spreads_the_waits(self) -> None:
        """Replicas retrying together do not all wake at the same moment."""
        rng = random.Random(7)
        waits = [backoff_s(6, 1.0, 60.0, rng) for _ in range(200)]

        assert (True, True) == (min(waits) < 8.0, max(waits) > 24.0)

    def test_same_seed_same_waits(self) -> None:
        """An injected Random makes the schedule reproducible in tests."""

        def schedule(seed: int) -> list[float]:
            rng = random.Random(seed)
            return [backoff_s(n, 1.0, 60.0, rng) for n in range(1, 7)]

        assert schedule(42) == schedule(42)
