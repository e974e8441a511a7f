"""`redis.wait_replicas`: nothing acknowledged or sent before replicas have it.

Redis replicates asynchronously: a failover can lose the last writes the old
master acknowledged. With `wait_replicas = N`, the consumer acknowledges a
batch and a worker sends what it read only once N replicas have confirmed
every write before it: a write on the same connection followed by `WAIT`, on
every master holding a partition (replication is one ordered stream per
master, so a replica holding this write holds all earlier ones). While fewer
confirm, alertd holds, says so once in its log and in /health/ready, and never
lowers the guarantee itself.
"""

from __future__ import annotations

import asyncio

import structlog
from redis.exceptions import RedisError

from alertd.storage import keys
from alertd.storage.partitions import Partitions

log = structlog.get_logger("alertd.replication")

WAIT_MS = 1000  # one WAIT's limit; the hold goes on until replicas confirm


class ReplicationHeld(RedisError):  # type: ignore[misc]
    """Stopping while replicas had not confirmed: the work stays unacknowledged."""


class Replication:
    def __init__(self, partitions: Partitions, replicas: int, stopping: asyncio.Event) -> None:
        self.partitions = partitions
        self.replicas = replicas
        self.stopping = stopping
        self.waiting: str | None = None  # why alertd holds, while it does

    async def confirm(self) -> None:
        """Return once `replicas` replicas hold every write made so far (at once when 0)."""
        if self.replicas <= 0:
            return
        while True:
            confirmed = min(await asyncio.gather(*map(self._wait, self._masters())))
            if int(confirmed) >= self.replicas:
                if self.waiting is not None:
                    log.info("replicas confirm writes again; carrying on")
                self.waiting = None
                return
            if self.waiting is None:
                log.error(
                    "replicas do not confirm writes; holding acknowledgements and sends",
                    confirmed=int(confirmed),
                    wait_replicas=self.replicas,
                )
            self.waiting = (
                f"{int(confirmed)} of redis.wait_replicas = {self.replicas} replicas "
                "confirm writes: holding acknowledgements and sends"
            )
            if self.stopping.is_set():
                raise ReplicationHeld(self.waiting)

    def _masters(self) -> list[int]:
        """A partition of each client: every master that holds state (one on one Redis)."""
        return [ps[0] for _, ps in self.partitions.by_client(range(self.partitions.count))]

    async def _wait(self, partition: int) -> int:
        async with self.partitions.client(partition).pipeline(transaction=False) as pipe:
            pipe.incr(keys.replication_probe(self.partitions.prefix(partition)))
            pipe.execute_command("WAIT", self.replicas, WAIT_MS)
            _, confirmed = await pipe.execute()
        return int(confirmed)
