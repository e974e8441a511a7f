"""`alertd rules test`: rule unit tests on a fake clock, in the spirit of promtool.

A test file:

    rule_files = ["default.toml"]          # relative to the test file
    evaluation_interval = "15s"            # the clock's step between listed times

    [[tests]]
    name = "queue backlog pages"
    input = [ { at = "0s", name = "queue_depth", value = 7000, labels = { queue = "emails" } } ]
    [[tests.expect]]
    at = "0s"
    alerts = [{ labels = { alertname = "QueueBacklog" }, severity = "critical", state = "firing" }]

The real engine runs (windows, lifecycle) with the windows and alert state in
memory. Expected alerts are matched on the labels given (a subset), severity
and state; an alert that is there but not expected is a failure too.
"""

from __future__ import annotations

import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from pydantic import Field, ValidationError

from alertd.channels.base import StrictModel
from alertd.durations import Duration
from alertd.engine.evaluator import Evaluator, PendingWrite
from alertd.engine.windows import MemoryWindows
from alertd.errors import ConfigError, ConfigErrors
from alertd.events import event_from_object
from alertd.model import Alert
from alertd.settings import load_rules, validation_errors

EPOCH = 1_700_000_000.0  # offsets count from here


class SampleSpec(StrictModel):
    at: Duration
    name: str
    value: float = 1.0
    labels: dict[str, str] = Field(default_factory=dict)
    repeat: int = Field(default=1, ge=1, le=100_000)  # this many samples...
    every: Duration = timedelta(seconds=15)  # ...this far apart


class ExpectedAlert(StrictModel):
    labels: dict[str, str] = Field(default_factory=dict)
    severity: str | None = None
    state: str = "firing"


class ExpectSpec(StrictModel):
    at: Duration
    alerts: list[ExpectedAlert] = Field(default_factory=list)


class TestCase(StrictModel):
    name: str
    input: list[SampleSpec] = Field(default_factory=list)
    expect: list[ExpectSpec] = Field(default_factory=list)


class TestFile(StrictModel):
    rule_files: list[str]
    evaluation_interval: Duration = timedelta(seconds=15)
    tests: list[TestCase] = Field(default_factory=list)


class MemoryAlerts:
    """AlertWriter in process."""

    def __init__(self) -> None:
        self.raw: dict[str, bytes] = {}

    async def get_raw(self, fingerprints: list[str]) -> list[bytes | None]:
        return [self.raw.get(fp) for fp in fingerprints]

    async def write(self, changes: list[PendingWrite], now: float) -> list[bool]:
        for w in changes:
            if w.alert is None:
                self.raw.pop(w.fingerprint, None)
            else:
                self.raw[w.fingerprint] = orjson.dumps(w.alert.to_dict())
        return [True] * len(changes)

    async def live_alerts(self) -> list[Alert]:
        return [Alert.from_dict(orjson.loads(v)) for v in self.raw.values()]


def _show(a: dict[str, Any]) -> str:  # an expected or actual alert, one line
    labels = ",".join(f"{k}={v}" for k, v in sorted(a["labels"].items()) if k != "severity")
    return f"{{{labels}}} severity={a.get('severity')} state={a.get('state')}"


async def run_case(
    case: TestCase, evaluator: Evaluator, alerts: MemoryAlerts, step_s: float
) -> list[str]:
    samples: list[tuple[float, dict[str, Any]]] = []
    for s in case.input:
        for i in range(s.repeat):
            at = s.at.total_seconds() + i * s.every.total_seconds()
            samples.append((at, {"name": s.name, "value": s.value, "labels": s.labels}))
    checks = {e.at.total_seconds(): e for e in case.expect}
    end = max([t for t, _ in samples] + list(checks) + [0.0])
    times = sorted(
        {t for t, _ in samples} | set(checks) | {i * step_s for i in range(int(end // step_s) + 1)}
    )
    failures = []
    for t in times:
        now = EPOCH + t
        events = [event_from_object({**obj, "ts": now}, now) for at, obj in samples if at == t]
        if events:
            await evaluator.ingest(events, now)
        await evaluator.tick(now)
        exp = checks.get(t)
        if exp is None:
            continue
        live = [a for a in await alerts.live_alerts() if a.state in ("pending", "firing")]
        actual: list[dict[str, Any]] = [
            {"labels": a.labels, "severity": a.severity, "state": a.state} for a in live
        ]
        unmatched = list(actual)
        missing = []
        for e in exp.alerts:
            hit = next(
                (
                    a
                    for a in unmatched
                    if all(a["labels"].get(k) == v for k, v in e.labels.items())
                    and (e.severity is None or a["severity"] == e.severity)
                    and a["state"] == e.state
                ),
                None,
            )
            if hit is None:
                missing.append(e.model_dump())
            else:
                unmatched.remove(hit)
        if missing or unmatched:
            lines = [f"  at {t:g}s:"]
            lines += [f"    - expected {_show(m)}" for m in missing]
            lines += [f"    + got      {_show(u)}" for u in unmatched]
            failures.append("\n".join(lines))
    return failures


async def run_file(path: Path) -> tuple[int, int, list[str]]:
    """(passed, failed, report lines) for one test file; ConfigErrors when it cannot run."""
    shown = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        spec = TestFile.model_validate(raw)
    except FileNotFoundError:
        raise ConfigErrors([ConfigError("file not found", file=shown)]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigErrors([ConfigError(f"invalid TOML: {exc}", file=shown)]) from None
    except ValidationError as exc:
        raise ConfigErrors(validation_errors(exc, TestFile, shown)) from None
    rule_paths = [(path.parent / f) for f in spec.rule_files]
    missing = [str(p) for p in rule_paths if not p.is_file()]
    if missing:
        raise ConfigErrors([ConfigError(f"rule file {m} not found", file=shown) for m in missing])
    rules, errors, _ = load_rules(rule_paths, path.parent, os.environ)
    if errors:
        raise ConfigErrors(errors)
    passed, failed, report = 0, 0, []
    for case in spec.tests:
        alerts = MemoryAlerts()
        evaluator = Evaluator(rules, MemoryWindows(), alerts)
        failures = await run_case(case, evaluator, alerts, spec.evaluation_interval.total_seconds())
        if failures:
            failed += 1
            report.append(f"FAIL {shown}: {case.name}")
            report.extend(failures)
        else:
            passed += 1
            report.append(f"ok   {shown}: {case.name}")
    return passed, failed, report
