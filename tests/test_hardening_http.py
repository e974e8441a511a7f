"""Hardening of the HTTP listener (issue 19), against a real daemon process and real sockets."""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from alertd.http import common
from alertd.http.browser import browser_decision
from tests.conftest import DaemonFactory, Receiver, RedisServer, free_port, wait_for

RULES = """
[[rules]]
name = "QueueBacklog"
metric = "queue_depth"
window = "1m"
group_by = ["queue"]
critical = "> 10"
"""
HALF_OPEN = 300
NOFILE = 256  # the daemon's descriptor limit in these tests: fewer than the clients


@dataclass
class Daemon:
    """`alertd run` in its own process, with a lowered file descriptor limit."""

    proc: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()


def _write_config(tmp: Path, redis_url: str, receiver: Receiver, port: int) -> Path:
    (tmp / "rules").mkdir(exist_ok=True)
    (tmp / "channels").mkdir(exist_ok=True)
    (tmp / "rules" / "r.toml").write_text(RULES)
    (tmp / "channels" / "c.toml").write_text(
        f'[channels.hook]\ntype = "webhook"\nurl = "{receiver.url}/hook"\n'
        '[channels.hook.retry]\ninitial_backoff = "50ms"\nmax_backoff = "200ms"\n'
    )
    cfg = tmp / "alertd.toml"
    cfg.write_text(
        f'[redis]\nurl = "{redis_url}"\n'
        '[daemon]\nblock = "100ms"\neval_interval = "200ms"\nshutdown_timeout = "3s"\n'
        f'[http]\nlisten = "127.0.0.1:{port}"\n'
        '[notify]\ngroup_wait = "0s"\ngroup_interval = "1s"\n'
        '[[routes]]\nchannels = ["hook"]\n'
    )
    return cfg


