"""The `opsgenie` channel: Opsgenie Alert API, create and close by `alias`.

A firing group creates an alert whose `alias` is derived from the group key (Opsgenie
deduplicates a create of an open alias); its resolved notification closes it by that
alias. Opsgenie answers 202 to an accepted request (it processes it asynchronously),
400/422 with `{"message", "errors": {...}}` to one it rejects, 429 when throttled.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from urllib.parse import quote

import orjson
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from alertd.channels.base import Channel, ChannelConfig, StrictModel, http_url
from alertd.channels.text import (
    alert_status,
    by_importance,
    format_value,
    incident_key,
    label_text,
    notification_title,
    truncate,
)
from alertd.model import Notification

DEFAULT_URL = "https://api.opsgenie.com"  # EU accounts: https://api.eu.opsgenie.com
# The Alert API's documented limits.
MAX_MESSAGE = 130
MAX_DESCRIPTION = 15000
MAX_TAGS = 20
MAX_TAG = 50
MAX_DETAILS = 8000  # characters over all keys and values
MAX_SOURCE = 100
MAX_NOTE = 25000
PRIORITY = {"critical": "P1", "warning": "P3", "info": "P5"}


class Responder(StrictModel):
    """Who Opsgenie notifies: a team, user, escalation or schedule, by name or id."""

    type: Literal["team", "user", "escalation", "schedule"]
    name: str | None = None
    id: str | None = None
    username: str | None = None

    @model_validator(mode="after")
    def _one_identifier(self) -> Responder:
        given = [k for k in ("name", "id", "username") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("a responder needs exactly one of name, id, username")
        if self.username and self.type != "user":
            raise ValueError("username identifies only a responder of type 'user'")
        return self

    def to_api(self) -> dict[str, str]:
        return self.model_dump(exclude_none=True)


class OpsgenieConfig(ChannelConfig):
    model_config = ConfigDict(hide_input_in_errors=True)

    type: Literal["opsgenie"] = "opsgenie"
    api_key: SecretStr
    url: str = DEFAULT_URL
    responders: list[Responder] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        return http_url(v, "url").rstrip("/")

    @field_validator("api_key")
    @classmethod
    def _key_given(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("api_key is empty")
        return v

    @field_validator("tags")
    @classmethod
    def _tag_length(cls, v: list[str]) -> list[str]:
        for tag in v:
            if not 0 < len(tag) <= MAX_TAG:
                raise ValueError(f"tag {tag!r} must be 1 to {MAX_TAG} characters")
        return v

    def secret_values(self) -> list[str]:
        return [self.api_key.get_secret_value()]


def _description(n: Notification) -> str:
    lines = []
    for a in by_importance(n):
        lines.append(
            f"[{alert_status(a)}] {a.alertname} ({a.severity}) value {format_value(a.value)}"
        )
        if label_text(a):
            lines.append(f"  {label_text(a)}")
        for key in ("summary", "description", "runbook_url"):
            if a.annotations.get(key):
                lines.append(f"  {key}: {a.annotations[key]}")
    return truncate("\n".join(lines), MAX_DESCRIPTION)


def _details(n: Notification) -> dict[str, str]:
    """Common labels as details, as many as fit Opsgenie's total size."""
    details: dict[str, str] = {}
    used = 0
    for k, v in sorted({**n.common_labels, "notification_id": n.id}.items()):
        if used + len(k) + len(v) > MAX_DETAILS:
            break
        details[k] = v
        used += len(k) + len(v)
    return details


def create_body(n: Notification, cfg: OpsgenieConfig) -> dict[str, Any]:
    """The create-alert body for a firing notification."""
    tags = list(dict.fromkeys([*cfg.tags, n.severity]))[:MAX_TAGS]
    body: dict[str, Any] = {
        "message": truncate(notification_title(n), MAX_MESSAGE),
        "alias": incident_key(n.group_key),
        "description": _description(n),
        "tags": tags,
        "details": _details(n),
        "entity": truncate(n.group_labels.get("alertname", ""), 512),
        "source": "alertd",
        "priority": PRIORITY.get(n.severity, "P3"),
    }
    if cfg.responders:
        body["responders"] = [r.to_api() for r in cfg.responders]
    return body


def close_body(n: Notification) -> dict[str, Any]:
    return {"source": "alertd", "note": truncate(_description(n), MAX_NOTE)}


class OpsgenieChannel(Channel[OpsgenieConfig]):
    channel_type: ClassVar[str] = "opsgenie"
    config_model: ClassVar[type[ChannelConfig]] = OpsgenieConfig

    async def send(self, notification: Notification) -> None:
        cfg = self.config
        headers = {"Authorization": f"GenieKey {cfg.api_key.get_secret_value()}"}
        if notification.status == "resolved":
            alias = quote(incident_key(notification.group_key), safe="")
            url = f"{cfg.url}/v2/alerts/{alias}/close?identifierType=alias"
            await self.post_json(url, orjson.dumps(close_body(notification)), headers)
        else:
            body = orjson.dumps(create_body(notification, cfg))
            await self.post_json(f"{cfg.url}/v2/alerts", body, headers)

    def reason(self, text: str) -> str:
        try:
            body = orjson.loads(text)
            message = str(body.get("message") or "")
            errors = body.get("errors") or {}
            detail = "; ".join(f"{k}: {v}" for k, v in errors.items())
        except (ValueError, AttributeError):
            return text
        return f"{message} ({detail})" if detail else message or text

    def describe(self) -> dict[str, Any]:
        cfg = self.config
        return {**super().describe(), "url": cfg.url, "responders": len(cfg.responders)}
