"""Inhibition: a firing source alert mutes the target alerts a rule names."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from alertd.inhibit import Inhibitor, InhibitRule, inhibited_by
from alertd.model import Alert, AlertState, fingerprint
from alertd.settings import InhibitSettings

NOW_S = 1_795_456_800.0


def alert(state: AlertState = "firing", fp: str | None = None, **labels: str) -> Alert:
    return labelled(labels, state, fp)


def labelled(labels: dict[str, str], state: AlertState = "firing", fp: str | None = None) -> Alert:
    return Alert(
        fp or fingerprint(labels),
        labels.get("alertname", "Rule"),
        labels,
        {},
        state,
        labels.get("severity", "warning"),
        1.0,
        NOW_S,
    )


def rule(source: dict[str, str], target: dict[str, str], equal: Sequence[str] = ()) -> InhibitRule:
    return InhibitRule.from_settings(
        InhibitSettings(source=source, target=target, equal=list(equal))
    )


CRIT_MUTES_WARN = rule({"severity": "critical"}, {"severity": "warning"}, ["alertname", "service"])


def check(target: Alert, firing: list[Alert], rules: Sequence[InhibitRule]) -> list[str]:
    """inhibited_by, after checking that the indexed Inhibitor gives the same answer."""
    direct = inhibited_by(target, firing, rules)
    assert direct == Inhibitor(rules, firing).inhibited_by(target)
    return direct


class TestSourceAndTarget:
    """A critical alert mutes the warnings of the same alert and service."""

    def test_source_mutes_matching_target(self) -> None:
        """The warning names the critical alert that inhibits it."""
        crit = alert(alertname="HighErrorRate", service="api", severity="critical")
        warn = alert(alertname="HighErrorRate", service="api", severity="warning", fp="w1")
        assert [crit.fingerprint] == check(warn, [crit, warn], [CRIT_MUTES_WARN])

    def test_target_side_must_match(self) -> None:
        """An info alert is not a target of a critical-mutes-warning rule."""
        crit = alert(alertname="Disk", service="api", severity="critical")
        info = alert(alertname="Disk", service="api", severity="info", fp="i1")
        assert [] == check(info, [crit], [CRIT_MUTES_WARN])

    def test_source_side_must_match(self) -> None:
        """Another warning never mutes a warning."""
        warn_a = alert(alertname="Disk", service="api", severity="warning", fp="a")
        warn_b = alert(alertname="Disk", service="api", severity="warning", fp="b")
        assert [] == check(warn_b, [warn_a, warn_b], [CRIT_MUTES_WARN])

    def test_regex_and_negated_matchers(self) -> None:
        """Source and target take the same matcher syntax as routes and silences."""
        down = rule({"alertname": "~.*Down", "env": "!staging"}, {"service": "!~db.*"})
        source = alert(alertname="NodeDown", env="prod")
        staging_source = alert(alertname="NodeDown", env="staging")
        web = alert(alertname="Slow", service="web")
        db = alert(alertname="Slow", service="db-main")
        assert [source.fingerprint] == check(web, [source, staging_source], [down])
        assert [] == check(db, [source], [down])

    def test_no_rules_no_inhibition(self) -> None:
        """Without [[inhibit]] nothing is ever muted."""
        crit = alert(alertname="X", severity="critical")
        warn = alert(alertname="X", severity="warning", fp="w")
        assert [] == check(warn, [crit], [])

    def test_several_sources_sorted_and_unique(self) -> None:
        """Every inhibiting alert is listed once, even when two rules agree."""
        crit_a = alert(alertname="X", service="api", severity="critical", zone="a")
        crit_b = alert(alertname="X", service="api", severity="critical", zone="b")
        warn = alert(alertname="X", service="api", severity="warning", fp="w")
        twice = [CRIT_MUTES_WARN, rule({"severity": "critical"}, {"alertname": "X"}, ["service"])]
        expected = sorted([crit_a.fingerprint, crit_b.fingerprint])
        assert expected == check(warn, [crit_b, crit_a], twice)


class TestEqual:
    """`equal` labels must agree, so one service's outage does not mute another's."""

    def test_different_value_does_not_inhibit(self) -> None:
        """A critical on api does not mute a warning on web."""
        crit = alert(alertname="HighErrorRate", service="api", severity="critical")
        warn = alert(alertname="HighErrorRate", service="web", severity="warning")
        assert [] == check(warn, [crit], [CRIT_MUTES_WARN])

    def test_missing_on_both_sides_counts_as_equal(self) -> None:
        """As in Alertmanager, a label neither alert has is equal."""
        crit = alert(alertname="ClusterDown", severity="critical")
        warn = alert(alertname="ClusterDown", severity="warning", fp="w")
        assert [crit.fingerprint] == check(warn, [crit], [CRIT_MUTES_WARN])

    def test_missing_on_one_side_is_not_equal(self) -> None:
        """A source without `service` does not mute a target that has one, nor the reverse."""
        crit = alert(alertname="X", severity="critical")
        warn = alert(alertname="X", service="api", severity="warning")
        crit_api = alert(alertname="X", service="api", severity="critical")
        warn_bare = alert(alertname="X", severity="warning", fp="w")
        assert [] == check(warn, [crit], [CRIT_MUTES_WARN])
        assert [] == check(warn_bare, [crit_api], [CRIT_MUTES_WARN])

    def test_no_equal_labels_mutes_across_everything(self) -> None:
        """With `equal = []` any firing source mutes every target."""
        everything = rule({"alertname": "MaintenanceMode"}, {"severity": "warning"})
        maintenance = alert(alertname="MaintenanceMode", severity="info")
        warn = alert(alertname="Disk", service="db", severity="warning")
        assert [maintenance.fingerprint] == check(warn, [maintenance], [everything])


class TestOnlyFiringSources:
    """Only an alert that is firing now inhibits; a resolved or pending one does not."""

    def test_resolved_source_does_not_inhibit(self) -> None:
        """Once the critical resolves, the warning is notified again."""
        crit = alert("resolved", alertname="X", service="api", severity="critical")
        warn = alert(alertname="X", service="api", severity="warning", fp="w")
        assert [] == check(warn, [crit], [CRIT_MUTES_WARN])

    def test_pending_source_does_not_inhibit(self) -> None:
        """A critical still waiting out its `for` does not mute anything yet."""
        crit = alert("pending", alertname="X", service="api", severity="critical")
        warn = alert(alertname="X", service="api", severity="warning", fp="w")
        assert [] == check(warn, [crit], [CRIT_MUTES_WARN])

    def test_target_state_does_not_matter(self) -> None:
        """A pending or resolved target is muted just the same."""
        crit = alert(alertname="X", service="api", severity="critical")
        for state in ("pending", "resolved"):
            warn = alert(state, alertname="X", service="api", severity="warning", fp="w")
            assert [crit.fingerprint] == check(warn, [crit], [CRIT_MUTES_WARN])


class TestNoSelfInhibition:
    """An alert can never mute itself, and two alerts never mute each other."""

    def test_alert_never_inhibits_itself(self) -> None:
        """An alert matching both sides of a rule is not muted by itself."""
        both = rule({"service": "api"}, {"service": "api"})
        only = alert(alertname="X", service="api")
        assert [] == check(only, [only], [both])

    def test_two_sided_match_does_not_mute_each_other(self) -> None:
        """Two alerts that each match both sides stay loud (Alertmanager's rule)."""
        both = rule({"service": "api"}, {"service": "api"})
        first = alert(alertname="X", service="api")
        second = alert(alertname="Y", service="api")
        assert [] == check(first, [first, second], [both])
        assert [] == check(second, [first, second], [both])

    def test_source_matching_both_sides_still_mutes_a_pure_target(self) -> None:
        """A critical that is also a target still mutes a warning that is only a target."""
        crit_mutes_api = rule({"severity": "critical"}, {"service": "api"})
        crit = alert(alertname="X", service="api", severity="critical")
        warn = alert(alertname="Y", service="api", severity="warning")
        assert [crit.fingerprint] == check(warn, [crit, warn], [crit_mutes_api])
        assert [] == check(crit, [crit, warn], [crit_mutes_api])


# --- the index agrees with the plain definition ----------------------------------

LABEL_NAMES = ("alertname", "service", "severity", "env")
LABEL_VALUES = ("a", "b", "c")
MATCHER_SPECS = ("a", "b", "!a", "~a|b", "!~b", "~.*")
STATES: tuple[AlertState, ...] = ("firing", "firing", "pending", "resolved")

labelsets = st.dictionaries(st.sampled_from(LABEL_NAMES), st.sampled_from(LABEL_VALUES))
matcher_dicts = st.dictionaries(
    st.sampled_from(LABEL_NAMES), st.sampled_from(MATCHER_SPECS), min_size=1, max_size=2
)
rules_strategy = st.lists(
    st.builds(
        rule,
        matcher_dicts,
        matcher_dicts,
        st.lists(st.sampled_from(LABEL_NAMES), max_size=2, unique=True),
    ),
    max_size=3,
)


@st.composite
def alert_lists(draw: st.DrawFn) -> list[Alert]:
    n = draw(st.integers(min_value=0, max_value=8))
    return [
        labelled(draw(labelsets), draw(st.sampled_from(STATES)), f"fp{i:02d}") for i in range(n)
    ]


class TestInhibitorIndex:
    """The per-flush index mutes exactly what the plain definition mutes."""

    @settings(max_examples=300, deadline=None)
    @given(
        rules=rules_strategy,
        alerts=alert_lists(),
        outsider=labelsets,
        pick=st.integers(min_value=0, max_value=8),
    )
    def test_agrees_with_inhibited_by(
        self, rules: list[InhibitRule], alerts: list[Alert], outsider: dict[str, str], pick: int
    ) -> None:
        """Same answer for every alert in the flush and for one outside it."""
        inhibitor = Inhibitor(rules, iter(alerts))
        targets = [*alerts, labelled(outsider, fp="outsider")]
        expected = [inhibited_by(t, alerts, rules) for t in targets]
        assert expected == [inhibitor.inhibited_by(t) for t in targets]
        if alerts:
            target = alerts[pick % len(alerts)]
            assert target.fingerprint not in inhibitor.inhibited_by(target)

    def test_firing_may_be_a_generator(self) -> None:
        """Both accept any iterable of alerts, consumed once."""
        crit = alert(alertname="X", severity="critical")
        warn = alert(alertname="X", severity="warning", fp="w")
        assert [crit.fingerprint] == inhibited_by(warn, (a for a in [crit]), [CRIT_MUTES_WARN])
        inhibitor = Inhibitor([CRIT_MUTES_WARN], (a for a in [crit]))
        assert [crit.fingerprint] == inhibitor.inhibited_by(warn)
