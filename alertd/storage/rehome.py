"""State written under another partition layout, moved to where this one keeps it.

Before state was spread, every state key was in partition 0 (`alertd:{p0}:`);
now a series' window, alert and clock entry live in its fingerprint's partition, a
group (its hash, members, notification log, schedule) in its id's, and each
partition's groups hold copies of the alerts filed into them (alerts.py). The
same moves are needed when `redis.partitions` changes. On start, when the
layout recorded in the home partition (`layout`: the partition count) is not
this one, one daemon (under a lock; the others wait for it) moves every key
and entry to its partition and rebuilds the copies and `ag:` sets from the
groups' members, then records the layout. Outbox streams stay where they are
while their partition exists (its owner delivers them); those of partitions
beyond the new count are moved to the home partition's.

Keys are moved with DUMP and RESTORE (and their time to live), which work
across the slots of a Cluster; the daemons do not consume until it is done.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis

from alertd.storage import keys
from alertd.storage.partitions import Partitions

log = structlog.get_logger("alertd.rehome")

LOCK_S = 300  # the most one move may take before another daemon may try
SCAN_COUNT = 1000
# Keys moved whole to the partition of the id in them (fingerprint or group id).
_BY_SERIES = re.compile(r"^w:([^:]+):")
_BY_GROUP = re.compile(r"^(?:group|gm):(.+)$|^nflog:[^:]+:(.+)$")


def layout(count: int) -> str:
    return f"partitions={count}"


async def rehome(partitions: Partitions, wait_s: float = LOCK_S) -> bool:
    """Move state of another layout to this one's places; whether anything was moved."""
    home, prefix = partitions.home, partitions.home_prefix
    done = keys.layout(prefix)
    wanted = layout(partitions.count)
    current = await home.get(done)
    if current is not None and current.decode() == wanted:
        return False
    lock = keys.layout_lock(prefix)
    deadline = time.monotonic() + wait_s
    while not await home.set(lock, "1", nx=True, ex=LOCK_S):
        current = await home.get(done)
        if (current is not None and current.decode() == wanted) or time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    try:
        moved = await _Move(partitions).run()
        await home.set(done, wanted)
    finally:
        await home.delete(lock)
    if moved:
        log.warning("state moved to this partition layout", keys_and_entries=moved, layout=wanted)
    return bool(moved)


class _Move:
    def __init__(self, partitions: Partitions) -> None:
        self.partitions = partitions
        self.routed: Redis = partitions.routed
        self.count = partitions.count
        self.moved = 0
        self.copies: dict[str, bytes] = {}  # fp -> the alert its groups were last told of
        self.owed: dict[str, bytes] = {}  # fp -> a resolution owed (old alerts:gone)

    async def run(self) -> int:
        pattern = f"{self.partitions.key_prefix}{{p*}}:*"
        found = [k async for k in self.routed.scan_iter(match=pattern, count=SCAN_COUNT)]
        for raw in found:
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            at, rest = self._parse(key)
            if at is None:
                continue
            await self._one(key, at, rest)
        await self._rebuild_copies()
        return self.moved

    def _parse(self, key: str) -> tuple[int | None, str]:
        m = re.match(re.escape(self.partitions.key_prefix) + r"\{p(\d+)\}:(.*)$", key, re.S)
        return (int(m.group(1)), m.group(2)) if m else (None, "")

    def _series(self, fp: str) -> int:
        return self.partitions.of_series(fp)

    def _group(self, gid: str) -> int:
        return keys.partition_of(gid, self.count)

    async def _one(self, key: str, at: int, rest: str) -> None:
        if m := _BY_SERIES.match(rest):
            await self._move_key(key, at, rest, self._series(m.group(1)))
        elif m := _BY_GROUP.match(rest):
            await self._move_key(key, at, rest, self._group(m.group(1) or m.group(2)))
        elif rest.startswith("series:"):
            await self._move_entries_zset(key, at, rest, self._series)
        elif rest in ("groups:due", "groups:urgent"):
            await self._move_entries_zset(key, at, rest, self._group)
        elif rest == "alerts:clock":
            await self._move_entries_zset(key, at, rest, self._series)
        elif rest == "alerts":
            await self._move_alerts(key, at)
        elif rest in ("alerts:gone", "ga"):
            for fp, raw in (await self.routed.hgetall(key)).items():
                (self.owed if rest == "alerts:gone" else self.copies)[fp.decode()] = raw
            await self.routed.delete(key)
        elif rest == "ga:seq" or rest.startswith("ag:"):
            await self.routed.delete(key)  # rebuilt from the groups' members
        elif (rest.startswith(("outbox:", "urgent:"))) and at >= self.count:
            await self._move_stream(key, rest)

    async def _move_key(self, key: str, at: int, rest: str, to: int) -> None:
        if to == at:
            return
        dumped = await self.routed.dump(key)
        if dumped is None:
            return
        ttl = await self.routed.pttl(key)
        new = self.partitions.prefix(to) + rest
        await self.routed.restore(new, max(0, ttl), dumped, replace=True)
        await self.routed.delete(key)
        self.moved += 1

    async def _move_entries_zset(self, key: str, at: int, rest: str, where: Any) -> None:
        entries = await self.routed.zrange(key, 0, -1, withscores=True)
        away: dict[int, dict[str, float]] = {}
        for member, score in entries:
            name = member.decode()
            to = where(name)
            if to != at:
                away.setdefault(to, {})[name] = score
        for to, moving in away.items():
            await self.routed.zadd(self.partitions.prefix(to) + rest, moving)
            await self.routed.zrem(key, *moving)
            self.moved += len(moving)

    async def _move_alerts(self, key: str, at: int) -> None:
        for raw_fp, raw in (await self.routed.hgetall(key)).items():
            fp = raw_fp.decode()
            try:
                state = orjson.loads(raw).get("state")
            except (ValueError, AttributeError):
                state = None
            if state in ("firing", "resolved"):
                self.copies.setdefault(fp, raw)  # what its groups hold, unless a copy says
            to = self._series(fp)
            if state == "resolved":  # lives on only in its groups' copies
                await self.routed.hdel(key, fp)
            elif to != at:
                await self.routed.hset(keys.alerts(self.partitions.prefix(to)), fp, raw)
                await self.routed.hdel(key, fp)
                self.moved += 1

    async def _move_stream(self, key: str, rest: str) -> None:
        """Notifications queued in a partition that is no more: to the home partition's
        stream of the same channel and lane (under new ids; the notification ids stay)."""
        target = self.partitions.home_prefix + rest
        for _, fields in await self.routed.xrange(key):
            await self.routed.xadd(target, fields)
            self.moved += 1
        await self.routed.delete(key)

    async def _rebuild_copies(self) -> None:
        """Every group's members: its partition's ag:<fp> and copy of each."""
        for p in range(self.count):
            prefix = self.partitions.prefix(p)
            pattern = f"{prefix}gm:*"
            async for raw in self.routed.scan_iter(match=pattern, count=SCAN_COUNT):
                members_key = raw.decode() if isinstance(raw, bytes) else str(raw)
                gid = members_key[len(prefix) + len("gm:") :]
                for raw_fp in await self.routed.smembers(members_key):
                    fp = raw_fp.decode()
                    await self.routed.sadd(keys.alert_groups(prefix, fp), gid)
                    copy = self.owed.get(fp) or self.copies.get(fp)
                    if copy is not None:
                        await self.routed.hset(keys.alert_copies(prefix), fp, copy)
                        await self.routed.hset(keys.alert_copies_seq(prefix), fp, 0)
