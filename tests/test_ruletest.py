"""`alertd rules test`: rule unit tests on a fake clock, and the report an operator reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from alertd.cli import main
from alertd.errors import ConfigErrors
from alertd.ruletest import run_file

RULES = """
[[rules]]
name = "Backlog"
metric = "queue_depth"
window = "1m"
group_by = ["queue"]
warning = "> 1000"
critical = "> 5000"
summary = "{queue}: {value:.0f}"

[[rules]]
name = "Slow"
metric = "latency"
aggregate = "p95"
window = "5m"
for = "30s"
warning = "> 1"
"""

HEADER = 'rule_files = ["r.toml"]\nevaluation_interval = "15s"\n'

PASSING = (
    HEADER
    + """
[[tests]]
name = "backlog escalates"
input = [
  { at = "0s", name = "queue_depth", value = 2000, labels = { queue = "q" } },
  { at = "15s", name = "queue_depth", value = 7000, labels = { queue = "q" } },
]
[[tests.expect]]
at = "0s"
alerts = [{ labels = { alertname = "Backlog", queue = "q" }, severity = "warning", value = 2000 }]
[[tests.expect]]
at = "15s"
alerts = [
  { labels = { queue = "q" }, severity = "critical", annotations = { summary = "q: 7000" } },
]
[[tests.expect]]
at = "1m30s"
alerts = []

[[tests]]
name = "slow goes pending, then fires on the clock"
input = [{ at = "0s", name = "latency", value = 2.5, repeat = 20, every = "1s" }]
[[tests.expect]]
at = "15s"
alerts = [{ labels = { alertname = "Slow" }, state = "pending", value = 2.5 }]
[[tests.expect]]
at = "30s"
alerts = [{ labels = { alertname = "Slow" }, state = "firing" }]
"""
)


def write(tmp_path: Path, tests: str, rules: str = RULES) -> Path:
    (tmp_path / "r.toml").write_text(rules)
    path = tmp_path / "r.test.toml"
    path.write_text(tests)
    return path


class TestPassing:
    """A file whose expectations hold reports ok per test and exits 0."""

    async def test_run_file(self, tmp_path: Path) -> None:
        passed, failed, report = await run_file(write(tmp_path, PASSING))
        assert (2, 0) == (passed, failed)
        assert [
            f"ok   {tmp_path / 'r.test.toml'}: backlog escalates",
            f"ok   {tmp_path / 'r.test.toml'}: slow goes pending, then fires on the clock",
        ] == report

    def test_cli(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert 0 == main(["rules", "test", str(write(tmp_path, PASSING))])
        out = capsys.readouterr().out
        assert out.endswith("2 passed, 0 failed\n")
        assert "alert fired" not in out  # the engine's log stays out of the report


class TestFailing:
    """A failed expectation shows what was expected beside what came, and exits 1."""

    async def test_wrong_severity_is_shown_with_the_difference(self, tmp_path: Path) -> None:
        tests = PASSING.replace('severity = "critical"', 'severity = "warning"')
        passed, failed, report = await run_file(write(tmp_path, tests))
        assert (1, 1) == (passed, failed)
        expected = [
            f"FAIL {tmp_path / 'r.test.toml'}: backlog escalates",
            "  at 15s:",
            "    - expected {queue=q} severity=warning state=firing"
            " annotations={'summary': 'q: 7000'}",
            "    + got      {alertname=Backlog,queue=q} severity=critical state=firing value=7000",
            "        severity: expected warning, got critical",
        ]
        assert expected == report[0].splitlines() + report[1].splitlines()

    async def test_missing_and_unexpected_alerts(self, tmp_path: Path) -> None:
        tests = (
            HEADER
            + """
[[tests]]
name = "two queues"
input = [
  { at = "0s", name = "queue_depth", value = 2000, labels = { queue = "a" } },
  { at = "0s", name = "queue_depth", value = 9000, labels = { queue = "b" } },
]
[[tests.expect]]
at = "0s"
alerts = [{ labels = { queue = "c" } }]
"""
        )
        _, failed, report = await run_file(write(tmp_path, tests))
        assert 1 == failed
        lines = report[1].splitlines()
        assert [
            "  at 0s:",
            "    - expected {queue=c} severity=* state=firing",
            "    + unexpected {alertname=Backlog,queue=a} severity=warning state=firing value=2000",
            "    + unexpected {alertname=Backlog,queue=b} severity=critical state=firing"
            " value=9000",
        ] == lines

    async def test_value_annotations_and_state_differences(self, tmp_path: Path) -> None:
        tests = (
            HEADER
            + """
[[tests]]
name = "details"
input = [{ at = "0s", name = "queue_depth", value = 2000, labels = { queue = "a" } }]
[[tests.expect]]
at = "0s"
alerts = [
  { labels = { queue = "a" }, state = "pending", value = 2001, annotations = { summary = "x" } },
]
"""
        )
        _, _, report = await run_file(write(tmp_path, tests))
        assert [
            "        state: expected pending, got firing",
            "        value: expected 2001, got 2000.0",
            "        annotation summary: expected 'x', got 'a: 2000'",
        ] == report[1].splitlines()[3:]

    async def test_percentiles_match_within_one_percent(self, tmp_path: Path) -> None:
        # PASSING expects the exact p95, 2.5; the sketch's estimate is 0.6% off it.
        tests = PASSING.replace("value = 2.5 }]", "value = 2.6 }]")
        passed, failed, report = await run_file(write(tmp_path, tests))
        assert (1, 1) == (passed, failed)
        assert "        value: expected 2.6, got 2.48427367383269" == report[-1].splitlines()[-1]

    def test_cli_exit_code(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        tests = PASSING.replace('at = "1m30s"\nalerts = []', 'at = "1m30s"\nalerts = [{}]')
        assert 1 == main(["rules", "test", str(write(tmp_path, tests))])
        assert capsys.readouterr().out.endswith("1 passed, 1 failed\n")


class TestBadFiles:
    """A test file that cannot run says which file and key are wrong."""

    async def test_missing_rule_file(self, tmp_path: Path) -> None:
        path = tmp_path / "t.test.toml"
        path.write_text('rule_files = ["nope.toml"]\n')
        with pytest.raises(ConfigErrors, match=r"rule file .*nope\.toml not found"):
            await run_file(path)

    async def test_unknown_key_is_named(self, tmp_path: Path) -> None:
        tests = HEADER + '[[tests]]\nname = "x"\n[[tests.expect]]\nat = "0s"\nalert = []\n'
        with pytest.raises(ConfigErrors, match=r"unknown key 'alert'.*did you mean 'alerts'"):
            await run_file(write(tmp_path, tests))

    async def test_two_expectations_at_one_time(self, tmp_path: Path) -> None:
        tests = HEADER + '[[tests]]\nname = "x"\n'
        tests += '[[tests.expect]]\nat = "1m"\n[[tests.expect]]\nat = "60s"\n'
        with pytest.raises(ConfigErrors, match=re.escape("two [[tests.expect]] at 1m")):
            await run_file(write(tmp_path, tests))

    async def test_invalid_rules_are_reported(self, tmp_path: Path) -> None:
        rules = '[[rules]]\nname = "R"\nmetric = "m"\ncritical = "over 9000"\n'
        with pytest.raises(ConfigErrors, match=re.escape("r.toml rule R: critical")):
            await run_file(write(tmp_path, HEADER, rules=rules))

    def test_cli_prints_one_line_per_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "t.test.toml"
        path.write_text("rule_files = [")
        assert 1 == main(["rules", "test", str(path)])
        assert capsys.readouterr().err.startswith(f"alertd: {path}: invalid TOML")
