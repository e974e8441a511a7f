"""Who is alive, and who owns the partition: heartbeats, a fenced lease, takeover.

Every daemon writes a heartbeat that expires after `daemon.takeover`; one whose
heartbeat is gone is dead, and its pending events are claimed at once by the
live ones (instead of after `claim_idle`, which must stay long enough for a
slow batch). The partition's clock runs in one daemon at a time, under a lease
renewed every third of `takeover` and carrying a fencing token: a daemon that
lost it stops its clock at the next renewal, and a new owner always holds a
larger token than any before it.
"""

from __future__ import annotations

import structlog
from redis.asyncio import Redis

from alertd.storage import keys, scripts
from alertd.storage.scripts import lua

log = structlog.get_logger("alertd.ownership")


class Ownership:
    def __init__(self, redis: Redis, prefix: str, name: str, takeover_s: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.name = name
        self.ttl_ms = max(100, int(takeover_s * 1000))
        self.token = 0  # the fencing token while this daemon owns the partition, else 0
        self._hold = redis.register_script(lua("hold_partition"))
        self._release = redis.register_script(lua("release_partition"))

    @property
    def owned(self) -> int:
        """Partitions this daemon owns (alertd_partitions_owned)."""
        return 1 if self.token else 0

    async def beat(self) -> None:
        """Heartbeat, and take or keep the partition's lease."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.daemon_heartbeat(self.prefix, self.name), "1", px=self.ttl_ms)
            scripts.queue(
                pipe,
                self._hold,
                [keys.partition_lease(self.prefix), keys.partition_fence(self.prefix)],
                [self.name, self.ttl_ms],
            )
            _, token = await scripts.execute(pipe)
        token = int(token)
        if token != self.token:
            log.info("partition owned" if token else "partition lost", token=token or self.token)
        self.token = token

    async def alive(self, names: list[str]) -> set[str]:
        """Which of these daemons have a heartbeat."""
        if not names:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(keys.daemon_heartbeat(self.prefix, name))
            found = await pipe.execute()
        return {name for name, n in zip(names, found, strict=True) if n}

    async def leave(self) -> None:
        """On a clean stop: no heartbeat, and the lease free for the next owner now."""
        await self.redis.delete(keys.daemon_heartbeat(self.prefix, self.name))
        if self.token:
            lease = f"{self.name}:{self.token}"
            await self._release(keys=[keys.partition_lease(self.prefix)], args=[lease])
            self.token = 0
