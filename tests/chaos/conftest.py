"""The chaos harness: real daemons as subprocesses, a restartable Redis with AOF, and
receivers that can be made to fail on purpose.

Everything here runs for real: `alertd run` processes (so kill -9 is a real crash),
a redis-server that is stopped with SIGTERM and started again on the same port and
directory (so its append-only file is reloaded), an aiohttp webhook receiver in the
test's event loop and an aiosmtpd server in its own thread. Both receivers record
every request they get, with the notification id and the alerts it carried.
"""

from __future__ import annotations

import asyncio
import email
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from tests.conftest import RedisServer, free_port

STREAM = "alertd:events"
GROUP = "alertd"
THRESHOLD = 100.0

RULES = """
[[rules]]
name = "Over"
metric = "load"
window = "5m"
group_by = ["series"]
critical = "> 100"
summary = "{series} at {value:.0f}"
"""

# Retries must outlast every fault the schedule injects (a few seconds each).
CHANNELS = """
[channels.hook]
type = "webhook"
url = "{hook_url}"
[channels.hook.retry]
attempts = 20
initial_backoff = "100ms"
max_backoff = "1s"
timeout = "1s"

[channels.mail]
type = "email"
host = "127.0.0.1"
port = {smtp_port}
security = "none"
from = "alertd@chaos.test"
to = ["oncall@chaos.test"]
[channels.mail.retry]
attempts = 20
initial_backoff = "100ms"
max_backoff = "1s"
timeout = "1s"
"""

DAEMON = """
[redis]
url = "{redis_url}"
[daemon]
consumer = "{name}"
batch_size = 200
block = "500ms"
eval_interval = "1s"
claim_idle = "1s"
shutdown_timeout = "3s"
[http]
listen = "127.0.0.1:{http_port}"
[notify]
group_by = ["alertname", "series"]
group_wait = "0s"
group_interval = "1s"
repeat_interval = "1h"
[[routes]]
channels = ["hook", "mail"]
[logging]
level = "info"
"""


@dataclass
class Delivery:
    """One request a receiver got: the notification id and (series, status, startsAt) per alert."""

    channel: str
    id: str
    status: str
    alerts: list[tuple[str, str, str]]
    at: float
    accepted: bool  # the receiver answered 2xx (250 for SMTP) in time


# --- webhook ----------------------------------------------------------------------------


@dataclass
class ChaosWebhook:
    """An aiohttp receiver that answers 200, or 503, or hangs, as the fault injector says."""

    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    fail_until: float = 0.0  # answer 503 until then (monotonic)
    hang_until: float = 0.0  # hold requests past the sender's timeout until then
    hang_s: float = 2.5
    requests: int = 0
    answered_503: int = 0
    hung: int = 0
    _runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.requests += 1
        alerts = [
            (a["labels"].get("series", ""), a["status"], a["startsAt"]) for a in body["alerts"]
        ]
        now = time.monotonic()
        delivery = Delivery("hook", body["id"], body["status"], alerts, time.time(), False)
        self.deliveries.append(delivery)
        if now < self.hang_until:
            self.hung += 1
            await asyncio.sleep(self.hang_s)  # the sender gave up after its 1 s timeout
            return web.Response(status=200, text="too late")
        if now < self.fail_until:
            self.answered_503 += 1
            return web.Response(status=503, text="chaos: unavailable")
        delivery.accepted = True
        return web.Response(status=200, text="ok")

    async def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/hook"
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# --- SMTP -------------------------------------------------------------------------------

_ULID_IN_MSGID = re.compile(r"\.([0-9A-HJKMNP-TV-Z]{26})@")
_ALERT_HEAD = re.compile(r"^\[(FIRING|RESOLVED)\] ")


def alerts_of_email(text: str) -> list[tuple[str, str, str]]:
    """(series, status, started) of each alert in alertd's plain-text email body."""
    out: list[tuple[str, str, str]] = []
    status = series = started = ""
    for line in text.splitlines():
        head = _ALERT_HEAD.match(line)
        if head:
            if status:
                out.append((series, status, started))
            status, series, started = head.group(1).lower(), "", ""
        elif line.startswith("  Labels: "):
            labels = dict(p.split("=", 1) for p in line[len("  Labels: ") :].split(", "))
            series = labels.get("series", "")
        elif line.startswith("  Started: "):
            started = line[len("  Started: ") :]
    if status:
        out.append((series, status, started))
    return out


