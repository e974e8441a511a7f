"""The pure stages of a group flush, per channel (Alertmanager's notify pipeline):

    mute (time intervals, in the dispatcher) -> select (silence / inhibit filter)
    -> decide (dedup against the notification log) -> build_notification

Each is a function over values: no Redis, no clock of its own, tested on its own
(tests/test_stages.py). The dispatcher reads what they need and writes what they
decide; rate limiting and history happen at delivery (alertd.notify.ratelimit,
alertd.notify.history).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from alertd.model import Alert, Notification, NotifyReason, new_id


def firing_key(a: Alert) -> str:
    """An alert's firing identity in the notification log: severity is part of it."""
    return f"{a.fingerprint}:{a.severity}"


def _fp_of(key: str) -> str:
    return key.rsplit(":", 1)[0]


@dataclass(frozen=True, slots=True)
class NflogEntry:
    """What one channel was last told about one group (the notification log)."""

    firing: frozenset[str]  # firing keys receivers believe are firing
    resolved: frozenset[str]  # fingerprints they were told resolved
    ts: float  # when

    @property
    def firing_fingerprints(self) -> frozenset[str]:
        return frozenset(_fp_of(k) for k in self.firing)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"firing": sorted(self.firing), "resolved": sorted(self.resolved), "ts": self.ts}
        )

    @classmethod
    def from_json(cls, raw: bytes | None) -> NflogEntry | None:
        if not raw:
            return None
        try:
            d = orjson.loads(raw)
            return cls(frozenset(d["firing"]), frozenset(d["resolved"]), float(d["ts"]))
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: as if never told, so receivers hear at worst twice


def decide(
    entry: NflogEntry | None,
    firing: list[Alert],
    resolved: list[Alert],
    send_resolved: bool,
    repeat_s: float,
    now: float,
    carried: frozenset[str] = frozenset(),
) -> NotifyReason | None:
    """Alertmanager's dedup decision, with severity part of an alert's firing identity.

    `firing` are the alerts to report firing, `resolved` those to report resolved;
    `carried` are logged firing keys receivers keep believing (muted after being told,
    with resolve_silenced), which are not news and not gone.
    """
    keys = {firing_key(a) for a in firing}
    told = entry.firing if entry is not None else frozenset()
    if entry is None or not told:
        return NotifyReason.FIRST if keys else None
    news = keys - told
    if news:
        if {_fp_of(k) for k in news} <= entry.firing_fingerprints:
            return NotifyReason.SEVERITY_CHANGED
        return NotifyReason.CHANGED
    if send_resolved and {a.fingerprint for a in resolved} - entry.resolved:
        return NotifyReason.RESOLVED
    if not keys and told - carried:
        return NotifyReason.RESOLVED  # nothing fires any more: clear the log
    if keys and now - entry.ts >= repeat_s:
        return NotifyReason.REPEAT
    return None


@dataclass(frozen=True, slots=True)
class Selection:
    """What one channel is to hear of a group: the silence / inhibit stage's result."""

    firing: list[Alert] = field(default_factory=list)  # to report firing
    resolved: list[Alert] = field(default_factory=list)  # to report resolved
    # Logged firing keys receivers keep believing: muted after being told (resolve_silenced).
    carried: frozenset[str] = frozenset()

    def log_entry(self, now: float) -> NflogEntry:
        """The notification log entry once this selection is told."""
        return NflogEntry(
            frozenset(firing_key(a) for a in self.firing) | self.carried,
            frozenset(a.fingerprint for a in self.resolved),
            now,
        )


def select(
    alerts: Iterable[Alert], muted: set[str], entry: NflogEntry | None, keep_told: bool
) -> Selection:
    """Drop silenced / inhibited (`muted`) alerts, except what receivers were told: with
    `keep_told` (resolve_silenced) a told alert still gets its resolved notification and
    its firing key is carried, neither news nor gone. Pending alerts are never told."""
    told_by_fp: dict[str, set[str]] = {}
    for k in entry.firing if entry is not None else ():
        told_by_fp.setdefault(_fp_of(k), set()).add(k)
    firing: list[Alert] = []
    resolved: list[Alert] = []
    carried: set[str] = set()
    for a in alerts:
        is_muted = a.fingerprint in muted
        was_told = keep_told and a.fingerprint in told_by_fp
        if a.state == "firing":
            if not is_muted:
                firing.append(a)
            elif was_told:
                carried |= told_by_fp[a.fingerprint]
        elif a.state == "resolved" and (not is_muted or was_told):
            resolved.append(a)
    return Selection(firing, resolved, frozenset(carried))


def build_notification(
    channel: str,
    group_labels: dict[str, str],
    group_key: str,
    chosen: Selection,
    reason: NotifyReason,
    send_resolved: bool,
    now: float,
) -> Notification | None:
    """The notification a decided flush queues; None when nothing is left to say (the
    resolved alerts of a channel that does not send them: only the log moves)."""
    payload = chosen.firing + (chosen.resolved if send_resolved else [])
    if not payload:
        return None
    return Notification(
        id=new_id(now),
        receiver=channel,
        status="firing" if chosen.firing else "resolved",
        alerts=sorted(payload, key=lambda a: (a.state == "resolved", a.starts_at)),
        group_labels=group_labels,
        group_key=group_key,
        reason=reason,
        created_at=now,
        changed_at=max(a.updated_at for a in payload),
    )
