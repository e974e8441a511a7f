"""The stream consumer: events in, effects stored, then acknowledged.

Reads batches with XREADGROUP (first this consumer's own pending entries,
then new ones), claims entries idle in dead consumers with XAUTOCLAIM,
dead-letters what is invalid, and acknowledges a batch only after the rule
engine stored its effects. A Redis outage is waited out with backoff; the
daemon never exits because Redis blinked.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from alertd.deadletters import DeadLetters
from alertd.errors import EventError
from alertd.events import dead_letter_payload, parse_entry
from alertd.metrics import Metrics
from alertd.model import Event
from alertd.settings import RedisSettings

log = structlog.get_logger("alertd.consumer")

Entry = tuple[str, dict[bytes, bytes]]
# Batches read and handled together while the consumer is behind (see next_batch).
CATCH_UP_BATCHES = 10


def reason_label(reason: str) -> str:
    """A bounded metric label for an invalid-event reason."""
    for key, label in (
        ("JSON", "invalid_json"),
        ("name", "invalid_name"),
        ("value", "invalid_value"),
        ("label", "invalid_labels"),
        ("ts", "invalid_ts"),
        ("larger", "too_large"),
        ("array", "too_many"),
        ("UTF-8", "invalid_utf8"),
        ("field", "invalid_field"),
    ):
        if key in reason:
            return label
    return "invalid"


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
    joined: bool = False
    batches: int = 0
    _read_own_pending: bool = True
    _last_claim: float = field(default=0.0)
    _joined_before: bool = False

    async def join(self) -> None:
        """Create the consumer group if it is missing (MKSTREAM); an existing one is used as is."""
        # After Redis lost the group (a restart without persistence) everything in the
        # stream arrived since: take it all rather than skip it.
        start = "0" if self._joined_before else self.settings.group_start
        try:
            await self.redis.xgroup_create(
                self.settings.stream, self.settings.group, id=start, mkstream=True
            )
            log.info(
                "consumer group created", stream=self.settings.stream, group=self.settings.group
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.joined = True
        self._joined_before = True

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until `stopping` is set; the batch in hand is always finished."""
        backoff_s = 0.1
        while not stopping.is_set():
            try:
                if not self.joined:
                    await self.join()
                entries = await self.next_batch()
                if entries:
                    await asyncio.shield(self.handle(entries))
                backoff_s = 0.1
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.joined = not isinstance(exc, ResponseError) or "NOGROUP" not in str(exc)
                self._read_own_pending = True
                log.warning(
                    "redis unavailable; retrying", error=type(exc).__name__, retry_in_s=backoff_s
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff_s):
                        await stopping.wait()
                backoff_s = min(backoff_s * 2, 5.0)
            except Exception:  # a bug must not stop consumption for good
                log.exception("consumer loop failed; retrying", retry_in_s=backoff_s)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff_s):
                        await stopping.wait()
                backoff_s = min(backoff_s * 2, 5.0)

    async def next_batch(self) -> list[Entry]:
        s = self.settings
        if self._read_own_pending:
            rows = await self.redis.xreadgroup(
                s.group, self.consumer, {s.stream: "0"}, count=self.batch_size
            )
            entries = self._entries(rows)
            if entries:
                return entries
            self._read_own_pending = False
        now = time.monotonic()
        if now - self._last_claim > self.claim_idle_ms / 2000:
            self._last_claim = now
            _, claimed, *_ = await self.redis.xautoclaim(
                s.stream,
                s.group,
                self.consumer,
                min_idle_time=self.claim_idle_ms,
                start_id="0-0",
                count=self.batch_size,
            )
            entries = [(eid.decode(), f) for eid, f in claimed if f is not None]
            if entries:
                log.info("claimed idle entries", count=len(entries))
                return entries
        rows = await self.redis.xreadgroup(
            s.group, self.consumer, {s.stream: ">"}, count=self.batch_size, block=self.block_ms
        )
        entries = self._entries(rows)
        if len(entries) == self.batch_size and CATCH_UP_BATCHES > 1:
            # A full batch means a backlog: take a few more in the same round trip and
            # handle them as one, so each series touched costs one merge, not one per batch.
            async with self.redis.pipeline(transaction=False) as pipe:
                for _ in range(CATCH_UP_BATCHES - 1):
                    pipe.xreadgroup(s.group, self.consumer, {s.stream: ">"}, count=self.batch_size)
                for more in await pipe.execute():
                    entries.extend(self._entries(more))
        return entries

    @staticmethod
    def _entries(
        rows: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes] | None]]]] | None,
    ) -> list[Entry]:
        out: list[Entry] = []
        for _, entries in rows or []:
            out.extend((eid.decode(), f) for eid, f in entries if f is not None)
        return out

    async def handle(self, entries: list[Entry]) -> None:
        """Parse, process, dead-letter the invalid, then acknowledge: in that order."""
        started = time.perf_counter()
        events: list[Event] = []
        dead: list[dict[str, str]] = []
        for stream_id, fields in entries:
            try:
                good, errors = parse_entry(stream_id, fields)
            except Exception as exc:  # a parser bug must cost one entry, not the stream
                log.exception("entry could not be parsed", stream_id=stream_id)
                good, errors = [], [EventError(f"internal error: {type(exc).__name__}")]
            events.extend(good)
            if errors:
                reason = "; ".join(str(e) for e in errors[:20])
                if len(errors) > 20:
                    reason += f"; and {len(errors) - 20} more"
                dead.append(self.dead.event_fields(stream_id, dead_letter_payload(fields), reason))
                for e in errors:
                    self.metrics.events_invalid.labels(reason_label(e.reason)).inc()
        try:
            await self.process(events, self.clock())
        except (RedisError, OSError):
            raise
        except Exception:
            log.exception("batch failed; processing its entries one by one")
            events, dead = await self._one_by_one(entries, dead)
        async with self.redis.pipeline(transaction=True) as pipe:
            for letter in dead:
                self.dead.add_to(pipe, letter)
            pipe.xack(self.settings.stream, self.settings.group, *[eid for eid, _ in entries])
            await pipe.execute()
        self.batches += 1
        self.metrics.events_consumed.inc(len(events))
        if dead:
            self.metrics.dead_letters.labels("event").inc(len(dead))
            log.warning(
                "invalid entries dead-lettered",
                count=len(dead),
                stream_id=dead[0]["stream_id"],
                reason=dead[0]["reason"][:200],
            )
        self.metrics.batch_duration.observe(time.perf_counter() - started)

    async def _one_by_one(
        self, entries: list[Entry], dead: list[dict[str, str]]
    ) -> tuple[list[Event], list[dict[str, str]]]:
        """Isolate the entry that breaks processing: dead-letter it, keep the rest."""
        done: list[Event] = []
        already = {d["stream_id"] for d in dead}
        for stream_id, fields in entries:
            if stream_id in already:
                continue
            good, _ = parse_entry(stream_id, fields)
            try:
                await self.process(good, self.clock())
                done.extend(good)
            except (RedisError, OSError):
                raise
            except Exception as exc:
                log.exception("entry breaks processing; dead-lettered", stream_id=stream_id)
                reason = f"internal error while processing: {type(exc).__name__}"
                dead.append(self.dead.event_fields(stream_id, dead_letter_payload(fields), reason))
        return done, dead

    async def lag_and_pending(self) -> tuple[int | None, int]:
        """(lag, pending) of the group, for /health and metrics."""
        s = self.settings
        groups = await self.redis.xinfo_groups(s.stream)
        for g in groups:
            name = g.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == s.group:
                lag = g.get("lag")
                return (int(lag) if lag is not None else None), int(g.get("pending", 0))
        return None, 0
