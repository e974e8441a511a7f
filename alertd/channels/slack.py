"""The `slack` channel (placeholder until its implementation lands)."""

from __future__ import annotations

from typing import ClassVar, Literal

from alertd.channels.base import Channel, ChannelConfig
from alertd.errors import DeliveryError
from alertd.model import Notification


class SlackConfig(ChannelConfig):
    type: Literal["slack"] = "slack"


class SlackChannel(Channel[SlackConfig]):
    channel_type: ClassVar[str] = "slack"
    config_model: ClassVar[type[ChannelConfig]] = SlackConfig

    async def send(self, notification: Notification) -> None:
        raise DeliveryError("not implemented", channel=self.name, retryable=False)
