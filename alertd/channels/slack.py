"""The `slack` channel: one incoming-webhook message per notification.

Owns the message layout (a `text` fallback plus Block Kit blocks inside one
`attachments[]` item coloured by severity, kept within Slack's limits) and the
per-URL rate limit, shared across replicas through Redis when there is one.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from typing import Any, ClassVar, Literal

import orjson
import structlog
from pydantic import ConfigDict, Field, SecretStr, field_validator
from redis.exceptions import RedisError

from alertd.channels.base import Channel, ChannelConfig
from alertd.channels.templating import blocks_or_text
from alertd.channels.text import ELLIPSIS, label_text
from alertd.channels.text import format_value as _format_value
from alertd.channels.text import notification_title as slack_title
from alertd.channels.text import severity_rank as _severity_rank
from alertd.errors import DeliveryError
from alertd.model import Alert, Notification
from alertd.redact import redact

log = structlog.get_logger("alertd.channels.slack")

# Slack's documented Block Kit limits.
MAX_BLOCKS = 50
MAX_SECTION_CHARS = 3000
MAX_HEADER_CHARS = 150

SEVERITY_COLORS = {"critical": "#E01E5A", "warning": "#ECB22E", "info": "#36C5F0"}
RESOLVED_COLOR = "#2EB67D"
_SEVERITY_EMOJI = {"critical": ":red_circle:", "warning": ":large_orange_circle:"}


class SlackConfig(ChannelConfig):
    # A rejected value is otherwise echoed in the error, webhook URL included.
    model_config = ConfigDict(hide_input_in_errors=True)

    template_form: ClassVar[str | None] = "text"

    type: Literal["slack"] = "slack"
    webhook_url: SecretStr
    channel: str | None = None
    username: str | None = None
    icon_emoji: str | None = None
    rate_limit_per_s: float = Field(default=1.0, gt=0, allow_inf_nan=False)

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("webhook_url must start with http:// or https://")
        return v

    def secret_values(self) -> list[str]:
        return [self.webhook_url.get_secret_value()]


# --- the message ---------------------------------------------------------------------------


def _escape(text: str) -> str:
    """Slack's mrkdwn escaping: only &, < and > are control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, ending in an ellipsis when cut."""
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    cut = text[: limit - 1]
    # Half an entity ("&am") would show raw: drop it.
    amp = cut.rfind("&", max(0, len(cut) - 4))
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + ELLIPSIS


def _runbook_link(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        return f"*Runbook:* {_escape(url)}"
    # `|` and `>` end a Slack link: percent-encode them.
    safe = _escape(url.replace("|", "%7C")).replace("&gt;", "%3E")
    return f"<{safe}|:book: Runbook>"


def _alert_text(a: Alert) -> str:
    """One alert as mrkdwn, at most MAX_SECTION_CHARS; summary and labels give way first."""
    if a.state == "resolved":
        status = ":large_green_circle: *RESOLVED*"
    else:
        status = f"{_SEVERITY_EMOJI.get(a.severity, ':large_blue_circle:')} *FIRING*"
    head = f"{status} · *{_escape(a.alertname)}* · {_escape(a.severity)}\n"
    head += f"*Value:* {_format_value(a.value)}"
    middle = ""
    summary = a.annotations.get("summary", "")
    if summary:
        middle += f"\n*Summary:* {_escape(summary)}"
    labels = label_text(a)
    if labels:
        middle += f"\n*Labels:* {_escape(labels)}"
    runbook = a.annotations.get("runbook_url", "")
    tail = f"\n{_runbook_link(runbook)}" if runbook else ""
    # The link is kept whole when it fits: a cut link shows as raw markup.
    budget = MAX_SECTION_CHARS - len(head) - len(tail)
    return _truncate(head + _truncate(middle, budget) + tail, MAX_SECTION_CHARS)


def _more_block(hidden: int) -> dict[str, Any]:
    noun = "alert" if hidden == 1 else "alerts"
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": f"…and {hidden} more {noun}"}],
    }


def slack_blocks(n: Notification) -> list[dict[str, Any]]:
    """A header and one section per alert, firing and most severe first, at most MAX_BLOCKS."""
    header = {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": _truncate(slack_title(n), MAX_HEADER_CHARS),
            "emoji": True,
        },
    }
    # When not all fit, those left out should be the resolved and the least severe.
    alerts = sorted(n.alerts, key=lambda a: (a.state == "resolved", -_severity_rank(a.severity)))
    room = MAX_BLOCKS - 1
    hidden = 0
    if len(alerts) > room:
        alerts, hidden = alerts[: room - 1], len(alerts) - (room - 1)
    blocks: list[dict[str, Any]] = [header]
    blocks += [
        {"type": "section", "text": {"type": "mrkdwn", "text": _alert_text(a)}} for a in alerts
    ]
    if hidden:
        blocks.append(_more_block(hidden))
    return blocks


