"""`redis.wait_replicas`: nothing acknowledged or sent before replicas have it.

Redis replicates asynchronously: a failover can lose the last writes the old
master acknowledged. With `wait_replicas = N`, the consumer acknowledges a
batch and a worker sends what it read only once N replicas have confirmed
every write before it: a write on the same connection followed by `WAIT`
(replication is one ordered stream per master, so a replica holding this
write holds all earlier ones). While fewer confirm, alertd holds, says so
once in its log and in /health/ready, and never lowers the guarantee itself.
"""

from __future__ import annotations

import asyncio

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from alertd.storage import keys

log = structlog.get_logger("alertd.replication")

WAIT_MS = 1000  # one WAIT's limit; the hold goes on until replicas confirm


class ReplicationHeld(RedisError):  # type: ignore[misc]
    """Stopping while replicas had not confirmed: the work stays unacknowledged."""


class Replication:
    def __init__(self, redis: Redis, prefix: str, replicas: int, stopping: asyncio.Event) -> None:
        self.redis = redis
        self.prefix = prefix
        self.replicas = replicas
        self.stopping = stopping
        self.waiting: str | None = None  # why alertd holds, while it does

    async def confirm(self) -> None:
        """Return once `replicas` replicas hold every write made so far (at once when 0)."""
        if self.replicas <= 0:
            return
        while True:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.incr(keys.replication_probe(self.prefix))
                pipe.execute_command("WAIT", self.replicas, WAIT_MS)
                _, confirmed = await pipe.execute()
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
