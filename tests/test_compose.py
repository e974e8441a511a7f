"""docker-compose.yml: valid against the Compose specification, and its topology pages.

No Docker engine runs here, so the stack runs without containers: the same files laid
out as the image lays them (/etc/alertd: the compose alertd.toml, rules/, channels/),
the alertd service's environment from docker-compose.yml with the compose network's
addresses swapped for loopback ones, as many alertd replicas as it runs, a real Redis,
an SMTP catcher in mailpit's place and an HTTP receiver in webhook-echo's. A published
event must page both, once.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiosmtpd.controller import Controller
from ruamel.yaml import YAML

from tests.conftest import Receiver, RedisServer, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
BIN = Path(sys.executable).parent
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(COMPOSE.read_text())
    return data


def service_environment(service: str, dotenv: dict[str, str]) -> dict[str, str]:
    """A service's `environment`, interpolated as Compose does (from .env, else defaults)."""

    def fill(value: object) -> str:
        return _INTERPOLATION.sub(
            lambda m: dotenv.get(m[1]) or (m[2] or ""), "" if value is None else str(value)
        )

    env = compose()["services"][service].get("environment", {})
    return {str(k): fill(v) for k, v in env.items()}


class TestComposeFile:
    """The file follows the Compose specification and wires alertd to what it ships."""

    def test_valid_against_the_compose_spec(self) -> None:
        result = subprocess.run(
            [
                str(BIN / "check-jsonschema"),
                "--builtin-schema",
                "vendor.compose-spec",
                str(COMPOSE),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert 0 == result.returncode, result.stdout + result.stderr

    def test_env_file_reaches_the_containers(self) -> None:
        alertd = compose()["services"]["alertd"]
        assert [{"path": ".env", "required": False}] == alertd["env_file"]
        assert "Docker Compose 2.24 or later" in COMPOSE.read_text()

    def test_config_files_exist(self) -> None:
        data = compose()
        for config in data["configs"].values():
            assert (ROOT / config["file"]).is_file(), config


class Mailpit:
    """In mailpit's place: an SMTP server keeping what it receives."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        self.messages.append(msg)
        return "250 OK"


@pytest.fixture
def mailpit() -> Iterator[tuple[Mailpit, int]]:
    box = Mailpit()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield box, controller.port
    controller.stop()


@pytest.fixture
def etc_alertd(tmp_path: Path) -> Path:
    """/etc/alertd as the image and docker-compose.yml make it."""
    etc = tmp_path / "etc-alertd"
    etc.mkdir()
    shutil.copytree(ROOT / "rules", etc / "rules")  # Dockerfile: COPY rules/
    shutil.copytree(ROOT / "channels", etc / "channels")  # Dockerfile: COPY channels/
    [mount] = compose()["services"]["alertd"]["configs"]
    source = ROOT / compose()["configs"][mount["source"]]["file"]
    assert "/etc/alertd/alertd.toml" == mount["target"]
    shutil.copy(source, etc / "alertd.toml")
    return etc


class TestTopologyWithoutContainers:
    """An event on the stream pages the mail catcher and the webhook echo."""

    async def test_page_reaches_mail_and_webhook(
        self,
        etc_alertd: Path,
        redis_server: RedisServer,
        redis: aioredis.Redis,
        receiver: Receiver,
        mailpit: tuple[Mailpit, int],
    ) -> None:
        box, smtp_port = mailpit
        dotenv = {"ALERTD_LOG_LEVEL": "info"}
        env = service_environment("alertd", dotenv)
        # The compose network's addresses, and only those, become loopback ones.
        addresses = {
            "ALERTD_REDIS_URL": ("redis://redis:6379/0", redis_server.url),
            "ALERTD_HTTP_LISTEN": ("0.0.0.0:9099", ""),  # one port per replica, below
            "MAILPIT_HOST": ("mailpit", "127.0.0.1"),
            "MAILPIT_SMTP_PORT": ("1025", str(smtp_port)),
            "WEBHOOK_ECHO_URL": ("http://webhook-echo:8080/alertd", f"{receiver.url}/alertd"),
        }
        for name, (in_compose, here) in addresses.items():
            assert in_compose == env[name], name
            env[name] = here
        image_env = {"ALERTD_CONFIG": str(etc_alertd / "alertd.toml"), "PATH": str(BIN)}
        replicas = int(compose()["services"]["alertd"]["deploy"]["replicas"])
        logs = [etc_alertd / f"alertd-{i}.log" for i in range(replicas)]
        daemons = []
        for log in logs:
            with log.open("wb") as out:
                listen = {"ALERTD_HTTP_LISTEN": f"127.0.0.1:{free_port()}"}
                daemons.append(
                    await asyncio.create_subprocess_exec(
                        str(BIN / "alertd"),
                        "run",
                        cwd=etc_alertd,
                        env={**image_env, **env, **listen},
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        try:
            for log in logs:
                await wait_for(lambda log=log: "alertd started" in log.read_text(), timeout_s=20)
            await redis.xadd(
                "alertd:events",
                {"name": "queue_depth", "value": "7000", "service": "billing", "queue": "emails"},
            )

            # group_wait is 10 s in the compose config.
            await wait_for(lambda: box.messages and receiver.bodies("/alertd"), timeout_s=40)
        finally:
            for daemon in daemons:
                daemon.send_signal(signal.SIGTERM)
            for daemon in daemons:
                await asyncio.wait_for(daemon.wait(), 20)

        # The replicas share one consumer group: one page per channel, not one per replica.
        [body] = receiver.bodies("/alertd")
        assert ("firing", "webhook-echo") == (body["status"], body["receiver"])
        assert {"QueueBacklog"} == {a["labels"]["alertname"] for a in body["alerts"]}
        [message] = box.messages
        assert "QueueBacklog" in str(message["Subject"])
        assert ["oncall@example.test"] == [str(a) for a in message["To"].addresses]
