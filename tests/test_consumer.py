"""The consumer: a poison entry costs itself, never the stream; while behind, the next
batch is read during the work on one, and a stop or a crash loses none of it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

import orjson
import pytest
import redis.asyncio as aioredis

from alertd.consumer import CATCH_UP_BATCHES, PAGES_PER_READ, Consumer, FirstLane
from alertd.deadletters import DeadLetters
from alertd.metrics import Metrics
from alertd.model import Event
from alertd.settings import RedisSettings
from tests.conftest import wait_for

SETTINGS = RedisSettings()
BATCH = 10
# What one read takes while behind: a full batch and the catch-up batches after it.
READ = BATCH * CATCH_UP_BATCHES


def make_consumer(
    redis: aioredis.Redis,
    process: Callable[[list[Event], float], Awaitable[None]],
    name: str = "c1",
    claim_idle_ms: int = 30_000,
    first: FirstLane | None = None,
    batch_size: int = BATCH,
) -> Consumer:
    return Consumer(
        redis=redis,
        settings=SETTINGS,
        consumer=name,
        batch_size=batch_size,
        block_ms=50,
        claim_idle_ms=claim_idle_ms,
        dead=DeadLetters(redis, SETTINGS.dead_letter_stream),
        metrics=Metrics(),
        process=process,
        first=first,
    )


async def publish(redis: aioredis.Redis, count: int) -> list[bytes]:
    """`count` JSON events, label `n` numbering them from 0; their entry IDs."""
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(count):
            event = {"name": "load", "value": n, "labels": {"n": str(n)}}
            pipe.xadd(SETTINGS.stream, {"data": orjson.dumps(event)})
        return list(await pipe.execute())


async def pending_count(redis: aioredis.Redis) -> int:
    return int((await redis.xpending(SETTINGS.stream, SETTINGS.group))["pending"])


async def pending_of(redis: aioredis.Redis, consumer: str) -> int:
    summary = await redis.xpending(SETTINGS.stream, SETTINGS.group)
    return sum(c["pending"] for c in summary["consumers"] if c["name"] == consumer.encode())


class Crash(BaseException):
    """Stands for the process dying: nothing in the consumer catches it."""


class TestPoisonEntries:
    """An entry that breaks processing is dead-lettered; the rest of its batch is processed."""

    async def test_poison_entry_isolated(self, redis: aioredis.Redis) -> None:
        seen: list[str] = []

        async def process(events: list[Event], now: float) -> None:
            if any(e.name == "poison" for e in events):
                raise ZeroDivisionError("a bug")
            seen.extend(e.labels.get("n", "") for e in events)

        consumer = make_consumer(redis, process)
        await consumer.join()
        await redis.xadd(SETTINGS.stream, {"name": "ok", "n": "1"})
        await redis.xadd(SETTINGS.stream, {"name": "poison"})
        await redis.xadd(SETTINGS.stream, {"name": "ok", "n": "2"})
        stopping = asyncio.Event()
        task = asyncio.create_task(consumer.run(stopping))
        try:
            await wait_for(lambda: len(seen) == 2)
            assert ["1", "2"] == seen

            async def dead_letter() -> list[object]:
                return list(await redis.xrange(SETTINGS.dead_letter_stream))

            rows = await wait_for(dead_letter)
            assert 1 == len(rows)
            assert rows[0][1][b"reason"].startswith(b"internal error")
            assert 0 == (await redis.xpending(SETTINGS.stream, SETTINGS.group))["pending"]
            assert not task.done()
        finally:
            stopping.set()
            await asyncio.wait_for(task, 5)


class TestReadAhead:
    """Behind on the stream, the consumer reads the next batch while it processes one:
    every event is still processed once, in order, and acknowledged after its effect."""

    async def test_next_batch_arrives_while_one_is_processed(self, redis: aioredis.Redis) -> None:
        total = 3 * READ + 7
        seen: list[int] = []
        acked_too_early: list[int] = []
        first_started, release = asyncio.Event(), asyncio.Event()

        async def process(events: list[Event], now: float) -> None:
            first_started.set()
            await release.wait()
            pending = await redis.xpending_range(
                SETTINGS.stream, SETTINGS.group, min="-", max="+", count=total
            )
            held = {p["message_id"] for p in pending}
            numbers = [int(e.labels["n"]) for e in events]
            acked_too_early.extend(n for n in numbers if ids[n] not in held)
            seen.extend(numbers)

        consumer = make_consumer(redis, process)
        await consumer.join()
        ids = await publish(redis, total)
        stopping = asyncio.Event()
        task = asyncio.create_task(consumer.run(stopping))
        try:
            await wait_for(first_started.is_set)

            async def next_batch_delivered() -> bool:
                return await pending_count(redis) == 2 * READ

            # The first batch is held in processing; the next one is delivered meanwhile.
            await wait_for(next_batch_delivered)
            release.set()

            async def drained() -> bool:
                return len(seen) == total and await pending_count(redis) == 0

            await wait_for(drained)
            assert list(range(total)) == seen
            assert [] == acked_too_early
            assert not task.done()
        finally:
            release.set()
            stopping.set()
            await asyncio.wait_for(task, 5)

    async def test_crash_mid_batch_loses_nothing_read_ahead(self, redis: aioredis.Redis) -> None:
        total = 5 * READ
        stored: Counter[int] = Counter()
        batches = 0

        async def dies_in_second_batch(events: list[Event], now: float) -> None:
            nonlocal batches
            batches += 1
            if batches == 2:
                raise Crash
            stored.update(int(e.labels["n"]) for e in events)

        first = make_consumer(redis, dies_in_second_batch, name="c1")
        await first.join()
        await publish(redis, total)
        with pytest.raises(Crash):
            await asyncio.wait_for(first.run(asyncio.Event()), 10)
        # It died holding the batch it was processing and the one it had read ahead.
        assert 2 * READ == await pending_of(redis, "c1")
        assert READ == len(stored)

        async def process(events: list[Event], now: float) -> None:
            stored.update(int(e.labels["n"]) for e in events)

        second = make_consumer(redis, process, name="c2", claim_idle_ms=100)
        stopping = asyncio.Event()
        task = asyncio.create_task(second.run(stopping))
        try:

            async def drained() -> bool:
                summary = await redis.xpending(SETTINGS.stream, SETTINGS.group)
                return len(stored) == total and summary["pending"] == 0

            await wait_for(drained)
            assert {n: 1 for n in range(total)} == dict(stored)
        finally:
            stopping.set()
            await asyncio.wait_for(task, 5)


class Pages:
    """A FirstLane for events named "page": it stores them (here: notes them) beside
    the batch in progress, or says they must wait."""

    paging_metrics = frozenset({"page"})

    def __init__(self, redis: aioredis.Redis, takes: bool = True) -> None:
        self.redis = redis
        self.takes = takes
        self.stored: list[str] = []
        self.refused = 0
        self.pending_then: set[bytes] = set()  # entries pending when pages were stored

    async def process_first(self, events: list[Event], now: float) -> bool:
        if not self.takes:
            self.refused += 1
            return False
        pending = await self.redis.xpending_range(
            SETTINGS.stream, SETTINGS.group, min="-", max="+", count=100_000
        )
        self.pending_then |= {p["message_id"] for p in pending}
        self.stored.extend(e.labels["id"] for e in events)
        return True


async def publish_page(redis: aioredis.Redis, page_id: str) -> bytes:
    event = {"name": "page", "value": 1, "labels": {"id": page_id}}
    return bytes(await redis.xadd(SETTINGS.stream, {"data": orjson.dumps(event)}))


class TestPagesFirst:
    """Behind a backlog, the entries of rules that page are read on and stored before
    their turn, beside the batch in hand; everything else keeps its order, and each
    entry is stored once and acknowledged after."""

    async def test_a_page_behind_a_backlog_is_stored_during_the_batch_in_hand(
        self, redis: aioredis.Redis
    ) -> None:
        seen: list[str] = []
        release = asyncio.Event()

        async def process(events: list[Event], now: float) -> None:
            if not seen:
                await release.wait()  # the first batch takes as long as a storm's
            seen.extend(e.labels.get("n") or e.labels["id"] for e in events)

        pages = Pages(redis)
        consumer = make_consumer(redis, process, first=pages)
        await consumer.join()
        # Past the batch in hand and the one read ahead: found by reading on.
        await publish(redis, 2 * READ + 5)
        page_id = await publish_page(redis, "db")
        await publish(redis, READ)
        stopping = asyncio.Event()
        task = asyncio.create_task(consumer.run(stopping))
        try:
            await wait_for(lambda: pages.stored)
            assert [] == seen  # the first batch is still in hand
            assert page_id in pages.pending_then  # stored first, acknowledged after
            release.set()

            async def drained() -> bool:
                return len(seen) == 3 * READ + 5 and await pending_count(redis) == 0

            await wait_for(drained)
            expected = [str(n) for n in range(2 * READ + 5)] + [str(n) for n in range(READ)]
            assert expected == seen  # the rest in order, and the page not twice
            assert ["db"] == pages.stored
        finally:
            release.set()
            stopping.set()
            await asyncio.wait_for(task, 5)

    async def test_a_page_that_must_wait_goes_right_after_the_batch_in_hand(
        self, redis: aioredis.Redis
    ) -> None:
        batches: list[list[str]] = []
        release = asyncio.Event()

        async def process(events: list[Event], now: float) -> None:
            if not batches:
                await release.wait()
            batches.append([e.labels.get("n") or e.labels["id"] for e in events])

        pages = Pages(redis, takes=False)  # a series of its is in the batch in hand
        consumer = make_consumer(redis, process, first=pages)
        await consumer.join()
        await publish(redis, 2 * READ)
        await publish_page(redis, "db")
        stopping = asyncio.Event()
        task = asyncio.create_task(consumer.run(stopping))
        try:
            await wait_for(lambda: pages.refused)
            release.set()

            async def drained() -> bool:
                done = sum(len(b) for b in batches) == 2 * READ + 1
                return done and await pending_count(redis) == 0

            await wait_for(drained)
            assert "db" == batches[1][0]  # before the entries read ahead of it
            assert [str(n) for n in range(2 * READ)] == [n for b in batches for n in b if n != "db"]
        finally:
            release.set()
            stopping.set()
            await asyncio.wait_for(task, 5)

    async def test_a_storm_of_pages_keeps_its_order(self, redis: aioredis.Redis) -> None:
        seen: list[str] = []

        async def process(events: list[Event], now: float) -> None:
            await asyncio.sleep(0.2)  # long enough for the consumer to read on
            seen.extend(e.labels["id"] for e in events)

        pages = Pages(redis)
        # Each read holds more pages than go first (PAGES_PER_READ): they go in order.
        consumer = make_consumer(redis, process, first=pages, batch_size=2 * PAGES_PER_READ)
        await consumer.join()
        total = 3 * 2 * PAGES_PER_READ
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(total):
                event = {"name": "page", "value": 1, "labels": {"id": str(i)}}
                pipe.xadd(SETTINGS.stream, {"data": orjson.dumps(event)})
            await pipe.execute()
        stopping = asyncio.Event()
        task = asyncio.create_task(consumer.run(stopping))
        try:
            await wait_for(lambda: len(seen) == total)
            assert [str(i) for i in range(total)] == seen
            assert [] == pages.stored
        finally:
            stopping.set()
            await asyncio.wait_for(task, 5)


class TestStop:
    """A stop in the middle of a backlog finishes everything delivered to the consumer:
    nothing is left pending for another replica to claim later."""

    async def test_stop_mid_backlog_leaves_nothing_pending(self, redis: aioredis.Redis) -> None:
        total = 5 * READ
        seen: list[int] = []
        stopping = asyncio.Event()

        async def process(events: list[Event], now: float) -> None:
            stopping.set()  # the operator stops the daemon in the middle of the first batch
            await asyncio.sleep(0)
            seen.extend(int(e.labels["n"]) for e in events)

        consumer = make_consumer(redis, process)
        await consumer.join()
        await publish(redis, total)
        await asyncio.wait_for(consumer.run(stopping), 10)
        group = (await redis.xinfo_groups(SETTINGS.stream))[0]
        assert 0 == group["pending"]
        assert list(range(group["entries-read"])) == seen
        assert 0 < group["lag"]