def spawn_daemon(cfg: Path, log: Path, nofile: int | None = None) -> subprocess.Popen[bytes]:
    """`alertd run --config cfg` in its own process, its output in `log`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTD_")}

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    return subprocess.Popen(
        [sys.executable, "-m", "alertd", "run", "--config", str(cfg)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=limit,
    )


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
async def daemon(
    tmp_path: Path, redis_server: RedisServer, redis: aioredis.Redis, receiver: Receiver
) -> AsyncIterator[Daemon]:
    port = free_port()
    cfg = _write_config(tmp_path, redis_server.url, receiver, port)
    log = tmp_path / "alertd.log"
    proc = spawn_daemon(cfg, log, NOFILE)
    d = Daemon(proc, f"http://127.0.0.1:{port}", port, log)
    try:
        await wait_for(lambda: is_ready(d.url), timeout_s=30)
        yield d
    finally:
        stop_daemon(proc)


async def _status(url: str, **headers: str) -> int:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=5)) as resp,
        ):
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def is_ready(url: str) -> bool:
    return 200 == await _status(url + "/health/ready")


async def _half_open(port: int, count: int) -> list[asyncio.StreamWriter]:
    """`count` clients that send part of a request line and then nothing."""
    writers: list[asyncio.StreamWriter] = []
    for _ in range(count):
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        except (OSError, TimeoutError):
            continue  # the daemon may already have closed its oldest idle ones: fine
        writer.write(b"GET /health/ready HT")
        writers.append(writer)
    return writers


async def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the whole answer: (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").strip().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    # The answer's own length: the daemon may linger on the rest of an unread request body.
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    writer.close()
    return int(lines[0].split()[1]), headers, body


class TestHalfOpenConnections:
    """Clients that never finish a request cannot exhaust descriptors or stop a page."""

    async def test_page_arrives_and_ready_under_300_half_open(
        self, daemon: Daemon, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        writers = await _half_open(daemon.port, HALF_OPEN)
        try:
            assert 200 == await _status(daemon.url + "/health/ready")
            await redis.xadd("alertd:events", {"name": "queue_depth", "value": "50", "queue": "q"})
            pages = await wait_for(lambda: receiver.bodies("/hook"), timeout_s=30)
            assert "QueueBacklog" == pages[0]["alerts"][0]["labels"]["alertname"]
            # a second wave while the first still holds on: still ready
            writers += await _half_open(daemon.port, HALF_OPEN)
            statuses = [await _status(daemon.url + "/health/ready") for _ in range(5)]
            assert [200] * 5 == statuses
            assert daemon.proc.poll() is None
        finally:
            for w in writers:
                w.close()
        lines = daemon.log_lines()
        assert not [ln for ln in lines if "Too many open files" in ln]
        assert not [ln for ln in lines if ln.startswith("Traceback")]
        assert len(lines) < 100, f"{len(lines)} log lines"

    async def test_incomplete_headers_are_closed_after_the_deadline(self, daemon: Daemon) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
        writer.write(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")  # headers never end
        started = time.monotonic()
        data = await asyncio.wait_for(reader.read(), 30)  # the daemon closes: EOF
        writer.close()
        assert b"" == data
        assert time.monotonic() - started < 25


class TestParserErrorsAreJson:
    """What aiohttp's parser refuses is answered as JSON {"error", "details"}."""

    @pytest.mark.parametrize(
        "request_bytes",
        [
            b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 10000 + b"\r\n\r\n",
            b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"NOT A REQUEST\r\n\r\n",
            b"GET /health/live HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        ],
        ids=["long-header", "long-request-line", "bad-request-line", "bad-content-length"],
    )
    async def test_rejection_is_json(self, daemon: Daemon, request_bytes: bytes) -> None:
        status, headers, body = await _raw(daemon.port, request_bytes)
        assert 400 <= status < 500
        assert "application/json" == headers["content-type"].split(";")[0]
        answer = orjson.loads(body)
        assert ["details", "error"] == sorted(answer)
        assert 200 == await _status(daemon.url + "/health/live")


def _cross_site_cases() -> Iterator[tuple[str, dict[str, str], int, str]]:
    json_body = {"Content-Type": "application/json"}
    yield "text-plain", {"Content-Type": "text/plain"}, 415, "unsupported media type"
    yield "form", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported"
    yield "foreign-origin", {**json_body, "Origin": "http://evil.example"}, 403, "cross-site"
    yield "null-origin", {**json_body, "Origin": "null"}, 403, "cross-site"
    yield "fetch-cross-site", {**json_body, "Sec-Fetch-Site": "cross-site"}, 403, "cross-site"
    yield "rebound-host", {**json_body, "Host": "rebind.evil.example:9099"}, 403, "host not"


class TestCrossSiteWrites:
    """With no token, a web page elsewhere cannot make a local browser write to alertd."""

    @pytest.mark.parametrize(
        ("headers", "status", "error"),
        [c[1:] for c in _cross_site_cases()],
        ids=[c[0] for c in _cross_site_cases()],
    )
    async def test_browser_write_is_refused(
        self,
        daemon: Daemon,
        redis: aioredis.Redis,
        headers: dict[str, str],
        status: int,
        error: str,
    ) -> None:
        body = orjson.dumps({"name": "queue_depth", "value": 50, "labels": {"queue": "x"}})
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{daemon.url}/api/v1/events", data=body, headers=headers) as resp,
        ):
            answer = await resp.json()
        assert (status, True) == (resp.status, answer["error"].startswith(error))
        assert 0 == await redis.xlen("alertd:events")

    async def test_same_origin_json_write_is_accepted(
        self, daemon: Daemon, redis: aioredis.Redis
    ) -> None:
        headers = {"Origin": daemon.url, "Sec-Fetch-Site": "same-origin"}
        body = {"name": "queue_depth", "value": 50, "labels": {"queue": "x"}}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{daemon.url}/api/v1/events", json=body, headers=headers) as resp,
        ):
            assert 202 == resp.status
        assert 1 == await redis.xlen("alertd:events")

    def test_hosts_that_cannot_be_rebound_pass(self) -> None:
        hosts = frozenset({"127.0.0.1", "alertd.example.com"})
        actual = [
            browser_decision("GET", "/api/v1/alerts", {"Host": host}, "", hosts) is None
            for host in (
                "127.0.0.1:9099",
                "[::1]:9099",
                "localhost:9099",
                "alertd:9099",
                "alertd.example.com",
                "evil.example.com:9099",
            )
        ]
        assert [True, True, True, True, True, False] == actual

    def test_probes_are_exempt_and_a_token_lifts_the_host_check(self) -> None:
        hosts = frozenset({"127.0.0.1"})
        headers = {"Host": "lb.example.com"}
        assert browser_decision("GET", "/health/ready", headers, "", hosts) is None
        assert browser_decision("GET", "/api/v1/alerts", headers, "", None) is None

    def test_origin_behind_a_tls_proxy_is_same_site(self) -> None:
        """https://name in Origin, name in Host (the proxy ended TLS): the same site."""
        headers = {
            "Host": "alertd.example.com",
            "Origin": "https://alertd.example.com",
            "Content-Type": "application/json",
            "Content-Length": "2",
        }
        hosts = frozenset({"alertd.example.com"})
        assert browser_decision("POST", "/api/v1/silences", headers, "", hosts) is None
        other = {**headers, "Origin": "https://alertd.example.com.evil.example"}
        denial = browser_decision("POST", "/api/v1/silences", other, "", hosts)
        assert denial is not None and 403 == denial.status


class TestSlowBody:
    """A client trickling its body is answered 408 and let go, not held forever."""

    async def test_slow_body_times_out(
        self, daemons: DaemonFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(common, "BODY_TIMEOUT_S", 0.5)
        daemons.write(rules=RULES)
        app = await daemons.start(http=True)
        port = app.config.settings.http.port
        head = (
            b"POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{"
        )
        status, _, body = await _raw(port, head)
        assert (408, "request timeout") == (status, orjson.loads(body)["error"])
