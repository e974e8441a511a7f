"""The stream consumer: events in, effects stored, then acknowledged.

Reads batches with XREADGROUP (first this consumer's own pending entries,
then new ones), claims entries idle in dead consumers with XAUTOCLAIM,
dead-letters what is invalid, and acknowledges a batch only after the rule
engine stored its effects. A Redis outage is waited out with backoff; the
daemon never exits because Redis blinked.

While behind, the next batch is read (and parsed) while the current one is
processed, and a processed batch's acknowledgement travels while the next one
is: alertd and Redis work at the same time. A batch read ahead is only
delivered, not acknowledged: it stays pending in the group until its own turn,
and a crash leaves it to be re-read or claimed like any other. A stop finishes
every batch delivered, acknowledgement included.

Pages first (`first`): while a batch is processed, the consumer reads on, up to
QUEUED_READS catch-up reads past it. The entries read whose events all feed rules
that page are processed at once, beside the batch, unless one of their series is
in it (App.process_first), and acknowledged; the rest waits its turn, in stream
order. A page is not queued behind a storm that arrived before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Container, Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Protocol

import structlog
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError, ResponseError

from alertd.deadletters import DeadLetters
from alertd.errors import EventError
from alertd.events import (
    RawEntry,
    Rejected,
    dead_letter_payload,
    fields_of,
    parse_entries,
    parse_entry,
)
from alertd.logthrottle import ThrottledLog
from alertd.metrics import Metrics
from alertd.model import Event
from alertd.ownership import Ownership
from alertd.redisconn import is_cluster, pack_command, pinned
from alertd.settings import RedisSettings

log = structlog.get_logger("alertd.consumer")
throttled = ThrottledLog(log)  # loops that fail alike each retry log once a minute

# Batches read and handled together while the consumer is behind (see _new).
CATCH_UP_BATCHES = 10
# A batch prepared ahead is processed at the time it was prepared at, unless it waited
# longer than this for its turn (then it is processed now, and prepared again).
PREPARED_FOR_S = 1.0
# How long a read past the batch in hand waits for entries; how far (in catch-up reads)
# the consumer reads past it to find pages, and after how long in hand (before, as far
# as the read-ahead only: most batches are done by then). See _pages_first.
PEEK_BLOCK_MS = 100
QUEUED_READS = 2
DEEP_AFTER_S = 0.1
# A read with more pages than this is a storm of pages: it goes in order, as a whole.
PAGES_PER_READ = 100


class FirstLane(Protocol):
    """Where pages go before their turn (App)."""

    @property
    def paging_metrics(self) -> Container[str]:
        """Events of these, and only these, may go before their turn."""
        ...

    async def process_first(self, events: list[Event], now: float) -> bool:
        """Store them beside the batch in progress; False if they must wait for it."""
        ...


@dataclass
class Batch:
    """Entries delivered to this consumer, parsed; acknowledged only once handled."""

    entries: list[RawEntry]
    events: list[Event]
    rejected: list[Rejected]
    parse_s: float = 0.0
    now: float | None = None  # the time it was prepared at (see Consumer.prepare)
    irregular: dict[int, int] = field(default_factory=dict)  # events per entry, if not 1
    looked: bool = False  # looked through for pages (see take_pages)

    @classmethod
    def parse(cls, entries: list[RawEntry]) -> Batch:
        started = time.perf_counter()
        events, rejected, irregular = parse_entries(entries)
        return cls(entries, events, rejected, time.perf_counter() - started, irregular=irregular)

    @classmethod
    def join(cls, batches: list[Batch]) -> Batch:
        """Batches read one after the other, as one."""
        joined = cls([], [], [])
        for b in batches:
            joined._extend(b.entries, b.events, b.rejected, b.irregular)
            joined.parse_s += b.parse_s
        return joined

    def _extend(
        self,
        entries: list[RawEntry],
        events: list[Event],
        rejected: list[Rejected],
        irregular: dict[int, int],
    ) -> None:
        at = len(self.entries)
        self.entries += entries
        self.events += events
        self.rejected += [(at + i, errors) for i, errors in rejected]
        self.irregular.update((at + i, n) for i, n in irregular.items())

    def take_pages(self, metrics: Container[str], into: Batch) -> None:
        """Move the entries whose every event is valid and of one of `metrics` (those
        that feed rules that page) to the end of `into`, in order; unless there are
        none, or more than PAGES_PER_READ events of `metrics`."""
        if self.looked:
            return
        self.looked = True
        if not 0 < sum(e.name in metrics for e in self.events) <= PAGES_PER_READ:
            return
        kept = Batch([], [], [])
        errors = dict(self.rejected)
        at = 0
        for i, entry in enumerate(self.entries):
            n = self.irregular.get(i, 1)
            events = self.events[at : at + n]
            at += n
            extra = {0: n} if n != 1 else {}
            if n > 0 and i not in errors and all(e.name in metrics for e in events):
                into._extend([entry], events, [], extra)
            else:
                kept._extend([entry], events, [(0, errors[i])] if i in errors else [], extra)
        if len(kept.entries) < len(self.entries):
            self.entries, self.events = kept.entries, kept.events
            self.rejected, self.irregular = kept.rejected, kept.irregular
            self.now = None  # what was prepared for it (Evaluator.prepare) no longer holds


@dataclass
class Consumer:
    redis: Redis
    settings: RedisSettings
    consumer: str
    batch_size: int
    block_ms: int
    claim_idle_ms: int
    dead: DeadLetters
    metrics: Metrics
    process: Callable[[list[Event], float], Awaitable[None]]
    clock: Callable[[], float] = time.time
    # Work on a batch read ahead that stores nothing (pre-aggregation), done while the
    # batch before is processed; the batch is then processed at the time it was prepared.
    prepare: Callable[[list[Event], float], Awaitable[None]] | None = None
    first: FirstLane | None = None  # pages first (see the module's doc)
    joined: bool = False
    batches: int = 0
    _read_own_pending: bool = True
    _last_claim: float = field(default=0.0)
    _joined_before: bool = False
    stream: str = ""  # the stream (or stream shard) read; default settings.stream
    ownership: Ownership | None = None  # who is alive: for takeover
    _dead: set[str] = field(default_factory=set, init=False, repr=False)
    _node: Redis | None = field(default=None, init=False, repr=False)
    _reads: StreamReads | None = field(default=None, init=False, repr=False)
    _ahead: asyncio.Task[Batch] | None = field(default=None, init=False, repr=False)
    _spent: Batch | None = field(default=None, init=False, repr=False)
    _committing: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _stopping: asyncio.Event | None = field(default=None, init=False, repr=False)
    _queued: list[Batch] = field(default_factory=list, init=False, repr=False)
    _went_first: list[Batch] = field(default_factory=list, init=False, repr=False)
    _drained: bool = field(default=False, init=False, repr=False)  # by the last read

    def __post_init__(self) -> None:
        self.stream = self.stream or self.settings.stream
        self._catch_up = self.batch_size * CATCH_UP_BATCHES  # entries of a catch-up read

    def node(self) -> Redis:
        """The client of the Redis that serves the stream (on a Cluster, pinned to its
        slot's master, which follows failovers by itself)."""
        if self._node is None:
            self._node = pinned(self.redis, self.stream)
            self._reads = StreamReads(self._node)  # connects on first use
        return self._node

    @property
    def reads(self) -> StreamReads:
        if self._reads is None:
            raise RuntimeError("stream reads before node()")
        return self._reads

    async def _disconnect(self) -> None:
        node, reads = self._node, self._reads
        self._node = self._reads = None
        if reads is not None:
            await reads.close()
        if node is not None and node is not self.redis:
            await node.aclose()

    async def join(self) -> None:
        """Create the consumer group if it is missing (MKSTREAM); an existing one is used as is."""
        # After Redis lost the group (a restart without persistence) everything in the
        # stream arrived since: take it all rather than skip it.
        start = "0" if self._joined_before else self.settings.group_start
        try:
            await self.redis.xgroup_create(
                self.stream, self.settings.group, id=start, mkstream=True
            )
            log.info("consumer group created", stream=self.stream, group=self.settings.group)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.joined = True
        self._joined_before = True

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until `stopping` is set; what was delivered to it is always finished."""
        backoff_s = 0.1
        try:
            while self._ahead is not None or self._queued or not stopping.is_set():
                try:
                    await self._step(stopping)
                    backoff_s = 0.1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # What was read ahead stays pending: start again from what this
                    # consumer holds, in order, once Redis (or the bug) lets it.
                    await self._drop_ahead()
                    with contextlib.suppress(Exception):  # its entries stay pending too
                        await self.settle()
                    self._read_own_pending = True
                    if isinstance(exc, RedisError | OSError):
                        lost_group = isinstance(exc, ResponseError) and "NOGROUP" in str(exc)
                        self.joined = not lost_group
                        throttled.warning(
                            "redis",
                            "redis unavailable; retrying",
                            error=type(exc).__name__,
                            detail=str(exc)[:200],
                            retry_in_s=backoff_s,
                        )
                    else:  # a bug must not stop consumption for good
                        throttled.exception(
                            "bug", "consumer loop failed; retrying", retry_in_s=backoff_s
                        )
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(backoff_s):
                            await stopping.wait()
                    backoff_s = min(backoff_s * 2, 5.0)
        finally:
            await self._drop_ahead()
            await self._disconnect()
            try:
                await self.settle()
            except Exception as exc:  # its entries stay pending, for a consumer to re-read
                log.warning("last batch not acknowledged", error=type(exc).__name__)

    async def _step(self, stopping: asyncio.Event) -> None:
        """Handle one batch (the one read ahead, else one read now); while behind, read
        the next one meanwhile."""
        self._stopping = stopping
        self.node()
        if not self.joined:
            await self.join()
        batch = await self._turn()
        if not batch.entries:
            return
        # A full read means more is waiting. Not while re-reading this consumer's own
        # pending entries (that read would deliver the batch in hand a second time), nor
        # when idle entries are due to be claimed (next_batch does that).
        behind = len(batch.entries) >= self.batch_size and not self._read_own_pending
        read_since = self._ahead is not None or self._queued
        if behind and not read_since and not self._claim_due() and not stopping.is_set():
            # On the wire before the batch in hand takes the CPU: Redis reads while
            # alertd works, and the reply waits in the socket.
            reply = await self.reads.send(self._read_new(), CATCH_UP_BATCHES)
            read_ahead = self._read_ahead(reply, self._spent, self.prepare)
            self._ahead = asyncio.create_task(read_ahead, name="consumer-read-ahead")
        self._spent = None
        await asyncio.shield(self.handle(batch))
        self._spent = batch

    async def _turn(self) -> Batch:
        """The next batch in stream order: what was read already, else the read under
        way, else a read now."""
        if self._queued:
            # up to a catch-up read's worth: a batch read (and prepared) as one stays one
            turn = [self._queued.pop(0)]
            size = len(turn[0].entries)
            while self._queued and size + len(self._queued[0].entries) <= self._catch_up:
                size += len(self._queued[0].entries)
                turn.append(self._queued.pop(0))
            return turn[0] if len(turn) == 1 else Batch.join(turn)
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            return await ahead
        await self.settle()  # before waiting on a read: a failure shows now, not later
        return Batch.parse(await self.next_batch())

    def _lane(self, batch: Batch, done: asyncio.Event) -> asyncio.Task[None] | None:
        """The pages-first lane beside a full batch, until `done` (if pages can go first:
        a `first` lane, and rules that page)."""
        if self.first is None or not self.first.paging_metrics or self._read_own_pending:
            return None
        if len(batch.entries) < self.batch_size:  # a short batch: a page waits little
            return None
        return asyncio.create_task(self._pages_first(self.first, done), name="consumer-pages")

    async def _pages_first(self, first: FirstLane, done: asyncio.Event) -> None:
        """Read on past the batch in hand, and store the pages read at once. Once pages
        must wait (a series of theirs is in the batch), later ones wait too: each
        series' samples stay in order."""
        ending = asyncio.ensure_future(done.wait())
        deep = asyncio.ensure_future(asyncio.sleep(DEEP_AFTER_S))
        try:
            while not done.is_set():
                reading = self._collect(QUEUED_READS if deep.done() else 1)
                pages = Batch([], [], [])
                for batch in self._queued:
                    batch.take_pages(first.paging_metrics, pages)
                self._queued = [b for b in self._queued if b.entries]
                if pages.entries:
                    if not await self._page_first(first, pages):
                        pages.looked = True  # right after the batch in hand, then
                        self._queued.insert(0, pages)
                        return
                    self._went_first.append(pages)  # acknowledged with the batch in hand
                    continue
                waits = [ending, *(t for t in (reading, deep) if t is not None and not t.done())]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ending.cancel()
            deep.cancel()

    async def _page_first(self, first: FirstLane, pages: Batch) -> bool:
        try:
            return await first.process_first(pages.events, self.clock())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # they go in their turn, the batch in hand unharmed
            throttled.warning("pages", "pages not stored first", error=type(exc).__name__)
            return False

    def _collect(self, reads: int) -> asyncio.Task[Batch] | None:
        """Queue a read that is done; start the next while less than `reads` catch-up
        reads' worth is queued. The read under way, if any."""
        ahead = self._ahead
        if ahead is not None:
            if not ahead.done():
                return ahead
            if ahead.cancelled() or ahead.exception() is not None:
                return None  # a failed read raises at its turn, as always
            self._ahead = None
            batch = ahead.result()
            self._drained = len(batch.entries) < self.batch_size  # read all there was
            if batch.entries:
                self._queued.append(batch)
        if self._read_own_pending or self._claim_due():  # as for a read-ahead (see _step)
            return None
        if self._stopping is None or self._stopping.is_set():
            return None
        queued = sum(len(b.entries) for b in self._queued)
        room = (reads * self._catch_up - queued) // self.batch_size
        if room <= 0:
            return None
        self._ahead = asyncio.create_task(self._peek(room), name="consumer-peek")
        return self._ahead

    async def _peek(self, reads: int) -> Batch:
        """What comes after the batch in hand: behind a backlog, up to `reads` batches
        at once; else what arrives within PEEK_BLOCK_MS."""
        if self._queued and not self._drained:
            reply = await self.reads.send(self._read_new(), reads)
            return await self._read_ahead(reply, None, self.prepare)
        reply = await self.reads.send(self._read_new(PEEK_BLOCK_MS))
        return await self._read_ahead(reply, None, None)

    async def _drop_ahead(self) -> None:
        """Drop what was read ahead: its entries stay pending in the group, to be read
        again."""
        self._queued = []
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.cancel()
            await asyncio.wait([ahead])  # unlike `await ahead`, lets our own cancellation through
            if not ahead.cancelled():
                ahead.exception()  # retrieved: it is logged by the caller's failure, if any
            if self._reads is not None:
                await self._reads.reset()  # its reply may be half read, or not at all

    async def _read_ahead(
        self,
        reply: Reply,
        spent: Batch | None,
        prepare: Callable[[list[Event], float], Awaitable[None]] | None,
    ) -> Batch:
        # One read's entries at a time, the event loop turning in between: the batch
        # in hand, and pages, go on meanwhile.
        parts: list[Batch] = []
        for one in await reply.get():
            if parts:
                await asyncio.sleep(0)
            parts.append(Batch.parse(_entries(one)))
        batch = parts[0] if len(parts) == 1 else Batch.join(parts)
        if prepare is not None and batch.events:
            started = time.perf_counter()
            now = self.clock()
            try:
                await prepare(batch.events, now)
                batch.now = now
            except Exception:  # processing does it again, and isolates what breaks it
                log.exception("preparing a batch failed")
            batch.parse_s += time.perf_counter() - started
        # Freeing a batch's hundred thousand objects takes a few milliseconds: here
        # they overlap the merge of the batch in hand instead of delaying the next.
        del spent
        return batch

    def _claim_due(self) -> bool:
        return time.monotonic() - self._last_claim > self.claim_idle_ms / 2000

    async def next_batch(self) -> list[RawEntry]:
        """This consumer's own pending entries first (after a start or a failure), then
        entries idle in other consumers (now and then), then new ones."""
        if self._read_own_pending:
            entries = await self._own_pending()
            if entries:
                return entries
            self._read_own_pending = False
        while self._dead:
            entries = await self._claim_dead()
            if entries:
                log.info("took over a dead daemon's entries", count=len(entries))
                return entries
        if self._claim_due():
            self._last_claim = time.monotonic()
            entries = await self._claim_idle()
            if entries:
                log.info("claimed idle entries", count=len(entries))
                return entries
        return await self._new()

    async def _own_pending(self) -> list[RawEntry]:
        s = self.settings
        args = ("XREADGROUP", "GROUP", s.group, self.consumer, "COUNT", self.batch_size)
        reply = await self.reads.send((*args, "STREAMS", self.stream, "0"))
        (pending,) = await reply.get()
        # An entry deleted since its delivery comes back without fields: left out.
        return [e for e in _entries(pending) if e[1] is not None]

    async def _claim_idle(self) -> list[RawEntry]:
        s = self.settings
        args = (self.stream, s.group, self.consumer, self.claim_idle_ms, "0-0")
        reply = await self.reads.send(("XAUTOCLAIM", *args, "COUNT", self.batch_size))
        ((_, claimed, *_),) = await reply.get()
        return [e for e in claimed if e[1] is not None]

    async def take_over(self) -> None:
        """Claim, at the next batch, what daemons with no heartbeat left pending here."""
        if self.ownership is None:
            return
        s = self.settings
        try:
            consumers = await self.redis.xinfo_consumers(self.stream, s.group)
        except ResponseError:  # no stream or group yet: nothing pending anywhere
            return
        holders = [
            name
            for c in consumers
            if int(c.get("pending", 0)) > 0 and (name := _text(c.get("name"))) != self.consumer
        ]
        self._dead |= set(holders) - await self.ownership.alive(holders)

    async def _claim_dead(self) -> list[RawEntry]:
        s = self.settings
        dead = next(iter(self._dead))
        # The verdict is as old as the last heartbeat round, and a busy batch can make it
        # seconds old: a daemon restarted since under the same name reads these entries
        # itself, and claiming them from it would process them twice.
        if self.ownership is not None and await self.ownership.alive([dead]):
            self._dead.discard(dead)
            return []
        rows = await self.redis.xpending_range(
            self.stream, s.group, "-", "+", self.batch_size, consumername=dead
        )
        if len(rows) < self.batch_size:
            self._dead.discard(dead)
        if not rows:
            return []
        ids = [r["message_id"] for r in rows]
        reply = await self.reads.send(("XCLAIM", self.stream, s.group, self.consumer, 0, *ids))
        (claimed,) = await reply.get()
        return [e for e in claimed if e[1] is not None]

    def _read_new(self, block_ms: int | None = None) -> tuple[Any, ...]:
        s = self.settings
        args: tuple[Any, ...] = ("XREADGROUP", "GROUP", s.group, self.consumer)
        args += ("COUNT", self.batch_size)
        if block_ms is not None:
            args += ("BLOCK", block_ms)
        return (*args, "STREAMS", self.stream, ">")

    async def _new(self) -> list[RawEntry]:
        reads = self.reads
        (first,) = await (await reads.send(self._read_new(self.block_ms))).get()
        entries = _entries(first)
        if len(entries) == self.batch_size and CATCH_UP_BATCHES > 1:
            # A full batch means a backlog: take a few more in one round trip and handle
            # them as one, so each series touched costs one merge, not one per batch.
            reply = await reads.send(self._read_new(), CATCH_UP_BATCHES - 1)
            for more in await reply.get():
                entries.extend(_entries(more))
        return entries

    async def handle(self, batch: Batch) -> None:
        """Process, dead-letter the invalid, then acknowledge: in that order.

        The acknowledgement is left in flight: the next batch's work overlaps it, and
        waits for it (`settle`) before acknowledging in turn.
        """
        started = time.perf_counter() - batch.parse_s
        entries, events = batch.entries, batch.events
        dead = [self._dead_letter(entries[i], errors) for i, errors in batch.rejected]
        now = self.clock()
        if batch.now is not None and now - batch.now <= PREPARED_FOR_S:
            now = batch.now  # what was prepared holds (Evaluator.prepare)
        in_hand = asyncio.Event()
        lane = self._lane(batch, in_hand)
        try:
            try:
                await self.process(events, now)
            finally:  # before any entry is processed again one by one
                in_hand.set()
                if lane is not None:
                    await lane  # it ends with the pages it is storing, if any
        except (RedisError, OSError):
            raise
        except Exception:
            log.exception("batch failed; processing its entries one by one")
            events, dead = await self._one_by_one(entries, dead)
        finally:  # pages not acknowledged on a failure stay pending, to be read again
            went, self._went_first = self._went_first, []
        consumed = len(events)
        for pages in went:
            entries = [*entries, *pages.entries]  # valid, all of them (Batch.take_pages)
            consumed += len(pages.events)
        await self.settle()
        commit = self._commit(entries, consumed, dead, started)
        self._committing = asyncio.create_task(commit, name="consumer-ack")

    async def settle(self) -> None:
        """Wait for the acknowledgement in flight, if any; raise what it raised."""
        committing, self._committing = self._committing, None
        if committing is not None:
            await asyncio.shield(committing)  # a durable write: never cut short

    async def _commit(
        self, entries: list[RawEntry], consumed: int, dead: list[dict[str, str]], started: float
    ) -> None:
        """A processed batch's dead letters and XACK, then its metrics."""
        ids = map(itemgetter(0), entries)
        if dead and is_cluster(self.redis):
            # The dead-letter stream is in another slot: written first, so a crash
            # before the XACK repeats a dead letter rather than loses one.
            async with self.redis.pipeline(transaction=False) as pipe:
                for letter in dead:
                    self.dead.add_to(pipe, letter)
                await pipe.execute()
            await self._ack(ids)
        elif dead:  # each dead letter is written if and only if its entry is acknowledged
            async with self.redis.pipeline(transaction=True) as pipe:
                for letter in dead:
                    self.dead.add_to(pipe, letter)
                pipe.xack(self.stream, self.settings.group, *ids)
                await pipe.execute()
        else:
            await self._ack(ids)
        self.batches += 1
        self.metrics.events_consumed.inc(consumed)
        if dead:
            self.metrics.dead_letters.labels("event").inc(len(dead))
            log.warning(
                "invalid entries dead-lettered",
                count=len(dead),
                stream_id=dead[0]["stream_id"],
                reason=dead[0]["reason"][:200],
            )
        self.metrics.batch_duration.observe(time.perf_counter() - started)

    async def _ack(self, ids: Iterable[bytes]) -> None:
        # redis-py packs a command's arguments one by one: for the ten thousand IDs of a
        # catch-up batch that took longer than Redis takes to acknowledge them.
        s = self.settings
        command = pack_command([b"XACK", self.stream.encode(), s.group.encode(), *ids])
        pool = self.node().connection_pool
        conn = await pool.get_connection()

        async def send() -> None:
            await conn.send_packed_command(command)
            await conn.read_response()

        try:  # retried as redis-py retries its own commands: XACK is idempotent
            await conn.retry.call_with_retry(send, lambda _: conn.disconnect())
        finally:
            await pool.release(conn)

    def _dead_letter(self, entry: RawEntry, errors: list[EventError]) -> dict[str, str]:
        stream_id = entry[0].decode()
        if errors[0].__cause__ is not None:  # a parser bug must cost one entry, not the stream
            log.error(
                "entry could not be parsed", stream_id=stream_id, exc_info=errors[0].__cause__
            )
        reason = "; ".join(str(e) for e in errors[:20])
        if len(errors) > 20:
            reason += f"; and {len(errors) - 20} more"
        for e in errors:
            self.metrics.events_invalid.labels(e.code).inc()  # codes: errors.EVENT_ERROR_CODES
        payload = dead_letter_payload(fields_of(entry[1]))
        return self.dead.event_fields(stream_id, payload, reason, self.stream)

    async def _one_by_one(
        self, entries: list[RawEntry], dead: list[dict[str, str]]
    ) -> tuple[list[Event], list[dict[str, str]]]:
        """Isolate the entry that breaks processing: dead-letter it, keep the rest."""
        done: list[Event] = []
        already = {d["stream_id"] for d in dead}
        for entry_id, pairs in entries:
            stream_id = entry_id.decode()
            if stream_id in already:
                continue
            fields = fields_of(pairs)
            good, _ = parse_entry(stream_id, fields)
            try:
                await self.process(good, self.clock())
                done.extend(good)
            except (RedisError, OSError):
                raise
            except Exception as exc:
                log.exception("entry breaks processing; dead-lettered", stream_id=stream_id)
                reason = f"internal error while processing: {type(exc).__name__}"
                payload = dead_letter_payload(fields)
                dead.append(self.dead.event_fields(stream_id, payload, reason, self.stream))
        return done, dead

    async def lag_and_pending(self) -> tuple[int | None, int]:
        """(lag, pending) of the group, for /health and metrics."""
        s = self.settings
        groups = await self.redis.xinfo_groups(self.stream)
        for g in groups:
            name = g.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == s.group:
                lag = g.get("lag")
                return (int(lag) if lag is not None else None), int(g.get("pending", 0))
        return None, 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class StreamReads:
    """The consumer's stream reads, on a connection of their own (from the client's
    pool settings). A read is sent at once and its reply taken later, as Redis sent it:
    redis-py's per-entry reshaping (a tuple and a dict per entry) cost more than
    validating the event. One read at a time."""

    def __init__(self, redis: Redis) -> None:
        self._conn: AbstractConnection = redis.connection_pool.make_connection()
        self._reply: Reply | None = None

    async def send(self, command: tuple[Any, ...], times: int = 1) -> Reply:
        """Send `command` `times` over (one round trip); its replies come with `get`."""
        if self._reply is not None and not self._reply.done:
            await self.reset()  # an abandoned reply would answer the next read
        conn = self._conn
        if not conn.is_connected:
            await conn.connect()  # where a Sentinel or a Cluster says the master is now
        await conn.send_packed_command(conn.pack_commands([command] * times))
        self._reply = Reply(conn, times)
        return self._reply

    async def reset(self) -> None:
        """Drop whatever is unread: the next read reconnects."""
        self._reply = None
        await self._conn.disconnect(nowait=True)

    async def close(self) -> None:
        self._reply = None
        await self._conn.disconnect()


class Reply:
    """The replies to one `StreamReads.send`."""

    def __init__(self, conn: AbstractConnection, count: int) -> None:
        self._conn = conn
        self._count = count
        self.done = False

    async def get(self) -> list[Any]:
        replies = []
        try:
            for _ in range(self._count):
                replies.append(await self._conn.read_response())
        except ResponseError:
            # The rest of the round trip is still on the wire: leave no half-read reply.
            await self._conn.disconnect(nowait=True)
            raise
        finally:
            self.done = True
        return replies


def _entries(reply: Any) -> list[RawEntry]:
    """The entries of a raw XREADGROUP reply on one stream (RESP2 pairs, RESP3 a map)."""
    if not reply:
        return []
    ((_, entries),) = reply.items() if isinstance(reply, dict) else reply
    return entries  # type: ignore[no-any-return]
