"""The `telegram` channel: the Bot API's sendMessage, HTML parse mode.

Telegram answers 200 `{"ok": true, "result": ...}` to a sent message and
`{"ok": false, "error_code", "description"}` otherwise; when throttled, 429 with
`parameters.retry_after` (seconds), which is the wait alertd honours. The bot
token is part of the URL: it is a secret wherever it could show.
"""

from __future__ import annotations

import html
from typing import Any, ClassVar, Literal

import orjson
from pydantic import ConfigDict, SecretStr, field_validator

from alertd.channels.base import Channel, ChannelConfig, http_url
from alertd.channels.text import (
    alert_status,
    by_importance,
    format_value,
    label_text,
    notification_title,
    truncate,
)
from alertd.model import Alert, Notification

DEFAULT_API_URL = "https://api.telegram.org"
MAX_TEXT = 4096  # characters after entity parsing; the markup alertd adds only adds to it


class TelegramConfig(ChannelConfig):
    model_config = ConfigDict(hide_input_in_errors=True)

    template_form: ClassVar[str | None] = "html"

    type: Literal["telegram"] = "telegram"
    bot_token: SecretStr
    chat_id: int | str
    api_url: str = DEFAULT_API_URL
    message_thread_id: int | None = None
    disable_notification: bool = False

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        return http_url(v, "api_url").rstrip("/")

    @field_validator("bot_token")
    @classmethod
    def _token_given(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("bot_token is empty")
        return v

    @field_validator("chat_id")
    @classmethod
    def _chat_given(cls, v: int | str) -> int | str:
        if isinstance(v, str) and not v.strip():
            raise ValueError("chat_id is empty")
        return v

    def secret_values(self) -> list[str]:
        return [self.bot_token.get_secret_value()]


def _alert_html(a: Alert) -> str:
    e = html.escape
    value = format_value(a.value)
    lines = [f"<b>{alert_status(a)}</b> {e(a.alertname)} · {e(a.severity)} · value {value}"]
    if label_text(a):
        lines.append(f"<code>{e(truncate(label_text(a), 500))}</code>")
    if a.annotations.get("summary"):
        lines.append(e(truncate(a.annotations["summary"], 1000)))
    runbook = a.annotations.get("runbook_url", "")
    if runbook.startswith(("http://", "https://")):
        lines.append(f'<a href="{e(runbook, quote=True)}">Runbook</a>')
    return "\n".join(lines)


def message_html(n: Notification) -> str:
    """A title and the alerts, most important first, as many as fit one message."""
    alerts = by_importance(n)
    parts = [f"<b>{html.escape(truncate(notification_title(n), 200))}</b>"]
    used = len(parts[0])
    for i, a in enumerate(alerts):
        block = _alert_html(a)
        more = f"…and {len(alerts) - i} more"
        if used + len(block) + 2 + len(more) > MAX_TEXT:
            parts.append(more)
            break
        parts.append(block)
        used += len(block) + 2
    return "\n\n".join(parts)


def send_message_body(
    n: Notification, cfg: TelegramConfig, text: str | None = None
) -> dict[str, Any]:
    """The sendMessage body; `text` (a template's HTML) replaces the message text."""
    body: dict[str, Any] = {
        "chat_id": cfg.chat_id,
        "text": text if text is not None else message_html(n),
        "parse_mode": "HTML",
        "link_preview_options": {"is_disabled": True},
    }
    if cfg.message_thread_id is not None:
        body["message_thread_id"] = cfg.message_thread_id
    if cfg.disable_notification or n.status == "resolved":
        body["disable_notification"] = True  # a resolved message need not wake anyone
    return body


class TelegramChannel(Channel[TelegramConfig]):
    channel_type: ClassVar[str] = "telegram"
    config_model: ClassVar[type[ChannelConfig]] = TelegramConfig

    async def send(self, notification: Notification) -> None:
        cfg = self.config
        url = f"{cfg.api_url}/bot{cfg.bot_token.get_secret_value()}/sendMessage"
        text = self.rendered(notification, html=True)
        await self.post_json(url, orjson.dumps(send_message_body(notification, cfg, text)))

    def reason(self, text: str) -> str:
        try:
            return str(orjson.loads(text)["description"])
        except (ValueError, KeyError, TypeError):
            return text

    def retry_after_s(self, status: int, text: str) -> float | None:
        if status != 429:
            return None
        try:
            return max(0.0, float(orjson.loads(text)["parameters"]["retry_after"]))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "chat_id": self.config.chat_id}
