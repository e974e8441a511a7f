"""Alerts posted through `/api/v2/alerts`, as Alertmanager keeps them: pure rules.

A posted alert is an `Alert` like a rule's, stored, grouped and notified the
same way; only how it changes differs. No rule judges it: it fires from its
first post until its `endsAt` (received + `notify.resolve_timeout` when the
sender gives none), each post again moves `endsAt` without a new notification,
and a post whose `endsAt` has passed resolves it. Its fingerprint is
Alertmanager's, over all its labels (severity included), so it never shares
one with a rule's alert (those hash their labels without severity otherwise).

The clock index (`{p}alerts:clock`) holds each firing posted alert at its
`endsAt`; the clock's tick resolves the ones due (`expire`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from alertd.engine.lifecycle import Change
from alertd.model import Alert

# `Alert.rule` of a posted alert: no rule makes it (rule names cannot be empty).
POSTED_RULE = ""

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_MASK = (1 << 64) - 1


def is_posted(alert: Alert) -> bool:
    return alert.rule == POSTED_RULE


def fingerprint_of(labels: dict[str, str]) -> str:
    """Alertmanager's fingerprint of a label set (FNV-1a 64 over sorted name, value pairs)."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode():
                h = ((h ^ byte) * _FNV_PRIME) & _MASK
            h = ((h ^ 0xFF) * _FNV_PRIME) & _MASK
    return f"{h:016x}"


@dataclass(frozen=True, slots=True)
class Posted:
    """One alert of a post, validated: unix seconds; None where the sender gave no time."""

    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float | None
    ends_at: float | None
    generator_url: str


def receive(
    prev: Alert | None, post: Posted, now: float, resolve_timeout_s: float
) -> tuple[Alert | None, Change]:
    """The stored alert after `post` arrives at `now` (None: nothing to store), and what
    changed for receivers. `prev` is what is stored under its fingerprint.

    As Alertmanager: the earliest startsAt is kept while the alert lives; an
    `endsAt` in the past resolves a firing alert (keeping that endsAt) and is
    ignored for an alert nobody was told of.
    """
    labels = {k: v for k, v in post.labels.items() if v != ""}
    ends_at = post.ends_at if post.ends_at is not None else now + resolve_timeout_s
    starts_at = post.starts_at
    if starts_at is None:
        starts_at = post.ends_at if post.ends_at is not None and post.ends_at < now else now
    live = prev if prev is not None and prev.state == "firing" else None
    if ends_at <= now:
        if live is None:
            return None, Change.NONE  # resolved before we heard of it: nothing to tell
        resolved = replace(
            live,
            state="resolved",
            ends_at=max(ends_at, live.starts_at),
            updated_at=now,
            annotations=post.annotations,
        )
        return resolved, Change.RESOLVED
    if live is None:
        fired = Alert(
            fingerprint_of(labels),
            POSTED_RULE,
            labels,
            dict(post.annotations),
            "firing",
            labels.get("severity", ""),
            None,
            starts_at=starts_at,
            ends_at=ends_at,
            updated_at=now,
            generator_url=post.generator_url,
        )
        return fired, Change.FIRED
    kept = replace(
        live,
        annotations=dict(post.annotations),
        starts_at=min(live.starts_at, starts_at),
        ends_at=ends_at,
        generator_url=post.generator_url or live.generator_url,
    )
    return kept, Change.UPDATED


def expire_due(alert: Alert, now: float) -> tuple[Alert | None, Change]:
    """The posted alert resolved once its `endsAt` has passed (keeping that endsAt);
    before, as it is (Change.NONE)."""
    if alert.state != "firing" or alert.ends_at is None or alert.ends_at > now:
        return alert, Change.NONE
    return replace(alert, state="resolved", updated_at=now), Change.RESOLVED
