"""The one retry classifier every channel shares.

2xx ok; 429, 5xx, connection errors and timeouts are retried; any other 4xx
is permanent. SMTP: 4xx retried, 5xx permanent. Tenacity retries only what
this module calls retryable.
"""

from __future__ import annotations

import enum
import random
import time
from email.utils import parsedate_to_datetime

from alertd.errors import DeliveryError


class Outcome(enum.StrEnum):
    OK = "ok"
    RETRY = "retry"
    PERMANENT = "permanent"


def classify_http_status(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.OK
    if status == 429 or status >= 500 or status == 408:
        return Outcome.RETRY
    return Outcome.PERMANENT


def classify_smtp_code(code: int) -> Outcome:
    if 200 <= code < 400:
        return Outcome.OK
    if 400 <= code < 500:
        return Outcome.RETRY
    if code < 0:  # aiosmtplib uses -1 for "no reply code": a dropped connection
        return Outcome.RETRY
    return Outcome.PERMANENT


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now_s is None else now_s))


def http_failure(
    channel: str, status: int, body: str, retry_after: str | None = None
) -> DeliveryError:
    """The DeliveryError for a non-2xx answer, classified."""
    snippet = " ".join(body.split())[:200]
    return DeliveryError(
        f"HTTP {status}" + (f": {snippet}" if snippet else ""),
        channel=channel,
        retryable=classify_http_status(status) is Outcome.RETRY,
        retry_after_s=parse_retry_after(retry_after) if status in (429, 503) else None,
    )


def backoff_s(
    attempt: int, initial_s: float, max_s: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter before retry number `attempt` (1-based)."""
    cap = min(max_s, initial_s * (2 ** (attempt - 1)))
    return (rng or random).uniform(0, cap)