class _SmtpHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(message, EmailMessage)
        found = _ULID_IN_MSGID.search(str(message["Message-ID"]))
        body = message.get_body(("plain",))
        text = body.get_content() if isinstance(body, EmailMessage) else ""
        subject = str(message["Subject"])
        status = "resolved" if subject.startswith("[resolved]") else "firing"
        self.sink.deliveries.append(
            Delivery(
                "mail",
                found.group(1) if found else "",
                status,
                alerts_of_email(text),
                time.time(),
                True,
            )
        )
        return "250 OK"


@dataclass
class SmtpSink:
    """An aiosmtpd server whose port can be closed for a while (stop, later start again)."""

    port: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    _controller: Controller | None = None

    def start(self) -> None:
        if self.port == 0:
            self.port = free_port()
        deadline = time.monotonic() + 10
        while True:
            controller = Controller(
                _SmtpHandler(self), hostname="127.0.0.1", port=self.port, ready_timeout=5
            )
            try:
                controller.start()
            except (OSError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
                continue
            self._controller = controller
            return

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def up(self) -> bool:
        return self._controller is not None


# --- daemons ----------------------------------------------------------------------------


def alertd_command() -> list[str]:
    binary = Path(sys.executable).parent / "alertd"
    return [str(binary)] if binary.exists() else [sys.executable, "-m", "alertd"]


@dataclass
class DaemonProcess:
    """One `alertd run` subprocess with its own consumer name and a log file of its own."""

    name: str
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTD_")}
        # CHAOS_ALERTD_PATH: run the daemons from another checkout (to try a fix out).
        if os.environ.get("CHAOS_ALERTD_PATH"):
            env["PYTHONPATH"] = os.environ["CHAOS_ALERTD_PATH"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*alertd_command(), "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.kills += 1
        self.proc = None

    def stop(self, timeout_s: float = 15) -> int | None:
        """SIGTERM and wait; the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        code: int | None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                code = None
        else:
            code = self.proc.returncode
        self.proc = None
        return code

    def tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return "(no log)"
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def log_count(self, needle: str) -> int:
        return self.log.read_text(errors="replace").count(needle) if self.log.exists() else 0


@dataclass
class ChaosRig:
    """Redis (AOF), three daemons, a webhook and an SMTP server, wired in one config dir."""

    dir: Path
    redis: RedisServer
    webhook: ChaosWebhook
    smtp: SmtpSink
    daemons: list[DaemonProcess] = field(default_factory=list)

    def write_config(self, names: list[str]) -> None:
        (self.dir / "rules").mkdir(exist_ok=True)
        (self.dir / "channels").mkdir(exist_ok=True)
        (self.dir / "rules" / "chaos.toml").write_text(RULES)
        (self.dir / "channels" / "chaos.toml").write_text(
            CHANNELS.format(hook_url=self.webhook.url, smtp_port=self.smtp.port)
        )
        for name in names:
            cfg = self.dir / f"{name}.toml"
            cfg.write_text(
                DAEMON.format(redis_url=self.redis.url, name=name, http_port=free_port())
            )
            self.daemons.append(DaemonProcess(name, cfg, self.dir / f"{name}.log"))

    def daemon(self, name: str) -> DaemonProcess:
        return next(d for d in self.daemons if d.name == name)

    def tails(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {d.name}.log (last {lines} lines) ---\n{d.tail(lines)}" for d in self.daemons
        )


@pytest.fixture
async def chaos_rig(tmp_path: Path) -> AsyncIterator[ChaosRig]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    redis = RedisServer(
        port=free_port(),
        dir=redis_dir,
        extra_args=["--appendonly", "yes", "--appendfsync", "always"],
    )
    await asyncio.to_thread(redis.start)
    webhook = ChaosWebhook()
    await webhook.start()
    smtp = SmtpSink()
    await asyncio.to_thread(smtp.start)
    rig = ChaosRig(tmp_path, redis, webhook, smtp)
    try:
        yield rig
    finally:
        for d in rig.daemons:
            await asyncio.to_thread(d.stop)
        await asyncio.to_thread(smtp.stop)
        await webhook.stop()
        await asyncio.to_thread(redis.stop)
