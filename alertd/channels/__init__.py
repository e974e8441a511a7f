"""Channel types. Adding one: a module here with its Config and Channel, and a line below."""

from __future__ import annotations

from typing import Any

from alertd.channels.base import Channel, ChannelConfig, ChannelContext
from alertd.channels.email import EmailChannel
from alertd.channels.log import LogChannel
from alertd.channels.slack import SlackChannel
from alertd.channels.webhook import WebhookChannel

CHANNEL_TYPES: dict[str, type[Channel[Any]]] = {
    cls.channel_type: cls for cls in (LogChannel, WebhookChannel, EmailChannel, SlackChannel)
}

__all__ = ["CHANNEL_TYPES", "Channel", "ChannelConfig", "ChannelContext"]
