"""SIGTERM drains: exit 0 in time, and a restarted daemon loses no event and no notification."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import redis.asyncio as aioredis

from tests.conftest import Receiver, RedisServer, free_port, wait_for

RULES = """
[[rules]]
name = "Over"
metric = "load"
window = "5m"
group_by = ["series"]
critical = "> 100"
"""

SERIES = 200


def write_config(tmp: Path, redis_url: str, receiver: Receiver) -> Path:
    (tmp / "rules").mkdir()
    (tmp / "channels").mkdir()
    (tmp / "rules" / "r.toml").write_text(RULES)
    (tmp / "channels" / "c.toml").write_text(
        f'[channels.hook]\ntype = "webhook"\nurl = "{receiver.url}/hook"\n'
        '[channels.hook.retry]\ninitial_backoff = "50ms"\nmax_backoff = "200ms"\n'
    )
    cfg = tmp / "alertd.toml"
    cfg.write_text(
        f'[redis]\nurl = "{redis_url}"\n'
        '[daemon]\nconsumer = "only"\nbatch_size = 50\nblock = "100ms"\neval_interval = "200ms"\n'
        'claim_idle = "1s"\nshutdown_timeout = "5s"\n'
        f'[http]\nlisten = "127.0.0.1:{free_port()}"\n'
        '[notify]\ngroup_by = ["alertname", "series"]\ngroup_wait = "0s"\ngroup_interval = "1s"\n'
        '[[routes]]\nchannels = ["hook"]\n'
    )
    return cfg


def start(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTD_")}
    return subprocess.Popen(
        [sys.executable, "-m", "alertd", "run", "--config", str(cfg)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=env,
    )


class TestSigterm:
    """An operator's `systemctl stop` in the middle of a burst costs nothing."""

    async def test_sigterm_mid_burst_then_restart(
        self, tmp_path: Path, redis_server: RedisServer, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        cfg = write_config(tmp_path, redis_server.url, receiver)
        log = tmp_path / "daemon.log"
        proc = start(cfg, log)
        try:
            await wait_for(lambda: b"alertd started" in log.read_bytes(), timeout_s=15)
            async with redis.pipeline(transaction=False) as pipe:
                for i in range(SERIES * 10):
                    series = f"s{i % SERIES}"
                    pipe.xadd(
                        "alertd:events",
                        {
                            "data": orjson.dumps(
                                {"name": "load", "value": 500, "labels": {"series": series}}
                            )
                        },
                    )
                await pipe.execute()
            await asyncio.sleep(0.05)  # let it get into the burst, then stop it
            stopped_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 15)
            assert 0 == code, log.read_text()[-3000:]
            assert time.monotonic() - stopped_at < 5 + 3

            proc = start(cfg, log)

            async def drained() -> bool:
                pending = (await redis.xpending("alertd:events", "alertd"))["pending"]
                groups = await redis.xinfo_groups("alertd:events")
                return pending == 0 and groups[0]["lag"] == 0

            await wait_for(drained, timeout_s=30)

            def all_notified() -> set[str]:
                seen = {
                    a["labels"]["series"]
                    for body in receiver.bodies("/hook")
                    for a in body["alerts"]
                }
                return seen if len(seen) == SERIES else set()

            seen = await wait_for(all_notified, timeout_s=30)
            assert {f"s{i}" for i in range(SERIES)} == seen
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.wait, 15)
