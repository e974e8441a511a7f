"""Pipelines of Lua scripts: no SCRIPT EXISTS round trip first, NOSCRIPT answered by loading."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from alertd.storage import scripts


async def exists_calls(redis: aioredis.Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_script|exists", {}).get("calls", 0))


class TestPipelineOfScripts:
    async def test_runs_in_one_round_trip_without_asking_whether_scripts_exist(
        self, redis: aioredis.Redis
    ) -> None:
        echo = redis.register_script("return {KEYS[1], ARGV[1]}")
        await redis.script_load(echo.script)
        before = await exists_calls(redis)
        pipe = redis.pipeline(transaction=False)
        scripts.queue(pipe, echo, ["k"], ["a"])
        pipe.set("plain", "1")
        assert [[b"k", b"a"], True] == await scripts.execute(pipe)
        assert before == await exists_calls(redis)

    async def test_scripts_a_restarted_redis_lost_are_loaded_and_run_once(
        self, redis: aioredis.Redis
    ) -> None:
        incr = redis.register_script("return redis.call('INCR', KEYS[1])")
        seven = redis.register_script("return 7")
        await redis.script_flush()  # what a restart or a failover leaves
        pipe = redis.pipeline(transaction=False)
        scripts.queue(pipe, incr, ["n"], [])
        pipe.incr("plain")
        scripts.queue(pipe, seven, [], [])
        scripts.queue(pipe, incr, ["n"], [])
        assert [1, 1, 7, 2] == await scripts.execute(pipe)
        assert (b"2", b"1") == (await redis.get("n"), await redis.get("plain"))

    async def test_a_script_error_is_raised_after_the_rest_ran(self, redis: aioredis.Redis) -> None:
        boom = redis.register_script("return redis.error_reply('boom')")
        pipe = redis.pipeline(transaction=False)
        scripts.queue(pipe, boom, [], [])
        pipe.set("after", "1")
        with pytest.raises(ResponseError, match="boom"):
            await scripts.execute(pipe)
        assert b"1" == await redis.get("after")
