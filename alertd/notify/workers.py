"""Per-channel delivery workers: the reader of each channel's outbox, and its jobs.

Each channel has its own outbox stream and its own reader, so a slow or dead
channel never delays another; and an urgent lane (a stream and a reader of its
own, and a sure share of the channel's slots: outbox.py) so a new page never
waits behind a storm queued before it. A reader takes as many entries per
XREADGROUP as it has free delivery slots and delivers them side by side (a group's
notifications one after the other). One heartbeat per channel keeps every
entry it holds fresh (`Outbox.touch_many`) so no other replica claims them
while they retry; an entry another worker took over is left to it, and one
whose worker died is claimed after `claim_idle`. Outcomes are written by
`outcomes.OutcomeWriter`; a channel's health and its AlertdChannelFailing are
`channel_health`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.exceptions import RedisError

from alertd.channels.base import Channel
from alertd.deadletters import DeadLetters
from alertd.logthrottle import ThrottledLog
from alertd.metrics import Metrics
from alertd.model import Notification
from alertd.notify.channel_health import FAILING_AFTER, ChannelFailing, ChannelHealth
from alertd.notify.delivery import DeliveryResult, deliver
from alertd.notify.history import History
from alertd.notify.outbox import Entry, Outbox
from alertd.notify.outcomes import OutcomeWriter
from alertd.notify.ratelimit import RateLimiter
from alertd.notify.retry import Outcome

log = structlog.get_logger("alertd.workers")
throttled = ThrottledLog(log)  # loops that fail alike each retry log once a minute

IN_FLIGHT_PER_CHANNEL = 64  # the most notifications of one channel in hand at once
# Email opens an SMTP connection per message and Slack waits for its rate-limit slot
# inside the attempt's timeout: more at once would only hit connection limits and time out.
IN_FLIGHT_BY_TYPE = {"email": 16, "slack": 16}
URGENT_SHARE = 4  # each lane is sure of a quarter of its channel's slots (_in_flight_limit)
# A critical alert that fires holds back the outbox readers this long at most (until the
# page is delivered), and not again before as long has passed: the page's path through
# this process is not queued behind a storm's deliveries, and nothing starves.
PAGE_HOLD_S = 0.25
READ_WHEN_FREE = 4  # a busy lane reads again once 1/READ_WHEN_FREE of its slots are free
# HTTP connections to one host: a channel's slots and the other lane's sure quarter, so
# a page never waits for a connection a storm holds.
CONNECTIONS_PER_HOST = IN_FLIGHT_PER_CHANNEL + IN_FLIGHT_PER_CHANNEL // URGENT_SHARE
PRUNE_EVERY_S = 300.0
PRUNE_IDLE_MS = 3600 * 1000


@dataclass
class _GroupLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


@dataclass(eq=False, slots=True)
class _Held:
    """An outbox entry a channel's reader holds, and the job delivering it."""

    entry_id: str
    notification: Notification | None
    job: asyncio.Task[None] | None = None
    delivering: bool = True  # until the delivery has a result: a takeover cancels it
    lost: bool = False  # another consumer took the entry over


