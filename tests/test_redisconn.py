"""The daemon's Redis connections keep their write timeout (without a task per command)."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from alertd.redisconn import without_write_tasks
from tests.conftest import RedisServer


async def test_a_write_to_a_frozen_redis_times_out_and_the_client_recovers(
    private_redis: RedisServer,
) -> None:
    client = without_write_tasks(aioredis.Redis.from_url(private_redis.url, socket_timeout=1.0))
    assert await client.ping()
    assert private_redis.proc is not None
    os.kill(private_redis.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            # far more than the socket buffers hold: the write itself must give up
            await client.set("big", b"x" * (64 << 20))
        assert time.monotonic() - started < 5
    finally:
        os.kill(private_redis.proc.pid, signal.SIGCONT)
    assert await client.ping()
    await client.aclose()
