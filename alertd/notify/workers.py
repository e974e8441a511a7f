"""Per-channel delivery workers: the readers of each channel's outboxes, and their jobs.

Each channel has its own outbox stream and its own reader, so a slow or dead
channel never delays another; and an urgent lane (a stream and a reader of its
own, and a sure share of the channel's slots: outbox.py) so a new page never
waits behind a storm queued before it. Each partition has its own pair of
streams (outbox.py): a daemon reads those of the partitions it owns
(`set_partitions`; the home partition until it is first called), and the
channel's slots are shared by all its readers, in every partition. A reader takes
as many entries per XREADGROUP as it has free delivery slots and delivers them side
by side (a group's notifications one after the other). One heartbeat per stream
read keeps every entry it holds fresh (`Outbox.touch_many`) so no other replica
claims them while they retry; an entry another worker took over is left to it, and
one whose worker died is claimed after `claim_idle`. Outcomes are written by
`outcomes.OutcomeWriter`; a channel's health and its AlertdChannelFailing are
`channel_health`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
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
from alertd.notify.pagehold import PageHold
from alertd.notify.ratelimit import RateLimiter
from alertd.notify.retry import Outcome
from alertd.storage import keys

log = structlog.get_logger("alertd.workers")
throttled = ThrottledLog(log)  # loops that fail alike each retry log once a minute

IN_FLIGHT_PER_CHANNEL = 64  # the most notifications of one channel in hand at once
# Email opens an SMTP connection per message and Slack waits for its rate-limit slot
# inside the attempt's timeout: more at once would only hit connection limits and time out.
IN_FLIGHT_BY_TYPE = {"email": 16, "slack": 16}
URGENT_SHARE = 4  # each kind of lane is sure of a quarter of its channel's slots (_room)
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


def _before(entry_id: str) -> str:
    """The stream id just before `entry_id` (a read after it returns `entry_id` first)."""
    ms, _, seq = entry_id.partition("-")
    if int(seq or 0) > 0:
        return f"{ms}-{int(seq) - 1}"
    return f"{int(ms) - 1}-{2**64 - 1}" if int(ms) > 0 else "0"


@dataclass(eq=False, slots=True)
class _Held:
    """An outbox entry a channel's reader holds, and the job delivering it."""

    entry_id: str
    notification: Notification | None
    job: asyncio.Task[None] | None = None
    delivering: bool = True  # until the delivery has a result: a takeover cancels it
    lost: bool = False  # another consumer took the entry over


_LaneKey = tuple[str, bool, int]  # channel, urgent, partition


