"""Per-channel delivery workers reading the outbox.

Each channel has its own workers and its own concurrency bound, so a slow or
dead channel never delays another. A finished notification is acknowledged
and removed under `asyncio.shield`, so shutdown cannot cut that write in half.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from alertd.channels.base import Channel
from alertd.deadletters import DeadLetters
from alertd.metrics import Metrics
from alertd.model import Notification
from alertd.notify.delivery import deliver
from alertd.notify.outbox import Outbox

log = structlog.get_logger("alertd.workers")

WORKERS_PER_CHANNEL = 4
FAILING_AFTER = 3  # consecutive dead letters before a channel counts as failing


@dataclass
class ChannelHealth:
    consecutive_failures: int = 0
    last_success: float | None = None
    last_error: str = ""
    in_flight: int = 0

    @property
    def status(self) -> str:
        return (
            "failing"
            if self.consecutive_failures >= FAILING_AFTER
            else ("degraded" if self.consecutive_failures else "ok")
        )


@dataclass
class ChannelWorkers:
    """The workers of every configured channel, swapped channel by channel on reload."""

    outbox: Outbox
    dead: DeadLetters
    metrics: Metrics
    consumer: str
    claim_idle_s: float
    channels: dict[str, Channel[Any]] = field(default_factory=dict)
    health: dict[str, ChannelHealth] = field(default_factory=dict)
    _tasks: dict[str, list[asyncio.Task[None]]] = field(default_factory=dict)
    _busy: set[asyncio.Task[Any]] = field(default_factory=set)
    _stopping: bool = False

    def set_channels(self, channels: dict[str, Channel[Any]]) -> None:
        """Start workers for new channels, stop those of removed ones, keep the rest."""
        old = self.channels
        self.channels = channels
        for name in list(self._tasks):
            if name not in channels:
                for t in self._tasks.pop(name):
                    t.cancel()
        for name, ch in channels.items():
            self.health.setdefault(name, ChannelHealth())
            if name not in self._tasks and ch.config.enabled:
                self._tasks[name] = [
                    asyncio.create_task(self._run(name, i), name=f"deliver:{name}:{i}")
                    for i in range(WORKERS_PER_CHANNEL)
                ]
        for name, ch in old.items():
            if channels.get(name) is not ch:
                task = asyncio.create_task(ch.close())
                self._busy.add(task)
                task.add_done_callback(self._busy.discard)

    async def _run(self, name: str, index: int) -> None:
        consumer = f"{self.consumer}:{index}"
        backoff_s = 0.1
        first = True
        last_claim = 0.0
        while not self._stopping:
            try:
                await self.outbox.ensure_group(name)
                batch = []
                if first:  # our own pending entries, left by a previous run of this process
                    batch = await self.outbox.read(name, consumer, 10, 0, pending=True)
                    first = bool(batch)
                if (
                    not batch
                    and index == 0
                    and time.monotonic() - last_claim > self.claim_idle_s / 2
                ):
                    last_claim = time.monotonic()
                    batch = await self.outbox.claim(name, consumer, int(self._claim_idle_ms(name)))
                if not batch:
                    batch = await self.outbox.read(name, consumer, 1, 1000)
                backoff_s = 0.1
            except asyncio.CancelledError:
                raise
            except RedisError as exc:
                log.warning("outbox unavailable", channel=name, error=type(exc).__name__)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            for entry_id, n in batch:
                job = asyncio.create_task(self._handle(name, entry_id, n))
                self._busy.add(job)
                job.add_done_callback(self._busy.discard)
                await asyncio.shield(job)

    def _claim_idle_ms(self, name: str) -> float:
        ch = self.channels.get(name)
        if ch is None:
            return self.claim_idle_s * 1000
        r = ch.config.retry
        # An entry is someone else's while they may still be retrying it.
        span = r.max_backoff.total_seconds() + r.timeout.total_seconds() + 5
        return float(max(self.claim_idle_s, span)) * 1000

    async def _handle(self, name: str, entry_id: str, n: Notification | None) -> None:
        channel = self.channels.get(name)
        health = self.health.setdefault(name, ChannelHealth())
        if n is None or channel is None:
            await self._finish(name, entry_id, None)
            return
        bound = log.bind(channel=name, notification_id=n.id, reason=n.reason.value)
        health.in_flight += 1
        try:
            result = await deliver(
                channel,
                n,
                on_attempt=lambda outcome: self.metrics.notification_attempts.labels(
                    name, outcome
                ).inc(),
            )
        finally:
            health.in_flight -= 1
        n.attempts += result.attempts
        if result.ok:
            health.consecutive_failures = 0
            health.last_success = time.time()
            self.metrics.notifications.labels(name, "delivered").inc()
            if n.changed_at:
                self.metrics.notification_latency.labels(name).observe(
                    max(0.0, time.time() - n.changed_at)
                )
            bound.info(
                "notified",
                status=n.status,
                alerts=len(n.alerts),
                attempts=result.attempts,
                latency_ms=round(result.latency_ms, 1),
            )
            await self._finish(name, entry_id, None)
            return
        health.consecutive_failures += 1
        if health.last_error != result.error:
            bound.error("delivery failed", error=result.error, attempts=result.attempts)
        health.last_error = result.error
        self.metrics.notifications.labels(name, "failed").inc()
        self.metrics.dead_letters.labels("notification").inc()
        reason = "permanent failure" if result.permanent else "retries exhausted"
        fields = self.dead.notification_fields(n, name, reason, result.error)
        fallback = channel.config.fallback
        follow = None
        if fallback and fallback in self.channels and not n.extra.get("fallback_from"):
            follow = Notification.from_dict(
                {
                    **n.to_dict(),
                    "receiver": fallback,
                    "attempts": 0,
                    "extra": {**n.extra, "fallback_from": name},
                }
            )
        await self._finish(name, entry_id, fields, follow)

    async def _finish(
        self,
        name: str,
        entry_id: str,
        dead: dict[str, str] | None,
        follow: Notification | None = None,
    ) -> None:
        """Remove the entry (and dead-letter / hand to the fallback) in one atomic write."""
        for attempt in range(20):
            try:
                if follow is not None:
                    await self.outbox.ensure_group(follow.receiver)
                async with self.outbox.redis.pipeline(transaction=True) as pipe:
                    if dead is not None:
                        pipe.xadd(self.dead.stream, dead, maxlen=100_000, approximate=True)
                    if follow is not None:
                        self.outbox.add_to(pipe, follow)
                    self.outbox.done_on(pipe, name, entry_id)
                    await pipe.execute()
                return
            except (RedisConnectionError, OSError, RedisError):
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
        log.error(
            "could not record delivery outcome; it will be retried", channel=name, entry=entry_id
        )

    async def stop(self, timeout_s: float) -> None:
        """Stop reading; give deliveries in hand until the deadline, then cancel them."""
        self._stopping = True
        for tasks in self._tasks.values():
            for t in tasks:
                t.cancel()
        if self._busy:
            _, pending = await asyncio.wait(set(self._busy), timeout=timeout_s)
            for t in pending:
                t.cancel()
        for tasks in self._tasks.values():
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        self._tasks.clear()
        for ch in self.channels.values():
            with contextlib.suppress(Exception):
                await ch.close()
