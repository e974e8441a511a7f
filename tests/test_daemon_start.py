"""`alertd run` when the outside world is not as expected: a Redis that does not answer
is named once (masked, with where its address came from), a taken port stops the start
before anything is written to Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis as syncredis

from tests.conftest import RedisServer, free_port

ALERTD = Path(sys.executable).with_name("alertd")
CONFIG = """
[daemon]
block = "100ms"
eval_interval = "200ms"
shutdown_timeout = "2s"
[[routes]]
channels = ["log"]
"""


def env_with(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTD_")}
    return {**env, **overrides}


def records(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            out.append({"event": line})
    return out


def wait_for_record(log: Path, event: str, timeout_s: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [r for r in records(log) if r.get("event") == event]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no {event!r} in {log.read_text()[-2000:]}")


def live_for(listen: str, seconds: float) -> list[int]:
    """Status codes of /health/live, probed for `seconds`."""
    codes = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        try:
            with urllib.request.urlopen(f"http://{listen}/health/live", timeout=2) as resp:
                codes.append(resp.status)
        except urllib.error.HTTPError as exc:
            codes.append(exc.code)
        except OSError:
            codes.append(0)  # not listening yet, or not any more
    return codes


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Started daemons, stopped (SIGTERM, then SIGKILL) after the test."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def start(
    tmp_path: Path, env: dict[str, str], procs: list[Any], config: str = CONFIG, rules: str = ""
) -> Path:
    """`alertd run` in `tmp_path` with `config` (and `rules` as rules/test.toml); its log."""
    (tmp_path / "alertd.toml").write_text(config)
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "test.toml").write_text(rules)
    log = tmp_path / "alertd.log"
    with log.open("wb") as out:
        procs.append(
            subprocess.Popen(
                [str(ALERTD), "run"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        )
    return log


class TestRedisAway:
    """A daemon started without Redis says which Redis, once, and says when it is back."""

    def test_named_once_then_back(self, tmp_path: Path, daemon: list[Any]) -> None:
        port = free_port()
        url = f"redis://:s3cr3tpw@127.0.0.1:{port}/0"
        env = env_with(ALERTD_REDIS_URL=url, ALERTD_HTTP_LISTEN=f"127.0.0.1:{free_port()}")
        log = start(tmp_path, env, daemon)

        first = wait_for_record(
            log, "cannot reach Redis; alertd keeps trying and resumes when it answers"
        )
        assert (f"redis://:***@127.0.0.1:{port}/0", "ALERTD_REDIS_URL", "error") == (
            first["redis"],
            first["redis_from"],
            first["level"],
        )
        assert f"Error 111 connecting to 127.0.0.1:{port}" in first["error"]
        started = wait_for_record(log, "alertd started")
        assert f"redis://:***@127.0.0.1:{port}/0" == started["redis"]
        # Every component retries meanwhile, and says so once, not on every retry; the
        # daemon stays live (3 s of probes: the stretch of outage the lines are counted over).
        probes = live_for(env["ALERTD_HTTP_LISTEN"], 3.0)
        assert {200} == set(probes)
        quiet = records(log)
        warnings = [r["event"] for r in quiet if r.get("level") in ("warning", "error")]
        assert len(warnings) == len(set(warnings)), warnings

        server = RedisServer(port, tmp_path, extra_args=["--requirepass", "s3cr3tpw"])
        server.start()
        try:
            back = wait_for_record(log, "Redis answers again")
            assert "ALERTD_REDIS_URL" == back["redis_from"]
            wait_for_record(log, "consumer group created")
        finally:
            daemon[0].send_signal(signal.SIGTERM)
            daemon[0].wait(15)
            server.stop()
        assert "s3cr3tpw" not in log.read_text()

    def test_wrong_password_is_named_as_such(self, tmp_path: Path, daemon: list[Any]) -> None:
        port = free_port()
        server = RedisServer(port, tmp_path, extra_args=["--requirepass", "right-one"])
        server.start()
        try:
            url = f"redis://:wrong-one@127.0.0.1:{port}/0"
            env = env_with(ALERTD_REDIS_URL=url, ALERTD_HTTP_LISTEN=f"127.0.0.1:{free_port()}")
            log = start(tmp_path, env, daemon)

            line = wait_for_record(
                log, "Redis refuses alertd's login; check the user and password in the URL"
            )
        finally:
            daemon[0].send_signal(signal.SIGTERM)
            daemon[0].wait(15)
            server.stop()
        assert (f"redis://:***@127.0.0.1:{port}/0", "ALERTD_REDIS_URL") == (
            line["redis"],
            line["redis_from"],
        )
        assert "wrong-one" not in log.read_text()


class TestPortInUse:
    """A taken HTTP port stops the start with a hint, before the consumer group exists."""

    def test_one_line_and_no_group(
        self, tmp_path: Path, redis_server: RedisServer, daemon: list[Any]
    ) -> None:
        client = syncredis.Redis.from_url(redis_server.url)
        client.delete("alertd:events")
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            env = env_with(
                ALERTD_REDIS_URL=redis_server.url, ALERTD_HTTP_LISTEN=f"127.0.0.1:{port}"
            )
            (tmp_path / "alertd.toml").write_text(CONFIG)
            result = subprocess.run(
                [str(ALERTD), "run"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )

        assert 1 == result.returncode
        assert "Traceback" not in result.stderr
        assert (
            f"alertd: cannot listen on 127.0.0.1:{port} (from ALERTD_HTTP_LISTEN): port {port} "
            "is in use (another alertd running? `ss -ltnp` shows who); set ALERTD_HTTP_LISTEN "
            "to a free HOST:PORT"
        ) == result.stderr.strip()
        assert 0 == client.exists("alertd:events")

    def test_port_from_the_file_names_the_key(
        self, tmp_path: Path, redis_server: RedisServer, daemon: list[Any]
    ) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            (tmp_path / "alertd.toml").write_text(CONFIG + f'[http]\nlisten = "127.0.0.1:{port}"\n')
            result = subprocess.run(
                [str(ALERTD), "run"],
                cwd=tmp_path,
                env=env_with(ALERTD_REDIS_URL=redis_server.url),
                capture_output=True,
                text=True,
                timeout=30,
            )

        assert 1 == result.returncode
        assert result.stderr.strip().endswith("set http.listen in alertd.toml to a free HOST:PORT")
