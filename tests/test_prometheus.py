"""A real Prometheus sends its alerts to alertd as to an Alertmanager (API v2)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DaemonFactory, Receiver, free_port, wait_for
from tests.test_api_v2 import TOKEN, start

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed")

ALWAYS = """groups:
  - name: test
    rules:
{rules}"""
RULE = """      - alert: {name}
        expr: {expr}
        labels:
          severity: critical
          team: storage
        annotations:
          summary: "{name} always fires"
"""
FIRING_EXPR = "vector(1)"
NEVER_EXPR = "vector(1) == 0"


def rules_text(names: list[str], expr: str) -> str:
    return ALWAYS.format(rules="".join(RULE.format(name=n, expr=expr) for n in names))


@dataclass
class Prometheus:
    """A prometheus process of this test's own, sending to `targets` every second."""

    dir: Path
    targets: list[str]
    token: str = ""
    proc: asyncio.subprocess.Process | None = None
    log: list[bytes] = field(default_factory=list)

    def write_rules(self, names: list[str], expr: str) -> None:
        (self.dir / "rules.yml").write_text(rules_text(names, expr))

    async def start(self) -> None:
        auth = f"      authorization:\n        credentials: {self.token}\n" if self.token else ""
        targets = ", ".join(f'"{t}"' for t in self.targets)
        (self.dir / "prometheus.yml").write_text(
            "global:\n  evaluation_interval: 1s\n"
            "rule_files: [rules.yml]\n"
            "alerting:\n  alertmanagers:\n    - api_version: v2\n"
            f"{auth}"
            f"      static_configs:\n        - targets: [{targets}]\n"
        )
        self.proc = await asyncio.create_subprocess_exec(
            PROMETHEUS or "prometheus",
            f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{free_port()}",
            "--rules.alert.resend-delay=1s",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@pytest.fixture
async def prometheus(tmp_path: Path) -> AsyncIterator[list[Prometheus]]:
    """Prometheus processes a test starts; each stopped at the end."""
    started: list[Prometheus] = []
    yield started
    for p in started:
        with contextlib.suppress(ProcessLookupError):
            await p.stop()


async def run_prometheus(
    started: list[Prometheus], tmp: Path, apps: list[Any], names: list[str], token: str = ""
) -> Prometheus:
    d = tmp / f"prometheus{len(started)}"
    d.mkdir()
    targets = [f"127.0.0.1:{app.config.settings.http.port}" for app in apps]
    prom = Prometheus(d, targets, token)
    prom.write_rules(names, FIRING_EXPR)
    started.append(prom)
    await prom.start()
    return prom


def notified(receiver: Receiver) -> list[tuple[str, str]]:
    """(status, alertname) of every alert in every notification, in order."""
    return [
        (a["status"], a["labels"]["alertname"])
        for body in receiver.bodies("/hook")
        for a in body["alerts"]
    ]


class TestPrometheusSendsToAlertd:
    """Prometheus's firing alert is notified once across its resends, and resolved once."""

    async def test_fires_once_then_resolves_on_reload(
        self,
        daemons: DaemonFactory,
        receiver: Receiver,
        prometheus: list[Prometheus],
        tmp_path: Path,
    ) -> None:
        # Prometheus sends alertd's token (its `authorization`), as a remote one must
        app = await start(daemons, receiver, http=f'token = "{TOKEN}"')
        prom = await run_prometheus(prometheus, tmp_path, [app], ["DiskAlwaysFull"], TOKEN)
        await wait_for(lambda: receiver.bodies("/hook"), timeout_s=60)
        alert = receiver.bodies("/hook")[0]["alerts"][0]
        assert {
            "alertname": "DiskAlwaysFull",
            "severity": "critical",
            "team": "storage",
        } == alert["labels"]
        assert {"summary": "DiskAlwaysFull always fires"} == alert["annotations"]
        assert alert["generatorURL"].startswith("http")
        # Prometheus resends every second; the group (interval 1s) must stay quiet
        await resent(app, "DiskAlwaysFull", times=4)
        assert [("firing", "DiskAlwaysFull")] == notified(receiver)

        prom.write_rules(["DiskAlwaysFull"], NEVER_EXPR)
        prom.reload()
        await wait_for(lambda: len(notified(receiver)) >= 2, timeout_s=60)
        await asyncio.sleep(2)  # Prometheus keeps resending the resolved alert: no more notices
        assert [("firing", "DiskAlwaysFull"), ("resolved", "DiskAlwaysFull")] == notified(receiver)


class TestTwoReplicas:
    """Two alertd replicas behind two URLs both get Prometheus's alerts: each fires once."""

    async def test_each_firing_notified_once(
        self,
        daemons: DaemonFactory,
        receiver: Receiver,
        prometheus: list[Prometheus],
        tmp_path: Path,
    ) -> None:
        first = await start(daemons, receiver)
        second = await second_replica(daemons)
        names = ["AlwaysA", "AlwaysB"]
        await run_prometheus(prometheus, tmp_path, [first, second], names)
        await wait_for(lambda: len(notified(receiver)) >= 2, timeout_s=60)
        for name in names:
            await resent(first, name, times=3)
        assert sorted(("firing", n) for n in names) == sorted(notified(receiver))


async def second_replica(daemons: DaemonFactory) -> Any:
    """Another daemon on the same Redis and config, with an HTTP port of its own."""
    from alertd.app import App
    from alertd.settings import load_config

    config = load_config(daemons.dir / "alertd.toml")
    s = config.settings
    http = s.http.model_copy(update={"listen": f"127.0.0.1:{free_port()}"})
    daemon = s.daemon.model_copy(update={"consumer": "replica-2"})
    config.settings = s.model_copy(update={"http": http, "daemon": daemon})
    app = App(config)
    await app.start(http=True)
    daemons.apps.append(app)
    return app


async def resent(app: Any, alertname: str, times: int) -> None:
    """Wait until Prometheus has posted the alert `times` more times (its endsAt moves on)."""

    async def ends_at() -> float | None:
        for a in await app.store.all():
            if a.labels.get("alertname") == alertname and a.state == "firing":
                return float(a.ends_at)
        return None

    first = await wait_for(ends_at, timeout_s=60)

    async def moved() -> bool:
        now = await ends_at()
        return now is not None and now >= first + times

    await wait_for(moved, timeout_s=60)
