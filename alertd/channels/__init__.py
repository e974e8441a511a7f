"""Channel types: one module each, its config model beside its sender.

Adding one: a module here with its Config and Channel, and a line in
`alertd.channels.registry.CHANNELS`.
"""

from __future__ import annotations

from alertd.channels.base import Channel, ChannelConfig, ChannelContext
from alertd.channels.registry import CHANNEL_TYPES

__all__ = ["CHANNEL_TYPES", "Channel", "ChannelConfig", "ChannelContext"]
