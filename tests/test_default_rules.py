"""The shipped rules/default.toml: SPEC section 11 thresholds, documented, each one tested."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from alertd.ruletest import run_file
from alertd.settings import Rule, load_rules

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules" / "default.toml"
TESTS = ROOT / "rules" / "default.test.toml"

# SPEC section 11: name -> (metric, aggregate, {level: condition})
SPEC_THRESHOLDS: dict[str, tuple[str, str, dict[str, str]]] = {
    "HighErrorRate": ("http_errors_total", "sum", {"warning": "> 0.01", "critical": "> 0.05"}),
    "HighLatency": ("http_request_duration_seconds", "p95", {"warning": "> 1"}),
    "QueueBacklog": ("queue_depth", "last", {"warning": "> 1000", "critical": "> 5000"}),
    "HighMemoryUsage": ("memory_used_percent", "last", {"warning": "> 85"}),
    "DiskSpaceLow": ("disk_free_percent", "last", {"warning": "< 10", "critical": "< 5"}),
    "HighCpuUsage": ("cpu_used_percent", "avg", {"warning": "> 70"}),
    "DatabaseHeartbeatMissing": ("db_heartbeat", "age", {"critical": "> 60"}),
    "JobFailed": ("job_failed", "count", {"warning": ">= 1"}),
}


def default_rules() -> list[Rule]:
    rules, errors, _ = load_rules([RULES], ROOT, os.environ)
    assert [] == errors
    return rules


def shipped_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = tomllib.loads(TESTS.read_text())["tests"]
    return cases


def expected_alerts(case: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(at, alerts) of a test case, in the file's order."""
    return [(e["at"], e.get("alerts", [])) for e in case.get("expect", [])]


class TestThresholds:
    """The shipped rules are the usual production thresholds of SPEC section 11."""

    def test_every_spec_rule_and_nothing_else(self) -> None:
        assert sorted(SPEC_THRESHOLDS) == sorted(r.name for r in default_rules())

    @pytest.mark.parametrize("name", sorted(SPEC_THRESHOLDS))
    def test_levels(self, name: str) -> None:
        rule = next(r for r in default_rules() if r.name == name)
        metric, aggregate, levels = SPEC_THRESHOLDS[name]
        actual = {lvl: f"{cond.op} {cond.threshold:g}" for lvl, cond, _ in rule.levels()}
        assert (metric, aggregate, levels) == (rule.spec.metric, rule.spec.aggregate_kind, actual)

    def test_error_rate_is_a_ratio_of_enough_requests(self) -> None:
        rule = next(r for r in default_rules() if r.name == "HighErrorRate")
        assert ("http_requests_total", 50.0) == (rule.spec.divide_by, rule.spec.min_denominator)


class TestDocumented:
    """Every shipped rule says what it watches: a comment above it, a summary, a runbook."""

    def test_comment_above_every_rule(self) -> None:
        blocks = RULES.read_text().split("[[rules]]")[1:]
        preceding = RULES.read_text().split("[[rules]]")[:-1]
        assert len(SPEC_THRESHOLDS) == len(blocks)
        for before, block in zip(preceding, blocks, strict=True):
            name = re.search(r'name = "(\w+)"', block)
            assert name is not None
            assert before.rstrip().splitlines()[-1].startswith("#"), name.group(1)

    @pytest.mark.parametrize("name", sorted(SPEC_THRESHOLDS))
    def test_annotations(self, name: str) -> None:
        rule = next(r for r in default_rules() if r.name == name)
        assert rule.spec.summary
        assert rule.spec.runbook_url.startswith("https://")


class TestCoverage:
    """rules/default.test.toml passes and covers every rule, every level, firing and resolving."""

    async def test_shipped_tests_pass(self) -> None:
        passed, failed, report = await run_file(TESTS)
        assert (0, len(shipped_cases())) == (failed, passed), "\n".join(report)

    @pytest.mark.parametrize("name", sorted(SPEC_THRESHOLDS))
    def test_every_level_fires(self, name: str) -> None:
        seen = {
            alert.get("severity")
            for case in shipped_cases()
            for _, alerts in expected_alerts(case)
            for alert in alerts
            if alert.get("labels", {}).get("alertname") == name
        }
        rule = next(r for r in default_rules() if r.name == name)
        assert {lvl for lvl, _, _ in rule.levels()} <= seen

    @pytest.mark.parametrize("name", sorted(SPEC_THRESHOLDS))
    def test_fires_then_resolves(self, name: str) -> None:
        """Some test of the rule expects it firing, and later expects no alert at all."""

        def resolves(case: dict[str, Any]) -> bool:
            fired = False
            for _, alerts in expected_alerts(case):
                names = {a.get("labels", {}).get("alertname") for a in alerts}
                if name in names and any(a.get("state", "firing") == "firing" for a in alerts):
                    fired = True
                elif fired and not alerts:
                    return True
            return False

        assert any(resolves(case) for case in shipped_cases())

    def test_make_test_runs_them(self) -> None:
        makefile = (ROOT / "Makefile").read_text()
        target = makefile.split("\ntest:")[1].split("\n\n")[0]
        assert "alertd rules test rules/default.test.toml" in target