@dataclass(eq=False)
class _Lane:
    """What one channel's reader holds, under one consumer name, and its heartbeat.

    Outlives a reader retired by a reload, so a successor never takes an entry a job
    of its predecessor still delivers.
    """

    name: str
    consumer: str
    urgent: bool
    held: dict[str, _Held] = field(default_factory=dict)
    room: asyncio.Event = field(default_factory=asyncio.Event)  # a delivery slot freed
    beat: asyncio.Task[None] | None = None


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
    confirm: Callable[[], Awaitable[None]] | None = None  # replicas hold what was read
    history: History | None = None
    limiter: RateLimiter | None = None
    _tasks: dict[str, list[asyncio.Task[None]]] = field(default_factory=dict)
    _busy: set[asyncio.Task[Any]] = field(default_factory=set)
    _retired: set[asyncio.Task[None]] = field(default_factory=set)
    _lanes: dict[tuple[str, bool], _Lane] = field(default_factory=dict)
    _groups: dict[tuple[str, str], _GroupLock] = field(default_factory=dict)
    _outcomes: OutcomeWriter = field(init=False)
    _failing: ChannelFailing = field(init=False)
    _rng: random.Random = field(default_factory=random.Random)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _no_page: asyncio.Event = field(default_factory=asyncio.Event)  # clear: a page is coming
    _page_hold_ends: float = 0.0  # monotonic

    def __post_init__(self) -> None:
        self._no_page.set()
        self._outcomes = OutcomeWriter(self.outbox, self.dead, self._spawn)
        self._failing = ChannelFailing(self.outbox, lambda: self.channels, self.clock)

    @property
    def _stopping(self) -> bool:
        return self._stop.is_set()

    failing_alert = staticmethod(ChannelFailing.failing_alert)

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
                    asyncio.create_task(self._run(name, False), name=f"deliver:{name}"),
                    asyncio.create_task(self._run(name, True), name=f"deliver-urgent:{name}"),
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
        beats = [lane.beat for lane in self._lanes.values() if lane.beat is not None]
        for t in beats:
            t.cancel()
        if beats:
            await asyncio.wait(beats, timeout=1.0)
        for ch in self.channels.values():
            with contextlib.suppress(Exception):
                await ch.close()

    def page_coming(self) -> None:
        """A critical alert just fired here: the outbox readers take nothing new until its
        page is delivered or PAGE_HOLD_S passed (not again within as long after)."""
        now = time.monotonic()
        if now >= self._page_hold_ends + PAGE_HOLD_S:
            self._page_hold_ends = now + PAGE_HOLD_S
            self._no_page.clear()

    def _page_delivered(self) -> None:
        self._page_hold_ends = min(self._page_hold_ends, time.monotonic())
        self._no_page.set()

    async def _held_back(self) -> bool:
        """Wait while a page is coming (at most until the hold ends); whether it waited."""
        left_s = self._page_hold_ends - time.monotonic()
        if self._no_page.is_set() or left_s <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_page.wait(), left_s)
        return True

    # --- the reader --------------------------------------------------------------------

    def _workers(self) -> list[asyncio.Task[None]]:
        return [*(t for ts in self._tasks.values() for t in ts), *self._retired]

    def _current(self, name: str) -> bool:
        """Whether the calling reader still serves `name` (a client library may swallow
        the cancel that retired it)."""
        return not self._stopping and asyncio.current_task() in self._tasks.get(name, ())

    def _heartbeat_s(self) -> float:
        # Several beats per claim_idle, so a busy event loop does not lose an entry.
        return min(5.0, max(0.05, self.claim_idle_s / 5))

    def _in_flight_limit(self, lane: _Lane) -> int:
        """The lane's slots: its channel's, less what the other lane holds, and never
        less than a quarter of them (so neither lane can starve the other)."""
        channel = self.channels.get(lane.name)
        kind = channel.config.type if channel is not None else ""
        limit = IN_FLIGHT_BY_TYPE.get(kind, IN_FLIGHT_PER_CHANNEL)
        other = self._lanes.get((lane.name, not lane.urgent))
        return max(limit // URGENT_SHARE, limit - (len(other.held) if other else 0), 1)

    def _lane(self, name: str, urgent: bool) -> _Lane:
        lane = self._lanes.get((name, urgent))
        if lane is None:
            # One consumer name per stream and process: a restart reads back its own first.
            lane = self._lanes[name, urgent] = _Lane(name, f"{self.consumer}:0", urgent)
        return lane

    async def _room(self, lane: _Lane) -> int:
        """How many entries the lane may read now; 0 after waiting for a slot, or for a
        page to go first. While it delivers, a lane reads again only once a quarter of
        its slots are free: fewer, fuller reads in a storm. The urgent lane reads at once."""
        if not lane.urgent and await self._held_back():
            return 0
        limit = self._in_flight_limit(lane)
        free = limit - len(lane.held)
        if free <= 0 or (lane.held and not lane.urgent and free < limit // READ_WHEN_FREE):
            lane.room.clear()
            await lane.room.wait()
            return 0
        return free

    async def _run(self, name: str, urgent: bool) -> None:
        lane = self._lane(name, urgent)
        own_pending = True  # first, what a previous run under this name left unfinished
        pending_after = "0"
        next_claim = 0.0
        next_prune = time.monotonic() + PRUNE_EVERY_S * random.random()
        backoff_s = 0.1
        while self._current(name):
            free = await self._room(lane)
            if not free:
                continue
            try:
                await self.outbox.ensure_group(name, urgent)
                batch: list[Entry] = []
                if own_pending:
                    batch = await self.outbox.read(
                        name, lane.consumer, free, 0, True, pending_after, urgent
                    )
                    own_pending = bool(batch)
                    pending_after = batch[-1][0] if batch else "0"
                if not batch and time.monotonic() >= next_claim:
                    idle_ms = int(self.claim_idle_s * 1000)
                    batch = await self.outbox.claim(name, lane.consumer, idle_ms, free, urgent)
                    # One claimed suggests more: look again at once, else after a while.
                    pause_s = min(5.0, max(0.1, self.claim_idle_s / 2))
                    next_claim = (
                        0.0 if batch else time.monotonic() + pause_s * (0.5 + random.random())
                    )
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                    await self.outbox.prune_consumers(name, PRUNE_IDLE_MS, urgent)
                if not batch:
                    batch = await self.outbox.read(name, lane.consumer, free, 1000, urgent=urgent)
                backoff_s = 0.1
            except asyncio.CancelledError:
                raise
            except RedisError as exc:
                throttled.warning(
                    f"redis:{name}", "outbox unavailable", channel=name, error=type(exc).__name__
                )
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            except Exception:  # a bug here must not silence the channel for good
                throttled.exception(
                    f"bug:{name}", "delivery worker failed; restarting it", channel=name
                )
                await asyncio.sleep(1.0)
                continue
            if not self._current(name):
                break  # what it just read stays pending: its successor reads it first
            if not await self._replicated(batch):
                break  # stopping unconfirmed: it stays pending, read first next time
            for entry_id, n in batch:
                # Already ours (a claim or a pending read can return one in hand): in hand.
                if entry_id not in lane.held:
                    self._take(lane, entry_id, n)

    async def _replicated(self, batch: list[Entry]) -> bool:
        """redis.wait_replicas: what was read is sent only once replicas hold it."""
        if not batch or self.confirm is None:
            return True
        try:
            await self.confirm()
        except RedisError:
            return False
        return True

    def _take(self, lane: _Lane, entry_id: str, n: Notification | None) -> None:
        held = lane.held[entry_id] = _Held(entry_id, n)
        # Cancelling the reader (stop, reload) leaves the job to finish on its own.
        held.job = self._spawn(self._handle(lane, held))
        if lane.beat is None:
            lane.beat = asyncio.create_task(self._beat(lane), name=f"heartbeat:{lane.name}")

    async def _beat(self, lane: _Lane) -> None:
        """Keep every entry the lane holds ours, in one call; stop what was taken over."""
        try:
            while lane.held:
                await asyncio.sleep(self._heartbeat_s())
                ids = list(lane.held)
                if not ids:
                    break
                try:
                    lost = await self.outbox.touch_many(lane.name, lane.consumer, ids, lane.urgent)
                except RedisError as exc:
                    # Keep delivering: the outcome is written once Redis is back.
                    log.debug(
                        "outbox heartbeat failed", channel=lane.name, error=type(exc).__name__
                    )
                    continue
                for entry_id in lost:
                    held = lane.held.get(entry_id)
                    # Not delivering any more: acknowledged, or its outcome being written.
                    if held is not None and held.delivering and not held.lost:
                        held.lost = True
                        if held.job is not None:
                            held.job.cancel()
        finally:
            if lane.beat is asyncio.current_task():
                lane.beat = None

    # --- one notification --------------------------------------------------------------

    async def _handle(self, lane: _Lane, held: _Held) -> None:
        try:
            await self._handle_held(lane, held)
        finally:
            held.delivering = False
            if lane.held.get(held.entry_id) is held:
                del lane.held[held.entry_id]
            lane.room.set()
            if lane.urgent and not lane.held:
                self._page_delivered()

    async def _handle_held(self, lane: _Lane, held: _Held) -> None:
        name, urgent = lane.name, lane.urgent
        entry_id, n = held.entry_id, held.notification
        channel = self.channels.get(name)
        if n is None or channel is None or not channel.config.enabled:
            held.delivering = False  # nothing to interrupt if it is taken over meanwhile
        if n is None:
            log.error("unreadable outbox entry dropped", channel=name, entry=entry_id)
            await self._outcomes.record(name, entry_id, urgent=urgent)
            return
        if channel is not None and not channel.config.enabled:
            # Stays pending: read first by this channel's next reader when it is enabled again.
            self._bound(name, n).info("channel disabled; notification stays queued")
            return
        if channel is None:
            # Removed while queued: keep it where an operator can replay it.
            error = f"channel '{name}' is no longer configured"
            self._bound(name, n).warning("notification dead-lettered", error=error)
            fields = self.dead.notification_fields(n, name, "channel unavailable", error)
            await self._outcomes.record(name, entry_id, dead=fields, urgent=urgent)
            return
        if self.limiter is not None and not await self.limiter.admit(channel, n):
            # Held in Redis for a digest: it leaves the outbox.
            await self._outcomes.record(name, entry_id, urgent=urgent)
            return
        result = await self._deliver_held(channel, held, n)
        if result is None:
            if self._stopping:
                self._bound(name, n).info("delivery interrupted by shutdown; it stays queued")
            else:
                self._bound(name, n).warning(
                    "another worker took this notification over; leaving it to them"
                )
            return
        n.attempts += result.attempts
        if result.ok:
            await self._delivered(channel, lane, entry_id, n, result)
        else:
            await self._failed(channel, lane, entry_id, n, result)

    @staticmethod
    def _bound(name: str, n: Notification) -> Any:
        return log.bind(channel=name, notification_id=n.id, reason=n.reason.value)

    async def _deliver_held(
        self, channel: Channel[Any], held: _Held, n: Notification
    ) -> DeliveryResult | None:
        """Deliver while the entry is ours; None when another worker took it over (the
        heartbeat then cancels this job) or a shutdown interrupted it."""
        try:
            result = await self._deliver_in_order(channel, n)
        except asyncio.CancelledError:
            if not (held.lost or self._stopping):
                raise
            return None
        finally:
            held.delivering = False
        # A client library may swallow the cancel: the result still is not ours to record.
        return None if held.lost else result

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
                return await deliver(
                    channel, n, rng=self._rng, on_attempt=count, sleep=self._backoff
                )
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
        self,
        channel: Channel[Any],
        lane: _Lane,
        entry_id: str,
        n: Notification,
        result: DeliveryResult,
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
        failing = await self._outcomes.record(name, entry_id, delivered=True, urgent=lane.urgent)
        if self.history is not None:
            await self.history.record(n, "delivered", delivered_at=time.time())
        if failing:
            await self._failing.resolve_failing(name, failing)

    async def _failed(
        self,
        channel: Channel[Any],
        lane: _Lane,
        entry_id: str,
        n: Notification,
        result: DeliveryResult,
    ) -> None:
        name = channel.name
        health = self.health.setdefault(name, ChannelHealth())
        reason = "permanent failure" if result.permanent else "retries exhausted"
        follow = self._fallback_of(channel, n)
        bound = self._bound(name, n).bind(
            reason=reason, attempts=result.attempts, fallback=follow.receiver if follow else None
        )
        if health.last_error != result.error:
            bound.error("delivery failed; notification dead-lettered", error=result.error)
        else:  # the same cause again: its text is in the line before
            bound.warning("delivery failed again; notification dead-lettered")
        health.last_error = result.error
        self.metrics.notifications.labels(name, "failed").inc()
        self.metrics.dead_letters.labels("notification").inc()
        fields = self.dead.notification_fields(n, name, reason, result.error)
        reply = await self._outcomes.record(
            name, entry_id, dead=fields, follow=follow, delivered=False, urgent=lane.urgent
        )
        if self.history is not None:
            await self.history.record(n, "dead-lettered", last_error=result.error)
            await self.history.queued([follow] if follow is not None else [])
        # The count is shared by the replicas; failures finishing together report out of order.
        count = int(reply) if reply is not None else health.consecutive_failures + 1
        health.consecutive_failures = max(health.consecutive_failures, count)
        if health.consecutive_failures >= FAILING_AFTER:
            await self._failing.raise_failing(name, health.consecutive_failures, result.error)

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
