"""alertd's own alerts about itself (AlertdSeriesLimit, AlertdStalled), written like a rule's.

They go through the same compare-and-set write as rule alerts (so they are routed,
grouped, silenced, inhibited and delivered as usual) and carry SELF_ALERT in their
meta, which tells the clock evaluation they belong to no rule. Each is raised once per
episode whichever replica gets there first, and resolved by whoever sees it end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
import structlog
from redis.exceptions import RedisError

from alertd.engine.evaluator import AlertWriter, PendingWrite
from alertd.engine.lifecycle import Change
from alertd.logthrottle import ThrottledLog
from alertd.model import Alert, fingerprint

log = ThrottledLog(structlog.get_logger("alertd.selfalerts"))

SELF_ALERT = "self_alert"  # in an alert's meta: the clock leaves it alone
CAS_ATTEMPTS = 3


def self_alert(
    name: str,
    labels: dict[str, str],
    severity: str,
    summary: str,
    description: str,
    value: float,
    now: float,
) -> Alert:
    """A firing alert of alertd's own, named `name`, with `labels` besides alertname/severity."""
    full = {"alertname": name, **labels, "severity": severity}
    return Alert(
        fingerprint=fingerprint(full),
        rule=name,
        labels=full,
        annotations={"summary": summary, "description": description},
        state="firing",
        severity=severity,
        value=value,
        starts_at=now,
        updated_at=now,
        meta={SELF_ALERT: 1.0},
    )


async def set_self_alert(
    writer: AlertWriter,
    alert: Alert,
    firing: bool,
    now: float,
    on_change: Callable[[list[PendingWrite]], Awaitable[None]] | None = None,
) -> bool:
    """Fire (or resolve) `alert` unless it already is; True when this call changed it."""
    fp = alert.fingerprint
    try:
        for _ in range(CAS_ATTEMPTS):  # another replica may be writing it at the same time
            (raw,) = await writer.get_raw([fp])
            prev = Alert.from_dict(orjson.loads(raw)) if raw else None
            was_firing = prev is not None and prev.state == "firing"
            if firing == was_firing:
                return False
            if not firing and prev is not None:
                alert.starts_at = prev.starts_at
                alert.state = "resolved"
                alert.ends_at = now
                alert.updated_at = now
            change = Change.FIRED if firing else Change.RESOLVED
            write = PendingWrite(fp, raw or b"", alert, change, alert.rule, dict(alert.labels))
            (ok,) = await writer.write([write], now)
            if ok:
                if on_change is not None:
                    await on_change([write])
                return True
    except (RedisError, OSError) as exc:
        log.warning(
            f"write:{alert.rule}",
            "could not write alertd's own alert",
            alertname=alert.rule,
            error=str(exc),
        )
    return False
