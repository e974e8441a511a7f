"""`make demo`: a whole incident against a real alertd, on your terminal, in about 80 s.

Starts, all on loopback and all stopped again at the end (or on Ctrl-C):
  - a private redis-server on a free port (its files in a temp dir),
  - an SMTP catcher (aiosmtpd) and a webhook receiver (aiohttp) that checks
    every Standard Webhooks signature,
  - `alertd run --config config/demo/alertd.toml` as a subprocess,
then publishes the events of a service that degrades (error rate, latency,
queue depth, disk space, a worker whose heartbeat stops) and recovers, and
prints each notification as it arrives at the email, webhook and log channels.

ALERTD_DEMO_FAST=1 plays it in about 20 s (for the test suite); ALERTD_DEMO_KEEP=1
keeps the temp dir with alertd's log.
Exit status 0 when every channel saw the alerts fire and resolve.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import ClientSession, ClientTimeout, web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing: alertd.client

from alertd.client import apublish  # noqa: E402

try:
    from aiosmtpd.smtp import SMTP
    from standardwebhooks import Webhook, WebhookVerificationError
except ImportError as exc:  # pragma: no cover - the dev extras are missing
    sys.exit(f"demo: {exc.name} is missing; run `make demo` (installs the dev extras)")

CONFIG = ROOT / "config" / "demo" / "alertd.toml"
SERVICE = "checkout"
CHANNELS = ("email", "webhook", "log")


@dataclass(frozen=True)
class Timeline:
    """How long each act lasts, in seconds from the first event."""

    healthy_s: float  # normal traffic
    ramp_s: float  # errors, latency, queue and disk get worse; the heartbeat stops halfway
    hold_s: float  # the worst of it
    recover_s: float  # the fix rolls out
    settle_s: float  # healthy again, at least this long, until every alert resolved
    deadline_s: float  # stop regardless
    tick_s: float = 0.25

    @property
    def recovery_at(self) -> float:
        return self.healthy_s + self.ramp_s + self.hold_s


NORMAL = Timeline(healthy_s=8, ramp_s=30, hold_s=8, recover_s=6, settle_s=20, deadline_s=110)
FAST = Timeline(healthy_s=2, ramp_s=4, hold_s=3, recover_s=1, settle_s=3, deadline_s=32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- what the terminal shows ----------------------------------------------------------


@dataclass
class Seen:
    """One notification as a receiver got it."""

    channel: str
    status: str  # firing | resolved
    alerts: list[tuple[str, str, str]]  # (alertname, severity, service) per alert


@dataclass
class Board:
    """Every notification so far, and per channel the last status of every alert."""

    started: float = field(default_factory=time.monotonic)
    seen: list[Seen] = field(default_factory=list)
    last: dict[str, dict[tuple[str, str], str]] = field(
        default_factory=lambda: {c: {} for c in CHANNELS}
    )
    problems: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        print(f"{time.monotonic() - self.started:6.1f}s  {text}", flush=True)

    def add(self, n: Seen) -> None:
        self.seen.append(n)
        for name, severity, service in n.alerts:
            self.last[n.channel][(name, service)] = n.status
            self.say(
                f"{n.channel:<8} {n.status.upper():<9} {name:<23} {severity:<9} service={service}"
            )

    def problem(self, text: str) -> None:
        self.problems.append(text)
        self.say(f"PROBLEM  {text}")

    def all_resolved(self) -> bool:
        """Every channel saw something fire, and its last word on every alert is resolved."""
        return all(
            self.last[c] and all(s == "resolved" for s in self.last[c].values()) for c in CHANNELS
        )

    def count(self, channel: str, status: str) -> int:
        return sum(1 for n in self.seen if n.channel == channel and n.status == status)


# --- receivers ------------------------------------------------------------------------

SUBJECT = re.compile(r"^\[(?P<status>\w+)\] (?P<name>\S+) ?(?P<severity>\S*) ?(?P<service>\S*)")


class MailCatcher:
    """aiosmtpd handler: one line per message (subject: "[status] alertname severity service")."""

    def __init__(self, board: Board) -> None:
        self.board = board

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        m = SUBJECT.match(str(msg["Subject"] or ""))
        if m is None:
            self.board.problem(f"email with an unexpected subject: {msg['Subject']!r}")
        else:
            alert = (m["name"], m["severity"] or "?", m["service"] or "?")
            self.board.add(Seen("email", m["status"], [alert]))
        return "250 OK"


def webhook_app(board: Board, secret: str) -> web.Application:
    verifier = Webhook(secret)

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            payload = verifier.verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            board.problem(f"webhook signature rejected: {exc}")
            return web.Response(status=401, text="bad signature")
        alerts = [
            (
                a["labels"].get("alertname", "?"),
                a["labels"].get("severity", "?"),
                a["labels"].get("service", "?"),
            )
            for a in payload["alerts"]
        ]
        board.add(Seen("webhook", payload["status"], alerts))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", receive)
    return app


def log_line(board: Board, line: bytes, sink: Any) -> None:
    """One line of the daemon's stdout: kept in its log file; log-channel notifications shown."""
    sink.write(line)
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return
    if not isinstance(entry, dict):
        return
    if entry.get("event") == "notification" and entry.get("channel") == "log":
        alerts = [
            (
                a["labels"].get("alertname", "?"),
                a["labels"].get("severity", "?"),
                a["labels"].get("service", "?"),
            )
            for a in entry.get("alerts", [])
        ]
        board.add(Seen("log", str(entry.get("status")), alerts))
    elif entry.get("level") in ("error", "critical"):
        board.say(f"alertd   {entry.get('level')}: {entry.get('event')} {entry.get('error', '')}")


