"""Per-channel rate limits (`rate_limit = "20/1m"`): hold what is over, send it as a digest.

Every notification a channel's worker is about to deliver asks `admit` first. In
one atomic step (Lua) it takes a slot of the channel's sliding window (a sorted
set of send times) or, when the window is full or older notifications are still
held, appends the notification to the channel's held list in Redis: durable,
shared by replicas, nothing dropped. `run` looks at every limited channel a few
times a second: once the window has room, it turns what is held into one digest
notification naming every group it stands for (the latest notification of each
group), takes the slot and queues the digest in the channel's outbox, again in one
atomic step, so a digest is queued once and a held notification leaves the list
only with it. A digest is delivered like any notification (retries, dead letters,
fallback), without asking for a slot again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from alertd.channels.base import Channel
from alertd.metrics import Metrics
from alertd.model import Notification, NotifyReason, new_id
from alertd.notify.history import History, record_of
from alertd.notify.outbox import Outbox
from alertd.storage import keys
from alertd.storage.scripts import lua

log = structlog.get_logger("alertd.ratelimit")

MAX_DIGEST = 500  # held notifications one digest stands for; the rest go in the next
POLL_S = 0.2


@dataclass(frozen=True)
class RateKeys:
    """The rate limits' keys (named in alertd/storage/keys.py)."""

    prefix: str

    def slots(self, channel: str) -> str:
        """zset: slot member -> when it was taken (ms); the channel's sliding window."""
        return keys.rate_slots(self.prefix, channel)

    def held(self, channel: str) -> str:
        """list: notifications (JSON) held for the channel's next digest."""
        return keys.rate_held(self.prefix, channel)


def build_digest(channel: str, held: list[Notification], now: float) -> Notification:
    """One notification standing for every group `held` holds: each group's latest."""
    latest: dict[str, Notification] = {}
    for n in sorted(held, key=lambda n: n.created_at):
        latest[n.group_key] = n
    groups = list(latest.values())
    alerts = [a for n in groups for a in n.alerts]
    firing = any(a.state != "resolved" for a in alerts)
    return Notification(
        id=new_id(now),
        receiver=channel,
        status="firing" if firing else "resolved",
        alerts=sorted(alerts, key=lambda a: (a.state == "resolved", a.starts_at)),
        group_labels={},
        group_key=f"digest:{channel}",
        reason=NotifyReason.DIGEST,
        created_at=now,
        changed_at=max((n.changed_at for n in groups), default=now),
        extra={
            "digest": [{"id": n.id, "groupKey": n.group_key, "status": n.status} for n in groups],
            "held_ids": [n.id for n in held],  # their history records follow the digest's
        },
    )


class RateLimiter:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        outbox: Outbox,
        channels: Callable[[], Mapping[str, Channel[Any]]],
        metrics: Metrics,
        history: History | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.keys = RateKeys(prefix)
        self.outbox = outbox
        self.channels = channels
        self.metrics = metrics
        self.history = history
        self.clock = clock
        self._admit = redis.register_script(lua("admit_rate"))
        self._digest = redis.register_script(lua("queue_digest"))

    async def admit(self, channel: Channel[Any], n: Notification) -> bool:
        """Whether `n` may be delivered now; False: it is held for the next digest."""
        limit = channel.config.rate_limit
        if limit is None or n.extra.get("digest"):
            return True  # a digest took its slot when it was queued
        now_ms = int(self.clock() * 1000)
        try:
            admitted = await self._admit(
                keys=[self.keys.slots(channel.name), self.keys.held(channel.name)],
                args=[
                    now_ms,
                    int(limit.period.total_seconds() * 1000),
                    limit.count,
                    f"{n.id}:{channel.name}",
                    orjson.dumps(n.to_dict()),
                ],
            )
        except RedisError as exc:
            # Better a message over the limit than one not sent.
            log.warning("rate limit unavailable; delivering", channel=channel.name, error=str(exc))
            return True
        if admitted:
            return True
        log.info(
            "notification held by rate limit",
            channel=channel.name,
            notification_id=n.id,
            reason=n.reason.value,
            rate_limit=str(limit),
        )
        if self.history is not None:
            await self.history.record(n, "held")
        return False

    async def run(self, stopping: asyncio.Event) -> None:
        """Send digests as the limited channels' windows allow, until `stopping`."""
        while not stopping.is_set():
            for channel in list(self.channels().values()):
                if channel.config.rate_limit is None or not channel.config.enabled:
                    continue
                try:
                    await self.flush(channel)
                except RedisError as exc:
                    log.debug("digest round failed", channel=channel.name, error=str(exc))
                except Exception:  # a bug must not stop every later digest
                    log.exception("digest round failed", channel=channel.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), POLL_S)

    async def flush(self, channel: Channel[Any]) -> Notification | None:
        """Queue one digest of what `channel` holds, if its window has room; the digest."""
        limit = channel.config.rate_limit
        if limit is None:
            return None
        name = channel.name
        held_key = self.keys.held(name)
        count = int(await self.redis.llen(held_key))
        self.metrics.notifications_held.labels(name).set(count)
        if count == 0:
            return None
        now = self.clock()
        period_ms = int(limit.period.total_seconds() * 1000)
        since = int(now * 1000) - period_ms
        if await self.redis.zcount(self.keys.slots(name), f"({since}", "+inf") >= limit.count:
            return None
        raws = await self.redis.lrange(held_key, 0, MAX_DIGEST - 1)
        held = [n for n in (_decode(r) for r in raws) if n is not None]
        digest = build_digest(name, held, now)
        await self.outbox.ensure_group(name)
        done = await self._digest(
            keys=[self.keys.slots(name), held_key, self.outbox.stream(name)],
            args=[
                int(now * 1000),
                period_ms,
                limit.count,
                f"{digest.id}:{name}",
                len(raws),
                raws[0],
                raws[-1],
                orjson.dumps(digest.to_dict()),
            ],
        )
        if done != 1:
            return None
        self.metrics.notifications_held.labels(name).set(count - len(raws))
        log.info(
            "digest queued",
            channel=name,
            notification_id=digest.id,
            reason=digest.reason.value,
            groups=len(digest.extra["digest"]),
            held=len(held),
        )
        if self.history is not None:
            items = [(n, record_of(n, "held", digest=digest.id)) for n in held]
            await self.history.record_many([*items, (digest, record_of(digest, "pending"))])
        return digest


def _decode(raw: bytes) -> Notification | None:
    try:
        return Notification.from_dict(orjson.loads(raw))
    except (ValueError, KeyError, TypeError):
        log.error("unreadable held notification skipped")
        return None
