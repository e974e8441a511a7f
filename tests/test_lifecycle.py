"""The alert lifecycle on a fake clock: `step` directly, and the real Evaluator in memory.

inactive -> pending (`for`) -> firing -> resolved; keep_firing_for; recovery conditions;
escalation; `age`; windows that empty; old and future timestamps; compare-and-set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog.testing

from alertd.engine.evaluator import (
    LOGGED_CHANGES,
    MAX_ATTEMPTS,
    NOTIFY_CHANGES,
    Evaluator,
    PendingWrite,
)
from alertd.engine.lifecycle import Change, held_severity, series_fingerprint, step
from alertd.engine.windows import MemoryWindows
from alertd.errors import ConfigErrors
from alertd.matchers import parse_matchers
from alertd.model import Alert, Event, fingerprint
from alertd.ruletest import MemoryAlerts
from alertd.settings import Rule, RuleSpec, load_config

T0 = 1_700_000_000.0


def make_rule(**fields: Any) -> Rule:
    spec = RuleSpec.model_validate({"name": "R", "metric": "m", **fields})
    return Rule(spec=spec, file="rules/test.toml", match=parse_matchers(spec.match))


class Engine:
    """The real Evaluator over in-memory windows and alerts, on a clock the test moves."""

    def __init__(self, *rules: Rule) -> None:
        self.alerts = MemoryAlerts()
        self.windows = MemoryWindows()
        self.now = T0
        self.changes: list[PendingWrite] = []
        self.evaluator = self.build(list(rules))

    def build(self, rules: list[Rule]) -> Evaluator:
        async def record(writes: list[PendingWrite]) -> None:
            self.changes.extend(writes)

        return Evaluator(rules, self.windows, self.alerts, on_change=record, log_changes=False)

    async def send(
        self, value: float, name: str = "m", ts: float | None = None, **labels: str
    ) -> None:
        event = Event(name, value, labels, self.now if ts is None else ts)
        await self.evaluator.ingest([event], self.now)

    async def at(self, offset_s: float) -> None:
        """Move the clock to T0 + offset_s and let it tick."""
        self.now = T0 + offset_s
        await self.evaluator.tick(self.now)

    async def live(self) -> list[Alert]:
        return [a for a in await self.alerts.live_alerts() if a.state != "resolved"]

    async def one(self) -> Alert:
        (alert,) = await self.live()
        return alert

    def notified(self) -> list[tuple[str, str | None]]:
        """(change, severity) of every change a receiver would hear about, in order."""
        return [
            (w.change.value, w.alert.severity if w.alert else None)
            for w in self.changes
            if w.change in NOTIFY_CHANGES
        ]


class TestChangeLog:
    """A storm's log says what fired in a hundred lines a batch, and counts the rest."""

    async def test_changes_past_the_first_hundred_of_a_batch_are_counted_in_one_line(
        self,
    ) -> None:
        rule = make_rule(critical="> 0", group_by=["id"])
        evaluator = Evaluator([rule], MemoryWindows(), MemoryAlerts())
        events = [Event("m", 1.0, {"id": str(i)}, T0) for i in range(LOGGED_CHANGES + 20)]
        with structlog.testing.capture_logs() as logs:
            await evaluator.ingest(events, T0)
        fired = [e for e in logs if e["event"] == "alert fired"]
        (rest,) = [e for e in logs if e["event"] == "alert changes not logged one by one"]
        assert LOGGED_CHANGES == len(fired)
        assert (20, {"fired": 20}, {"R": 20}) == (rest["count"], rest["changes"], rest["rules"])


