"""The durable outbox: one Redis stream per channel, read by a consumer group.

A notification is added here before its first attempt and removed (XACK +
XDEL) only after it was delivered or moved to the dead-letter stream. While a
worker holds entries it keeps resetting their idle time (`touch_many`, all it
holds in one call); an entry left idle longer than `claim_idle` belonged to a
worker that died and is claimed by a live one, which delivers it with the same
notification id.

Each channel has two streams: its outbox and its urgent lane (`Notification.urgent`:
a critical alert firing, first or changed). The lane has a reader of its own and
a sure share of the delivery slots (workers.py), so a new page never waits behind
a storm of warnings, repeats or resolutions queued before it, nor they for it.

Each partition (storage/partitions.py) has its own pair of streams per channel: a
group's flush queues its notifications in the partition of the group, and the
partition's owner delivers them. What is not a group's (test alerts, digests,
channel-health alerts, `enqueue*`, `add_to`) is queued in the home partition's. A
stream is reached through its partition's client (`Partitions.client`).
"""

from __future__ import annotations

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from alertd.model import Notification
from alertd.storage import keys
from alertd.storage.partitions import Partitions
from alertd.storage.scripts import lua

GROUP = "alertd"


Entry = tuple[str, Notification | None]


class Outbox:
    def __init__(self, partitions: Partitions) -> None:
        self.partitions = partitions
        self.redis = partitions.home  # the home partition's client and prefix
        self.prefix = partitions.home_prefix
        self._groups: set[str] = set()
        # Registered once; each call names the client of its stream's partition.
        self._touch = self.redis.register_script(lua("touch_entries"))
        self._enqueue_once = self.redis.register_script(lua("enqueue_once"))
        self._enqueue_if = self.redis.register_script(lua("enqueue_if"))
        self._prune = self.redis.register_script(lua("prune_consumers"))

    def stream(self, channel: str, urgent: bool = False, partition: int = keys.HOME) -> str:
        """The partition's stream of the channel: its outbox or its urgent lane."""
        return keys.outbox(self.partitions.prefix(partition), channel, urgent)

    def stream_of(self, n: Notification, partition: int = keys.HOME) -> str:
        """The stream `n` is queued on in `partition`: its channel's outbox or urgent lane."""
        return self.stream(n.receiver, n.urgent, partition)

    async def ensure_group(
        self, channel: str, urgent: bool = False, partition: int = keys.HOME
    ) -> None:
        stream = self.stream(channel, urgent, partition)
        if stream in self._groups:
            return
        try:
            await self.partitions.client(partition).xgroup_create(
                stream, GROUP, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(stream)

    async def ensure_group_of(self, n: Notification, partition: int = keys.HOME) -> None:
        await self.ensure_group(n.receiver, n.urgent, partition)

    def add_to(self, pipe: Pipeline | Redis, n: Notification) -> None:
        """Queue the XADD of `n` on a pipeline (so it commits with other writes)."""
        pipe.xadd(self.stream_of(n), {"n": orjson.dumps(n.to_dict())})

    async def enqueue(self, n: Notification) -> None:
        await self.ensure_group_of(n)
        await self.redis.xadd(self.stream_of(n), {"n": orjson.dumps(n.to_dict())})

    async def enqueue_once(
        self, key: str, value: bytes, ttl_s: int, ns: list[Notification]
    ) -> bool:
        """Set `key` (if absent) and queue `ns` in one atomic step; False when `key` existed."""
        for n in ns:
            await self.ensure_group_of(n)
        keys = [key, *(self.stream_of(n) for n in ns)]
        args = [value, ttl_s, *(orjson.dumps(n.to_dict()) for n in ns)]
        return bool(await self._enqueue_once(keys=keys, args=args))

    async def enqueue_if(self, key: str, expected: bytes, ns: list[Notification]) -> bool:
        """Delete `key` if it holds `expected` and queue `ns`, atomically; False otherwise."""
        for n in ns:
            await self.ensure_group_of(n)
        keys = [key, *(self.stream_of(n) for n in ns)]
        args = [expected, *(orjson.dumps(n.to_dict()) for n in ns)]
        return bool(await self._enqueue_if(keys=keys, args=args))

    async def read(
        self,
        channel: str,
        consumer: str,
        count: int,
        block_ms: int,
        pending: bool = False,
        after: str = "0",
        urgent: bool = False,
        partition: int = keys.HOME,
    ) -> list[Entry]:
        """New entries of the partition's stream (or, with pending=True, this consumer's
        own unacknowledged ones with ids above `after`)."""
        stream = self.stream(channel, urgent, partition)
        try:
            rows = await self.partitions.client(partition).xreadgroup(
                GROUP,
                consumer,
                {stream: after if pending else ">"},
                count=count,
                block=None if pending else block_ms,
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # Redis lost its data (restart without persistence)
                self._groups.discard(stream)
            raise
        return [self._decode(e) for _, entries in rows or [] for e in entries]

    async def claim(
        self,
        channel: str,
        consumer: str,
        min_idle_ms: int,
        count: int = 1,
        urgent: bool = False,
        partition: int = keys.HOME,
    ) -> list[Entry]:
        """Entries a dead worker left pending longer than min_idle_ms, now `consumer`'s."""
        stream = self.stream(channel, urgent, partition)
        try:
            res = await self.partitions.client(partition).xautoclaim(
                stream,
                GROUP,
                consumer,
                min_idle_time=min_idle_ms,
                start_id="0-0",
                count=count,
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                self._groups.discard(stream)
            raise
        # Entries deleted while pending come back without fields: XAUTOCLAIM drops them.
        return [self._decode(e) for e in res[1] if e[1] is not None]

    async def touch_many(
        self,
        channel: str,
        consumer: str,
        entry_ids: list[str],
        urgent: bool = False,
        partition: int = keys.HOME,
    ) -> list[str]:
        """Reset the idle time of the entries `consumer` works on, in one call; returns
        those it no longer holds (claimed by another consumer, or acknowledged)."""
        if not entry_ids:
            return []
        lost = await self._touch(
            keys=[self.stream(channel, urgent, partition)],
            args=[GROUP, consumer, *entry_ids],
            client=self.partitions.client(partition),
        )
        return [e.decode() if isinstance(e, bytes) else str(e) for e in lost]

    async def prune_consumers(
        self, channel: str, idle_ms: int, urgent: bool = False, partition: int = keys.HOME
    ) -> list[str]:
        """Forget consumers of dead processes: nothing pending and silent for `idle_ms`."""
        gone = await self._prune(
            keys=[self.stream(channel, urgent, partition)],
            args=[GROUP, idle_ms],
            client=self.partitions.client(partition),
        )
        return [g.decode() if isinstance(g, bytes) else str(g) for g in gone]

    @staticmethod
    def _decode(entry: tuple[bytes, dict[bytes, bytes] | None]) -> Entry:
        eid, fields = entry
        raw = (fields or {}).get(b"n")
        try:
            return eid.decode(), Notification.from_dict(orjson.loads(raw)) if raw else None
        except (ValueError, KeyError, TypeError):
            return eid.decode(), None

    def done_on(self, pipe: Pipeline, stream: str, *entry_ids: str) -> None:
        """Queue the removal of entries of `stream` (acknowledge and delete) on a pipeline
        of the client of the stream's partition."""
        pipe.xack(stream, GROUP, *entry_ids)
        pipe.xdel(stream, *entry_ids)

    async def depth(self, channel: str) -> int:
        """Notifications waiting for the channel, in both its lanes of every partition."""
        total = 0
        for client, parts in self.partitions.by_client(range(self.partitions.count)):
            async with client.pipeline(transaction=False) as pipe:
                for p in parts:
                    pipe.xlen(self.stream(channel, partition=p))
                    pipe.xlen(self.stream(channel, urgent=True, partition=p))
                total += sum(int(n) for n in await pipe.execute())
        return total
