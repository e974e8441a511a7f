"""Delivering one notification through one channel, with retries.

`deliver` is the one delivery path: the outbox workers, `alertd test-alert`
and `POST /api/v1/test-alert` all call it. Tenacity retries only what the
shared classifier (alertd.notify.retry) calls retryable, waits with
exponential backoff and full jitter bounded by the channel's `retry`
settings, and never less than a receiver's Retry-After.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from alertd.channels.base import Channel, RetryConfig
from alertd.errors import DeliveryError
from alertd.model import Notification
from alertd.notify.retry import Outcome, backoff_s
from alertd.redact import redact

log = structlog.get_logger("alertd.delivery")

MAX_RETRY_AFTER_S = 3600.0  # a receiver asking for more is still retried after an hour


@dataclass(slots=True)
class DeliveryResult:
    """How one `deliver` call ended: delivered, or the (secret-free) last error."""

    ok: bool
    attempts: int
    latency_ms: float
    error: str = ""
    permanent: bool = False

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "attempts": self.attempts,
            "latency_ms": round(self.latency_ms, 1),
        }
        if not self.ok:
            out["error"] = self.error
        return out


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, DeliveryError) and exc.retryable


def retry_wait(retry: RetryConfig, rng: random.Random) -> Callable[[RetryCallState], float]:
    """Seconds before the next attempt: full-jitter backoff, at least the Retry-After."""
    initial_s = retry.initial_backoff.total_seconds()
    max_s = retry.max_backoff.total_seconds()

    def wait(state: RetryCallState) -> float:
        backoff = backoff_s(state.attempt_number, initial_s, max_s, rng)
        exc = state.outcome.exception() if state.outcome else None
        after = exc.retry_after_s if isinstance(exc, DeliveryError) and exc.retry_after_s else 0.0
        return max(backoff, min(after, MAX_RETRY_AFTER_S))

    return wait


async def deliver(
    channel: Channel[Any],
    n: Notification,
    retry: RetryConfig | None = None,
    rng: random.Random | None = None,
    on_attempt: Callable[[Outcome], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> DeliveryResult:
    """Send `n` with retries; a delivery failure is returned, never raised."""
    retry = retry or channel.config.retry
    timeout_s = retry.timeout.total_seconds()
    secrets = channel.secrets()
    bound = log.bind(channel=channel.name, notification_id=n.id)
    started = time.perf_counter()
    attempts = 0

    def tell(outcome: Outcome) -> None:
        if on_attempt is not None:
            on_attempt(outcome)

    async def attempt() -> None:
        nonlocal attempts
        attempts += 1
        try:
            # The channel bounds its own I/O by `timeout`; this bounds anything it forgot.
            async with asyncio.timeout(timeout_s + 1):
                await channel.send(n)
        except TimeoutError:
            tell(Outcome.RETRY)
            raise DeliveryError("timed out", channel=channel.name, retryable=True) from None
        except DeliveryError as exc:
            tell(Outcome.RETRY if exc.retryable else Outcome.PERMANENT)
            raise
        except Exception:
            tell(Outcome.PERMANENT)
            raise
        tell(Outcome.OK)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait_s = state.next_action.sleep if state.next_action else 0.0
        bound.debug(
            "retrying",
            attempt=state.attempt_number,
            wait_s=round(wait_s, 3),
            error=redact(str(exc), secrets),
        )

    retrying = AsyncRetrying(
        stop=stop_after_attempt(retry.attempts),
        wait=retry_wait(retry, rng or random.Random()),
        retry=retry_if_exception(_retryable),
        before_sleep=before_sleep,
        reraise=True,
        sleep=sleep,
    )

    def failed(error: str, permanent: bool) -> DeliveryResult:
        elapsed_ms = (time.perf_counter() - started) * 1000
        return DeliveryResult(False, attempts, elapsed_ms, redact(error, secrets), permanent)

    try:
        await retrying(attempt)
    except DeliveryError as exc:
        return failed(str(exc), permanent=not exc.retryable)
    except Exception as exc:  # a channel bug must not take the worker down
        bound.exception("channel failed unexpectedly")
        return failed(f"internal error: {type(exc).__name__}", permanent=True)
    return DeliveryResult(True, attempts, (time.perf_counter() - started) * 1000)