# --- the incident ---------------------------------------------------------------------


def severity_of(t: float, tl: Timeline) -> float:
    """How bad things are at `t`: 0 healthy .. 1 worst."""
    if t < tl.healthy_s:
        return 0.0
    if t < tl.healthy_s + tl.ramp_s:
        return (t - tl.healthy_s) / tl.ramp_s
    if t < tl.recovery_at:
        return 1.0
    return max(0.0, 1.0 - (t - tl.recovery_at) / tl.recover_s)


async def play(
    board: Board, client: aioredis.Redis, tl: Timeline, done: Callable[[float], bool]
) -> None:
    """Publish one tick of traffic at a time until `done(t)` says the story is over."""
    rng = random.Random(7)
    acts = [
        (0.0, f"act 1: {SERVICE} is healthy (200 req/s, 0.5% errors, p95 ~160ms)"),
        (tl.healthy_s, "act 2: a bad deploy: errors, latency, queue depth rise; disk fills up"),
        (tl.recovery_at, "act 3: rolled back: everything recovers, the worker is back"),
    ]
    began = time.monotonic()
    next_tick = began
    heartbeat_off_said = False
    while True:
        t = time.monotonic() - began
        if done(t):
            return
        while acts and t >= acts[0][0]:
            board.say(f"-------- {acts.pop(0)[1]}")
        p = severity_of(t, tl)
        # The worker stops beating halfway into act 2 and restarts with the rollback.
        beating = t < tl.healthy_s + tl.ramp_s / 2 or t >= tl.recovery_at
        if not beating and not heartbeat_off_said:
            heartbeat_off_said = True
            board.say("-------- the email worker hangs: its heartbeat stops")
        requests = 50  # per tick of 0.25 s
        error_ratio = 0.005 + 0.14 * p
        errors = sum(1 for _ in range(requests) if rng.random() < error_ratio)
        labels = {"service": SERVICE}
        publish: list[tuple[str, float, dict[str, str]]] = [
            ("http_requests_total", requests, labels),
            ("http_errors_total", errors, labels),
            ("queue_depth", 120 + 6500 * p * p + rng.uniform(-20, 20), {**labels, "queue": "emails"}),
            ("disk_free_percent", 38 - 35 * p, {**labels, "mountpoint": "/var"}),
        ]
        base_latency_s = 0.1 + 0.7 * p
        publish += [
            ("http_request_duration_seconds", base_latency_s * math.exp(rng.gauss(0, 0.3)), labels)
            for _ in range(5)
        ]
        if beating:
            publish.append(("worker_heartbeat", 1.0, labels))
        for name, value, event_labels in publish:
            await apublish(name, float(value), event_labels, client=client)
        next_tick += tl.tick_s
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))


