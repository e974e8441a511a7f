"""Who is alive, and who owns which partition: heartbeats, fenced leases, a fair share.

Every daemon writes a heartbeat that expires after `daemon.takeover`; one whose
heartbeat is gone is dead, and its pending events are claimed at once by the
live ones (instead of after `claim_idle`, which must stay long enough for a
slow batch).

Each partition's clock runs in one daemon at a time, under that partition's own
lease, renewed every third of `takeover` and carrying a fencing token: a daemon
that lost a lease stops acting on the partition at the next renewal, and a new
owner always holds a larger token than any before it.

The partitions are shared among the live daemons. Each daemon registers in a
sorted set of the home partition (`keys.daemons`: name -> when the registration
expires); its fair share is ceil(partitions / live daemons). At every beat it
renews the leases it holds, takes free ones until it holds its share, and gives
up what it holds beyond it (a daemon joined) for the others to take at their next
beat. A dead daemon's registration and leases lapse after `takeover`, and the
survivors take its partitions. Daemons try partitions in an order that starts
at an offset of their name, so that two starting at once mostly ask for
different ones; that two never hold one partition is the leases' doing.

One pipeline per client (`Partitions.by_client`) carries a beat's work: one round
trip to renew and look, a second only when partitions change hands.
"""

from __future__ import annotations

import asyncio
import math
import time
import zlib
from typing import Any

import structlog
from redis.asyncio import Redis

from alertd.storage import keys, scripts
from alertd.storage.partitions import Partitions
from alertd.storage.scripts import lua

log = structlog.get_logger("alertd.ownership")

# What a client's pipeline carries: partitions whose lease it renews ("hold") or
# reads ("look"), takes ("take") or gives up ("release").
_Op = tuple[str, int]


