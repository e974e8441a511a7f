"""The `email` channel (placeholder until its implementation lands)."""

from __future__ import annotations

from typing import ClassVar, Literal

from alertd.channels.base import Channel, ChannelConfig
from alertd.errors import DeliveryError
from alertd.model import Notification


class EmailConfig(ChannelConfig):
    type: Literal["email"] = "email"


class EmailChannel(Channel[EmailConfig]):
    channel_type: ClassVar[str] = "email"
    config_model: ClassVar[type[ChannelConfig]] = EmailConfig

    async def send(self, notification: Notification) -> None:
        raise DeliveryError("not implemented", channel=self.name, retryable=False)
