"""The `discord` channel: a Discord webhook message with one embed coloured by severity.

Discord answers 204 to an accepted message, 400 with `{"message", "code",
"errors"}` to one it rejects, and 429 with a JSON `retry_after` (seconds) when
throttled, which is the wait alertd honours. Mentions in labels are disabled
(`allowed_mentions`): an alert cannot ping @everyone.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import orjson
from pydantic import ConfigDict, Field, SecretStr, field_validator

from alertd.channels.base import Channel, ChannelConfig, http_url
from alertd.channels.text import (
    alert_status,
    by_importance,
    format_value,
    label_text,
    notification_title,
    truncate,
)
from alertd.model import Alert, Notification, rfc3339
from alertd.redact import url_secrets

# Discord's documented embed limits.
MAX_TITLE = 256
MAX_DESCRIPTION = 4096
MAX_USERNAME = 80
COLORS = {"critical": 0xE01E5A, "warning": 0xECB22E, "info": 0x36C5F0}
RESOLVED_COLOR = 0x2EB67D
_MARKDOWN = str.maketrans({c: f"\\{c}" for c in "\\*_~|`>[]"})


class DiscordConfig(ChannelConfig):
    model_config = ConfigDict(hide_input_in_errors=True)

    template_form: ClassVar[str | None] = "text"

    type: Literal["discord"] = "discord"
    webhook_url: SecretStr
    username: str | None = Field(default=None, min_length=1, max_length=MAX_USERNAME)
    avatar_url: str | None = None

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, v: SecretStr) -> SecretStr:
        http_url(v.get_secret_value(), "webhook_url")
        return v

    def secret_values(self) -> list[str]:
        return url_secrets(self.webhook_url.get_secret_value())


def escape(text: str) -> str:
    """Discord markdown shown as typed."""
    return text.translate(_MARKDOWN)


def _alert_text(a: Alert) -> str:
    value = format_value(a.value)
    lines = [f"**{alert_status(a)}** {escape(a.alertname)} · {a.severity} · value {value}"]
    if label_text(a):
        lines.append(escape(truncate(label_text(a), 500)))
    if a.annotations.get("summary"):
        lines.append(escape(truncate(a.annotations["summary"], 1000)))
    runbook = a.annotations.get("runbook_url", "")
    if runbook.startswith(("http://", "https://")) and " " not in runbook and ")" not in runbook:
        lines.append(f"[Runbook]({runbook})")
    return "\n".join(lines)


def description(n: Notification) -> str:
    """The alerts, most important first, as many as fit the embed's description."""
    alerts = by_importance(n)
    parts: list[str] = []
    used = 0
    for i, a in enumerate(alerts):
        text = _alert_text(a)
        more = f"…and {len(alerts) - i} more"
        if used + len(text) + 2 + len(more) > MAX_DESCRIPTION:
            parts.append(more)
            break
        parts.append(text)
        used += len(text) + 2
    return truncate("\n\n".join(parts), MAX_DESCRIPTION)


def discord_message(n: Notification, cfg: DiscordConfig, text: str | None = None) -> dict[str, Any]:
    """The webhook body; `text` (a template's) replaces the embed's description."""
    color = RESOLVED_COLOR if n.status == "resolved" else COLORS.get(n.severity, COLORS["info"])
    embed = {
        "title": truncate(notification_title(n), MAX_TITLE),
        "description": truncate(text, MAX_DESCRIPTION) if text is not None else description(n),
        "color": color,
        "timestamp": rfc3339(n.created_at),
        "footer": {"text": "alertd"},
    }
    body: dict[str, Any] = {"embeds": [embed], "allowed_mentions": {"parse": []}}
    if cfg.username:
        body["username"] = cfg.username
    if cfg.avatar_url:
        body["avatar_url"] = cfg.avatar_url
    return body


class DiscordChannel(Channel[DiscordConfig]):
    channel_type: ClassVar[str] = "discord"
    config_model: ClassVar[type[ChannelConfig]] = DiscordConfig

    async def send(self, notification: Notification) -> None:
        text = self.rendered(notification)
        body = orjson.dumps(discord_message(notification, self.config, text))
        await self.post_json(self.config.webhook_url.get_secret_value(), body)

    def reason(self, text: str) -> str:
        try:
            body = orjson.loads(text)
            message = f"{body['message']} ({body.get('code', '?')})"
        except (ValueError, KeyError, TypeError):
            return text
        problems = list(_field_errors(body.get("errors") or {}, ""))
        return f"{message}: {'; '.join(problems)}" if problems else message

    def retry_after_s(self, status: int, text: str) -> float | None:
        if status != 429:
            return None
        try:
            return max(0.0, float(orjson.loads(text)["retry_after"]))
        except (ValueError, KeyError, TypeError):
            return None


def _field_errors(errors: Any, path: str) -> Any:
    """Discord's nested `errors` as `embeds.0.title: Must be 256 or fewer in length.`"""
    if not isinstance(errors, dict):
        return
    for e in errors.get("_errors") or []:
        if isinstance(e, dict):
            yield f"{path or 'body'}: {e.get('message', '')}"
    for key, sub in errors.items():
        if key != "_errors":
            yield from _field_errors(sub, f"{path}.{key}" if path else str(key))
