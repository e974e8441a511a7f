"""The processes a run starts and owns: redis-server, alertd, Alertmanager, the receiver.

Everything listens on 127.0.0.1 on a free port, lives in the run's temporary
directory, and is stopped by `Procs.close()` (SIGTERM, then SIGKILL after a
grace period) whatever happened, so a failed scenario leaves nothing behind.
Memory and CPU come from /proc (Linux): VmRSS now, VmHWM the peak, utime+stime.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s}s")


def _status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024
    return out


def rss_bytes(pid: int) -> int:
    return _status(pid)["VmRSS"]


def peak_rss_bytes(pid: int) -> int:
    return _status(pid)["VmHWM"]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path
    profiler: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def peak_rss(self) -> int:
        return peak_rss_bytes(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self, grace_s: float = 15.0) -> int | None:
        if self.profiler is not None:  # py-spy writes its profile on SIGINT
            with contextlib.suppress(ProcessLookupError):
                self.profiler.send_signal(signal.SIGINT)
            try:
                self.profiler.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.profiler.kill()
            self.profiler = None
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class Procs:
    """Starts processes into `workdir` and stops every one it started."""

    workdir: Path
    python: str
    alertd_src: Path | None = None  # run alertd from this source tree (PYTHONPATH) instead
    profile_dir: Path | None = None  # py-spy record every alertd into this directory
    profile_tag: str = "alertd"  # names the next profiles (the scenario running)
    started: list[Proc] = field(default_factory=list)

    def _spawn(
        self, name: str, args: list[str], port: int, env: dict[str, str] | None = None
    ) -> Proc:
        log = self.workdir / f"{name}-{port}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.workdir,
            )
        proc = Proc(name, popen, port, log)
        self.started.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.started:
            self.started.remove(proc)

    def close(self) -> None:
        for proc in reversed(self.started):
            proc.stop(grace_s=5.0)
        self.started.clear()

    # --- the processes ----------------------------------------------------------

    def redis(self) -> Proc:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        port = free_port()
        data = self.workdir / f"redis-{port}"
        data.mkdir()
        proc = self._spawn(
            "redis",
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(data),
                "--maxclients",
                "10000",
            ],
            port,
        )
        wait_port(port, 10, proc.popen)
        return proc

    def redis_cluster(self, masters: int = 3) -> list[Proc]:
        """A Redis Cluster of `masters` masters (no replicas), slots spread evenly."""
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            raise RuntimeError("redis-server and redis-cli are needed (apt-get install redis)")
        nodes = []
        for _ in range(masters):
            port = cluster_port()
            data = self.workdir / f"redis-{port}"
            data.mkdir()
            args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            args += ["--appendonly", "no", "--dir", str(data), "--maxclients", "10000"]
            args += ["--cluster-enabled", "yes", "--cluster-config-file", str(data / "nodes.conf")]
            proc = self._spawn("redis", args, port)
            wait_port(port, 10, proc.popen)
            nodes.append(proc)
        addresses = [f"127.0.0.1:{n.port}" for n in nodes]
        create = [
            cli,
            "--cluster",
            "create",
            *addresses,
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]
        subprocess.run(create, capture_output=True, check=True, timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = [
                subprocess.run(
                    [cli, "-p", str(n.port), "cluster", "info"], capture_output=True, text=True
                ).stdout
                for n in nodes
            ]
            if all("cluster_state:ok" in i for i in info):
                return nodes
            time.sleep(0.1)
        raise RuntimeError("the bench's Redis Cluster did not come up")

    def receiver(self) -> Proc:
        port = free_port()
        proc = self._spawn(
            "receiver", [self.python, "-m", "bench.receiver", "--port", str(port)], port, _env()
        )
        wait_port(port, 15, proc.popen)
        return proc

    def alertd(self, config: Path, http_port: int, wait: bool = True) -> Proc:
        """alertd on `config`; with wait=False returns at once (the caller polls Redis)."""
        env = _env()
        if self.alertd_src is not None:
            env["PYTHONPATH"] = str(self.alertd_src)
            args = [self.python, "-m", "alertd", "run", "--config", str(config)]
        else:
            args = [str(Path(self.python).parent / "alertd"), "run", "--config", str(config)]
        proc = self._spawn("alertd", args, http_port, env)
        if self.profile_dir is not None:
            proc.profiler = self._profiler(proc)
        if wait:
            wait_port(http_port, 30, proc.popen)
        return proc

    def _profiler(self, proc: Proc) -> subprocess.Popen[bytes]:
        spy = Path(self.python).parent / "py-spy"
        if not spy.exists():
            raise RuntimeError(f"--profile needs py-spy in the venv: {spy} (pip install py-spy)")
        assert self.profile_dir is not None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        out = self.profile_dir / f"{self.profile_tag}-{proc.port}.txt"
        return subprocess.Popen(
            [
                str(spy),
                "record",
                "--pid",
                str(proc.pid),
                "--rate",
                "100",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def alertmanager(self, binary: str, config: Path) -> Proc:
        port = free_port()
        data = self.workdir / f"am-{port}"
        data.mkdir()
        proc = self._spawn(
            "alertmanager",
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={data}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            port,
        )
        wait_port(port, 30, proc.popen)
        return proc


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    for _ in range(200):
        port = free_port()
        if port > 55000:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ALERTD_REDIS_URL", None)  # the bench's config names its own Redis
    env.pop("ALERTD_HTTP_LISTEN", None)
    env.pop("ALERTD_LOG_LEVEL", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def default_python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable
