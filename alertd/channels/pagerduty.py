"""The `pagerduty` channel: PagerDuty Events API v2, one event per notification.

A firing group triggers (or updates) the incident whose `dedup_key` is derived
from the group key; its resolved notification resolves that same incident.
PagerDuty answers 202 to an accepted event, 400 with `{"status": "invalid
event", "message", "errors": [...]}` to one it rejects, 429 when throttled.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import orjson
from pydantic import ConfigDict, SecretStr, field_validator

from alertd.channels.base import Channel, ChannelConfig, http_url
from alertd.channels.text import (
    alert_status,
    by_importance,
    format_value,
    incident_key,
    label_text,
    notification_title,
    truncate,
)
from alertd.model import Alert, Notification, rfc3339

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
MAX_SUMMARY = 1024  # payload.summary
MAX_DETAIL_ALERTS = 100  # per list in custom_details: the event stays far below 512 KB
MAX_LINKS = 10
# PagerDuty's severities are critical, error, warning, info.
SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}


class PagerDutyConfig(ChannelConfig):
    model_config = ConfigDict(hide_input_in_errors=True)

    type: Literal["pagerduty"] = "pagerduty"
    routing_key: SecretStr
    url: str = DEFAULT_URL
    source: str = ""  # payload.source; default: the group's instance or service label

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        return http_url(v, "url")

    @field_validator("routing_key")
    @classmethod
    def _key_given(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("routing_key is empty")
        return v

    def secret_values(self) -> list[str]:
        return [self.routing_key.get_secret_value()]


def _line(a: Alert) -> str:
    summary = a.annotations.get("summary", "")
    parts = [f"[{alert_status(a)}] {a.alertname} ({a.severity})", label_text(a)]
    parts.append(f"value {format_value(a.value)}")
    return " · ".join(p for p in parts if p) + (f": {summary}" if summary else "")


def _links(n: Notification) -> list[dict[str, str]]:
    urls = dict.fromkeys(
        a.annotations["runbook_url"]
        for a in n.alerts
        if a.annotations.get("runbook_url", "").startswith(("http://", "https://"))
    )
    return [{"href": u, "text": "Runbook"} for u in list(urls)[:MAX_LINKS]]


def pagerduty_event(
    n: Notification, routing_key: str, source: str, client_url: str
) -> dict[str, Any]:
    """The Events API v2 body for one notification: trigger, or resolve once all resolved."""
    dedup_key = incident_key(n.group_key)
    if n.status == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key}
    alerts = by_importance(n)
    first = alerts[0]
    summary = notification_title(n)
    if first.annotations.get("summary"):
        summary += f": {first.annotations['summary']}"
    common = n.common_labels
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": truncate(summary, MAX_SUMMARY),
            "source": source or common.get("instance") or common.get("service") or "alertd",
            "severity": SEVERITY.get(n.severity, "info"),
            "timestamp": rfc3339(min(a.starts_at for a in n.firing)),
            "class": first.alertname,
            "custom_details": {
                "firing": [_line(a) for a in n.firing[:MAX_DETAIL_ALERTS]],
                "resolved": [_line(a) for a in n.resolved[:MAX_DETAIL_ALERTS]],
                "num_firing": len(n.firing),
                "num_resolved": len(n.resolved),
                "group": n.group_labels,
                "notification_id": n.id,
            },
        },
        "client": "alertd",
        "links": _links(n),
    }
    if "service" in common:
        event["payload"]["component"] = common["service"]
    if client_url:
        event["client_url"] = client_url
    return event


class PagerDutyChannel(Channel[PagerDutyConfig]):
    channel_type: ClassVar[str] = "pagerduty"
    config_model: ClassVar[type[ChannelConfig]] = PagerDutyConfig

    async def send(self, notification: Notification) -> None:
        cfg = self.config
        event = pagerduty_event(
            notification, cfg.routing_key.get_secret_value(), cfg.source, self.ctx.external_url
        )
        await self.post_json(cfg.url, orjson.dumps(event))

    def reason(self, text: str) -> str:
        try:
            body = orjson.loads(text)
            errors = "; ".join(str(e) for e in body.get("errors") or [])
            message = str(body.get("message") or body.get("status") or "")
        except (ValueError, AttributeError):
            return text
        return f"{message}: {errors}" if errors else message or text

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "url": self.config.url}
