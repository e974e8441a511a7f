"""The alert lifecycle of one series, as a pure function of time and value.

inactive -> pending (while `for` runs) -> firing -> resolved. Hysteresis: a
level held now stays held until its `*_recovery` condition holds; the highest
held level is the severity. `keep_firing_for` keeps a cleared alert firing.
"""

from __future__ import annotations

import enum
from dataclasses import replace

from alertd.model import SEVERITIES, Alert, AlertState, fingerprint
from alertd.settings import Condition, Rule
from alertd.templates import render_template


class Change(enum.StrEnum):
    """What a step did that receivers care about."""

    NONE = "none"
    PENDING = "pending"
    FIRED = "fired"
    SEVERITY = "severity_changed"
    RESOLVED = "resolved"
    UPDATED = "updated"  # value moved; state and severity did not (no notification)
    CLEARED = "cleared"  # pending that never fired went back to inactive


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


Level = tuple[str, int, Condition, Condition | None]  # severity, rank, condition, recovery
# id(rule) -> (rule, levels): the rule is kept so an id is never reused while cached.
_LEVELS: dict[int, tuple[Rule, list[Level]]] = {}


def _levels(rule: Rule) -> list[Level]:
    """The rule's levels from the lowest up (cached: this runs once per evaluation)."""
    hit = _LEVELS.get(id(rule))
    if hit is not None and hit[0] is rule:
        return hit[1]
    if len(_LEVELS) > 10_000:  # many reloads: drop the rules of old configs
        _LEVELS.clear()
    levels = [(lvl, _rank(lvl), cond, rec) for lvl, cond, rec in rule.levels()]
    _LEVELS[id(rule)] = (rule, levels)
    return levels


def held_severity(
    rule: Rule, value: float | None, current: str | None
) -> tuple[str | None, float | None]:
    """The highest level that holds for `value` given the level held now, and its threshold.

    A level held now stays held until its recovery condition holds (hysteresis); so does
    every lower level with a recovery condition.
    """
    if value is None:
        return None, None
    cur_rank = _rank(current) if current else -1
    best: tuple[str | None, float | None] = (None, None)
    for level, rank, cond, recovery in _levels(rule):
        holds = cond.holds(value)
        if not holds and recovery is not None and rank <= cur_rank:
            holds = not recovery.holds(value)
        if holds:
            best = (level, cond.threshold)
    return best


def alert_labels(rule: Rule, series_labels: dict[str, str], severity: str) -> dict[str, str]:
    labels = {k: v for k, v in series_labels.items() if v != ""}
    labels.update(rule.spec.labels)
    labels["alertname"] = rule.name
    labels["severity"] = severity
    return labels


def series_fingerprint(rule: Rule, series_labels: dict[str, str]) -> str:
    return fingerprint(alert_labels(rule, series_labels, ""))


def render_annotations(
    rule: Rule, labels: dict[str, str], value: float | None, threshold: float | None
) -> dict[str, str]:
    fields: dict[str, object] = dict(labels)
    fields.update(value=value, threshold=threshold, rule=rule.name)
    out = {}
    for key in ("summary", "description", "runbook_url"):
        template = getattr(rule.spec, key)
        if template:
            out[key] = render_template(template, fields)
    return out


# false_since, and last_true_at of the stores of earlier versions
_GRACE_KEYS = ("false_since", "last_true_at")


def step(
    rule: Rule,
    series_labels: dict[str, str],
    prev: Alert | None,
    value: float | None,
    now: float,
) -> tuple[Alert | None, Change]:
    """The series' alert after observing `value` at `now` (None: no data in the window).

    Returns the new alert (None when inactive) and what changed. Pure.
    """
    live = prev if prev is not None and prev.state != "resolved" else None
    current = live.severity if live is not None and live.state == "firing" else None
    severity, threshold = held_severity(rule, value, current)
    spec = rule.spec

    keep_s = spec.keep_firing_for.total_seconds()
    if severity is None:
        if live is None:
            return None, Change.NONE
        if live.state == "pending":
            return None, Change.CLEARED
        if keep_s > 0:
            # A series is judged whenever its value can change (a sample, a bucket leaving
            # the window: evaluator.clock_of), so the first false judgement is when the
            # condition cleared, and the grace counts from there.
            false_since = live.meta.get("false_since")
            if false_since is None:
                meta = {**live.meta, "false_since": now}
                return replace(live, value=value, meta=meta), Change.NONE
            if now - false_since < keep_s:
                return replace(live, value=value), Change.NONE
        return resolve(live, value, now, rule), Change.RESOLVED

    labels = alert_labels(rule, series_labels, severity)
    notes = render_annotations(rule, labels, value, threshold)
    for_s = spec.for_.total_seconds()

    if live is None:
        state: AlertState = "pending" if for_s > 0 else "firing"
        alert = Alert(
            fingerprint(labels),
            rule.name,
            labels,
            notes,
            state,
            severity,
            value,
            starts_at=now,
            updated_at=now,
            channels=spec.channels,
            meta={"pending_since": now} if state == "pending" else {},
        )
        return alert, Change.PENDING if state == "pending" else Change.FIRED

    # True again: a keep_firing_for grace (if any) is over.
    meta = {k: v for k, v in live.meta.items() if k not in _GRACE_KEYS}
    if live.state == "pending":
        if now - meta.get("pending_since", live.starts_at) >= for_s:
            fired = replace(
                live,
                state="firing",
                severity=severity,
                labels=labels,
                annotations=notes,
                value=value,
                starts_at=now,
                updated_at=now,
                meta=meta,
            )
            return fired, Change.FIRED
        return replace(
            live, severity=severity, labels=labels, annotations=notes, value=value, meta=meta
        ), Change.NONE

    if severity != live.severity:
        changed = replace(
            live,
            severity=severity,
            labels=labels,
            annotations=notes,
            value=value,
            updated_at=now,
            meta=meta,
        )
        return changed, Change.SEVERITY
    return replace(live, value=value, annotations=notes, meta=meta), Change.UPDATED


def resolve(alert: Alert, value: float | None, now: float, rule: Rule | None = None) -> Alert:
    """The alert as resolved at `now`.

    With its rule and a value, the annotations are rendered again: a resolved notification
    saying "7000 messages waiting" at a value of 10 misleads. Without a value (no data
    left in the window) the text from while it fired stays.
    """
    notes = alert.annotations
    if rule is not None and value is not None:
        threshold = next(
            (c.threshold for lvl, c, _ in rule.levels() if lvl == alert.severity), None
        )
        notes = render_annotations(rule, alert.labels, value, threshold)
    return replace(
        alert, state="resolved", ends_at=now, updated_at=now, value=value, annotations=notes
    )


def retire(alert: Alert, now: float) -> tuple[Alert | None, Change]:
    """An alert whose rule was removed or no longer produces its series: it ends now."""
    if alert.state == "pending":
        return None, Change.CLEARED
    return resolve(alert, alert.value, now), Change.RESOLVED
