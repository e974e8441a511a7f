"""tests/lua/touched.py sees every key a script touches, declared or built inside Lua."""

from __future__ import annotations

import redis.asyncio as aioredis

from tests.lua.touched import watch


class TestWatch:
    """A key a script builds is reported undeclared; declared ones are not."""

    async def test_a_key_built_inside_lua_is_undeclared(self, redis: aioredis.Redis) -> None:
        built = "redis.call('HSET', ARGV[1] .. ':x', 'f', 'a b\\n\"')"  # quoted by MONITOR
        script = redis.register_script(f"redis.call('SET', KEYS[1], ARGV[2]) {built}")
        async with watch(redis) as seen:
            await script(keys=["t:declared"], args=["t:built", "v"])
        assert {b"t:declared"} == seen.declared
        assert {b"t:declared", b"t:built:x"} == seen.touched
        assert {b"t:built:x"} == seen.undeclared