class TestStep:
    """The pure lifecycle function moves one series through its states."""

    def test_inactive_stays_inactive_below_threshold(self) -> None:
        rule = make_rule(critical="> 10")
        assert (None, Change.NONE) == step(rule, {}, None, 5.0, T0)
        assert (None, Change.NONE) == step(rule, {}, None, None, T0)

    def test_for_goes_pending_then_fires(self) -> None:
        rule = make_rule(critical="> 10", **{"for": "1m"})
        pending, change = step(rule, {}, None, 20.0, T0)
        assert Change.PENDING == change
        assert pending is not None and "pending" == pending.state
        still, change = step(rule, {}, pending, 20.0, T0 + 59)
        assert Change.NONE == change
        assert still is not None and "pending" == still.state
        fired, change = step(rule, {}, still, 20.0, T0 + 60)
        assert Change.FIRED == change
        assert fired is not None and "firing" == fired.state
        assert T0 + 60 == fired.starts_at

    def test_pending_that_clears_goes_back_to_inactive(self) -> None:
        rule = make_rule(critical="> 10", **{"for": "1m"})
        pending, _ = step(rule, {}, None, 20.0, T0)
        assert (None, Change.CLEARED) == step(rule, {}, pending, 5.0, T0 + 30)

    def test_resolved_alert_fires_again_as_a_new_one(self) -> None:
        rule = make_rule(critical="> 10")
        fired, _ = step(rule, {}, None, 20.0, T0)
        resolved, change = step(rule, {}, fired, 5.0, T0 + 10)
        assert Change.RESOLVED == change
        assert resolved is not None and T0 + 10 == resolved.ends_at
        again, change = step(rule, {}, resolved, 20.0, T0 + 20)
        assert Change.FIRED == change
        assert again is not None and T0 + 20 == again.starts_at and again.ends_at is None


class TestFingerprint:
    """A level change is the same alert: its fingerprint ignores severity."""

    def test_stable_across_severities(self) -> None:
        rule = make_rule(warning="> 1", critical="> 10", group_by=["service"])
        labels = {"service": "api"}
        warning, _ = step(rule, labels, None, 5.0, T0)
        critical, change = step(rule, labels, warning, 50.0, T0 + 1)
        assert Change.SEVERITY == change
        assert warning is not None and critical is not None
        assert warning.fingerprint == critical.fingerprint
        assert series_fingerprint(rule, labels) == critical.fingerprint
        assert fingerprint({**critical.labels, "severity": "info"}) == critical.fingerprint
        assert "critical" == critical.labels["severity"]

    def test_series_differ_by_group_labels(self) -> None:
        rule = make_rule(critical="> 1", group_by=["service"])
        assert series_fingerprint(rule, {"service": "a"}) != series_fingerprint(
            rule, {"service": "b"}
        )

    def test_alert_labels(self) -> None:
        rule = make_rule(critical="> 1", group_by=["service", "env"], labels={"team": "web"})
        alert, _ = step(rule, {"service": "api", "env": ""}, None, 5.0, T0)
        assert alert is not None
        expected = {"alertname": "R", "severity": "critical", "service": "api", "team": "web"}
        assert expected == alert.labels


class TestHysteresis:
    """A firing level is kept until its recovery condition holds, so a hovering value is quiet."""

    RULE = make_rule(
        aggregate="avg",
        warning="> 80",
        warning_recovery="< 70",
        critical="> 95",
        critical_recovery="< 90",
    )

    @pytest.mark.parametrize(
        ("held", "value", "expected"),
        [
            (None, 97.0, "critical"),
            ("critical", 92.0, "critical"),
            ("critical", 85.0, "warning"),
            ("warning", 75.0, "warning"),
            ("warning", 65.0, None),
            (None, 92.0, "warning"),  # not held: plain thresholds
            (None, 75.0, None),
        ],
    )
    def test_documented_example(self, held: str | None, value: float, expected: str) -> None:
        assert expected == held_severity(self.RULE, value, held)[0]

    async def test_hovering_value_changes_the_alert_once(self) -> None:
        engine = Engine(make_rule(critical="> 50", critical_recovery="< 30"))
        for i, value in enumerate([60, 45, 55, 48, 52, 35, 25, 40]):
            await engine.at(i)
            await engine.send(value)
        assert [("fired", "critical"), ("resolved", "critical")] == engine.notified()


class TestEscalation:
    """warning -> critical -> warning is one alert, and each change is told at once."""

    async def test_up_and_down(self) -> None:
        engine = Engine(make_rule(warning="> 1000", critical="> 5000", group_by=["queue"]))
        for i, value in enumerate([1500, 7000, 3000, 10]):
            await engine.at(i)
            await engine.send(value, queue="emails")
        expected = [
            ("fired", "warning"),
            ("severity_changed", "critical"),
            ("severity_changed", "warning"),
            ("resolved", "warning"),
        ]
        assert expected == engine.notified()
        assert 1 == len({w.fingerprint for w in engine.changes})

    async def test_threshold_renders_for_the_current_level(self) -> None:
        rule = make_rule(warning="> 10", critical="> 50", summary="{value:g} over {threshold:g}")
        engine = Engine(rule)
        await engine.send(20)
        assert "20 over 10" == (await engine.one()).annotations["summary"]
        await engine.send(70)
        assert "70 over 50" == (await engine.one()).annotations["summary"]


