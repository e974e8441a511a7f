"""`make demo`: a whole incident against a real alertd, on your terminal, in about 70 s.

Starts, all on loopback and all stopped again at the end (or on Ctrl-C):
  - a private redis-server on a free port (its files in a temp dir),
  - an SMTP catcher (aiosmtpd) and a webhook receiver (aiohttp) that checks
    every Standard Webhooks signature,
  - `alertd run --config config/demo/alertd.toml` as a subprocess,
then publishes the events of a service that degrades (error rate, latency,
queue depth, disk space, a worker whose heartbeat stops) and recovers, and
prints each change (an alert fired, escalated, eased or resolved) once, with the
channels (email, webhook, log) that told it.

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
from typing import Any, BinaryIO

import orjson
import redis.asyncio as aioredis
from aiohttp import ClientSession, ClientTimeout, web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing: alertd.client

from alertd.client import apublish  # noqa: E402
from scripts.ensure_redis import redis_server_binary  # noqa: E402

try:
    from aiosmtpd.smtp import SMTP
    from standardwebhooks import Webhook, WebhookVerificationError
except ImportError as exc:  # pragma: no cover - the dev extras are missing
    sys.exit(f"demo: {exc.name} is missing; run `make demo` (installs the dev extras)")

CONFIG = ROOT / "config" / "demo" / "alertd.toml"
SERVICE = "checkout"
CHANNELS = ("email", "webhook", "log")
# The rules of config/demo/rules/demo.toml: the story makes every one of them fire.
ALERTS = (
    "HighErrorRate",
    "HighLatency",
    "QueueBacklog",
    "DiskSpaceLow",
    "WorkerHeartbeatMissing",
)


@dataclass(frozen=True)
class Timeline:
    """How long each act lasts, in seconds from the first event."""

    healthy_s: float  # normal traffic
    ramp_s: float  # errors, latency, queue and disk get worse; the heartbeat stops halfway
    hold_s: float  # the worst of it
    recover_s: float  # the fix rolls out
    settle_s: float  # healthy again, at least this long, until every alert resolved
    deadline_s: float  # stop regardless
    heartbeat_stops_s: float  # into act 2; it restarts with the rollback
    tick_s: float = 0.25

    @property
    def recovery_at(self) -> float:
        return self.healthy_s + self.ramp_s + self.hold_s


NORMAL = Timeline(
    healthy_s=8, ramp_s=30, hold_s=8, recover_s=6, settle_s=10, deadline_s=110, heartbeat_stops_s=15
)
# Every alert must fire for longer than group_wait (2s), or no one is told of it.
FAST = Timeline(
    healthy_s=2, ramp_s=4, hold_s=4, recover_s=1, settle_s=3, deadline_s=35, heartbeat_stops_s=0
)


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


SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
# How long a line waits for the other channels to report the same change.
GATHER_S = 3.0


@dataclass
class Change:
    """One change of one alert (fired, severity up or down, resolved), as channels report it."""

    kind: str  # FIRING | ESCALATED | EASED | RESOLVED
    name: str
    severity: str
    service: str
    first_seen: float
    channels: list[str] = field(default_factory=list)


@dataclass
class Board:
    """Every notification so far, and per channel the last status of every alert.

    A notification carries its whole group, so most alerts in it did not change: the
    terminal shows only changes, one line per change with the channels that told it.
    """

    started: float = field(default_factory=time.monotonic)
    seen: list[Seen] = field(default_factory=list)
    last: dict[str, dict[tuple[str, str], str]] = field(
        default_factory=lambda: {c: {} for c in CHANNELS}
    )
    told: dict[str, dict[tuple[str, str], tuple[str, str]]] = field(
        default_factory=lambda: {c: {} for c in CHANNELS}
    )
    gathering: dict[tuple[str, str, str, str], Change] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def say(self, text: str, at: float | None = None) -> None:
        now = time.monotonic() if at is None else at
        print(f"{now - self.started:6.1f}s  {text}", flush=True)

    def add(self, n: Seen) -> None:
        self.seen.append(n)
        for name, severity, service in n.alerts:
            self.last[n.channel][(name, service)] = n.status
            before = self.told[n.channel].get((name, service))
            self.told[n.channel][(name, service)] = (n.status, severity)
            kind = change_kind(before, n.status, severity)
            if kind is None:
                continue  # listed again with its group; nothing about it changed
            key = (kind, name, severity, service)
            change = self.gathering.setdefault(
                key, Change(kind, name, severity, service, time.monotonic())
            )
            change.channels.append(n.channel)
        self.flush()

    def flush(self, everything: bool = False) -> None:
        """Print the changes every channel reported (or that waited long enough)."""
        now = time.monotonic()
        for key, c in sorted(self.gathering.items(), key=lambda kv: kv[1].first_seen):
            if everything or set(CHANNELS) <= set(c.channels) or now - c.first_seen > GATHER_S:
                del self.gathering[key]
                channels = ", ".join(ch for ch in CHANNELS if ch in c.channels)
                self.say(
                    f"{c.kind:<9} {c.name:<23} {c.severity:<9} service={c.service:<10} {channels}",
                    at=c.first_seen,
                )

    def problem(self, text: str) -> None:
        self.flush(everything=True)
        self.problems.append(text)
        self.say(f"PROBLEM  {text}")

    def all_resolved(self) -> bool:
        """Every channel saw something fire, and its last word on every alert is resolved."""
        return all(
            self.last[c] and all(s == "resolved" for s in self.last[c].values()) for c in CHANNELS
        )

    def count(self, channel: str, status: str) -> int:
        return sum(1 for n in self.seen if n.channel == channel and n.status == status)


def change_kind(before: tuple[str, str] | None, status: str, severity: str) -> str | None:
    """What a channel's news about one alert means, given what it said before (None: no news)."""
    if status == "resolved":
        return None if before is not None and before[0] == "resolved" else "RESOLVED"
    if before is None or before[0] == "resolved":
        return "FIRING"
    if before[1] == severity:
        return None
    worse = SEVERITY_RANK.get(severity, 0) > SEVERITY_RANK.get(before[1], 0)
    return "ESCALATED" if worse else "EASED"


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
        # The worker stops beating during act 2 and restarts with the rollback.
        beating = t < tl.healthy_s + tl.heartbeat_stops_s or t >= tl.recovery_at
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
            (
                "queue_depth",
                120 + 6500 * p * p + rng.uniform(-20, 20),
                {**labels, "queue": "emails"},
            ),
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
        board.flush()
        next_tick += tl.tick_s
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))


