"""Which groups an alert belongs to: routes, group_by, and their timers (pure).

First matching route wins unless it says `continue`; a route without `match`
matches everything; a rule's own `channels` bypass the routes; with no route
matching, alerts go to the built-in `log` channel so nothing is dropped
silently. Group keys read like Alertmanager's (`{}/{severity="critical"}:{alertname="X"}`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

import orjson

from alertd.matchers import Matcher, matches_all, parse_matchers
from alertd.model import Alert
from alertd.settings import Config, NotifySettings, RouteSettings


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """A route's effective settings: its own keys over [notify]."""

    route_id: str
    channels: tuple[str, ...]
    group_by: tuple[str, ...]
    group_wait: timedelta
    group_interval: timedelta
    repeat_interval: timedelta
    send_resolved: bool
    mute_during: tuple[str, ...]
    path: str  # shown in group keys, as Alertmanager does


@dataclass(frozen=True, slots=True)
class GroupTarget:
    """One aggregation group an alert falls into."""

    gid: str
    group_key: str
    labels: dict[str, str]
    policy: RoutePolicy


def _quote(value: str) -> str:
    """A label value in double quotes, escaped, so distinct label sets never share a key."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def matcher_text(m: Matcher) -> str:
    """A matcher as Alertmanager prints it: name="v", name!="v", name=~"re", name!~"re"."""
    op = {(False, False): "=", (True, False): "!=", (False, True): "=~", (True, True): "!~"}
    return f"{m.name}{op[(m.negate, m.regex is not None)]}{_quote(m.value)}"


def group_key(path: str, labels: dict[str, str]) -> str:
    inner = ",".join(f"{k}={_quote(labels[k])}" for k in sorted(labels))
    return f"{path}:{{{inner}}}"


def group_id(key: str) -> str:
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def routing_digest(config: Config) -> str:
    """A digest of everything that decides where and when groups are told (not secrets)."""
    s = config.settings
    parts = {
        "notify": s.notify.model_dump(mode="json"),
        "routes": [r.model_dump(mode="json") for r in s.routes],
        "inhibit": [i.model_dump(mode="json") for i in s.inhibit],
        "time_intervals": [t.model_dump(mode="json") for t in s.time_intervals],
        "channels": {n: [c.enabled, c.send_resolved] for n, c in config.channels.items()},
        "rules": {r.name: r.spec.channels for r in config.rules if r.spec.channels},
    }
    return hashlib.blake2b(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def policy_for(
    route: RouteSettings | None,
    notify: NotifySettings,
    route_id: str,
    channels: list[str],
    path: str,
) -> RoutePolicy:
    def pick(name: str) -> object:
        value = getattr(route, name, None) if route is not None else None
        return getattr(notify, name) if value is None else value

    return RoutePolicy(
        route_id=route_id,
        channels=tuple(channels),
        group_by=tuple(pick("group_by")),  # type: ignore[arg-type]
        group_wait=pick("group_wait"),  # type: ignore[arg-type]
        group_interval=pick("group_interval"),  # type: ignore[arg-type]
        repeat_interval=pick("repeat_interval"),  # type: ignore[arg-type]
        send_resolved=bool(pick("send_resolved")),
        mute_during=tuple(route.mute_during) if route is not None else (),
        path=path,
    )


class Router:
    """Routes of one loaded config, compiled."""

    def __init__(self, config: Config) -> None:
        notify = config.settings.notify
        self.notify = notify
        self.routes: list[tuple[tuple[Matcher, ...], RoutePolicy, bool]] = []
        for i, route in enumerate(config.settings.routes):
            matchers = parse_matchers(route.match)
            inner = ",".join(matcher_text(m) for m in matchers)
            # The index tells apart routes with the same matchers (two catch-alls, say).
            path = "{}" + (f"/{{{inner}}}" if inner else "") + (f"[{i}]" if i else "")
            policy = policy_for(route, notify, f"r{i}", route.channels, path)
            self.routes.append((matchers, policy, route.continue_))
        self.default = policy_for(None, notify, "default", ["log"], "{}")
        self.by_id = {p.route_id: p for _, p, _ in self.routes}
        self.by_id["default"] = self.default
        for rule in config.rules:
            if rule.spec.channels:
                self.by_id[f"rule:{rule.name}"] = self._rule_policy(rule.name, rule.spec.channels)

    def _rule_policy(self, rule: str, channels: list[str]) -> RoutePolicy:
        return policy_for(None, self.notify, f"rule:{rule}", channels, f"{{}}/rule={rule}")

    def policies(self, alert: Alert) -> list[RoutePolicy]:
        """The routes an alert takes, in order (a rule's own channels: that one only)."""
        if alert.channels:
            policy = self.by_id.get(f"rule:{alert.rule}")
            return [policy or self._rule_policy(alert.rule, alert.channels)]
        out = []
        for matchers, policy, cont in self.routes:
            if matches_all(matchers, alert.labels):
                out.append(policy)
                if not cont:
                    break
        return out or [self.default]

    def groups(self, alert: Alert) -> list[GroupTarget]:
        targets = []
        for policy in self.policies(alert):
            labels = {k: alert.labels[k] for k in policy.group_by if k in alert.labels}
            key = group_key(policy.path, labels)
            targets.append(GroupTarget(group_id(key), key, labels, policy))
        return targets