class TestFor:
    """`for` holds an alert pending; the clock promotes it without any new sample."""

    async def test_promoted_on_the_clock(self) -> None:
        engine = Engine(make_rule(critical="> 10", window="10m", **{"for": "1m"}))
        await engine.send(20)
        assert "pending" == (await engine.one()).state
        await engine.at(59)
        assert "pending" == (await engine.one()).state
        await engine.at(60)
        assert "firing" == (await engine.one()).state
        assert [("fired", "critical")] == engine.notified()

    async def test_cleared_before_for_is_never_told(self) -> None:
        engine = Engine(make_rule(critical="> 10", **{"for": "1m"}))
        await engine.send(20)
        await engine.at(30)
        await engine.send(1)
        await engine.at(90)
        assert [] == await engine.live()
        assert [] == engine.notified()

    async def test_pending_alert_clears_when_its_window_empties(self) -> None:
        engine = Engine(make_rule(critical="> 10", window="30s", **{"for": "1m"}))
        await engine.send(20)
        await engine.at(45)
        assert [] == await engine.live()
        assert [] == engine.notified()


class TestKeepFiringFor:
    """keep_firing_for keeps a cleared alert firing for a while, then resolves it."""

    async def test_resolves_only_after_the_grace(self) -> None:
        engine = Engine(make_rule(critical="> 10", window="10m", keep_firing_for="2m"))
        await engine.send(20)
        await engine.at(10)
        await engine.send(1)
        await engine.at(129)
        assert "firing" == (await engine.one()).state
        await engine.at(130)
        assert [] == await engine.live()
        assert [("fired", "critical"), ("resolved", "critical")] == engine.notified()

    async def test_condition_back_within_the_grace_is_not_retold(self) -> None:
        engine = Engine(make_rule(critical="> 10", window="10m", keep_firing_for="2m"))
        await engine.send(20)
        await engine.at(10)
        await engine.send(1)
        await engine.at(60)
        await engine.send(30)
        await engine.at(100)
        await engine.send(2)  # last true at 100: firing until 220
        await engine.at(219)
        assert "firing" == (await engine.one()).state
        await engine.at(220)
        assert [("fired", "critical"), ("resolved", "critical")] == engine.notified()

    async def test_window_that_empties_waits_for_the_grace(self) -> None:
        engine = Engine(make_rule(critical="> 10", window="30s", keep_firing_for="1m"))
        await engine.send(20)
        for second in range(1, 90):  # the daemon's clock: a tick a second
            await engine.at(second)
        # the sample left the window at 31 s: the grace runs until 91 s
        assert "firing" == (await engine.one()).state
        await engine.at(90.5)
        assert "firing" == (await engine.one()).state
        await engine.at(91)
        assert [] == await engine.live()

    def test_grace_added_to_a_firing_alert_starts_now(self) -> None:
        before = make_rule(critical="> 10")
        fired, _ = step(before, {}, None, 20.0, T0)
        after = make_rule(critical="> 10", keep_firing_for="1m")
        kept, change = step(after, {}, fired, 1.0, T0 + 100)
        assert Change.NONE == change
        assert kept is not None and "firing" == kept.state
        _, change = step(after, {}, kept, 1.0, T0 + 160)
        assert Change.RESOLVED == change


class TestEmptyingWindows:
    """A series that stops reporting keeps its state until its window empties, then resolves."""

    async def test_resolved_on_the_clock(self) -> None:
        engine = Engine(make_rule(critical="> 10", window="1m"))
        await engine.send(20)
        await engine.at(60)
        assert "firing" == (await engine.one()).state
        await engine.at(63)  # the window moves in 2s steps
        assert [] == await engine.live()
        assert [("fired", "critical"), ("resolved", "critical")] == engine.notified()


