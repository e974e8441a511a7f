"""The notification history: was anyone told, when, and did it arrive?

One record per notification and channel (a fallback's copy keeps the id, so the
channel is part of the identity), rewritten whole at each step of its life:

    pending        queued in the outbox, not delivered yet
    held           over its channel's rate limit: sent in a digest (named in `digest`);
                   `delivered_at` / `last_error` once that digest was delivered / dead
    delivered      the receiver accepted it
    dead-lettered  moved to the dead-letter stream

Records live in Redis (`HistoryKeys`), newest first by when they were queued, and
are dropped once older than `notify.history_retention` (and beyond MAX_RECORDS, so
a storm cannot grow Redis without bound). Writing history never fails a delivery:
a Redis error here is logged and the record is skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from alertd.durations import parse_duration
from alertd.model import Notification, NotifyReason, parse_rfc3339, rfc3339
from alertd.storage import keys
from alertd.storage.scripts import lua

log = structlog.get_logger("alertd.history")

Outcome = Literal["pending", "held", "delivered", "dead-lettered"]
OUTCOMES: tuple[str, ...] = ("pending", "held", "delivered", "dead-lettered")
MAX_RECORDS = 200_000
TRIM_EVERY_S = 1.0
TRIM_BATCH = 1000
WRITE_CHUNK = 500  # records per script call
MAX_SCAN = 100_000  # records looked at by one list() with filters


RANK = {"pending": 0, "held": 1, "delivered": 2, "dead-lettered": 2}


def rank(rec: dict[str, Any]) -> int:
    """How far a record is: its outcome, then whether it is settled (a held one whose
    digest was delivered or dead-lettered). Records only move forward."""
    settled = rec.get("delivered_at") is not None or bool(rec.get("last_error"))
    return RANK[rec["outcome"]] * 2 + int(settled)


@dataclass(frozen=True)
class HistoryKeys:
    """The history's keys (named in alertd/storage/keys.py)."""

    prefix: str

    @property
    def index(self) -> str:
        """zset: `channel id` -> when queued (unix seconds)."""
        return keys.history_index(self.prefix)

    @property
    def records(self) -> str:
        """hash: `channel id` -> the record's JSON."""
        return keys.history_records(self.prefix)


def member(channel: str, notification_id: str) -> str:
    return f"{channel} {notification_id}"


def record_of(
    n: Notification,
    outcome: Outcome,
    *,
    attempts: int | None = None,
    last_error: str = "",
    delivered_at: float | None = None,
    digest: str = "",
) -> dict[str, Any]:
    """One record in the API's shape."""
    out: dict[str, Any] = {
        "id": n.id,
        "channel": n.receiver,
        "groupKey": n.group_key,
        "reason": n.reason.value,
        "status": n.status,
        "alerts": len(n.alerts),
        "fingerprints": sorted({a.fingerprint for a in n.alerts}),
        "outcome": outcome,
        "attempts": n.attempts if attempts is None else attempts,
        "last_error": last_error,
        "queued_at": rfc3339(n.created_at),
        "delivered_at": rfc3339(delivered_at) if delivered_at is not None else None,
    }
    if digest:
        out["digest"] = digest  # the id of the digest notification a held one went out in
    return out


