"""The `teams` channel: a Microsoft Teams Workflows webhook, one Adaptive Card per notification.

The card is a coloured header (attention / warning / accent / good for resolved)
and one block per alert, most important first, kept under Teams' 28 KB message
limit. A Workflows webhook answers 202 to an accepted message, 400 with
`{"error": {"code", "message"}}` to a body that does not match its schema, 429
with Retry-After when throttled.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import orjson
from pydantic import ConfigDict, SecretStr, field_validator

from alertd.channels.base import Channel, ChannelConfig, http_url
from alertd.channels.templating import blocks_or_text
from alertd.channels.text import (
    alert_status,
    by_importance,
    format_value,
    label_text,
    notification_title,
    truncate,
)
from alertd.model import Alert, Notification
from alertd.redact import url_secrets

MAX_BYTES = 27 * 1024  # Teams refuses messages over 28 KB; leave room for its envelope
MAX_ALERTS = 25
MAX_TEXT = 1000  # per fact value
STYLE = {"critical": "attention", "warning": "warning", "info": "accent"}
CARD = "application/vnd.microsoft.card.adaptive"


class TeamsConfig(ChannelConfig):
    model_config = ConfigDict(hide_input_in_errors=True)

    template_form: ClassVar[str | None] = "text"

    type: Literal["teams"] = "teams"
    webhook_url: SecretStr

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, v: SecretStr) -> SecretStr:
        http_url(v.get_secret_value(), "webhook_url")
        return v

    def secret_values(self) -> list[str]:
        return url_secrets(self.webhook_url.get_secret_value())


def _alert_items(a: Alert) -> list[dict[str, Any]]:
    facts = [{"title": "Value", "value": format_value(a.value)}]
    if label_text(a):
        facts.append({"title": "Labels", "value": truncate(label_text(a), MAX_TEXT)})
    for key in ("summary", "description"):
        if a.annotations.get(key):
            facts.append(
                {"title": key.capitalize(), "value": truncate(a.annotations[key], MAX_TEXT)}
            )
    return [
        {
            "type": "TextBlock",
            "text": truncate(f"**{alert_status(a)}** · {a.alertname} · {a.severity}", MAX_TEXT),
            "wrap": True,
            "separator": True,
        },
        {"type": "FactSet", "facts": facts},
    ]


def card_message(n: Notification, body: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The Workflows message: one Adaptive Card attachment. `body` replaces the alert
    blocks (a template's); the header stays."""
    style = "good" if n.status == "resolved" else STYLE.get(n.severity, "accent")
    header = {
        "type": "Container",
        "style": style,
        "bleed": True,
        "items": [
            {
                "type": "TextBlock",
                "text": truncate(notification_title(n), MAX_TEXT),
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
            }
        ],
    }
    alerts = by_importance(n)
    runbooks = dict.fromkeys(
        a.annotations["runbook_url"]
        for a in alerts
        if a.annotations.get("runbook_url", "").startswith(("http://", "https://"))
    )
    actions = [
        {"type": "Action.OpenUrl", "title": "Runbook", "url": url} for url in list(runbooks)[:3]
    ]
    shown = min(len(alerts), MAX_ALERTS)
    while True:
        items: list[dict[str, Any]] = []
        if body is not None:
            items = body
        else:
            for a in alerts[:shown]:
                items += _alert_items(a)
            if shown < len(alerts):
                more = {
                    "type": "TextBlock",
                    "text": f"…and {len(alerts) - shown} more",
                    "wrap": True,
                }
                items.append(more)
        content: dict[str, Any] = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "msteams": {"width": "Full"},
            "body": [header, *items],
        }
        if actions:
            content["actions"] = actions
        message = {
            "type": "message",
            "attachments": [{"contentType": CARD, "contentUrl": None, "content": content}],
        }
        if body is not None or shown <= 1 or len(orjson.dumps(message)) <= MAX_BYTES:
            return message
        shown //= 2


class TeamsChannel(Channel[TeamsConfig]):
    channel_type: ClassVar[str] = "teams"
    config_model: ClassVar[type[ChannelConfig]] = TeamsConfig

    async def send(self, notification: Notification) -> None:
        text = self.rendered(notification)
        items = None
        if text is not None:
            items = blocks_or_text(text) or [{"type": "TextBlock", "text": text, "wrap": True}]
        body = orjson.dumps(card_message(notification, items))
        await self.post_json(self.config.webhook_url.get_secret_value(), body)

    def reason(self, text: str) -> str:
        try:
            error = orjson.loads(text)["error"]
            return f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            return text