class TestAge:
    """`age` fires when heartbeats stop and resolves when they come back."""

    async def test_stop_and_return(self) -> None:
        engine = Engine(make_rule(aggregate="age", critical="> 60", group_by=["service"]))
        await engine.send(1, service="db")
        await engine.send(1, service="cache")
        for second in range(15, 76, 15):
            await engine.at(second)
            await engine.send(1, service="cache")
            if second == 60:  # db silent for 60s: not over 60
                assert [] == await engine.live()
        alert = await engine.one()
        assert ("db", 75.0) == (alert.labels["service"], alert.value)
        await engine.send(1, service="db")
        assert [] == await engine.live()
        assert [("fired", "critical"), ("resolved", "critical")] == engine.notified()

    async def test_fires_on_the_clock_alone(self) -> None:
        engine = Engine(make_rule(aggregate="age", critical="> 5"))
        await engine.send(1)
        await engine.at(5)
        assert [] == await engine.live()
        await engine.at(6)
        assert 6.0 == (await engine.one()).value

    async def test_old_heartbeat_does_not_make_a_series_younger(self) -> None:
        engine = Engine(make_rule(aggregate="age", critical="> 60"))
        await engine.send(1)
        await engine.at(100)
        await engine.send(1, ts=T0 - 50)
        assert 100.0 == (await engine.one()).value


class TestTimestamps:
    """Late, out-of-order and future samples land where their time says."""

    async def test_sample_older_than_the_window_changes_nothing(self) -> None:
        engine = Engine(make_rule(aggregate="max", window="1m", critical="> 10"))
        await engine.at(600)
        await engine.send(99, ts=T0 + 500)
        assert [] == await engine.live()
        await engine.send(99, ts=T0 + 590)
        assert 99.0 == (await engine.one()).value

    async def test_late_sample_does_not_replace_newer_last(self) -> None:
        engine = Engine(make_rule(window="5m", critical="> 10"))
        await engine.at(100)
        await engine.send(20, ts=T0 + 100)
        await engine.send(1, ts=T0 + 90)
        assert 20.0 == (await engine.one()).value

    async def test_future_sample_counts_as_now(self) -> None:
        engine = Engine(make_rule(aggregate="count", window="1m", critical=">= 1"))
        await engine.send(1, ts=T0 + 3600)
        assert 1.0 == (await engine.one()).value
        await engine.at(63)  # it left the window with the samples of its arrival time
        assert [] == await engine.live()


class TestPreparedBatches:
    """A batch pre-aggregated ahead of its turn is judged as if it had not been."""

    async def test_prepared_batch_counts_once(self) -> None:
        engine = Engine(make_rule(aggregate="count", window="1m", critical=">= 3"))
        events = [Event("m", 1, {}, T0), Event("m", 1, {}, T0)]
        await engine.evaluator.prepare(events, T0)
        await engine.evaluator.ingest(events, T0)
        assert [] == await engine.live()
        await engine.send(1)
        assert 3.0 == (await engine.one()).value

    async def test_batch_prepared_at_another_time_is_aggregated_again(self) -> None:
        engine = Engine(make_rule(aggregate="max", window="1m", critical="> 10"))
        events = [Event("m", 99, {}, T0 + 500)]
        await engine.evaluator.prepare(events, T0 + 500)  # then processed later, at T0 + 600
        await engine.evaluator.ingest(events, T0 + 600)
        assert [] == await engine.live()  # older than the window at T0 + 600


class TestRuleChanges:
    """An alert whose rule is removed, or no longer yields its series, resolves."""

    async def test_removed_rule_resolves_its_alerts(self) -> None:
        engine = Engine(make_rule(critical="> 10", window="1h"))
        await engine.send(20)
        engine.evaluator = engine.build([make_rule(name="Other", critical="> 1")])
        await engine.at(1)
        assert [] == await engine.live()
        assert [("fired", "critical"), ("resolved", "critical")] == engine.notified()

    async def test_changed_labels_resolve_the_old_alert(self) -> None:
        engine = Engine(make_rule(critical="> 10", window="1h"))
        await engine.send(20)
        engine.evaluator = engine.build([make_rule(critical="> 10", labels={"team": "db"})])
        await engine.at(1)
        assert [] == await engine.live()
        await engine.send(20)
        assert "db" == (await engine.one()).labels["team"]

    async def test_threshold_change_keeps_the_window_and_the_alert(self) -> None:
        engine = Engine(make_rule(aggregate="sum", window="1h", critical="> 10"))
        await engine.send(8)
        await engine.send(8)
        engine.evaluator = engine.build(
            [make_rule(aggregate="sum", window="1h", warning="> 10", critical="> 20")]
        )
        await engine.at(1)
        await engine.send(8)
        alert = await engine.one()
        assert ("critical", 24.0) == (alert.severity, alert.value)
        assert [("fired", "critical"), ("severity_changed", "warning")] == engine.notified()[:2]


