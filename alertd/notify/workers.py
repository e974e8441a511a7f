"""Per-channel delivery workers reading the outbox, and the health of each channel.

Each channel has its own outbox stream and its own few workers, each holding
at most one notification, so a slow or dead channel never delays another.
A worker keeps the entry it holds fresh (`Outbox.touch`) so no other replica
claims it while it retries; an entry whose worker died is claimed after
`claim_idle`. The outcome (acknowledge, dead letter, hand to the fallback,
the channel's failure count) is written in one MULTI under `asyncio.shield`,
so a shutdown cannot cut it in half.

A channel that dead-letters FAILING_AFTER notifications in a row raises
alertd's own alert `AlertdChannelFailing` through the other enabled channels,
once per failing episode across replicas (a Redis key set NX), and resolves
it when the channel delivers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from redis.exceptions import RedisError

from alertd.channels.base import Channel
from alertd.deadletters import DeadLetters
from alertd.metrics import Metrics
from alertd.model import Alert, Notification, NotifyReason, fingerprint, new_id
from alertd.notify.delivery import DeliveryResult, deliver
from alertd.notify.outbox import Entry, Outbox
from alertd.notify.retry import Outcome

log = structlog.get_logger("alertd.workers")

WORKERS_PER_CHANNEL = 16  # the most notifications of one channel in hand at once
FAILING_AFTER = 3  # consecutive dead letters before a channel counts as failing
FAILING_ALERT = "AlertdChannelFailing"
STATE_TTL_S = 7 * 86400  # failure counts and failing episodes of channels gone from config
PRUNE_EVERY_S = 300.0
PRUNE_IDLE_MS = 3600 * 1000


@dataclass
class ChannelHealth:
    """What /health shows per channel."""

    consecutive_failures: int = 0
    last_success: float | None = None
    last_error: str = ""
    in_flight: int = 0

    @property
    def status(self) -> str:
        if self.consecutive_failures >= FAILING_AFTER:
            return "failing"
        return "degraded" if self.consecutive_failures else "ok"


@dataclass
class _GroupLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


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
    clock: Callable[[], float] = time.time
    _tasks: dict[str, list[asyncio.Task[None]]] = field(default_factory=dict)
    _busy: set[asyncio.Task[Any]] = field(default_factory=set)
    _retired: set[asyncio.Task[None]] = field(default_factory=set)
    _groups: dict[tuple[str, str], _GroupLock] = field(default_factory=dict)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def _stopping(self) -> bool:
        return self._stop.is_set()

    # --- keys --------------------------------------------------------------------------

    def failures_key(self, channel: str) -> str:
        return f"{self.outbox.prefix}channel:failures:{channel}"

    def failing_key(self, channel: str) -> str:
        """Exists while `channel` is in a failing episode; holds the alert's start."""
        return f"{self.outbox.prefix}channel:failing:{channel}"

    # --- lifecycle ---------------------------------------------------------------------

    def set_channels(self, channels: dict[str, Channel[Any]]) -> None:
        """Start workers for new (or re-enabled) channels, stop those of removed or disabled."""
        old = self.channels
        self.channels = channels
        for name in list(self._tasks):
            if name not in channels or not channels[name].config.enabled:
                for t in self._tasks.pop(name):
                    t.cancel()
                    self._retired.add(t)
                    t.add_done_callback(self._retired.discard)
        for name, ch in channels.items():
            self.health.setdefault(name, ChannelHealth())
            if name not in self._tasks and ch.config.enabled:
                self._tasks[name] = [
                    asyncio.create_task(self._run(name, i), name=f"deliver:{name}:{i}")
                    for i in range(WORKERS_PER_CHANNEL)
                ]
        for name, ch in old.items():
            if channels.get(name) is not ch:
                self._spawn(ch.close())

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._busy.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._busy.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # The entry stays pending: another worker claims it after claim_idle.
            log.error("delivery job failed", error=repr(exc), exc_info=exc)

    async def stop(self, timeout_s: float) -> None:
        """Stop reading; give deliveries in hand until the deadline, then cancel them.

        A cancelled delivery stays in the outbox and is resumed by the next start.
        """
        self._stop.set()
        for t in self._workers():
            t.cancel()
        deadline = time.monotonic() + timeout_s
        # Outcomes being written join the busy set while we wait: wait for them too.
        while self._busy and (left_s := deadline - time.monotonic()) > 0:
            await asyncio.wait(set(self._busy), timeout=left_s)
        if self._busy:
            for t in self._busy:
                t.cancel()
            await asyncio.wait(set(self._busy), timeout=1.0)
        for t in self._workers():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        for ch in self.channels.values():
            with contextlib.suppress(Exception):
                await ch.close()

    # --- the worker loop ---------------------------------------------------------------

    def _workers(self) -> list[asyncio.Task[None]]:
        return [*(t for ts in self._tasks.values() for t in ts), *self._retired]

    def _current(self, name: str) -> bool:
        """Whether the calling worker still serves `name` (a client library may swallow
        the cancel that retired it)."""
        return not self._stopping and asyncio.current_task() in self._tasks.get(name, ())

    def _heartbeat_s(self) -> float:
        # Several beats per claim_idle, so a busy event loop does not lose an entry.
        return min(5.0, max(0.05, self.claim_idle_s / 5))

    async def _run(self, name: str, index: int) -> None:
        consumer = f"{self.consumer}:{index}"
        own_pending = True  # first, what a previous run under this name left unfinished
        next_claim = 0.0
        next_prune = time.monotonic() + PRUNE_EVERY_S * random.random()
        backoff_s = 0.1
        while self._current(name):
            try:
                await self.outbox.ensure_group(name)
                batch: list[Entry] = []
                if own_pending:
                    batch = await self.outbox.read(name, consumer, 1, 0, pending=True)
                    own_pending = bool(batch)
                if not batch and time.monotonic() >= next_claim:
                    idle_ms = int(self.claim_idle_s * 1000)
                    batch = await self.outbox.claim(name, consumer, idle_ms)
                    # One claimed suggests more: look again at once, else after a while.
                    pause_s = min(5.0, max(0.1, self.claim_idle_s / 2))
                    next_claim = (
                        0.0 if batch else time.monotonic() + pause_s * (0.5 + random.random())
                    )
                if index == 0 and time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                    await self.outbox.prune_consumers(name, PRUNE_IDLE_MS)
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
            except Exception:  # a bug here must not silence the channel for good
                log.exception("delivery worker failed; restarting it", channel=name)
                await asyncio.sleep(1.0)
                continue
            if not self._current(name):
                break  # what it just read stays pending: its successor reads it first
            for entry_id, n in batch:
                job = self._spawn(self._handle(name, consumer, entry_id, n))
                # Cancelling the worker (stop, reload) leaves the job to finish on its own.
                await asyncio.wait({job})

    # --- one notification --------------------------------------------------------------

    async def _handle(
        self, name: str, consumer: str, entry_id: str, n: Notification | None
    ) -> None:
        channel = self.channels.get(name)
        if n is None:
            log.error("unreadable outbox entry dropped", channel=name, entry=entry_id)
            await self._record(name, entry_id)
            return
        bound = log.bind(channel=name, notification_id=n.id, reason=n.reason.value)
        if channel is not None and not channel.config.enabled:
            # Stays pending: read first by this worker's successor when it is enabled again.
            bound.info("channel disabled; notification stays queued")
            return
        if channel is None:
            # Removed while queued: keep it where an operator can replay it.
            error = f"channel '{name}' is no longer configured"
            bound.warning("notification dead-lettered", error=error)
            fields = self.dead.notification_fields(n, name, "channel unavailable", error)
            await self._record(name, entry_id, dead=fields)
            return
        result = await self._deliver_held(channel, consumer, entry_id, n)
        if result is None:
            if self._stopping:
                bound.info("delivery interrupted by shutdown; it stays queued")
            else:
                bound.warning("another worker took this notification over; leaving it to them")
            return
        n.attempts += result.attempts
        if result.ok:
            await self._delivered(channel, entry_id, n, result)
        else:
            await self._failed(channel, entry_id, n, result)

    async def _deliver_held(
        self, channel: Channel[Any], consumer: str, entry_id: str, n: Notification
    ) -> DeliveryResult | None:
        """Deliver while keeping the entry ours; None when another worker took it over."""
        name = channel.name
        finished = asyncio.Event()
        keeper = asyncio.create_task(self._keep(name, consumer, entry_id, finished))
        attempt = asyncio.create_task(self._deliver_in_order(channel, n))
        try:
            await asyncio.wait({keeper, attempt}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            finished.set()  # ends the keeper even if a client library swallowed the cancel
            keeper.cancel()
            if not attempt.done():
                attempt.cancel()
        await asyncio.wait({attempt}, timeout=5.0)  # a cancelled attempt unwinds
        if not attempt.done() or attempt.cancelled():
            return None
        return attempt.result()

    async def _keep(self, name: str, consumer: str, entry_id: str, finished: asyncio.Event) -> None:
        """Reset the entry's idle time now and then; return once it is no longer ours."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._heartbeat_s()):
                    await finished.wait()
            if finished.is_set():
                return
            try:
                if not await self.outbox.touch(name, consumer, entry_id):
                    return
            except RedisError as exc:
                # Keep delivering: the outcome is written once Redis is back.
                log.debug("outbox heartbeat failed", channel=name, error=type(exc).__name__)

    async def _deliver_in_order(self, channel: Channel[Any], n: Notification) -> DeliveryResult:
        name = channel.name
        health = self.health.setdefault(name, ChannelHealth())
        attempts = self.metrics.notification_attempts

        def count(outcome: Outcome) -> None:
            attempts.labels(name, outcome.value).inc()

        # A group's resolved message must not overtake its firing one that is still retrying.
        async with self._group_turn(name, n.group_key):
            health.in_flight += 1
            try:
                return await deliver(channel, n, on_attempt=count, sleep=self._backoff)
            finally:
                health.in_flight -= 1

    async def _backoff(self, delay_s: float) -> None:
        """The wait between attempts. A shutdown ends it: the entry stays queued for later."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._stop.wait()
        if self._stopping:
            raise asyncio.CancelledError

    @contextlib.asynccontextmanager
    async def _group_turn(self, name: str, group_key: str) -> AsyncIterator[None]:
        key = (name, group_key)
        entry = self._groups.setdefault(key, _GroupLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                self._groups.pop(key, None)

    async def _delivered(
        self, channel: Channel[Any], entry_id: str, n: Notification, result: DeliveryResult
    ) -> None:
        name = channel.name
        health = self.health.setdefault(name, ChannelHealth())
        health.consecutive_failures = 0
        health.last_success = time.time()
        self.metrics.notifications.labels(name, "delivered").inc()
        if n.changed_at:
            self.metrics.notification_latency.labels(name).observe(
                max(0.0, time.time() - n.changed_at)
            )
        log.info(
            "notified",
            channel=name,
            notification_id=n.id,
            reason=n.reason.value,
            status=n.status,
            alerts=len(n.alerts),
            attempts=result.attempts,
            latency_ms=round(result.latency_ms, 1),
        )
        done = await self._record(name, entry_id, delivered=True)
        failing = done[-1] if done else None
        if failing:
            await self._resolve_failing(name, failing)

    async def _failed(
        self, channel: Channel[Any], entry_id: str, n: Notification, result: DeliveryResult
    ) -> None:
        name = channel.name
        health = self.health.setdefault(name, ChannelHealth())
        bound = log.bind(channel=name, notification_id=n.id, reason=n.reason.value)
        if health.last_error != result.error:
            bound.error("delivery failed", error=result.error, attempts=result.attempts)
        else:
            bound.warning("delivery failed again", attempts=result.attempts)
        health.last_error = result.error
        self.metrics.notifications.labels(name, "failed").inc()
        self.metrics.dead_letters.labels("notification").inc()
        reason = "permanent failure" if result.permanent else "retries exhausted"
        fields = self.dead.notification_fields(n, name, reason, result.error)
        follow = self._fallback_of(channel, n)
        done = await self._record(name, entry_id, dead=fields, follow=follow, delivered=False)
        # The count is shared by the replicas; failures finishing together report out of order.
        count = int(done[-2]) if done else health.consecutive_failures + 1
        health.consecutive_failures = max(health.consecutive_failures, count)
        if health.consecutive_failures >= FAILING_AFTER:
            await self._raise_failing(name, health.consecutive_failures, result.error)

    def _fallback_of(self, channel: Channel[Any], n: Notification) -> Notification | None:
        """The copy of `n` for the channel's fallback (one hop: a fallback's own is not used)."""
        target = self.channels.get(channel.config.fallback or "")
        if target is None or not target.config.enabled or n.extra.get("fallback_from"):
            return None
        return Notification.from_dict(
            {
                **n.to_dict(),
                "receiver": target.name,
                "attempts": 0,
                "extra": {**n.extra, "fallback_from": channel.name},
            }
        )

    async def _record(
        self,
        name: str,
        entry_id: str,
        *,
        dead: dict[str, str] | None = None,
        follow: Notification | None = None,
        delivered: bool | None = None,
    ) -> list[Any] | None:
        """`_finish`, shielded: a cancelled job still records its outcome (stop waits for it)."""
        task = self._spawn(
            self._finish(name, entry_id, dead=dead, follow=follow, delivered=delivered)
        )
        result: list[Any] | None = await asyncio.shield(task)
        return result

    async def _finish(
        self,
        name: str,
        entry_id: str,
        *,
        dead: dict[str, str] | None = None,
        follow: Notification | None = None,
        delivered: bool | None = None,
    ) -> list[Any] | None:
        """Remove the entry, and dead-letter / hand to the fallback / count, in one MULTI.

        Returns the MULTI's replies (after a delivery the last is the failing episode,
        if any; after a failure the one before last is the consecutive failure count),
        or None when Redis stayed away: the entry is then delivered again later.
        """
        for attempt in range(20):
            try:
                if follow is not None:
                    await self.outbox.ensure_group(follow.receiver)
                async with self.outbox.redis.pipeline(transaction=True) as pipe:
                    if dead is not None:
                        self.dead.add_to(pipe, dead)
                    if follow is not None:
                        self.outbox.add_to(pipe, follow)
                    self.outbox.done_on(pipe, name, entry_id)
                    if delivered is True:
                        pipe.delete(self.failures_key(name))
                        pipe.get(self.failing_key(name))
                    elif delivered is False:
                        pipe.incr(self.failures_key(name))
                        pipe.expire(self.failures_key(name), STATE_TTL_S)
                    replies: list[Any] = await pipe.execute()
                return replies
            except (RedisError, OSError) as exc:
                log.debug("recording a delivery outcome failed", channel=name, error=str(exc))
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
        log.error(
            "could not record delivery outcome; it will be delivered again",
            channel=name,
            entry=entry_id,
        )
        return None

    # --- AlertdChannelFailing ----------------------------------------------------------

    def _others(self, name: str) -> list[Channel[Any]]:
        return [ch for n, ch in self.channels.items() if n != name and ch.config.enabled]

    def _failing_notification(
        self, name: str, receiver: str, alert: Alert, now: float
    ) -> Notification:
        return Notification(
            id=new_id(now),
            receiver=receiver,
            status="resolved" if alert.state == "resolved" else "firing",
            alerts=[alert],
            group_labels={"alertname": FAILING_ALERT, "channel": name},
            group_key=f'{{}}:{{alertname="{FAILING_ALERT}", channel="{name}"}}',
            reason=NotifyReason.RESOLVED if alert.state == "resolved" else NotifyReason.FIRST,
            created_at=now,
            changed_at=now,
        )

    @staticmethod
    def failing_alert(name: str, failures: int, error: str, starts_at: float) -> Alert:
        labels = {"alertname": FAILING_ALERT, "channel": name, "severity": "critical"}
        return Alert(
            fingerprint=fingerprint(labels),
            rule=FAILING_ALERT,
            labels=labels,
            annotations={
                "summary": f"alertd cannot deliver to channel {name}: "
                f"{failures} notifications in a row were dead-lettered",
                "description": f"Last error: {error}. Replay them with `alertd dlq replay` "
                "once the channel works again.",
            },
            state="firing",
            severity="critical",
            value=float(failures),
            starts_at=starts_at,
            updated_at=starts_at,
        )

    async def _raise_failing(self, name: str, failures: int, error: str) -> None:
        """Alert through the other channels, once per episode whichever replica gets here."""
        now = self.clock()
        alert = self.failing_alert(name, failures, error, now)
        ns = [self._failing_notification(name, ch.name, alert, now) for ch in self._others(name)]
        state = orjson.dumps({"starts_at": now, "failures": failures, "error": error})
        try:
            raised = await self.outbox.enqueue_once(self.failing_key(name), state, STATE_TTL_S, ns)
        except RedisError as exc:
            log.warning("could not raise channel alert", channel=name, error=type(exc).__name__)
            return
        if raised:
            log.error(
                "channel failing; alerting through the other channels",
                channel=name,
                failures=failures,
                alertname=FAILING_ALERT,
                to=[n.receiver for n in ns],
            )

    async def _resolve_failing(self, name: str, state: bytes) -> None:
        now = self.clock()
        try:
            info = orjson.loads(state)
            alert = self.failing_alert(
                name, int(info["failures"]), str(info["error"]), float(info["starts_at"])
            )
        except (ValueError, KeyError, TypeError):
            alert = self.failing_alert(name, FAILING_AFTER, "", now)
        alert.state = "resolved"
        alert.ends_at = now
        alert.updated_at = now
        ns = [
            self._failing_notification(name, ch.name, alert, now)
            for ch in self._others(name)
            if ch.config.send_resolved is not False
        ]
        try:
            resolved = await self.outbox.enqueue_if(self.failing_key(name), state, ns)
        except RedisError as exc:
            log.warning("could not resolve channel alert", channel=name, error=type(exc).__name__)
            return
        if resolved:
            log.info("channel delivers again", channel=name, alertname=FAILING_ALERT)
