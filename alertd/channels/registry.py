"""Which channel types exist: one line per type, in `CHANNELS`.

Everything else is derived from that tuple: the sender class of a type (for
building channels) and the config models as one pydantic discriminated union
on `type` (for loading `channels/*.toml`), so the settings layer validates
channel tables without naming a sender.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from alertd.channels.base import Channel, ChannelConfig
from alertd.channels.discord import DiscordChannel
from alertd.channels.email import EmailChannel
from alertd.channels.log import LogChannel
from alertd.channels.opsgenie import OpsgenieChannel
from alertd.channels.pagerduty import PagerDutyChannel
from alertd.channels.slack import SlackChannel
from alertd.channels.teams import TeamsChannel
from alertd.channels.telegram import TelegramChannel
from alertd.channels.webhook import WebhookChannel

CHANNELS: tuple[type[Channel[Any]], ...] = (
    LogChannel,
    WebhookChannel,
    EmailChannel,
    SlackChannel,
    PagerDutyChannel,
    OpsgenieChannel,
    TeamsChannel,
    DiscordChannel,
    TelegramChannel,
)

CHANNEL_TYPES: dict[str, type[Channel[Any]]] = {cls.channel_type: cls for cls in CHANNELS}
CONFIG_MODELS: dict[str, type[ChannelConfig]] = {
    cls.channel_type: cls.config_model for cls in CHANNELS
}

# Built from the tuple, so it is a runtime value rather than a static type.
_SPEC: Any = Annotated[
    Union[tuple(CONFIG_MODELS.values())],  # noqa: UP007
    Field(discriminator="type"),
]
CHANNEL_SPEC: TypeAdapter[ChannelConfig] = TypeAdapter(_SPEC)


def parse_channel_config(body: dict[str, Any]) -> ChannelConfig:
    """The config model of `body["type"]`, validated; pydantic's ValidationError otherwise.

    Error locations start with the type tag (the union's member); callers that name
    keys strip it (see `settings.validation_errors`).
    """
    return CHANNEL_SPEC.validate_python(body)
