"""The chaos harness: real daemons as subprocesses, a restartable Redis with AOF (or a
Redis Cluster whose masters can be killed), and receivers that can be made to fail on
purpose.

Everything here runs for real: `alertd run` processes (so kill -9 is a real crash),
a redis-server that is stopped with SIGTERM and started again on the same port and
directory (so its append-only file is reloaded), an aiohttp webhook receiver in the
test's event loop and an aiosmtpd server in its own thread. Both receivers record
every request they get, with the notification id and the alerts it carried.

On the Cluster (3 masters with 2 replicas each, `tests/topologies.Cluster`) the Redis
fault is a failover instead of a restart: kill -9 the master serving the state partition
`{p0}`, wait until a replica is promoted, then start the killed node again on its port
and directory, so it rejoins as the new master's replica and resyncs (`ClusterFailover`).
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
import redis.asyncio as aioredis
from aiohttp import web
from aiosmtpd.controller import Controller

from tests.conftest import RedisServer, free_port
from tests.topologies import Cluster, _cli, _wait

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
{redis_extra}
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


# --- the Cluster's Redis fault ---------------------------------------------------------

PARTITION_KEY = "alertd:{p0}:alerts"  # any key of the state partition: they share a slot
REPLICAS_PER_MASTER = 2
# A master sends a resyncing replica its data at once, not after the default 5 s wait for
# more replicas to share a diskless transfer: the killed node rejoins in a second or two.
FAST_RESYNC = ("repl-diskless-sync-delay", "0")


def _online_replicas(master: RedisServer) -> int:
    """How many replicas the master sees in sync (`state=online` in INFO replication)."""
    info = _cli(master.port, "info", "replication")
    return sum(1 for line in info.splitlines() if line.startswith("slave") and "online" in line)


@dataclass
class ClusterFailover:
    """kill -9 the master serving `{p0}`, then bring it back as its successor's replica.

    With `redis.wait_replicas = 1` alertd acknowledges and sends only what a replica
    confirmed, so the promoted replica holds everything alertd acted on. A master is
    killed only with both its replicas in sync: the one promoted still has the other to
    confirm writes, so alertd holds for the failover itself (~3-4 s, as long as a dead
    master goes unnoticed and its replicas elect one), not until the killed node is back.
    With one replica per master it would hold until the killed node has resynced (~10 s
    in all); the three daemons then read that backlog as batches side by side, and a
    series is judged on its newest sample (by stream-entry time), so a firing episode of
    the scenario (6 s) lying wholly inside the backlog is never judged firing (seed
    20261123 lost 5 to 13 series so). The scenario promises every episode is seen: that
    holds while alertd is held for less than an episode. One failover at a time: a
    second kill finds the cluster whole again.
    """

    cluster: Cluster
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def partition_master(self) -> RedisServer:
        return self.cluster.master_of(PARTITION_KEY)

    def kill_master(self) -> tuple[RedisServer, RedisServer]:
        """The killed master and the replica promoted in its place."""
        master = self.partition_master()
        _wait(
            lambda: _online_replicas(master) >= REPLICAS_PER_MASTER,
            60,
            f"{REPLICAS_PER_MASTER} replicas of :{master.port} in sync",
        )
        master.stop(signal.SIGKILL)
        _wait(lambda: self._promoted(master), 60, f"a replica promoted for :{master.port}")
        return master, self.partition_master()

    def _promoted(self, killed: RedisServer) -> bool:
        try:
            return self.partition_master() is not killed and self.cluster.ready()
        except RuntimeError:  # no live master serves the slot yet
            return False

    def rejoin(self, node: RedisServer) -> None:
        """Start the killed node again (its nodes.conf kept): it turns into a replica."""
        if f"--{FAST_RESYNC[0]}" not in node.extra_args:
            node.extra_args += [f"--{FAST_RESYNC[0]}", FAST_RESYNC[1]]
        node.start()
        _wait(
            lambda: (
                _online_replicas(self.partition_master()) >= REPLICAS_PER_MASTER
                and self.cluster.ready()
            ),
            60,
            f":{node.port} resynced as a replica",
        )


@dataclass
class ChaosRig:
    """One Redis (AOF) or a Cluster, three daemons, a webhook and an SMTP server, wired in
    one config dir."""

    dir: Path
    webhook: ChaosWebhook
    smtp: SmtpSink
    redis: RedisServer | None = None  # single: the one Redis, restarted as a fault
    failover: ClusterFailover | None = None  # cluster: its {p0} master killed as a fault
    redis_url: str = ""  # what the daemons and the test connect to
    daemons: list[DaemonProcess] = field(default_factory=list)

    @property
    def topology(self) -> str:
        return "cluster" if self.failover is not None else "single"

    @property
    def redis_extra(self) -> str:
        # Replication is asynchronous: without WAIT a failover may lose what a daemon
        # already acknowledged or sent (tests/test_topologies.py does the same).
        return 'mode = "cluster"\nwait_replicas = 1' if self.failover is not None else ""

    def client(self) -> aioredis.Redis:
        """The test's client of the event and dead-letter streams.

        On the Cluster a plain client of the master serving them (never killed), not
        redis-py's Cluster client: after a failover that one keeps the killed master
        among its primaries (a SCAN then misses or doubles keys) and leaves the replaced
        nodes' connections unclosed (a ResourceWarning, an error under filterwarnings).
        """
        return aioredis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=1)

    def partition_clients(self) -> list[aioredis.Redis]:
        """Clients of every node serving partitions now (their outboxes): call once faults
        are over."""
        if self.failover is None:
            urls = [self.redis_url]
        else:
            urls = [node.url for node in self.failover.cluster.masters()]
        return [
            aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1) for url in urls
        ]

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
                DAEMON.format(
                    redis_url=self.redis_url,
                    redis_extra=self.redis_extra,
                    name=name,
                    http_port=free_port(),
                )
            )
            self.daemons.append(DaemonProcess(name, cfg, self.dir / f"{name}.log"))

    def daemon(self, name: str) -> DaemonProcess:
        return next(d for d in self.daemons if d.name == name)

    def tails(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {d.name}.log (last {lines} lines) ---\n{d.tail(lines)}" for d in self.daemons
        )


def _start_single(tmp_path: Path) -> RedisServer:
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    redis = RedisServer(
        port=free_port(),
        dir=redis_dir,
        extra_args=["--appendonly", "yes", "--appendfsync", "always"],
    )
    redis.start()
    return redis


def _start_cluster(cluster: Cluster) -> str:
    """Start 3 masters with 2 replicas each; the URL of a node the faults never kill."""
    cluster.start(replicas_per_master=REPLICAS_PER_MASTER)
    for node in cluster.nodes:
        _cli(node.port, "config", "set", *FAST_RESYNC)
    seed = cluster.master_of(STREAM)
    # The event and dead-letter streams' slots are served by another master than {p0}'s
    # (an even split of 3 puts them in the first third, {p0} in the last): killing the
    # partition's master loses no event a producer was told was stored. The daemons
    # restarted after a kill -9 must reach their one startup node, so it is this one.
    if seed is cluster.master_of(PARTITION_KEY):
        raise RuntimeError("the event stream and {p0} are on one master")
    return seed.url


@pytest.fixture
async def chaos_rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ChaosRig]:
    """`single` (the default) or `cluster`, by indirect parametrization."""
    topology = getattr(request, "param", "single")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    webhook = ChaosWebhook()
    smtp = SmtpSink()
    rig = ChaosRig(tmp_path, webhook, smtp)
    cluster: Cluster | None = None
    try:
        if topology == "cluster":
            cluster = Cluster(tmp_path / "cluster")
            rig.failover = ClusterFailover(cluster)
            rig.redis_url = await asyncio.to_thread(_start_cluster, cluster)
        else:
            rig.redis = await asyncio.to_thread(_start_single, tmp_path)
            rig.redis_url = rig.redis.url
        await webhook.start()
        await asyncio.to_thread(smtp.start)
        yield rig
    finally:
        for d in rig.daemons:
            await asyncio.to_thread(d.stop)
        await asyncio.to_thread(smtp.stop)
        await webhook.stop()
        if rig.redis is not None:
            await asyncio.to_thread(rig.redis.stop)
        if cluster is not None:
            await asyncio.to_thread(cluster.stop)