class History:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        retention_s: Callable[[], float],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.keys = HistoryKeys(prefix)
        self.retention_s = retention_s
        self.clock = clock
        self._trimmed_at = 0.0
        self._write = redis.register_script(lua("write_history"))
        # Records written together: those queued while a write is on its way go in the
        # next one, so under load the writes are as few as the round trips allow.
        self._batch: list[tuple[str, float, dict[str, Any]]] = []  # member, queued at, record
        self._waiting: list[asyncio.Future[None]] = []  # one per caller of the next write
        self._writer: asyncio.Task[None] | None = None

    async def record(self, n: Notification, outcome: Outcome, **fields: Any) -> None:
        await self.record_many([(n, record_of(n, outcome, **fields))])
        if n.reason is NotifyReason.DIGEST and outcome != "pending":
            await self._settle_held(n, outcome, fields)

    async def _settle_held(self, digest: Notification, outcome: Outcome, fields: Any) -> None:
        """What became of a digest became of every notification it stood for."""
        ids = [str(i) for i in digest.extra.get("held_ids") or []]
        members = [member(digest.receiver, i) for i in ids]
        if not members:
            return
        try:
            raws = await self.redis.hmget(self.keys.records, members)
            scores = await self.redis.zmscore(self.keys.index, members)
        except RedisError as exc:
            log.warning("notification history not written", error=type(exc).__name__)
            return
        settled = record_of(digest, outcome, **fields)
        items = []
        for m, raw, score in zip(members, raws, scores, strict=True):
            rec = _decode(raw)
            if rec is not None and score is not None:
                # Still "held" (that is what happened to it), now with when it arrived.
                rec.update({k: settled[k] for k in ("last_error", "delivered_at")})
                rec["digest"] = digest.id  # also when the limiter's own note comes later
                items.append((m, float(score), rec))
        await self._enqueue(items)

    async def queued(self, ns: Iterable[Notification], outcome: Outcome = "pending") -> None:
        await self.record_many([(n, record_of(n, outcome)) for n in ns])

    async def record_many(self, items: Sequence[tuple[Notification, dict[str, Any]]]) -> None:
        """Write records, joined with those other tasks write at the same moment; returns
        once they are written (or given up: never raises for Redis)."""
        await self._enqueue(_placed(items))

    def queued_soon(self, ns: Iterable[Notification]) -> None:
        """`queued`, without waiting for the write: the dispatcher's commit path. The
        outbox entry is the durable record; this one joins the next history write, and
        a later step's record of the same notification (queued after it) outranks it."""
        self._add(_placed([(n, record_of(n, "pending")) for n in ns]))

    async def _enqueue(self, items: Sequence[tuple[str, float, dict[str, Any]]]) -> None:
        written = self._add(items)
        if written is not None:
            # Shielded: a cancelled caller (shutdown) does not cancel the others' records.
            await asyncio.shield(written)

    def _add(
        self, items: Sequence[tuple[str, float, dict[str, Any]]]
    ) -> asyncio.Future[None] | None:
        """Queue records for the next write; the future is done once it is written."""
        if not items:
            return None
        self._batch.extend(items)
        written = asyncio.get_running_loop().create_future()
        self._waiting.append(written)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_batches())
        return written

    async def _write_batches(self) -> None:
        waiting: list[asyncio.Future[None]] = []
        try:
            await asyncio.sleep(0)  # let the outcomes finishing in this loop turn join
            while self._batch:
                items, self._batch = self._batch, []
                waiting, self._waiting = self._waiting, []
                await self._write_batch(items)
                _release(waiting)
        finally:  # cancelled (a stop): nobody waits for records that will not be written
            _release(waiting + self._waiting)

    async def _write_batch(self, items: list[tuple[str, float, dict[str, Any]]]) -> None:
        try:
            for start in range(0, len(items), WRITE_CHUNK):
                args: list[Any] = []
                for m, queued_at, rec in items[start : start + WRITE_CHUNK]:
                    args += [m, repr(queued_at), rank(rec), orjson.dumps(rec)]
                await self._write(keys=[self.keys.records, self.keys.index], args=args)
            if not self._batch:  # records queued meanwhile: they are written first
                await self._trim()
        except RedisError as exc:
            log.warning("notification history not written", error=type(exc).__name__)
        except Exception:  # history is a record of delivery, never a reason for it to fail
            log.exception("notification history not written")

    async def _trim(self) -> None:
        """Drop records past retention, and the oldest beyond MAX_RECORDS."""
        now = self.clock()
        if now - self._trimmed_at < TRIM_EVERY_S:
            return
        self._trimmed_at = now
        old = await self.redis.zrangebyscore(
            self.keys.index, "-inf", now - self.retention_s(), start=0, num=TRIM_BATCH
        )
        excess = await self.redis.zcard(self.keys.index) - len(old) - MAX_RECORDS
        if excess > 0:
            old += await self.redis.zrange(self.keys.index, 0, min(excess, TRIM_BATCH) - 1)
        if old:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self.keys.records, *old)
                pipe.zrem(self.keys.index, *old)
                await pipe.execute()

    async def list(
        self,
        *,
        channel: str | None = None,
        outcome: str | None = None,
        fingerprint: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Records newest first, filtered; at most `limit`."""
        out: list[dict[str, Any]] = []
        low = max(since or 0.0, self.clock() - self.retention_s())
        scanned = 0
        page = max(limit, 200) if (channel or outcome or fingerprint) else limit
        while len(out) < limit and scanned < MAX_SCAN:
            ids = await self.redis.zrevrangebyscore(
                self.keys.index, "+inf", low, start=scanned, num=page
            )
            if not ids:
                break
            scanned += len(ids)
            for raw in await self.redis.hmget(self.keys.records, ids):
                rec = _decode(raw)
                if rec is None:
                    continue
                if channel and rec["channel"] != channel:
                    continue
                if outcome and rec["outcome"] != outcome:
                    continue
                if fingerprint and fingerprint not in rec["fingerprints"]:
                    continue
                out.append(rec)
                if len(out) >= limit:
                    break
        return out


def parse_since(text: str, now: float) -> float | None:
    """`since=`: RFC 3339, unix seconds, or a duration ago ("1h"); None when empty."""
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_rfc3339(text)
    except ValueError:
        pass
    try:
        return now - parse_duration(text).total_seconds()
    except ValueError:
        raise ValueError(
            f"since {text[:40]!r} is not an RFC 3339 time, unix seconds or a duration"
        ) from None


def _decode(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        rec = orjson.loads(raw)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def _placed(
    items: Sequence[tuple[Notification, dict[str, Any]]],
) -> list[tuple[str, float, dict[str, Any]]]:
    """Records as written: (member, when queued, record)."""
    return [(member(n.receiver, n.id), n.created_at, rec) for n, rec in items]


def _release(waiting: list[asyncio.Future[None]]) -> None:
    for written in waiting:
        if not written.done():
            written.set_result(None)
