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
memory: samples at a time are one batch, then the clock ticks, at every listed
time and every multiple of `evaluation_interval`. Expected alerts are matched
on the labels given (a subset), severity, state, and optionally `annotations`
(a subset, rendered text) and `value` (percentiles within their 1% bound); an
alert that is there but not expected is a failure too. A failure shows each
missing alert beside the one that came closest, with what differed.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import Field, ValidationError, field_validator

from alertd.channels.base import StrictModel
from alertd.durations import Duration, format_duration
from alertd.engine.aggregates import RELATIVE_ACCURACY
from alertd.engine.evaluator import Evaluator, PendingWrite
from alertd.engine.windows import MemoryWindows
from alertd.errors import ConfigError, ConfigErrors
from alertd.events import event_from_object
from alertd.model import Alert
from alertd.settings import Rule, load_rules, validation_errors

PERCENTILES = frozenset(("p50", "p90", "p95", "p99"))
EPOCH = 1_700_000_000.0  # offsets count from here
VALUE_TOLERANCE = 1e-6  # relative, for an expected `value`; percentiles: RELATIVE_ACCURACY


class SampleSpec(StrictModel):
    at: Duration
    name: str
    value: float = 1.0
    labels: dict[str, str] = Field(default_factory=dict)
    repeat: int = Field(default=1, ge=1, le=100_000)  # this many samples...
    every: Duration = timedelta(seconds=15)  # ...this far apart


class ExpectedAlert(StrictModel):
    labels: dict[str, str] = Field(default_factory=dict)  # a subset of the alert's labels
    severity: Literal["info", "warning", "critical"] | None = None
    state: Literal["pending", "firing"] = "firing"
    annotations: dict[str, str] = Field(default_factory=dict)  # a subset, rendered text
    value: float | None = None  # within VALUE_TOLERANCE


class ExpectSpec(StrictModel):
    at: Duration
    alerts: list[ExpectedAlert] = Field(default_factory=list)


class TestCase(StrictModel):
    name: str
    input: list[SampleSpec] = Field(default_factory=list)
    expect: list[ExpectSpec] = Field(default_factory=list)

    @field_validator("expect")
    @classmethod
    def _one_expect_per_time(cls, v: list[ExpectSpec]) -> list[ExpectSpec]:
        times = [e.at for e in v]
        for t in times:
            if times.count(t) > 1:
                raise ValueError(f"two [[tests.expect]] at {format_duration(t)}: merge them")
        return v


class TestFile(StrictModel):
    rule_files: list[str]
    evaluation_interval: Duration = timedelta(seconds=15)
    tests: list[TestCase] = Field(default_factory=list)


class MemoryAlerts:
    """AlertWriter in process, with the store's compare-and-set."""

    with_alerts = False  # not in Redis: windows cannot read these

    def __init__(self) -> None:
        self.raw: dict[str, bytes] = {}
        self.clock: dict[str, float] = {}  # as the store's clock index

    async def get_raw(self, fingerprints: list[str]) -> list[bytes | None]:
        return [self.raw.get(fp) for fp in fingerprints]

    async def write(self, changes: list[PendingWrite], now: float) -> list[bool]:
        results = []
        for w in changes:
            if self.raw.get(w.fingerprint, b"") != w.expected:
                results.append(False)  # moved since it was read
                continue
            if w.alert is None:
                self.raw.pop(w.fingerprint, None)
            else:
                self.raw[w.fingerprint] = orjson.dumps(w.alert.to_dict())
            if w.clock_at is None:
                self.clock.pop(w.fingerprint, None)
            else:
                self.clock[w.fingerprint] = w.clock_at
            results.append(True)
        return results

    async def live_alerts(self, partitions: Iterable[int] | None = None) -> list[Alert]:
        return [Alert.from_dict(orjson.loads(v)) for v in self.raw.values()]

    async def due(self, now: float, partitions: Iterable[int] | None = None) -> list[Alert]:
        due = [fp for fp, at in self.clock.items() if at <= now]
        alerts = [Alert.from_dict(orjson.loads(self.raw[fp])) for fp in due if fp in self.raw]
        return [a for a in alerts if a.state != "resolved"]

    async def reschedule(self, clock: dict[str, float]) -> None:
        self.clock.update(clock)


def _show_expected(e: ExpectedAlert) -> str:
    labels = ",".join(f"{k}={v}" for k, v in sorted(e.labels.items()))
    out = f"{{{labels}}} severity={e.severity or '*'} state={e.state}"
    if e.value is not None:
        out += f" value={e.value:g}"
    if e.annotations:
        out += f" annotations={e.annotations}"
    return out


def _show_actual(a: Alert) -> str:
    labels = ",".join(f"{k}={v}" for k, v in sorted(a.labels.items()) if k != "severity")
    value = "none" if a.value is None else f"{a.value:g}"
    return f"{{{labels}}} severity={a.severity} state={a.state} value={value}"


def _tolerance(rules: dict[str, Rule], alert: Alert) -> float:
    rule = rules.get(alert.rule)
    if rule is not None and rule.spec.aggregate_kind in PERCENTILES:
        return RELATIVE_ACCURACY  # the sketch's bound: an estimate, not the exact sample
    return VALUE_TOLERANCE