class Racing(MemoryAlerts):
    """An alert store where another replica moves the alert just before each of our writes."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.rounds = rounds
        self.attempts = 0

    async def write(self, changes: list[PendingWrite], now: float) -> list[bool]:
        self.attempts += 1
        if self.attempts <= self.rounds:
            for w in changes:
                other = Alert(w.fingerprint, "R", {}, {}, "pending", "info", 0.0, now)
                other.meta = {"by": float(self.attempts)}
                self.raw[w.fingerprint] = orjson.dumps(other.to_dict())
        return await super().write(changes, now)


class TestCompareAndSet:
    """A change another replica raced is judged again on a fresh read, not lost or doubled."""

    async def test_retried_after_a_lost_race(self) -> None:
        rule = make_rule(critical="> 10")
        alerts = Racing(rounds=2)
        evaluator = Evaluator([rule], MemoryWindows(), alerts, log_changes=False)
        done = await evaluator.ingest([Event("m", 20, {}, T0)], T0)
        assert 3 == alerts.attempts
        # Judged against what the racer stored: its pending alert, promoted.
        assert [Change.FIRED] == [w.change for w in done]
        stored = [(a.state, a.severity) for a in await alerts.live_alerts()]
        assert [("firing", "critical")] == stored

    async def test_gives_up_after_max_attempts(self) -> None:
        alerts = Racing(rounds=MAX_ATTEMPTS)
        evaluator = Evaluator([make_rule(critical="> 10")], MemoryWindows(), alerts)
        done = await evaluator.ingest([Event("m", 20, {}, T0)], T0)
        assert [] == done
        assert (MAX_ATTEMPTS, 1) == (alerts.attempts, evaluator.lost_writes)


class TestTemplates:
    """Annotations render labels, value and threshold; mistakes show at `alertd check`."""

    def test_fields_and_format_specs(self) -> None:
        rule = make_rule(
            group_by=["service"],
            warning="> 0.01",
            summary="{service}: {value:.2%} over {threshold:.0%} ({alertname}, {severity})",
            description="rule {rule}; unknown '{nope}'",
            runbook_url="https://runbooks.example.com/{service}",
        )
        alert, _ = step(rule, {"service": "api"}, None, 0.0734, T0)
        assert alert is not None
        expected = {
            "summary": "api: 7.34% over 1% (R, warning)",
            "description": "rule R; unknown ''",
            "runbook_url": "https://runbooks.example.com/api",
        }
        assert expected == alert.annotations

    def write(self, tmp_path: Path, summary: str) -> Path:
        (tmp_path / "rules").mkdir()
        (tmp_path / "rules" / "r.toml").write_text(
            f'[[rules]]\nname = "R"\nmetric = "m"\ncritical = "> 1"\nsummary = "{summary}"\n'
        )
        cfg = tmp_path / "alertd.toml"
        cfg.write_text("")
        return cfg

    @pytest.mark.parametrize("field", ["{labels.service}", "{labels[0]}", "{0}", "{}"])
    def test_attribute_and_index_access_are_errors(self, tmp_path: Path, field: str) -> None:
        with pytest.raises(ConfigErrors) as info:
            load_config(self.write(tmp_path, field), env={})
        text = str(info.value)
        assert "rules/r.toml" in text and "summary" in text

    def test_unknown_field_is_a_warning(self, tmp_path: Path) -> None:
        config = load_config(self.write(tmp_path, "{servce} down"), env={})
        assert 1 == len(config.warnings)
        assert "{servce}" in config.warnings[0]
