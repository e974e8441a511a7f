"""The values that flow through alertd: events, alerts and notifications.

Plain dataclasses, no I/O. Alerts and notifications round-trip through JSON
(`to_dict` / `from_dict`) because they are stored in Redis.
"""

from __future__ import annotations

import enum
import hashlib
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

AlertState = Literal["pending", "firing", "resolved"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
ZERO_TIME = "0001-01-01T00:00:00Z"


class NotifyReason(enum.StrEnum):
    """Why a group was notified; appears in every "notified" log line."""

    FIRST = "first"
    CHANGED = "changed"
    SEVERITY_CHANGED = "severity_changed"
    REPEAT = "repeat"
    RESOLVED = "resolved"
    TEST = "test"
    REPLAY = "replay"
    DIGEST = "digest"  # what a channel's rate limit held, sent as one


@dataclass(slots=True)
class Event:
    """One metric sample, validated (see alertd.events).

    Not frozen: one is made per event, and a frozen dataclass's __init__ costs three
    times as much (object.__setattr__ per field).
    """

    name: str
    value: float
    labels: dict[str, str]
    ts: float


def fingerprint(labels: dict[str, str]) -> str:
    """Identity of an alert: a hash of its labels without `severity` (16 hex digits)."""
    h = hashlib.blake2b(digest_size=8)
    for k in sorted(labels):
        if k == "severity":
            continue
        h.update(k.encode())
        h.update(b"\xff")
        h.update(labels[k].encode())
        h.update(b"\xfe")
    return h.hexdigest()


def rfc3339(ts: float | None) -> str:
    """Unix seconds to RFC 3339 UTC with milliseconds; None is Alertmanager's zero time."""
    if ts is None:
        return ZERO_TIME
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_rfc3339(text: str) -> float:
    """RFC 3339 (with Z or an offset) to unix seconds; ValueError when it is not one."""
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    dt = datetime.fromisoformat(t)
    if dt.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no timezone")
    return dt.timestamp()


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(now_s: float | None = None) -> str:
    """A ULID: 26 characters, sortable by creation time, unique without coordination."""
    ms = int((time.time() if now_s is None else now_s) * 1000)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    out = []
    for _ in range(26):
        value, rem = divmod(value, 32)
        out.append(_CROCKFORD[rem])
    return "".join(reversed(out))


@dataclass(slots=True)
class Alert:
    """One series of one rule, past `inactive`: pending, firing or just resolved."""

    fingerprint: str
    rule: str
    labels: dict[str, str]
    annotations: dict[str, str]
    state: AlertState
    severity: str
    value: float | None
    starts_at: float
    ends_at: float | None = None
    updated_at: float = 0.0  # last change that matters to a receiver (for latency)
    channels: list[str] | None = None  # the rule's own channels, bypassing routes
    # Lifecycle bookkeeping (pending_since, false_since): unix seconds.
    meta: dict[str, float] = field(default_factory=dict)
    generator_url: str = ""  # where the sender shows it (alerts posted to /api/v2/alerts)

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", self.rule)

    @property
    def pages(self) -> bool:
        """A critical alert firing: its news goes before anything else (the urgent lane)."""
        return self.state == "firing" and self.severity == "critical"

    def to_dict(self) -> dict[str, Any]:
        d = {
            "fingerprint": self.fingerprint,
            "rule": self.rule,
            "labels": self.labels,
            "annotations": self.annotations,
            "state": self.state,
            "severity": self.severity,
            "value": self.value,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "updated_at": self.updated_at,
            "channels": self.channels,
            "meta": self.meta,
        }
        if self.generator_url:
            d["generator_url"] = self.generator_url
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Alert:
        return cls(
            fingerprint=d["fingerprint"],
            rule=d["rule"],
            labels=d["labels"],
            annotations=d.get("annotations") or {},
            state=d["state"],
            severity=d["severity"],
            value=d.get("value"),
            starts_at=d["starts_at"],
            ends_at=d.get("ends_at"),
            updated_at=d.get("updated_at") or d["starts_at"],
            channels=d.get("channels"),
            meta=d.get("meta") or {},
            generator_url=d.get("generator_url") or "",
        )

    def to_webhook(self) -> dict[str, Any]:
        """This alert in Alertmanager's webhook v4 shape, plus `value`."""
        return {
            "status": "resolved" if self.state == "resolved" else "firing",
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at if self.state == "resolved" else None),
            "generatorURL": self.generator_url,
            "fingerprint": self.fingerprint,
            "value": self.value,
        }


def common_items(dicts: list[dict[str, str]]) -> dict[str, str]:
    """The key/value pairs every dict shares."""
    if not dicts:
        return {}
    common = dict(dicts[0])
    for d in dicts[1:]:
        for k in list(common):
            if d.get(k) != common[k]:
                del common[k]
    return common


# Why a notification may be urgent: news, not a repeat, a resolution, a digest or a replay.
URGENT_REASONS = frozenset(
    {NotifyReason.FIRST, NotifyReason.CHANGED, NotifyReason.SEVERITY_CHANGED, NotifyReason.TEST}
)


@dataclass(slots=True)
class Notification:
    """What one channel is asked to deliver: a whole group as it stands.

    Stored in the outbox before the first attempt; `id` stays the same across
    retries, restarts and replays.
    """

    id: str
    receiver: str
    status: Literal["firing", "resolved"]
    alerts: list[Alert]
    group_labels: dict[str, str]
    group_key: str
    reason: NotifyReason
    created_at: float
    changed_at: float  # the newest alert change it reports (latency starts here)
    attempts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def common_labels(self) -> dict[str, str]:
        return common_items([a.labels for a in self.alerts])

    @property
    def common_annotations(self) -> dict[str, str]:
        return common_items([a.annotations for a in self.alerts])

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if a.state != "resolved"]

    @property
    def resolved(self) -> list[Alert]:
        return [a for a in self.alerts if a.state == "resolved"]

    @property
    def severity(self) -> str:
        """The highest severity among its firing alerts (or all, when none fires)."""
        pool = self.firing or self.alerts
        ranks = [SEVERITIES.index(a.severity) for a in pool if a.severity in SEVERITIES]
        return SEVERITIES[max(ranks)] if ranks else "info"

    @property
    def urgent(self) -> bool:
        """Whether it takes its channel's urgent lane: a page that must not wait behind a
        storm of warnings or repeats (a critical alert firing, first or changed)."""
        return (
            self.status == "firing"
            and self.reason in URGENT_REASONS
            and self.severity == "critical"
        )

    def template_fields(self) -> dict[str, Any]:
        """Fields of channel templates (email subject ...), as docs/rules.md lists them."""
        fields: dict[str, Any] = dict(self.common_labels)
        fields.update(status=self.status, count=len(self.alerts), receiver=self.receiver)
        return fields

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "receiver": self.receiver,
            "status": self.status,
            "alerts": [a.to_dict() for a in self.alerts],
            "group_labels": self.group_labels,
            "group_key": self.group_key,
            "reason": self.reason.value,
            "created_at": self.created_at,
            "changed_at": self.changed_at,
            "attempts": self.attempts,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Notification:
        return cls(
            id=d["id"],
            receiver=d["receiver"],
            status=d["status"],
            alerts=[Alert.from_dict(a) for a in d["alerts"]],
            group_labels=d.get("group_labels") or {},
            group_key=d.get("group_key", ""),
            reason=NotifyReason(d.get("reason", "first")),
            created_at=d.get("created_at", 0.0),
            changed_at=d.get("changed_at", 0.0),
            attempts=d.get("attempts", 0),
            extra=d.get("extra") or {},
        )
