"""`make demo` (scripts/demo.py), shortened with ALERTD_DEMO_FAST=1: it tells a whole
incident through real channels and leaves nothing running behind it."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(
    r"^\s*[\d.]+s\s+(?P<status>FIRING|ESCALATED|EASED|RESOLVED)\s+"
    r"(?P<alertname>\w+)\s+(?P<severity>\w+)\s+service=(?P<service>\S+)\s+"
    r"(?P<channels>(email|webhook|log)(, (email|webhook|log))*)$"
)
STARTED = re.compile(r"started (?P<what>redis-server|alertd) \(pid (?P<pid>\d+)\)")
PORT = re.compile(r"127\.0\.0\.1:(\d+)")


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone: it no longer does anything)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def demo_run() -> subprocess.CompletedProcess[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    env = {**os.environ, "ALERTD_DEMO_FAST": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("ALERTD_DEMO_KEEP", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.timeout(90)
class TestDemo:
    """The fast demo ends by itself, every channel hears the incident, and it cleans up."""

    def test_exits_zero_within_40s(self, demo_run: subprocess.CompletedProcess[str]) -> None:
        assert 0 == demo_run.returncode, demo_run.stdout[-3000:] + demo_run.stderr[-3000:]
        last = [line for line in demo_run.stdout.splitlines() if line.strip()][-1]
        assert float(last.split("s", 1)[0]) < 40

    def test_firing_and_resolved_reach_smtp_and_webhook(
        self, demo_run: subprocess.CompletedProcess[str]
    ) -> None:
        seen = [m.groupdict() for m in map(LINE.match, demo_run.stdout.splitlines()) if m]
        for channel in ("email", "webhook", "log"):
            statuses = {n["status"] for n in seen if channel in n["channels"].split(", ")}
            assert {"FIRING", "RESOLVED"} <= statuses, channel
        expected = {
            "HighErrorRate",
            "HighLatency",
            "QueueBacklog",
            "DiskSpaceLow",
            "WorkerHeartbeatMissing",
        }
        for channel in ("email", "webhook"):
            told = {n["alertname"] for n in seen if channel in n["channels"].split(", ")}
            assert expected == told
        assert "PROBLEM" not in demo_run.stdout

    def test_one_line_per_change(self, demo_run: subprocess.CompletedProcess[str]) -> None:
        """A change is one line naming its channels; a severity step is not a new FIRING."""
        seen = [m.groupdict() for m in map(LINE.match, demo_run.stdout.splitlines()) if m]
        by_alert: dict[str, list[tuple[str, str]]] = {}
        for n in seen:
            by_alert.setdefault(n["alertname"], []).append((n["status"], n["severity"]))
        for name, steps in by_alert.items():
            repeated = [a for a, b in itertools.pairwise(steps) if a == b]
            assert [] == repeated, (name, steps)
            refired = [b for a, b in itertools.pairwise(steps) if a[0] != "RESOLVED"]
            assert [] == [s for s in refired if s[0] == "FIRING"], (name, steps)
        assert any(n["channels"] == "email, webhook, log" for n in seen)
        escalated = by_alert.get("HighErrorRate", [])
        assert ("ESCALATED", "critical") in escalated, escalated

    def test_nothing_left_running(self, demo_run: subprocess.CompletedProcess[str]) -> None:
        pids = {m["what"]: int(m["pid"]) for m in STARTED.finditer(demo_run.stdout)}
        assert {"redis-server", "alertd"} == set(pids)
        assert [] == [what for what, pid in pids.items() if alive(pid)]
        for what in ("alertd", "webhook receiver", "SMTP catcher", "redis-server"):
            assert f"stopped {what}" in demo_run.stdout
        ports = {int(p) for p in PORT.findall(demo_run.stdout)}
        assert len(ports) >= 4  # redis, SMTP, webhook, alertd's HTTP
        assert [] == [p for p in sorted(ports) if listening(p)]
