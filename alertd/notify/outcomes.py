"""Delivery outcomes, written together: the outbox entry removed, its dead letter,
its fallback's copy, the channel's failure count, in one MULTI.

One writer task puts the outcomes that finish close together in one MULTI, under
`asyncio.shield`, so a shutdown cannot cut one in half; what Redis refuses is
retried as a whole (nothing of it was applied, or all of it).

An entry is removed from the stream it was read from: its partition's
(outbox.py). The dead letters, fallback copies and failure counts are written
through the home partition's client; entries of partitions that client reaches
too (one Redis, Sentinel: all of them) are removed in the same MULTI. On a
Cluster an entry of another partition is removed by a MULTI of its own, once the
first one was written: a crash between the two delivers it again (at least once,
never lost).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from alertd.deadletters import DeadLetters
from alertd.model import Notification
from alertd.notify.outbox import Outbox
from alertd.storage import keys

log = structlog.get_logger("alertd.delivery")

OUTCOMES_PER_WRITE = 256  # the most outcomes in one MULTI
STATE_TTL_S = 7 * 86400  # failure counts and failing episodes of channels gone from config


@dataclass(eq=False, slots=True)
class Outcome:
    """One notification's outcome, waiting for the next coalesced write."""

    channel: str
    entry_id: str
    written: asyncio.Future[None]
    dead: dict[str, str] | None = None
    follow: Notification | None = None
    delivered: bool | None = None
    urgent: bool = False  # the entry is in the channel's urgent lane
    partition: int = keys.HOME  # ... of this partition
    # After a delivery: the failing episode it ends, if any; after a failure: the count.
    reply: Any = None


@dataclass
class OutcomeWriter:
    """Queues outcomes and writes them, a MULTI at a time."""

    outbox: Outbox
    dead: DeadLetters
    spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]
    _outcomes: list[Outcome] = field(default_factory=list)
    _writer: asyncio.Task[None] | None = None

    async def record(
        self,
        name: str,
        entry_id: str,
        *,
        dead: dict[str, str] | None = None,
        follow: Notification | None = None,
        delivered: bool | None = None,
        urgent: bool = False,
        partition: int = keys.HOME,
    ) -> Any:
        """Remove the entry, and dead-letter / hand to the fallback / count, atomically.

        Queued for the writer, which joins it with the other outcomes at hand in one
        MULTI; shielded, so a cancelled job still records its outcome (stop waits for the
        writer). Returns, after a delivery, the failing episode it ends (if any); after a
        failure, the consecutive failure count; None when Redis stayed away (the entry is
        then delivered again later).
        """
        outcome = Outcome(
            name,
            entry_id,
            asyncio.get_running_loop().create_future(),
            dead=dead,
            follow=follow,
            delivered=delivered,
            urgent=urgent,
            partition=partition,
        )
        self._outcomes.append(outcome)
        if self._writer is None or self._writer.done():
            self._writer = self.spawn(self._write_outcomes())
        await asyncio.shield(outcome.written)
        return outcome.reply

    async def _write_outcomes(self) -> None:
        """Write what is queued, a MULTI at a time; what queues meanwhile goes in the next."""
        batch: list[Outcome] = []
        try:
            while self._outcomes:
                batch = self._outcomes[:OUTCOMES_PER_WRITE]
                del self._outcomes[:OUTCOMES_PER_WRITE]
                await self._write(batch)
                for o in batch:
                    if not o.written.done():
                        o.written.set_result(None)
                batch = []
        finally:
            # Cancelled (a stop past its deadline): what is unwritten is delivered again.
            for o in [*batch, *self._outcomes]:
                if not o.written.done():
                    o.written.cancel()
            self._outcomes.clear()

    async def _write(self, batch: list[Outcome]) -> None:
        """The batch's MULTI on the home partition's client (with the removal of the
        entries that client reaches), then one per other client removing its entries."""
        partitions = self.outbox.partitions
        home = partitions.home
        rest: list[tuple[Any, list[Outcome]]] = []
        first: list[Outcome] = []
        for client, parts in partitions.by_client(sorted({o.partition for o in batch})):
            mine = [o for o in batch if o.partition in parts]
            if client is home:
                first = mine
            else:
                rest.append((client, mine))
        replies = await self._multi(
            home, batch, functools.partial(self._queue_outcomes, batch=batch, remove=first)
        )
        if replies is None:
            return
        replies_at, answers = replies
        for o, at in replies_at:
            if not isinstance(answers[at], Exception):
                o.reply = answers[at]
        for client, outcomes in rest:
            remove = functools.partial(self._queue_done, outcomes=outcomes)
            await self._multi(client, outcomes, remove)

    async def _multi(
        self,
        client: Any,
        batch: list[Outcome],
        queue: Callable[[Pipeline], list[tuple[Outcome, int]]],
    ) -> tuple[list[tuple[Outcome, int]], list[Any]] | None:
        """One MULTI of what `queue` puts on it, retried while Redis is away (as a whole:
        nothing of it was applied, or all of it); where each reply is, and the replies.
        None when Redis stayed away."""
        for attempt in range(20):
            try:
                for follow in [o.follow for o in batch if o.follow is not None]:
                    await self.outbox.ensure_group_of(follow)
                async with client.pipeline(transaction=True) as pipe:
                    replies_at = queue(pipe)
                    # A command Redis refuses must not cost the others their outcome.
                    replies: list[Any] = await pipe.execute(raise_on_error=False)
                break
            except (RedisError, OSError) as exc:
                log.debug("recording delivery outcomes failed", error=str(exc))
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
        else:
            for o in batch:
                log.error(
                    "could not record delivery outcome; it will be delivered again",
                    channel=o.channel,
                    entry=o.entry_id,
                )
            return None
        for error in {str(r) for r in replies if isinstance(r, Exception)}:
            log.error("recording a delivery outcome failed", error=error)
        return replies_at, replies

    def _queue_outcomes(
        self, pipe: Pipeline, batch: list[Outcome], remove: list[Outcome]
    ) -> list[tuple[Outcome, int]]:
        """Queue the batch's writes in order, and the removal of the entries of `remove`;
        returns where each outcome's reply will be.

        Deliveries of one channel with no failure between share one reset of its failure
        count; the entries of each stream are removed with one XACK and one XDEL.
        """
        replies_at: list[tuple[Outcome, int]] = []
        reset: set[str] = set()  # channels whose count is reset since their last failure
        for o in batch:
            if o.dead is not None:
                self.dead.add_to(pipe, o.dead)
            if o.follow is not None:
                self.outbox.add_to(pipe, o.follow)
            if o.delivered is True and o.channel not in reset:
                reset.add(o.channel)
                pipe.delete(keys.channel_failures(self.outbox.prefix, o.channel))
                replies_at.append((o, len(pipe)))
                pipe.get(keys.channel_failing(self.outbox.prefix, o.channel))
            elif o.delivered is False:
                reset.discard(o.channel)
                replies_at.append((o, len(pipe)))
                pipe.incr(keys.channel_failures(self.outbox.prefix, o.channel))
                pipe.expire(keys.channel_failures(self.outbox.prefix, o.channel), STATE_TTL_S)
        self._queue_done(pipe, remove)
        return replies_at

    def _queue_done(self, pipe: Pipeline, outcomes: list[Outcome]) -> list[tuple[Outcome, int]]:
        """Queue the removal of the outcomes' entries, each from the stream it was read from."""
        done: dict[str, list[str]] = {}
        for o in outcomes:
            stream = self.outbox.stream(o.channel, o.urgent, o.partition)
            done.setdefault(stream, []).append(o.entry_id)
        for stream, entry_ids in done.items():
            self.outbox.done_on(pipe, stream, *entry_ids)
        return []
