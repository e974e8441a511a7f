"""The notification as receivers see it: the webhook body, and the data of channel templates."""

from __future__ import annotations

from typing import Any

from alertd.model import Notification


def webhook_payload(n: Notification, external_url: str, max_alerts: int = 0) -> dict[str, Any]:
    """The webhook body for one notification (Alertmanager's version 4, extended)."""
    alerts = n.alerts
    truncated = 0
    if max_alerts and len(alerts) > max_alerts:
        truncated = len(alerts) - max_alerts
        alerts = alerts[:max_alerts]
    return {
        "version": "4",
        "id": n.id,
        "receiver": n.receiver,
        "status": n.status,
        "alerts": [a.to_webhook() for a in alerts],
        "groupLabels": n.group_labels,
        "commonLabels": n.common_labels,
        "commonAnnotations": n.common_annotations,
        "externalURL": external_url,
        "groupKey": n.group_key,
        "truncatedAlerts": truncated,
    }


def template_data(n: Notification, external_url: str) -> dict[str, Any]:
    """What a channel template sees: the webhook payload's fields."""
    return webhook_payload(n, external_url)
