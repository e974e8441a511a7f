"""A Redis restart is waited out: the daemon keeps running and picks up where it was."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from tests.conftest import DaemonFactory, Receiver, RedisServer, wait_for

RULES = """
[[rules]]
name = "Over"
metric = "load"
group_by = ["series"]
critical = "> 100"
"""


class TestRedisOutage:
    """Redis going away for a while never stops alertd."""

    async def test_daemon_survives_redis_restart(
        self,
        tmp_path_factory: object,
        private_redis: RedisServer,
        receiver: Receiver,
        redis: aioredis.Redis,
    ) -> None:
        factory = DaemonFactory(private_redis.dir / "cfg", private_redis.url)
        factory.dir.mkdir()
        factory.write(
            RULES,
            f'[channels.hook]\ntype = "webhook"\nurl = "{receiver.url}/hook"\n',
            '\n[[routes]]\nchannels = ["hook"]\n',
        )
        app = await factory.start()
        client = aioredis.Redis.from_url(private_redis.url)
        try:
            await client.xadd("alertd:events", {"name": "load", "value": "500", "series": "before"})
            await wait_for(lambda: receiver.bodies("/hook"))

            private_redis.stop()
            await asyncio.sleep(1.0)  # the outage itself: the daemon must ride it out
            assert not any(t.done() for t in app._tasks)
            private_redis.start()

            await client.xadd("alertd:events", {"name": "load", "value": "500", "series": "after"})

            def saw_after() -> bool:
                return any(
                    a["labels"]["series"] == "after"
                    for b in receiver.bodies("/hook")
                    for a in b["alerts"]
                )

            await wait_for(saw_after, timeout_s=20)
        finally:
            await client.aclose()
            await factory.stop(app)
