"""Words every chat and paging channel shares: titles, values, alert order, cut text.

Pure functions over a Notification; each channel escapes for its own markup.
"""

from __future__ import annotations

import hashlib

from alertd.model import SEVERITIES, Alert, Notification

ELLIPSIS = "…"
_HIDDEN_LABELS = frozenset({"alertname", "severity"})


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, ending in an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: limit - 1] + ELLIPSIS if limit > 0 else ""


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


def format_value(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def notification_title(n: Notification) -> str:
    """The one-line summary, e.g. "[FIRING:2] HighErrorRate (critical)"."""
    names = list(dict.fromkeys(a.alertname for a in n.alerts))
    name = n.group_labels.get("alertname") or ", ".join(names) or n.receiver
    if n.status == "resolved":
        return f"[RESOLVED] {name}"
    return f"[FIRING:{len(n.firing)}] {name} ({n.severity})"


def by_importance(n: Notification) -> list[Alert]:
    """Firing before resolved, most severe first: what stays when a message must be cut."""
    return sorted(n.alerts, key=lambda a: (a.state == "resolved", -severity_rank(a.severity)))


def label_text(a: Alert) -> str:
    """The labels that tell alerts of one rule apart, as `k=v, k=v`."""
    return ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items()) if k not in _HIDDEN_LABELS)


def alert_status(a: Alert) -> str:
    return "RESOLVED" if a.state == "resolved" else "FIRING"


def incident_key(group_key: str) -> str:
    """A paging service's identity of a group's incident (PagerDuty `dedup_key`, Opsgenie
    `alias`): stable per group, so the resolve closes what the trigger opened. A hash,
    as in Alertmanager, because group keys can exceed the services' length limits."""
    return hashlib.sha256(group_key.encode()).hexdigest()