# --- processes ------------------------------------------------------------------------


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("demo: redis-server is not on PATH (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + ["--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches the demo, which stops it in order
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    proc.kill()
    sys.exit("demo: redis-server did not start")


async def stop_process(proc: Any, name: str, board: Board, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`; works for Popen and asyncio processes."""
    if proc.returncode is not None or (isinstance(proc, subprocess.Popen) and proc.poll() is not None):
        return
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if isinstance(proc, subprocess.Popen):
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.05)
            if proc.returncode is not None:
                break
    else:
        board.say(f"{name} did not stop in {timeout_s:g}s: killed")
        proc.kill()
        if isinstance(proc, subprocess.Popen):
            proc.wait()
        else:
            await proc.wait()
    board.say(f"stopped {name} (pid {proc.pid})")


async def wait_ready(url: str, daemon: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with ClientSession(timeout=ClientTimeout(total=1)) as http:
        while time.monotonic() < deadline:
            if daemon.returncode is not None:
                raise RuntimeError(f"alertd exited with status {daemon.returncode}")
            with contextlib.suppress(OSError, TimeoutError):
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"alertd was not ready within {timeout_s:g}s")


async def pump(stream: asyncio.StreamReader, board: Board, sink: Any) -> None:
    while line := await stream.readline():
        log_line(board, line, sink)


async def main() -> int:
    fast = os.environ.get("ALERTD_DEMO_FAST", "") not in ("", "0")
    tl = FAST if fast else NORMAL
    board = Board()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    workdir = Path(tempfile.mkdtemp(prefix="alertd-demo-"))
    redis_proc: subprocess.Popen[bytes] | None = None
    daemon: asyncio.subprocess.Process | None = None
    smtp_server: asyncio.Server | None = None
    runner: web.AppRunner | None = None
    client: aioredis.Redis | None = None
    pump_task: asyncio.Task[None] | None = None
    log_file = (workdir / "alertd.log").open("wb")
    outcome = 1
    try:
        redis_proc, redis_url = start_redis(workdir)
        board.say(f"started redis-server (pid {redis_proc.pid}) at {redis_url}")

        smtp_port = free_port()
        smtp_server = await loop.create_server(
            lambda: SMTP(MailCatcher(board), hostname="demo.local"), "127.0.0.1", smtp_port
        )
        board.say(f"started SMTP catcher on 127.0.0.1:{smtp_port}")

        secret = "whsec_" + b64encode(secrets.token_bytes(24)).decode()
        hook_port = free_port()
        runner = web.AppRunner(webhook_app(board, secret), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", hook_port).start()
        board.say(f"started webhook receiver on http://127.0.0.1:{hook_port}/hook (signed)")

        http_listen = f"127.0.0.1:{free_port()}"
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "ALERTD_REDIS_URL": redis_url,
            "ALERTD_HTTP_LISTEN": http_listen,
            "ALERTD_DEMO_SMTP_PORT": str(smtp_port),
            "ALERTD_DEMO_WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/hook",
            "ALERTD_DEMO_WEBHOOK_SECRET": secret,
        }
        env.pop("ALERTD_CONFIG", None)
        daemon = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "alertd",
            "run",
            "--config",
            str(CONFIG),
            env=env,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        assert daemon.stdout is not None
        pump_task = asyncio.create_task(pump(daemon.stdout, board, log_file))
        await wait_ready(f"http://{http_listen}/health/ready", daemon)
        board.say(f"started alertd (pid {daemon.pid}), config {CONFIG.relative_to(ROOT)}")
        board.say(f"api http://{http_listen}  (try: curl -s http://{http_listen}/api/v1/alerts)")

        client = aioredis.Redis.from_url(redis_url)

        def done(t: float) -> bool:
            if stop.is_set() or t >= tl.deadline_s:
                return True
            return t >= tl.recovery_at + tl.recover_s + tl.settle_s and board.all_resolved()

        await play(board, client, tl, done)
        if stop.is_set():
            board.say("interrupted")
        outcome = verdict(board)
    except RuntimeError as exc:
        board.problem(str(exc))
    finally:
        if client is not None:
            await client.aclose()
        if daemon is not None:
            await stop_process(daemon, "alertd", board, timeout_s=10)
        if pump_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(pump_task, 5)
        if runner is not None:
            await runner.cleanup()
            board.say("stopped webhook receiver")
        if smtp_server is not None:
            smtp_server.close()
            await smtp_server.wait_closed()
            board.say("stopped SMTP catcher")
        if redis_proc is not None:
            await stop_process(redis_proc, "redis-server", board, timeout_s=5)
        log_file.close()
        if outcome != 0 and (workdir / "alertd.log").exists():
            tail = (workdir / "alertd.log").read_text(errors="replace").splitlines()[-15:]
            print("last lines of alertd's log:", *tail, sep="\n  ", flush=True)
        if os.environ.get("ALERTD_DEMO_KEEP"):
            print(f"alertd's log is kept in {workdir / 'alertd.log'}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return outcome


def verdict(board: Board) -> int:
    counts = ", ".join(
        f"{c} {board.count(c, 'firing')} firing / {board.count(c, 'resolved')} resolved"
        for c in CHANNELS
    )
    board.say(f"notifications: {counts}")
    for c in CHANNELS:
        if not board.count(c, "firing") or not board.count(c, "resolved"):
            board.problem(f"{c} did not get both firing and resolved notifications")
        open_alerts = sorted(k[0] for k, s in board.last[c].items() if s != "resolved")
        if open_alerts:
            board.problem(f"{c}: still firing at the end: {', '.join(open_alerts)}")
    if board.problems:
        return 1
    board.say("demo complete: every alert fired and resolved on every channel")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
