"""Routes and groups (pure): which channels an alert reaches, and with which others."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from alertd.model import Alert, fingerprint
from alertd.notify.routing import Router
from alertd.settings import load_config

CHANNELS = "".join(
    f'[channels.{name}]\ntype = "webhook"\nurl = "http://127.0.0.1:9/{name}"\n'
    for name in ("oncall", "team", "web", "slack")
)


def router(tmp_path: Path, routes: str, rules: str = "", notify: str = "") -> Router:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "r.toml").write_text(rules)
    (tmp_path / "alertd.toml").write_text(f"[notify]\n{notify}\n{CHANNELS}\n{routes}")
    return Router(load_config(tmp_path / "alertd.toml", env={}))


def alert(rule: str = "HighErrorRate", channels: list[str] | None = None, **labels: str) -> Alert:
    """A firing alert of `rule` with these labels (severity warning unless given)."""
    full = {"alertname": rule, "severity": "warning", **labels}
    return Alert(
        fingerprint(full), rule, full, {}, "firing", full["severity"], 1.0, 0.0, channels=channels
    )


def channels_of(r: Router, a: Alert) -> list[list[str]]:
    return [list(p.channels) for p in r.policies(a)]


ROUTES = """
[[routes]]
match = { severity = "critical" }
channels = ["oncall"]
continue = true
[[routes]]
match = { service = "~api|web", env = "!staging" }
channels = ["web"]
[[routes]]
match = { team = "!~infra.*" }
channels = ["team"]
[[routes]]
channels = ["slack"]
"""


class TestMatching:
    """An alert takes the first route that matches, and later ones only after `continue`."""

    @pytest.mark.parametrize(
        ("labels", "expected"),
        [
            ({"severity": "critical", "service": "api"}, [["oncall"], ["web"]]),
            ({"severity": "critical", "team": "infra-db"}, [["oncall"], ["slack"]]),
            ({"service": "web"}, [["web"]]),
            ({"service": "web", "env": "staging"}, [["team"]]),
            ({"service": "webshop"}, [["team"]]),
            ({"team": "payments"}, [["team"]]),
            ({"team": "infra-net"}, [["slack"]]),
        ],
    )
    def test_routes(
        self, tmp_path: Path, labels: dict[str, str], expected: list[list[str]]
    ) -> None:
        assert expected == channels_of(
            router(tmp_path, ROUTES), alert("HighErrorRate", None, **labels)
        )

    def test_no_match_and_no_catch_all_goes_to_log(self, tmp_path: Path) -> None:
        r = router(tmp_path, '[[routes]]\nmatch = { team = "db" }\nchannels = ["team"]\n')
        assert [["log"]] == channels_of(r, alert(team="web"))

    def test_no_routes_at_all_goes_to_log(self, tmp_path: Path) -> None:
        assert [["log"]] == channels_of(router(tmp_path, ""), alert())

    def test_rule_channels_bypass_routes(self, tmp_path: Path) -> None:
        rules = '[[rules]]\nname = "Own"\nmetric = "m"\ncritical = "> 1"\nchannels = ["web"]\n'
        r = router(tmp_path, ROUTES, rules)
        a = alert("Own", channels=["web"], severity="critical")
        assert [["web"]] == channels_of(r, a)
        assert "rule:Own" == r.policies(a)[0].route_id


class TestGroups:
    """Alerts sharing a route's group_by labels share one group (and one notification)."""

    def test_same_group_by_values_share_a_group(self, tmp_path: Path) -> None:
        r = router(
            tmp_path, '[[routes]]\nchannels = ["team"]\ngroup_by = ["alertname", "service"]\n'
        )
        api1 = r.groups(alert(service="api", instance="1"))
        api2 = r.groups(alert(service="api", instance="2", severity="critical"))
        web = r.groups(alert(service="web"))
        assert [t.gid for t in api1] == [t.gid for t in api2]
        assert api1[0].gid != web[0].gid
        assert {"alertname": "HighErrorRate", "service": "api"} == api1[0].labels

    def test_group_key_reads_like_alertmanager(self, tmp_path: Path) -> None:
        r = router(tmp_path, ROUTES)
        keys = [t.group_key for t in r.groups(alert(severity="critical", service="api"))]
        expected = [
            '{}/{severity="critical"}:{alertname="HighErrorRate"}',
            '{}/{service=~"api|web",env!="staging"}[1]:{alertname="HighErrorRate"}',
        ]
        assert expected == keys

    def test_quotes_in_values_cannot_merge_groups(self, tmp_path: Path) -> None:
        r = router(tmp_path, '[[routes]]\nchannels = ["team"]\ngroup_by = ["a", "b"]\n')
        one = r.groups(alert(a='x",b="y', b=""))
        two = r.groups(alert(a="x", b='y",b="'))
        assert one[0].gid != two[0].gid

    def test_continue_puts_an_alert_in_one_group_per_route(self, tmp_path: Path) -> None:
        groups = router(tmp_path, ROUTES).groups(alert(severity="critical", service="api"))
        assert 2 == len({t.gid for t in groups})


class TestTimers:
    """A route's own keys win over [notify]; the rest come from [notify]."""

    def test_route_overrides_and_defaults(self, tmp_path: Path) -> None:
        routes = '[[routes]]\nchannels = ["team"]\ngroup_wait = "1s"\nsend_resolved = false\n'
        r = router(tmp_path, routes, notify='group_interval = "2m"\nrepeat_interval = "1h"')
        p = r.policies(alert())[0]
        expected = (timedelta(seconds=1), timedelta(minutes=2), timedelta(hours=1), False)
        assert expected == (p.group_wait, p.group_interval, p.repeat_interval, p.send_resolved)
        assert ("alertname",) == p.group_by
