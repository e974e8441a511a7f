"""Where state lives: `redis.partitions` partitions, each a hash tag, and the client
that reaches the master serving it.

A series (its window, its alert, its clock entry) lives in the partition of its
fingerprint (`keys.partition_of`), a group (its schedule, notification log and
outbox entries) in the partition of its id; silences, history and other small
state in the home partition (`keys.HOME`). Every script runs inside one
partition.

On one Redis and behind Sentinel every partition is reached through the same
client, so one pipeline carries the work of all of them. On a Cluster each
partition has a plain client pinned to its slot's master (redisconn.pinned):
`by_client` tells which partitions one pipeline may carry.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis

from alertd.redisconn import is_cluster, pinned
from alertd.storage import keys


class Partitions:
    def __init__(self, routed: Redis, key_prefix: str, count: int) -> None:
        self.routed = routed  # finds each key's node itself (streams, cross-partition reads)
        self.key_prefix = key_prefix
        self.count = count
        self.prefixes = [keys.state_prefix(key_prefix, i) for i in range(count)]
        if is_cluster(routed):
            self.clients = [pinned(routed, prefix) for prefix in self.prefixes]
        else:
            self.clients = [routed] * count
        self.home = self.clients[keys.HOME]
        self.home_prefix = self.prefixes[keys.HOME]

    @classmethod
    def single(cls, redis: Redis, prefix: str) -> Partitions:
        """One partition whose keys begin with `prefix` (tests, tools): every key in it."""
        one = cls(redis, "", 1)
        one.prefixes = [prefix]
        one.home_prefix = prefix
        one.clients = [redis]
        one.home = redis
        return one

    def of_series(self, fingerprint: str) -> int:
        return keys.partition_of(fingerprint, self.count)

    def prefix(self, partition: int) -> str:
        return self.prefixes[partition]

    def client(self, partition: int) -> Redis:
        return self.clients[partition]

    def by_client(self, partitions: Iterable[int]) -> list[tuple[Redis, list[int]]]:
        """The partitions, gathered by the client that reaches them (in order)."""
        out: dict[int, tuple[Redis, list[int]]] = {}
        for p in partitions:
            client = self.clients[p]
            out.setdefault(id(client), (client, []))[1].append(p)
        return list(out.values())

    async def aclose(self) -> None:
        """Close the pinned clients (the routed one is its owner's to close)."""
        for client in {id(c): c for c in self.clients}.values():
            if client is not self.routed:
                await client.aclose()
