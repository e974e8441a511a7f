"""Posted alerts' rules (alertd.posted) and Alertmanager's matchers (alertd.http.am_matchers)."""

from __future__ import annotations

import pytest

from alertd.engine.lifecycle import Change
from alertd.http.am_matchers import object_of, parse_text, spec_of
from alertd.posted import POSTED_RULE, Posted, expire_due, fingerprint_of, receive

T0 = 1_800_000_000.0
TIMEOUT_S = 300.0


def post(starts: float | None = None, ends: float | None = None, **labels: str) -> Posted:
    return Posted(
        labels or {"alertname": "DiskFull"}, {"summary": "full"}, starts, ends, "http://prom"
    )


class TestFingerprint:
    """A posted alert's fingerprint is Alertmanager's, over all its labels."""

    def test_matches_prometheus_common(self) -> None:
        # prometheus/common model: TestMetricToFingerprint's vectors
        labels = {"name": "garland, briggs", "fear": "love is not enough"}
        assert f"{5799056148416392346:016x}" == fingerprint_of(labels)
        assert f"{14695981039346656037:016x}" == fingerprint_of({})

    def test_severity_is_part_of_it(self) -> None:
        a = fingerprint_of({"alertname": "X", "severity": "warning"})
        assert a != fingerprint_of({"alertname": "X", "severity": "critical"})


class TestReceive:
    """Posting fires, resending refreshes quietly, an endsAt in the past resolves."""

    def test_first_post_fires_until_ends_at(self) -> None:
        alert, change = receive(None, post(T0 - 60, T0 + 40), T0, TIMEOUT_S)
        assert Change.FIRED == change
        assert alert is not None
        assert ("firing", T0 - 60, T0 + 40) == (alert.state, alert.starts_at, alert.ends_at)
        assert (POSTED_RULE, "http://prom") == (alert.rule, alert.generator_url)

    def test_no_ends_at_means_resolve_timeout(self) -> None:
        alert, _ = receive(None, post(), T0, TIMEOUT_S)
        assert alert is not None
        assert (T0, T0 + TIMEOUT_S) == (alert.starts_at, alert.ends_at)

    def test_resend_moves_ends_at_and_keeps_start(self) -> None:
        first, _ = receive(None, post(T0 - 60, T0 + 40), T0, TIMEOUT_S)
        again, change = receive(first, post(T0 - 30, T0 + 80), T0 + 40, TIMEOUT_S)
        assert Change.UPDATED == change
        assert again is not None
        assert (T0 - 60, T0 + 80) == (again.starts_at, again.ends_at)
        assert first is not None and first.updated_at == again.updated_at

    def test_ends_at_in_the_past_resolves_keeping_it(self) -> None:
        first, _ = receive(None, post(T0 - 60, T0 + 40), T0, TIMEOUT_S)
        done, change = receive(first, post(T0 - 60, T0 + 5), T0 + 10, TIMEOUT_S)
        assert Change.RESOLVED == change
        assert done is not None
        assert ("resolved", T0 + 5) == (done.state, done.ends_at)

    def test_resolved_alert_nobody_heard_of_is_ignored(self) -> None:
        assert (None, Change.NONE) == receive(None, post(T0 - 60, T0 - 5), T0, TIMEOUT_S)

    def test_firing_again_after_resolution_is_new(self) -> None:
        first, _ = receive(None, post(T0 - 60, T0 + 40), T0, TIMEOUT_S)
        done, _ = receive(first, post(T0 - 60, T0 + 5), T0 + 10, TIMEOUT_S)
        again, change = receive(done, post(T0 + 20, T0 + 90), T0 + 30, TIMEOUT_S)
        assert Change.FIRED == change
        assert again is not None and T0 + 20 == again.starts_at

    def test_expires_at_ends_at(self) -> None:
        alert, _ = receive(None, post(T0, T0 + 40), T0, TIMEOUT_S)
        assert alert is not None
        assert Change.NONE == expire_due(alert, T0 + 39)[1]
        ended, change = expire_due(alert, T0 + 41)
        assert Change.RESOLVED == change
        assert ended is not None and ("resolved", T0 + 40) == (ended.state, ended.ends_at)


class TestAlertmanagerMatchers:
    """amtool's matcher objects and filter texts mean in alertd what they mean in Alertmanager."""

    @pytest.mark.parametrize(
        ("value", "is_regex", "is_equal", "spec"),
        [
            ("api", False, True, "api"),
            ("api", False, False, "!api"),
            ("prod.*", True, True, "~prod.*"),
            ("prod.*", True, False, "!~prod.*"),
            ("!bang", False, True, "~!bang"),
        ],
    )
    def test_objects_round_trip(
        self, value: str, is_regex: bool, is_equal: bool, spec: str
    ) -> None:
        assert spec == spec_of(value, is_regex, is_equal)
        if not value.startswith("!"):
            expected = {"name": "l", "value": value, "isRegex": is_regex, "isEqual": is_equal}
            assert expected == object_of("l", spec)

    def test_literal_that_looks_like_an_operator_matches_literally(self) -> None:
        m = parse_text('l="!bang"')
        assert (True, False) == (m.matches({"l": "!bang"}), m.matches({"l": "bang"}))

    @pytest.mark.parametrize(
        ("text", "labels", "expected"),
        [
            ('alertname="DiskFull"', {"alertname": "DiskFull"}, True),
            ("alertname=DiskFull", {"alertname": "Other"}, False),
            ('env=~"prod.*"', {"env": "prod-eu"}, True),
            ('env!~"prod.*"', {"env": "prod-eu"}, False),
            ("env!=prod", {"env": "dev"}, True),
            ('{job="a \\"quoted\\" job"}', {"job": 'a "quoted" job'}, True),
        ],
    )
    def test_filter_text(self, text: str, labels: dict[str, str], expected: bool) -> None:
        assert expected == parse_text(text).matches(labels)

    @pytest.mark.parametrize("text", ["", "alertname", "1abc=x", 'a=~"("'])
    def test_bad_filter_text(self, text: str) -> None:
        with pytest.raises(ValueError):
            parse_text(text)