def _mismatches(e: ExpectedAlert, a: Alert, tolerance: float = VALUE_TOLERANCE) -> list[str]:
    """How an alert differs from what was expected; empty when it matches."""
    out = []
    for k, v in e.labels.items():
        if a.labels.get(k) != v:
            out.append(f"label {k}: expected {v!r}, got {a.labels.get(k)!r}")
    if e.severity is not None and a.severity != e.severity:
        out.append(f"severity: expected {e.severity}, got {a.severity}")
    if a.state != e.state:
        out.append(f"state: expected {e.state}, got {a.state}")
    if e.value is not None and (
        a.value is None or not math.isclose(a.value, e.value, rel_tol=tolerance)
    ):
        out.append(f"value: expected {e.value:g}, got {a.value}")
    for k, v in e.annotations.items():
        if a.annotations.get(k) != v:
            out.append(f"annotation {k}: expected {v!r}, got {a.annotations.get(k)!r}")
    return out


def compare(
    expected: list[ExpectedAlert], actual: list[Alert], rules: dict[str, Rule] | None = None
) -> list[str]:
    """Report lines for one check time: `-` an expected alert missing, `+` one not expected.

    A missing alert whose labels match an unexpected one is shown beside it with what
    differs (severity, state, value, annotations).
    """
    tolerance = {a.fingerprint: _tolerance(rules or {}, a) for a in actual}
    unmatched = sorted(actual, key=lambda a: sorted(a.labels.items()))
    missing = []
    for e in expected:
        hit = next((a for a in unmatched if not _mismatches(e, a, tolerance[a.fingerprint])), None)
        if hit is None:
            missing.append(e)
        else:
            unmatched.remove(hit)
    lines = []
    for e in missing:
        lines.append(f"    - expected {_show_expected(e)}")
        near = next(
            (a for a in unmatched if all(a.labels.get(k) == v for k, v in e.labels.items())),
            None,
        )
        if near is not None:
            unmatched.remove(near)
            lines.append(f"    + got      {_show_actual(near)}")
            lines += [f"        {m}" for m in _mismatches(e, near, tolerance[near.fingerprint])]
    lines += [f"    + unexpected {_show_actual(a)}" for a in unmatched]
    return lines


async def run_case(
    case: TestCase, evaluator: Evaluator, alerts: MemoryAlerts, step_s: float
) -> list[str]:
    """Feed the case's samples on a fake clock; report lines for each check that failed."""
    samples: dict[float, list[dict[str, Any]]] = {}
    for s in case.input:
        for i in range(s.repeat):
            at = s.at.total_seconds() + i * s.every.total_seconds()
            samples.setdefault(at, []).append(
                {"name": s.name, "value": s.value, "labels": s.labels}
            )
    checks = {e.at.total_seconds(): e for e in case.expect}
    end = max([*samples, *checks, 0.0])
    grid = {i * step_s for i in range(int(end // step_s) + 1)} if step_s > 0 else set()
    failures = []
    for t in sorted(set(samples) | set(checks) | grid):
        now = EPOCH + t
        events = [event_from_object({**obj, "ts": now}, now) for obj in samples.get(t, ())]
        if events:
            await evaluator.ingest(events, now)
        await evaluator.tick(now)
        exp = checks.get(t)
        if exp is None:
            continue
        live = [a for a in await alerts.live_alerts() if a.state in ("pending", "firing")]
        lines = compare(exp.alerts, live, evaluator.rules)
        if lines:
            failures.append("\n".join([f"  at {format_duration(exp.at)}:", *lines]))
    return failures


def _not_a_test_file(path: Path, raw: dict[str, Any]) -> ConfigError:
    """Another file passed where a test file belongs: say what it is, and what to pass."""
    if "rules" not in raw:
        return ConfigError(
            "is not a rule test file (one has rule_files and [[tests]]; see docs/rules.md)",
            file=str(path),
        )
    tests = path.with_name(path.name.removesuffix(".toml") + ".test.toml")
    hint = f"run alertd rules test {tests}" if tests.is_file() else f"write its tests in {tests}"
    return ConfigError(
        f"is a rule file (it has [[rules]]), not a test file ([[tests]] and rule_files); {hint}",
        file=str(path),
    )


async def run_file(path: Path) -> tuple[int, int, list[str]]:
    """(passed, failed, report lines) for one test file; ConfigErrors when it cannot run."""
    shown = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        if "tests" not in raw and "rule_files" not in raw:
            raise ConfigErrors([_not_a_test_file(path, raw)])
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
        evaluator = Evaluator(rules, MemoryWindows(), alerts, log_changes=False)
        failures = await run_case(case, evaluator, alerts, spec.evaluation_interval.total_seconds())
        if failures:
            failed += 1
            report.append(f"FAIL {shown}: {case.name}")
            report.extend(failures)
        else:
            passed += 1
            report.append(f"ok   {shown}: {case.name}")
    return passed, failed, report
