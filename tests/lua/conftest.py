"""A partition's slot on a real Redis Cluster, reached as alertd reaches it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from alertd.alerts import AlertStore
from alertd.notify.outbox import Outbox
from alertd.redisconn import pinned
from alertd.settings import Config
from alertd.silences import SilenceStore
from alertd.storage import keys
from alertd.storage.partitions import Partitions
from tests.test_dispatch import Harness, write_config

TAGGED = keys.state_prefix("t:")  # t:{p0}: every state key in the partition's slot
SLOT = key_slot(TAGGED.encode())


class SlotHarness(Harness):
    """tests/test_dispatch.py's Harness, its state under TAGGED on the Cluster's slot."""

    def __init__(self, redis: aioredis.Redis, config: Config) -> None:
        super().__init__(redis, config)
        self.store = AlertStore(Partitions.single(redis, TAGGED))
        self.outbox = Outbox(Partitions.single(redis, TAGGED))
        self.silences = SilenceStore(redis, TAGGED)
        self.dispatcher = self.replica()


@pytest.fixture
async def slot_redis(redis_cluster: Any) -> AsyncIterator[aioredis.Redis]:
    """A flushed client of the master serving the partition's slot (redisconn.pinned)."""
    cluster = RedisCluster.from_url(redis_cluster.url)
    client = pinned(cluster, TAGGED)
    await client.flushall()
    yield client
    await client.aclose()
    await cluster.aclose()


@pytest.fixture
async def slot(slot_redis: aioredis.Redis, tmp_path: Path) -> SlotHarness:
    return SlotHarness(slot_redis, write_config(tmp_path))