@dataclass(eq=False)
class _Lane:
    """What the reader of one of a channel's streams holds (its outbox or urgent lane, in
    one partition), under one consumer name, and its heartbeat.

    Outlives a reader retired by a reload or a partition lost, so a successor never
    takes an entry a job of its predecessor still delivers.
    """

    name: str
    consumer: str
    urgent: bool
    partition: int = keys.HOME
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
    _tasks: dict[_LaneKey, asyncio.Task[None]] = field(default_factory=dict)  # the readers
    _busy: set[asyncio.Task[Any]] = field(default_factory=set)
    _retired: set[asyncio.Task[None]] = field(default_factory=set)
    _lanes: dict[_LaneKey, _Lane] = field(default_factory=dict)
    # Entries in hand per channel and kind (urgent or not), in every partition's lanes.
    _in_hand: dict[tuple[str, bool], int] = field(default_factory=dict)
    # Lanes waiting for a slot while holding nothing: no job of their own will wake them.
    _starved: dict[str, set[_Lane]] = field(default_factory=dict)
    _served: frozenset[int] = frozenset({keys.HOME})  # the partitions whose streams it reads
    _groups: dict[tuple[str, str], _GroupLock] = field(default_factory=dict)
    _outcomes: OutcomeWriter = field(init=False)
    _failing: ChannelFailing = field(init=False)
    _rng: random.Random = field(default_factory=random.Random)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    page_hold: PageHold = field(default_factory=PageHold)  # shared with the dispatcher

    def __post_init__(self) -> None:
        self._outcomes = OutcomeWriter(self.outbox, self.dead, self._spawn)
        self._failing = ChannelFailing(self.outbox, lambda: self.channels, self.clock)

    @property
    def _stopping(self) -> bool:
        return self._stop.is_set()

    failing_alert = staticmethod(ChannelFailing.failing_alert)

    # --- lifecycle ---------------------------------------------------------------------

    def set_channels(self, channels: dict[str, Channel[Any]]) -> None:
        """Start readers for new (or re-enabled) channels in every partition served, stop
        those of removed or disabled ones."""
        old = self.channels
        self.channels = channels
        self._retire(lambda key: key[0] not in channels or not channels[key[0]].config.enabled)
        for name in channels:
            self.health.setdefault(name, ChannelHealth())
        self._start_readers()
        for name, ch in old.items():
            if channels.get(name) is not ch:
                self._spawn(ch.close())

    def set_partitions(self, owned: Iterable[int]) -> None:
        """Read the streams of the partitions in `owned` (those this daemon owns now):
        start readers for the new ones, retire those of partitions no longer owned.

        A retired reader reads nothing more; what its jobs hold is delivered and its
        outcome recorded (as after a reload), while the heartbeat keeps it this
        daemon's. What it had not read is the new owner's."""
        served = frozenset(owned)
        if served == self._served:
            return
        self._served = served
        if self._stopping:
            return
        self._retire(lambda key: key[2] not in served)
        self._start_readers()

    def _retire(self, which: Callable[[_LaneKey], bool]) -> None:
        for key in [k for k in self._tasks if which(k)]:
            t = self._tasks.pop(key)
            t.cancel()
            self._retired.add(t)
            t.add_done_callback(self._retired.discard)

    def _start_readers(self) -> None:
        """A reader for each lane of every enabled channel in every partition served."""
        if self._stopping:
            return
        for name, ch in self.channels.items():
            if not ch.config.enabled:
                continue
            for partition in sorted(self._served):
                for urgent in (False, True):
                    key = (name, urgent, partition)
                    if key not in self._tasks:
                        kind = "deliver-urgent" if urgent else "deliver"
                        self._tasks[key] = asyncio.create_task(
                            self._run(name, urgent, partition), name=f"{kind}:{name}:{partition}"
                        )

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

    # --- the reader --------------------------------------------------------------------

    def _workers(self) -> list[asyncio.Task[None]]:
        return [*self._tasks.values(), *self._retired]

    def _current(self, lane: _Lane) -> bool:
        """Whether the calling reader still serves `lane` (a client library may swallow
        the cancel that retired it)."""
        key = (lane.name, lane.urgent, lane.partition)
        return not self._stopping and asyncio.current_task() is self._tasks.get(key)

    def _heartbeat_s(self) -> float:
        # Several beats per claim_idle, so a busy event loop does not lose an entry.
        return min(5.0, max(0.05, self.claim_idle_s / 5))

    def _in_flight(self, lane: _Lane) -> tuple[int, int]:
        """The slots of the lane's kind (urgent or not) and what its lanes hold, in every
        partition: the channel's slots, less what the other kind holds, and never less
        than a quarter of them (so neither kind can starve the other)."""
        channel = self.channels.get(lane.name)
        kind = channel.config.type if channel is not None else ""
        limit = IN_FLIGHT_BY_TYPE.get(kind, IN_FLIGHT_PER_CHANNEL)
        mine = self._in_hand.get((lane.name, lane.urgent), 0)
        other = self._in_hand.get((lane.name, not lane.urgent), 0)
        return max(limit // URGENT_SHARE, limit - other, 1), mine

    def _lane(self, name: str, urgent: bool, partition: int) -> _Lane:
        lane = self._lanes.get((name, urgent, partition))
        if lane is None:
            # One consumer name per stream and process: a restart reads back its own first.
            lane = _Lane(name, f"{self.consumer}:0", urgent, partition)
            self._lanes[name, urgent, partition] = lane
        return lane

    async def _room(self, lane: _Lane) -> int:
        """How many entries the lane may read now; 0 after waiting for a slot, or for a
        page to go first. While its kind delivers, a lane reads again only once a quarter
        of the kind's slots are free: fewer, fuller reads in a storm. The urgent lanes
        read at once."""
        if not lane.urgent and await self.page_hold.wait():
            return 0
        limit, held = self._in_flight(lane)
        free = limit - held
        if free <= 0 or (held and not lane.urgent and free < limit // READ_WHEN_FREE):
            lane.room.clear()
            if not lane.held:
                self._starved.setdefault(lane.name, set()).add(lane)
            await lane.room.wait()
            return 0
        return free

    def _freed(self, lane: _Lane) -> None:
        """A job of the lane ended: its reader may read again, and so may the channel's
        readers that wait holding nothing (woken by no job of their own)."""
        lane.room.set()
        for each in self._starved.pop(lane.name, ()):
            each.room.set()

    async def _run(self, name: str, urgent: bool, partition: int = keys.HOME) -> None:
        lane = self._lane(name, urgent, partition)
        own_pending = True  # first, what a previous run under this name left unfinished
        pending_after = "0"
        next_claim = 0.0
        next_prune = time.monotonic() + PRUNE_EVERY_S * random.random()
        backoff_s = 0.1
        while self._current(lane):
            free = await self._room(lane)
            if not free:
                continue
            try:
                await self.outbox.ensure_group(name, urgent, partition)
                batch: list[Entry] = []
                if own_pending:
                    batch = await self.outbox.read(
                        name, lane.consumer, free, 0, True, pending_after, urgent, partition
                    )
                    own_pending = bool(batch)
                    pending_after = batch[-1][0] if batch else "0"
                if not batch and time.monotonic() >= next_claim:
                    idle_ms = int(self.claim_idle_s * 1000)
                    batch = await self.outbox.claim(
                        name, lane.consumer, idle_ms, free, urgent, partition
                    )
                    # One claimed suggests more: look again at once, else after a while.
                    pause_s = min(5.0, max(0.1, self.claim_idle_s / 2))
                    next_claim = (
                        0.0 if batch else time.monotonic() + pause_s * (0.5 + random.random())
                    )
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                    await self.outbox.prune_consumers(name, PRUNE_IDLE_MS, urgent, partition)
                if not batch:
                    batch = await self.outbox.read(
                        name, lane.consumer, free, 1000, urgent=urgent, partition=partition
                    )
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
            if not self._current(lane):
                break  # what it just read stays pending: its successor reads it first
            if not await self._replicated(batch):
                if self._stopping:
                    break  # stopping unconfirmed: it stays pending, read first next time
                # Replicas could not be asked (a failover): it stays pending, ours, and
                # is read back first once they confirm. The reader carries on.
                own_pending, pending_after = True, "0"
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            left = self._take_batch(lane, batch)
            if left is not None:  # it stays pending (ours): read back first once there is room
                own_pending = True
                pending_after = _before(left)

    async def _replicated(self, batch: list[Entry]) -> bool:
        """redis.wait_replicas: what was read is sent only once replicas hold it."""
        if not batch or self.confirm is None:
            return True
        try:
            await self.confirm()
        except RedisError:
            return False
        return True

    def _take_batch(self, lane: _Lane, batch: list[Entry]) -> str | None:
        """Take what was read, as far as the channel has slots (its other lanes may have
        taken some while this one read); the first entry left for want of one."""
        limit, held = self._in_flight(lane)
        free = limit - held
        for entry_id, n in batch:
            # Already ours (a claim or a pending read can return one in hand): in hand.
            if entry_id in lane.held:
                continue
            if free <= 0:
                return entry_id
            self._take(lane, entry_id, n)
            free -= 1
        return None

    def _take(self, lane: _Lane, entry_id: str, n: Notification | None) -> None:
        held = lane.held[entry_id] = _Held(entry_id, n)
        kind = (lane.name, lane.urgent)
        self._in_hand[kind] = self._in_hand.get(kind, 0) + 1
        # Cancelling the reader (stop, reload) leaves the job to finish on its own.
        held.job = self._spawn(self._handle(lane, held))
        if lane.beat is None:
            lane.beat = asyncio.create_task(
                self._beat(lane), name=f"heartbeat:{lane.name}:{lane.partition}"
            )

    async def _beat(self, lane: _Lane) -> None:
        """Keep every entry the lane holds ours, in one call; stop what was taken over."""
        try:
            while lane.held:
                await asyncio.sleep(self._heartbeat_s())
                ids = list(lane.held)
                if not ids:
                    break
                try:
                    lost = await self.outbox.touch_many(
                        lane.name, lane.consumer, ids, lane.urgent, lane.partition
                    )
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
            kind = (lane.name, lane.urgent)
            if lane.held.get(held.entry_id) is held:
                del lane.held[held.entry_id]
                self._in_hand[kind] -= 1
            self._freed(lane)
            # The hold ends once no urgent lane of the channel, in any partition, holds one.
            if lane.urgent and not self._in_hand[kind]:
                self.page_hold.delivered()

    async def _handle_held(self, lane: _Lane, held: _Held) -> None:
        name, urgent = lane.name, lane.urgent
        entry_id, n = held.entry_id, held.notification
        channel = self.channels.get(name)
        if n is None or channel is None or not channel.config.enabled:
            held.delivering = False  # nothing to interrupt if it is taken over meanwhile
        if n is None:
            log.error("unreadable outbox entry dropped", channel=name, entry=entry_id)
            await self._outcomes.record(name, entry_id, urgent=urgent, partition=lane.partition)
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
            await self._outcomes.record(
                name, entry_id, dead=fields, urgent=urgent, partition=lane.partition
            )
            return
        if self.limiter is not None and not await self.limiter.admit(channel, n):
            # Held in Redis for a digest: it leaves the outbox.
            await self._outcomes.record(name, entry_id, urgent=urgent, partition=lane.partition)
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
        failing = await self._outcomes.record(
            name, entry_id, delivered=True, urgent=lane.urgent, partition=lane.partition
        )
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
            name,
            entry_id,
            dead=fields,
            follow=follow,
            delivered=False,
            urgent=lane.urgent,
            partition=lane.partition,
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
