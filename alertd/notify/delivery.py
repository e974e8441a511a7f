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


def retry_wait(
    retry: RetryConfig, rng: random.Random, done_before: int = 0
) -> Callable[[RetryCallState], float]:
    """Seconds before the next attempt: full-jitter backoff, at least the Retry-After.

    `done_before`: attempts made before tenacity's first (its numbers start after them).
    """

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return wait_after(state.attempt_number + done_before, exc, retry, rng)

    return wait


def wait_after(
    attempt: int, exc: BaseException | None, retry: RetryConfig, rng: random.Random
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based) that raised `exc`."""
    initial_s = retry.initial_backoff.total_seconds()
    max_s = retry.max_backoff.total_seconds()
    backoff = backoff_s(attempt, initial_s, max_s, rng)
    after = exc.retry_after_s if isinstance(exc, DeliveryError) and exc.retry_after_s else 0.0
    return max(backoff, min(after, MAX_RETRY_AFTER_S))


async def deliver(
    channel: Channel[Any],
    n: Notification,
    retry: RetryConfig | None = None,
    rng: random.Random | None = None,
    on_attempt: Callable[[Outcome], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> DeliveryResult:
    """Send `n` with retries; a delivery failure is returned, never raised."""
    attempt = _Attempts(channel, n, retry or channel.config.retry, on_attempt)
    # The first attempt on its own: most deliveries end there, at no cost of tenacity's.
    try:
        await attempt()
    except DeliveryError as exc:
        if not exc.retryable or attempt.retry.attempts <= 1:
            return attempt.failed(str(exc), permanent=not exc.retryable)
        rng = rng or random.Random()
        wait_s = wait_after(1, exc, attempt.retry, rng)
        attempt.retrying_in(1, wait_s, exc)
        await sleep(wait_s)
    except Exception as exc:
        return attempt.crashed(exc)
    else:
        return attempt.delivered()

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait_s = state.next_action.sleep if state.next_action else 0.0
        attempt.retrying_in(state.attempt_number + 1, wait_s, exc)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempt.retry.attempts - 1),
        wait=retry_wait(attempt.retry, rng, done_before=1),
        retry=retry_if_exception(_retryable),
        before_sleep=before_sleep,
        reraise=True,
        sleep=sleep,
    )
    try:
        await retrying(attempt)
    except DeliveryError as exc:
        return attempt.failed(str(exc), permanent=not exc.retryable)
    except Exception as exc:
        return attempt.crashed(exc)
    return attempt.delivered()


class _Attempts:
    """One notification's attempts through one channel (callable: the next attempt), and
    how they ended, with the channel's secrets kept out of every error text."""

    def __init__(
        self,
        channel: Channel[Any],
        n: Notification,
        retry: RetryConfig,
        on_attempt: Callable[[Outcome], None] | None,
    ) -> None:
        self.channel = channel
        self.n = n
        self.retry = retry
        self.on_attempt = on_attempt
        self.timeout_s = retry.timeout.total_seconds()
        self.started = time.perf_counter()
        self.count = 0

    def _tell(self, outcome: Outcome) -> None:
        if self.on_attempt is not None:
            self.on_attempt(outcome)

    async def __call__(self) -> None:
        self.count += 1
        try:
            # The channel bounds its own I/O by `timeout`; this bounds anything it forgot.
            async with asyncio.timeout(self.timeout_s + 1):
                await self.channel.send(self.n)
        except TimeoutError:
            self._tell(Outcome.RETRY)
            raise DeliveryError("timed out", channel=self.channel.name, retryable=True) from None
        except DeliveryError as exc:
            self._tell(Outcome.RETRY if exc.retryable else Outcome.PERMANENT)
            raise
        except Exception:
            self._tell(Outcome.PERMANENT)
            raise
        self._tell(Outcome.OK)

    def _elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def retrying_in(self, attempt: int, wait_s: float, exc: BaseException | None) -> None:
        log.debug(
            "retrying",
            channel=self.channel.name,
            notification_id=self.n.id,
            attempt=attempt,
            wait_s=round(wait_s, 3),
            error=redact(str(exc), self.channel.secrets()),
        )

    def delivered(self) -> DeliveryResult:
        return DeliveryResult(True, self.count, self._elapsed_ms())

    def failed(self, error: str, permanent: bool) -> DeliveryResult:
        secrets = self.channel.secrets()
        return DeliveryResult(
            False, self.count, self._elapsed_ms(), redact(error, secrets), permanent
        )

    def crashed(self, exc: Exception) -> DeliveryResult:
        """A channel bug: it must not take the worker down."""
        log.exception(
            "channel failed unexpectedly", channel=self.channel.name, notification_id=self.n.id
        )
        return self.failed(f"internal error: {type(exc).__name__}", permanent=True)