def slack_payload(
    n: Notification,
    *,
    channel: str | None = None,
    username: str | None = None,
    icon_emoji: str | None = None,
) -> dict[str, Any]:
    """The incoming-webhook body for one notification."""
    text = _truncate(_escape(slack_title(n)), MAX_SECTION_CHARS)
    color = (
        RESOLVED_COLOR
        if n.status == "resolved"
        else SEVERITY_COLORS.get(n.severity, SEVERITY_COLORS["info"])
    )
    payload: dict[str, Any] = {
        "text": text,
        "attachments": [{"color": color, "fallback": text, "blocks": slack_blocks(n)}],
    }
    extras = {"channel": channel, "username": username, "icon_emoji": icon_emoji}
    payload.update({k: v for k, v in extras.items() if v})
    return payload


def templated(payload: dict[str, Any], text: str) -> None:
    """A template's output in place of the message: a JSON array is the blocks, anything
    else the text (and its one section)."""
    attachment = payload["attachments"][0]
    blocks = blocks_or_text(text)
    if blocks is not None:
        attachment["blocks"] = blocks[:MAX_BLOCKS]
        return
    payload["text"] = attachment["fallback"] = _truncate(text, MAX_SECTION_CHARS)
    section = {"type": "mrkdwn", "text": _truncate(text, MAX_SECTION_CHARS)}
    attachment["blocks"] = [{"type": "section", "text": section}]


# --- the rate limit ------------------------------------------------------------------------

# Next free slot (time.monotonic) per URL hash, for every channel of this process.
# A reservation taken without awaiting needs no lock, and so no event loop.
_next_slot: dict[str, float] = {}


def _url_hash(url: str) -> str:
    return hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()


async def _wait_local(url_hash: str, interval_s: float) -> None:
    now = time.monotonic()
    slot = max(now, _next_slot.get(url_hash, 0.0))
    _next_slot[url_hash] = slot + interval_s
    if slot > now:
        await asyncio.sleep(slot - now)


class SlackChannel(Channel[SlackConfig]):
    channel_type: ClassVar[str] = "slack"
    config_model: ClassVar[type[ChannelConfig]] = SlackConfig
    _redis_down: bool = False  # log the switch to and from the local limit, not every post

    async def send(self, notification: Notification) -> None:
        cfg = self.config
        url = cfg.webhook_url.get_secret_value()
        payload = slack_payload(
            notification, channel=cfg.channel, username=cfg.username, icon_emoji=cfg.icon_emoji
        )
        text = self.rendered(notification)
        if text is not None:
            templated(payload, text)
        body = orjson.dumps(payload)
        await self._wait_turn(url)
        try:
            await self.post_json(url, body)
        except DeliveryError as exc:
            # post_json keeps URLs out of its own words; an answer's body could still echo it.
            raise DeliveryError(
                redact(exc.message, [url]),
                channel=self.name,
                retryable=exc.retryable,
                retry_after_s=exc.retry_after_s,
            ) from None

    async def _wait_turn(self, url: str) -> None:
        """Wait until this URL may take another message (from any replica, with Redis)."""
        url_hash = _url_hash(url)
        interval_s = 1.0 / self.config.rate_limit_per_s
        redis = self.ctx.redis
        if redis is not None:
            key = f"{self.ctx.key_prefix}slack:rl:{url_hash}"
            interval_ms = max(1, math.ceil(interval_s * 1000))
            try:
                while not await redis.set(key, b"1", px=interval_ms, nx=True):
                    wait_ms = await redis.pttl(key)
                    if wait_ms == -1:  # left without expiry (by hand?): it would block forever
                        await redis.pexpire(key, interval_ms)
                        continue
                    await asyncio.sleep(max(wait_ms, 1) / 1000)
                if self._redis_down:
                    self._redis_down = False
                    log.info("slack rate limit shared through redis again", channel=self.name)
                return
            except RedisError as exc:
                # Slack's own 429s still guard the URL; this replica keeps its own pace.
                if not self._redis_down:
                    self._redis_down = True
                    log.warning(
                        "slack rate limit falls back to local",
                        channel=self.name,
                        error=type(exc).__name__,
                    )
        await _wait_local(url_hash, interval_s)

    def describe(self) -> dict[str, Any]:
        cfg = self.config
        return {
            **super().describe(),
            "channel": cfg.channel,
            "rate_limit_per_s": cfg.rate_limit_per_s,
        }
