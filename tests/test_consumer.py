"""The consumer: a poison entry costs itself, never the stream."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from alertd.consumer import Consumer
from alertd.deadletters import DeadLetters
from alertd.metrics import Metrics
from alertd.model import Event
from alertd.settings import RedisSettings
from tests.conftest import wait_for


class TestPoisonEntries:
    """An entry that breaks processing is dead-lettered; the rest of its batch is processed."""

    async def test_poison_entry_isolated(self, redis: aioredis.Redis) -> None:
        seen: list[str] = []

        async def process(events: list[Event], now: float) -> None:
            if any(e.name == "poison" for e in events):
                raise ZeroDivisionError("a bug")
            seen.extend(e.labels.get("n", "") for e in events)

        settings = RedisSettings()
        consumer = Consumer(
            redis=redis,
            settings=settings,
            consumer="c1",
            batch_size=100,
            block_ms=50,
            claim_idle_ms=30_000,
            dead=DeadLetters(redis, settings.dead_letter_stream),
            metrics=Metrics(),
            process=process,
        )
        await consumer.join()
        await redis.xadd(settings.stream, {"name": "ok", "n": "1"})
        await redis.xadd(settings.stream, {"name": "poison"})
        await redis.xadd(settings.stream, {"name": "ok", "n": "2"})
        stopping = asyncio.Event()
        task = asyncio.create_task(consumer.run(stopping))
        try:
            await wait_for(lambda: len(seen) == 2)
            assert ["1", "2"] == seen

            async def dead_letter() -> list[object]:
                return list(await redis.xrange(settings.dead_letter_stream))

            rows = await wait_for(dead_letter)
            assert 1 == len(rows)
            assert rows[0][1][b"reason"].startswith(b"internal error")
            assert 0 == (await redis.xpending(settings.stream, settings.group))["pending"]
            assert not task.done()
        finally:
            stopping.set()
            await asyncio.wait_for(task, 5)
