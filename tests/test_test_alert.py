"""`alertd test-alert`: one line per channel, exit 0 only when every channel got the alert."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Receiver, RedisServer, free_port
from tests.test_delivery import SECRET

OK_LINE = re.compile(r"(?P<name>[\w-]+): ok \(attempts (?P<attempts>\d+), \d+ ms\)")
FAILED_LINE = re.compile(
    r"(?P<name>[\w-]+): FAILED after (?P<attempts>\d+) attempt\(s\), \d+ ms: (?P<error>.*)"
)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def results(self) -> dict[str, tuple[str, int, str]]:
        """Channel -> (ok|FAILED, attempts, error) from the result lines (log lines skipped)."""
        out = {}
        for line in self.stdout.splitlines():
            if m := OK_LINE.fullmatch(line):
                out[m["name"]] = ("ok", int(m["attempts"]), "")
            elif m := FAILED_LINE.fullmatch(line):
                out[m["name"]] = ("FAILED", int(m["attempts"]), m["error"])
        return out


async def alertd(config: Path, *args: str) -> Run:
    exe = Path(sys.executable).parent / "alertd"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTD_")}
    proc = await asyncio.create_subprocess_exec(
        str(exe),
        *args,
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


@pytest.fixture
def config(tmp_path: Path, redis_server: RedisServer, receiver: Receiver) -> Path:
    path = tmp_path / "alertd.toml"
    path.write_text(
        f'[redis]\nurl = "{redis_server.url}"\n'
        f'[channels.ok]\ntype = "webhook"\nurl = "{receiver.url}/ok"\nsecret = "{SECRET}"\n'
        '[channels.ok.retry]\ninitial_backoff = "50ms"\n'
        f'[channels.dead]\ntype = "webhook"\nurl = "http://127.0.0.1:{free_port()}/dead"\n'
        '[channels.dead.retry]\ninitial_backoff = "50ms"\n'
        f'[channels.off]\ntype = "webhook"\nurl = "{receiver.url}/off"\nenabled = false\n'
    )
    return path


class TestWorkingChannel:
    """A channel that works says ok, with its attempts and time, and exits 0."""

    async def test_ok_line_and_exit_zero(self, config: Path, receiver: Receiver) -> None:
        run = await alertd(config, "test-alert", "--channel", "ok", "--severity", "warning")

        assert (0, {"ok": ("ok", 1, "")}) == (run.code, run.results())
        body = receiver.bodies("/ok")[0]
        assert ("AlertdTestAlert", "warning") == (
            body["alerts"][0]["labels"]["alertname"],
            body["alerts"][0]["labels"]["severity"],
        )

    async def test_a_passing_fault_is_retried(self, config: Path, receiver: Receiver) -> None:
        receiver.script = [(503, {}, "warming up")]
        run = await alertd(config, "test-alert", "--channel", "ok")

        assert (0, {"ok": ("ok", 2, "")}) == (run.code, run.results())
        ids = {r.headers["webhook-id"] for r in receiver.received}
        assert 1 == len(ids)


class TestDeadChannel:
    """A channel that does not work shows its error and makes the exit code 1."""

    async def test_unreachable_channel_fails_after_three_attempts(self, config: Path) -> None:
        run = await alertd(config, "test-alert", "--channel", "dead")

        expected = {"dead": ("FAILED", 3, "connection failed: ClientConnectorError")}
        assert (1, expected) == (run.code, run.results())

    async def test_refusal_is_not_retried_and_hides_the_secret(
        self, config: Path, receiver: Receiver
    ) -> None:
        receiver.script = [(401, {}, f"wrong key {SECRET}")]
        run = await alertd(config, "test-alert", "--channel", "ok")

        assert (1, {"ok": ("FAILED", 1, "HTTP 401: wrong key ***")}) == (run.code, run.results())
        assert SECRET not in run.stdout + run.stderr

    async def test_every_enabled_channel_by_default(self, config: Path, receiver: Receiver) -> None:
        run = await alertd(config, "test-alert")

        assert 1 == run.code
        assert {"log": "ok", "ok": "ok", "dead": "FAILED"} == {
            name: r[0] for name, r in run.results().items()
        }
        assert [] == receiver.bodies("/off")

    async def test_unknown_channel_is_one_error_line(self, config: Path) -> None:
        run = await alertd(config, "test-alert", "--channel", "nope")

        assert (1, "") == (run.code, run.stdout)
        assert [
            "alertd: unknown channel 'nope' (configured: dead, log, off, ok)"
        ] == run.stderr.splitlines()
