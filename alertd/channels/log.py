"""The `log` channel: writes the notification to alertd's own log. The default."""

from __future__ import annotations

from typing import ClassVar, Literal

import structlog

from alertd.channels.base import Channel, ChannelConfig
from alertd.model import Notification

log = structlog.get_logger("alertd.channels.log")


class LogConfig(ChannelConfig):
    type: Literal["log"] = "log"


class LogChannel(Channel[LogConfig]):
    channel_type: ClassVar[str] = "log"
    config_model: ClassVar[type[ChannelConfig]] = LogConfig

    async def send(self, notification: Notification) -> None:
        log.warning(
            "notification",
            channel=self.name,
            notification_id=notification.id,
            status=notification.status,
            reason=notification.reason.value,
            # `group` is the group key wherever alertd logs one (the dispatcher's lines too).
            group=notification.group_key,
            group_labels=notification.group_labels,
            alerts=[
                {
                    "status": a.to_webhook()["status"],
                    "labels": a.labels,
                    "value": a.value,
                    "summary": a.annotations.get("summary", ""),
                    "fingerprint": a.fingerprint,
                }
                for a in notification.alerts
            ],
        )