class Ownership:
    def __init__(self, partitions: Partitions, name: str, takeover_s: float) -> None:
        self.partitions = partitions
        self.redis = partitions.home
        self.prefix = partitions.home_prefix
        self.name = name
        self.ttl_ms = max(100, int(takeover_s * 1000))
        n = partitions.count
        self._leases = [keys.partition_lease(partitions.prefix(i)) for i in range(n)]
        self._fences = [keys.partition_fence(partitions.prefix(i)) for i in range(n)]
        start = zlib.crc32(name.encode()) % n if n else 0
        self._order = [(start + k) % n for k in range(n)]  # the order partitions are taken in
        self._rank = {p: r for r, p in enumerate(self._order)}
        self._tokens: dict[int, int] = {}  # partition -> fencing token, while held
        # partition -> when (monotonic) its lease lapses at the latest: the last renewal
        # sent plus the lease's time to live. Past it, the partition is not held.
        self._until: dict[int, float] = {}
        self._reported: frozenset[int] = frozenset()
        self._hold = self.redis.register_script(lua("hold_partition"))
        self._release = self.redis.register_script(lua("release_partition"))

    # --- what is held ---------------------------------------------------------------

    @property
    def owned_partitions(self) -> frozenset[int]:
        """The partitions this daemon holds a live lease of."""
        now = time.monotonic()
        return frozenset(p for p in self._tokens if self._until[p] > now)

    @property
    def owned(self) -> int:
        """How many partitions this daemon owns (alertd_partitions_owned)."""
        return len(self.owned_partitions)

    def owns(self, partition: int) -> bool:
        return partition in self._tokens and self._until[partition] > time.monotonic()

    def token_of(self, partition: int) -> int:
        """The fencing token of the partition's lease while this daemon holds it, else 0."""
        return self._tokens[partition] if self.owns(partition) else 0

    def _drop(self, partition: int) -> None:
        self._tokens.pop(partition, None)
        self._until.pop(partition, None)

    def _report(self) -> None:
        """Log the partitions owned when they changed since the last report."""
        for p in [p for p in self._tokens if self._until[p] <= time.monotonic()]:
            self._drop(p)  # not renewed in time (Redis unreachable): it may be another's
        owned = frozenset(self._tokens)
        if owned != self._reported:
            log.info("partitions owned", partitions=sorted(owned), count=len(owned))
            self._reported = owned

    # --- a beat ---------------------------------------------------------------------

    async def beat(self) -> None:
        """Heartbeat and registration; renew the leases held, take free ones up to the
        fair share, give up those beyond it."""
        try:
            share, free, failed = await self._renew()
            if share is not None:
                await self._rebalance(share, free)
            if failed is not None:
                raise failed  # a node the others' partitions do not wait for
        finally:
            self._report()

    async def _renew(self) -> tuple[int | None, set[int], BaseException | None]:
        """Round one: heartbeat, registration and live daemons (home), renewal of every
        lease held, a look at every other. Returns the fair share (None when the home
        partition did not answer), the partitions free for this daemon, and the first
        error of a client that did not answer (its partitions stay as they were)."""
        sent = time.monotonic()
        now_ms = int(time.time() * 1000)
        groups = self._with_home(self.partitions.by_client(range(self.partitions.count)))
        plans: list[list[_Op]] = []
        for _, parts in groups:
            plans.append([("hold" if p in self._tokens else "look", p) for p in parts])
        answers = await asyncio.gather(
            *(
                self._send(client, ops, home=client is self.redis, now_ms=now_ms)
                for (client, _), ops in zip(groups, plans, strict=True)
            ),
            return_exceptions=True,
        )
        share: int | None = None
        free: set[int] = set()
        failed: BaseException | None = None
        for (client, _), ops, answer in zip(groups, plans, answers, strict=True):
            if isinstance(answer, BaseException):
                failed = failed or answer
                continue
            if client is self.redis:
                live = int(answer[3])
                share = math.ceil(self.partitions.count / max(1, live))
                answer = answer[4:]
            for (op, p), result in zip(ops, answer, strict=True):
                if op == "hold":
                    token = int(result)
                    if token:
                        self._tokens[p] = token
                        self._until[p] = sent + self.ttl_ms / 1000
                    else:
                        log.warning("partition lease lost", partition=p, token=self._tokens[p])
                        self._drop(p)
                elif result is None or self._owner(result) == self.name:
                    free.add(p)  # nobody's, or this daemon's before a restart
        return share, free, failed

    async def _rebalance(self, share: int, free: set[int]) -> None:
        """Round two, only when partitions change hands: take free ones up to the share,
        give up those beyond it (the last in this daemon's order)."""
        held = sorted(self._tokens, key=self._rank.__getitem__)
        ops: list[_Op] = []
        if len(held) < share:
            wanted = [p for p in self._order if p in free][: share - len(held)]
            ops = [("take", p) for p in wanted]
        elif len(held) > share:
            ops = [("release", p) for p in held[share:]]
        if not ops:
            return
        releases = {p: self._tokens[p] for op, p in ops if op == "release"}
        for p in releases:
            self._drop(p)  # not ours from now, whatever the release answers
        by_op = {p: op for op, p in ops}
        groups = self.partitions.by_client(p for _, p in ops)
        sent = time.monotonic()
        plans = [[(by_op[p], p) for p in parts] for _, parts in groups]
        answers = await asyncio.gather(
            *(
                self._send(client, plan, releases=releases)
                for (client, _), plan in zip(groups, plans, strict=True)
            ),
            return_exceptions=True,
        )
        failed: BaseException | None = None
        for plan, answer in zip(plans, answers, strict=True):
            if isinstance(answer, BaseException):
                failed = failed or answer
                continue
            for (op, p), result in zip(plan, answer, strict=True):
                if op == "take" and int(result):
                    self._tokens[p] = int(result)
                    self._until[p] = sent + self.ttl_ms / 1000
        if failed is not None:
            raise failed

    async def _send(
        self,
        client: Redis,
        ops: list[_Op],
        home: bool = False,
        now_ms: int = 0,
        releases: dict[int, int] | None = None,
    ) -> list[Any]:
        """One pipeline on `client`: the home partition's heartbeat and registration
        first (when `home`: 4 answers, the last the live daemons), then `ops` in order."""
        async with client.pipeline(transaction=False) as pipe:
            if home:
                registry = keys.daemons(self.prefix)
                pipe.set(keys.daemon_heartbeat(self.prefix, self.name), "1", px=self.ttl_ms)
                pipe.zadd(registry, {self.name: now_ms + self.ttl_ms})
                pipe.zremrangebyscore(registry, "-inf", now_ms)
                pipe.zcount(registry, f"({now_ms}", "+inf")
            for op, p in ops:
                if op in ("hold", "take"):
                    scripts.queue(
                        pipe,
                        self._hold,
                        [self._leases[p], self._fences[p]],
                        [self.name, self.ttl_ms],
                    )
                elif op == "look":
                    pipe.get(self._leases[p])
                else:
                    assert releases is not None
                    lease = f"{self.name}:{releases[p]}"
                    scripts.queue(pipe, self._release, [self._leases[p]], [lease])
            return await scripts.execute(pipe)

    def _with_home(self, groups: list[tuple[Redis, list[int]]]) -> list[tuple[Redis, list[int]]]:
        if not any(client is self.redis for client, _ in groups):
            groups.append((self.redis, []))
        return groups

    @staticmethod
    def _owner(lease: bytes | str) -> str:
        text = lease.decode() if isinstance(lease, bytes) else lease
        return text.rpartition(":")[0]

    # --- others, and leaving ----------------------------------------------------------

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
        """On a clean stop: no heartbeat, no registration, and every lease held free for
        the others now."""
        releases = dict(self._tokens)
        self._tokens.clear()
        self._until.clear()
        try:
            groups = self._with_home(self.partitions.by_client(sorted(releases)))
            await asyncio.gather(
                *(self._leave_client(client, parts, releases) for client, parts in groups)
            )
        finally:
            self._report()

    async def _leave_client(
        self, client: Redis, parts: list[int], releases: dict[int, int]
    ) -> None:
        async with client.pipeline(transaction=False) as pipe:
            if client is self.redis:
                pipe.delete(keys.daemon_heartbeat(self.prefix, self.name))
                pipe.zrem(keys.daemons(self.prefix), self.name)
            for p in parts:
                lease = f"{self.name}:{releases[p]}"
                scripts.queue(pipe, self._release, [self._leases[p]], [lease])
            await scripts.execute(pipe)
