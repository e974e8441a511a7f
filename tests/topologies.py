"""Redis set-ups beyond one server, started on loopback and stopped by PID:
a Cluster (3 masters + 3 replicas) and a master + replica + Sentinel."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.procs import cluster_port
from tests.conftest import RedisServer, free_port

CLUSTER_NODE_TIMEOUT_MS = 1500  # a dead master's replica takes over within ~2-4 s


def _redis_cli() -> str:
    binary = shutil.which("redis-cli")
    if binary is None:
        pytest.fail("redis-cli is not on PATH (.ci/run installs redis-tools)")
    return binary


def _cli(port: int, *args: str) -> str:
    out = subprocess.run(
        [_redis_cli(), "-p", str(port), *args], capture_output=True, text=True, timeout=30
    )
    return out.stdout


def _wait(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not within {timeout_s}s")


@dataclass
class Cluster:
    """Six `redis-server --cluster-enabled yes` joined by `redis-cli --cluster create`."""

    dir: Path
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self, masters: int = 3, replicas_per_master: int = 1) -> None:
        for i in range(masters * (1 + replicas_per_master)):
            node_dir = self.dir / f"node{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            port = cluster_port()
            node = RedisServer(
                port=port,
                dir=node_dir,
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(node_dir / "nodes.conf"),
                    "--cluster-node-timeout",
                    str(CLUSTER_NODE_TIMEOUT_MS),
                ],
            )
            self.nodes.append(node)
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [
                _redis_cli(),
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                str(replicas_per_master),
                "--cluster-yes",
            ],
            capture_output=True,
            check=True,
            timeout=60,
        )
        _wait(self.ready, 30, "cluster state ok")

    def ready(self) -> bool:
        alive = [n for n in self.nodes if n.proc is not None]
        return all("cluster_state:ok" in _cli(n.port, "cluster", "info") for n in alive)

    def masters(self) -> list[RedisServer]:
        return [
            n
            for n in self.nodes
            if n.proc is not None and "role:master" in _cli(n.port, "info", "replication")
        ]

    def master_of(self, key: str) -> RedisServer:
        slot = int(_cli(self.nodes[0].port, "cluster", "keyslot", key).strip())
        for n in self.masters():
            for line in _cli(n.port, "cluster", "nodes").splitlines():
                parts = line.split()
                if "myself" in parts[2] and "master" in parts[2]:
                    for r in parts[8:]:
                        lo, _, hi = r.partition("-")
                        if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                            return n
        raise RuntimeError(f"no master serves {key}")

    def kill(self, node: RedisServer) -> None:
        """kill -9 a node, and wait until the cluster has promoted its replica."""
        import signal

        node.stop(signal.SIGKILL)
        _wait(self.ready, 30, "cluster state ok after a failover")

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


@dataclass
class SentinelSet:
    """A master, its replica and one Sentinel watching them (quorum 1)."""

    dir: Path
    master: RedisServer | None = None
    replica: RedisServer | None = None
    sentinel_port: int = 0
    sentinel: subprocess.Popen[bytes] | None = None
    name: str = "mymaster"

    def start(self) -> None:
        self.master = RedisServer(port=free_port(), dir=self.dir / "m")
        self.replica = RedisServer(port=free_port(), dir=self.dir / "r")
        for server in (self.master, self.replica):
            server.dir.mkdir(parents=True, exist_ok=True)
        self.replica.extra_args = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.master.start()
        self.replica.start()
        self.sentinel_port = free_port()
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.dir}\n"
            f"sentinel monitor {self.name} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.name} 1000\n"
            f"sentinel failover-timeout {self.name} 5000\n"
            f"sentinel parallel-syncs {self.name} 1\n"
        )
        binary = shutil.which("redis-server")
        assert binary is not None
        self.sentinel = subprocess.Popen(
            [binary, str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(self._sentinel_knows_replica, 30, "sentinel sees the replica")

    def _sentinel_knows_replica(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.sentinel_port), timeout=0.5):
                pass
        except OSError:
            return False
        out = _cli(self.sentinel_port, "sentinel", "replicas", self.name)
        return self.replica is not None and str(self.replica.port) in out

    def current_master_port(self) -> int:
        out = _cli(self.sentinel_port, "sentinel", "get-master-addr-by-name", self.name).split()
        return int(out[1]) if len(out) >= 2 else 0

    def kill_master(self) -> None:
        """kill -9 the master, and wait until the Sentinel has promoted the replica."""
        import signal

        assert self.master is not None and self.replica is not None
        self.master.stop(signal.SIGKILL)
        replica_port = self.replica.port
        _wait(lambda: self.current_master_port() == replica_port, 30, "sentinel failover")

    def stop(self) -> None:
        if self.sentinel is not None and self.sentinel.poll() is None:
            self.sentinel.kill()
            self.sentinel.wait()
        for server in (self.master, self.replica):
            if server is not None:
                server.stop()