# --- what the demo starts, and stops again ---------------------------------------------


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [binary, *args, "--dir", str(workdir)],
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
    proc.wait()
    raise RuntimeError("redis-server did not start")


async def wait_ready(url: str, daemon: asyncio.subprocess.Process, timeout_s: float = 20) -> None:
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


async def pump(stream: asyncio.StreamReader, board: Board, sink: BinaryIO) -> None:
    while line := await stream.readline():
        log_line(board, line, sink)


@dataclass
class Stack:
    """Everything the demo runs, started in order and stopped in reverse."""

    board: Board
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="alertd-demo-")))
    redis_proc: subprocess.Popen[bytes] | None = None
    redis_url: str = ""
    smtp: asyncio.Server | None = None
    hook: web.AppRunner | None = None
    daemon: asyncio.subprocess.Process | None = None
    pump: asyncio.Task[None] | None = None
    log_file: BinaryIO | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "alertd.log"

    async def start(self) -> None:
        say = self.board.say
        self.redis_proc, self.redis_url = start_redis(self.workdir)
        say(f"started redis-server (pid {self.redis_proc.pid}) at {self.redis_url}")

        smtp_port = free_port()
        self.smtp = await asyncio.get_running_loop().create_server(
            lambda: SMTP(MailCatcher(self.board), hostname="demo.local"), "127.0.0.1", smtp_port
        )
        say(f"started SMTP catcher on 127.0.0.1:{smtp_port}")

        secret = "whsec_" + b64encode(secrets.token_bytes(24)).decode()
        hook_port = free_port()
        self.hook = web.AppRunner(webhook_app(self.board, secret), access_log=None)
        await self.hook.setup()
        await web.TCPSite(self.hook, "127.0.0.1", hook_port).start()
        say(f"started webhook receiver on http://127.0.0.1:{hook_port}/hook (checks signatures)")

        listen = f"127.0.0.1:{free_port()}"
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "ALERTD_REDIS_URL": self.redis_url,
            "ALERTD_HTTP_LISTEN": listen,
            "ALERTD_DEMO_SMTP_PORT": str(smtp_port),
            "ALERTD_DEMO_WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/hook",
            "ALERTD_DEMO_WEBHOOK_SECRET": secret,
        }
        env.pop("ALERTD_CONFIG", None)
        self.log_file = self.log_path.open("wb")
        self.daemon = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "alertd", "run", "--config", str(CONFIG)),
            env=env,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        if self.daemon.stdout is not None:
            self.pump = asyncio.create_task(pump(self.daemon.stdout, self.board, self.log_file))
        await wait_ready(f"http://{listen}/health/ready", self.daemon)
        say(f"started alertd (pid {self.daemon.pid}) with {CONFIG.relative_to(ROOT)}")
        say(f"its API: curl -s http://{listen}/api/v1/alerts")

    async def stop(self) -> None:
        if self.daemon is not None and self.daemon.returncode is None:
            self.daemon.send_signal(signal.SIGTERM)  # drains deliveries in hand, then exits
            try:
                await asyncio.wait_for(self.daemon.wait(), 10)
            except TimeoutError:
                self.daemon.kill()
                await self.daemon.wait()
            self.board.say(f"stopped alertd (pid {self.daemon.pid})")
        if self.pump is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.pump, 5)
        if self.hook is not None:
            await self.hook.cleanup()
            self.board.say("stopped webhook receiver")
        if self.smtp is not None:
            self.smtp.close()
            await self.smtp.wait_closed()
            self.board.say("stopped SMTP catcher")
        if self.redis_proc is not None and self.redis_proc.poll() is None:
            self.redis_proc.terminate()
            try:
                self.redis_proc.wait(5)
            except subprocess.TimeoutExpired:
                self.redis_proc.kill()
                self.redis_proc.wait()
            self.board.say(f"stopped redis-server (pid {self.redis_proc.pid})")
        if self.log_file is not None:
            self.log_file.close()

    def show_log_tail(self, lines: int = 15) -> None:
        if self.log_path.exists():
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
            print("last lines of alertd's log:", *tail, sep="\n  ", flush=True)

    def remove_files(self) -> None:
        if os.environ.get("ALERTD_DEMO_KEEP"):
            print(f"alertd's log is kept in {self.log_path}", flush=True)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def verdict(board: Board) -> int:
    board.flush(everything=True)
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
        never = [name for name in ALERTS if name not in {k[0] for k in board.last[c]}]
        if never:
            board.problem(f"{c}: never heard of {', '.join(never)}")
    if board.problems:
        return 1
    board.say("demo complete: every alert fired and resolved on every channel")
    return 0


async def main() -> int:
    fast = os.environ.get("ALERTD_DEMO_FAST", "") not in ("", "0")
    tl = FAST if fast else NORMAL
    board = Board()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    stack = Stack(board)
    outcome = 1
    try:
        await stack.start()

        def done(t: float) -> bool:
            if stack.daemon is not None and stack.daemon.returncode is not None:
                board.problem(f"alertd exited with status {stack.daemon.returncode}")
                return True
            if stop.is_set() or t >= tl.deadline_s:
                return True
            return t >= tl.recovery_at + tl.recover_s + tl.settle_s and board.all_resolved()

        client = aioredis.Redis.from_url(stack.redis_url)
        try:
            await play(board, client, tl, done)
        finally:
            await client.aclose()
        if stop.is_set():
            board.say("interrupted: stopping everything the demo started")
            outcome = 130
        else:
            outcome = verdict(board)
    except RuntimeError as exc:
        board.problem(str(exc))
    finally:
        await stack.stop()
        if outcome not in (0, 130):
            stack.show_log_tail()
        stack.remove_files()
    return outcome


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
