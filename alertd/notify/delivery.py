"""Delivering notifications: retries with full-jitter backoff, per-channel workers.

`deliver` is the one delivery path: the outbox workers, `alertd test-alert`
and `POST /api/v1/test-alert` all call it. Tenacity retries only what the
shared classifier calls retryable, waiting at least a receiver's Retry-After.
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
from alertd.redact import redact

log = structlog.get_logger("alertd.delivery")


@dataclass(slots=True)
class DeliveryResult:
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


def _wait(retry: RetryConfig, rng: random.Random) -> Callable[[RetryCallState], float]:
    initial = retry.initial_backoff.total_seconds()
    cap = retry.max_backoff.total_seconds()

    def wait(state: RetryCallState) -> float:
        backoff = rng.uniform(0, min(cap, initial * 2 ** (state.attempt_number - 1)))
        exc = state.outcome.exception() if state.outcome else None
        after = exc.retry_after_s if isinstance(exc, DeliveryError) and exc.retry_after_s else 0.0
        return max(backoff, min(after, 3600.0))

    return wait


async def deliver(
    channel: Channel[Any],
    n: Notification,
    retry: RetryConfig | None = None,
    rng: random.Random | None = None,
    on_attempt: Callable[[str], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> DeliveryResult:
    """Send with retries; never raises for a delivery failure."""
    retry = retry or channel.config.retry
    timeout_s = retry.timeout.total_seconds()
    started = time.perf_counter()
    attempts = 0

    async def attempt() -> None:
        nonlocal attempts
        attempts += 1
        try:
            async with asyncio.timeout(timeout_s + 1):
                await channel.send(n)
        except TimeoutError:
            if on_attempt:
                on_attempt("retry")
            raise DeliveryError("timed out", channel=channel.name, retryable=True) from None
        except DeliveryError as exc:
            if on_attempt:
                on_attempt("retry" if exc.retryable else "permanent")
            raise
        if on_attempt:
            on_attempt("ok")

    retrying = AsyncRetrying(
        stop=stop_after_attempt(retry.attempts),
        wait=_wait(retry, rng or random.Random()),
        retry=retry_if_exception(_retryable),
        reraise=True,
        sleep=sleep,
    )
    try:
        await retrying(attempt)
    except DeliveryError as exc:
        return DeliveryResult(
            False,
            attempts,
            (time.perf_counter() - started) * 1000,
            redact(str(exc), channel.secrets()),
            permanent=not exc.retryable,
        )
    except Exception as exc:  # a channel bug must not take the worker down
        log.exception("channel failed unexpectedly", channel=channel.name)
        return DeliveryResult(
            False,
            attempts,
            (time.perf_counter() - started) * 1000,
            redact(f"internal error: {type(exc).__name__}", channel.secrets()),
            permanent=True,
        )
    return DeliveryResult(True, attempts, (time.perf_counter() - started) * 1000)
