"""The health of each channel, and alertd's own alert when one keeps failing.

A channel that dead-letters FAILING_AFTER notifications in a row raises
`AlertdChannelFailing` through the other enabled channels, once per failing
episode across replicas (a Redis key set NX), and resolves it when the channel
delivers again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from redis.exceptions import RedisError

from alertd.channels.base import Channel
from alertd.model import Alert, Notification, NotifyReason, fingerprint, new_id
from alertd.notify.outbox import Outbox
from alertd.notify.outcomes import STATE_TTL_S
from alertd.storage import keys

log = structlog.get_logger("alertd.delivery")

FAILING_AFTER = 3  # consecutive dead letters before a channel counts as failing
FAILING_ALERT = "AlertdChannelFailing"


@dataclass
class ChannelHealth:
    """What /health shows per channel."""

    consecutive_failures: int = 0
    last_success: float | None = None
    last_error: str = ""
    in_flight: int = 0

    @property
    def status(self) -> str:
        if self.consecutive_failures >= FAILING_AFTER:
            return "failing"
        return "degraded" if self.consecutive_failures else "ok"


@dataclass
class ChannelFailing:
    """Raises and resolves AlertdChannelFailing through the other channels."""

    outbox: Outbox
    channels: Callable[[], dict[str, Channel[Any]]]
    clock: Callable[[], float] = time.time

    def _others(self, name: str) -> list[Channel[Any]]:
        return [ch for n, ch in self.channels().items() if n != name and ch.config.enabled]

    def _failing_notification(
        self, name: str, receiver: str, alert: Alert, now: float
    ) -> Notification:
        return Notification(
            id=new_id(now),
            receiver=receiver,
            status="resolved" if alert.state == "resolved" else "firing",
            alerts=[alert],
            group_labels={"alertname": FAILING_ALERT, "channel": name},
            group_key=f'{{}}:{{alertname="{FAILING_ALERT}", channel="{name}"}}',
            reason=NotifyReason.RESOLVED if alert.state == "resolved" else NotifyReason.FIRST,
            created_at=now,
            changed_at=now,
        )

    @staticmethod
    def failing_alert(name: str, failures: int, error: str, starts_at: float) -> Alert:
        labels = {"alertname": FAILING_ALERT, "channel": name, "severity": "critical"}
        return Alert(
            fingerprint=fingerprint(labels),
            rule=FAILING_ALERT,
            labels=labels,
            annotations={
                "summary": f"alertd cannot deliver to channel {name}: "
                f"{failures} notifications in a row were dead-lettered",
                "description": f"Last error: {error}. Replay them with `alertd dlq replay` "
                "once the channel works again.",
            },
            state="firing",
            severity="critical",
            value=float(failures),
            starts_at=starts_at,
            updated_at=starts_at,
        )

    async def raise_failing(self, name: str, failures: int, error: str) -> None:
        """Alert through the other channels, once per episode whichever replica gets here."""
        now = self.clock()
        alert = self.failing_alert(name, failures, error, now)
        ns = [self._failing_notification(name, ch.name, alert, now) for ch in self._others(name)]
        state = orjson.dumps({"starts_at": now, "failures": failures, "error": error})
        try:
            raised = await self.outbox.enqueue_once(
                keys.channel_failing(self.outbox.prefix, name), state, STATE_TTL_S, ns
            )
        except RedisError as exc:
            log.warning("could not raise channel alert", channel=name, error=type(exc).__name__)
            return
        if raised:
            log.error(
                "channel failing; alerting through the other channels",
                channel=name,
                failures=failures,
                alertname=FAILING_ALERT,
                to=[n.receiver for n in ns],
            )

    async def resolve_failing(self, name: str, state: bytes) -> None:
        now = self.clock()
        try:
            info = orjson.loads(state)
            alert = self.failing_alert(
                name, int(info["failures"]), str(info["error"]), float(info["starts_at"])
            )
        except (ValueError, KeyError, TypeError):
            alert = self.failing_alert(name, FAILING_AFTER, "", now)
        alert.state = "resolved"
        alert.ends_at = now
        alert.updated_at = now
        ns = [
            self._failing_notification(name, ch.name, alert, now)
            for ch in self._others(name)
            if ch.config.send_resolved is not False
        ]
        try:
            resolved = await self.outbox.enqueue_if(
                keys.channel_failing(self.outbox.prefix, name), state, ns
            )
        except RedisError as exc:
            log.warning("could not resolve channel alert", channel=name, error=type(exc).__name__)
            return
        if resolved:
            log.info("channel delivers again", channel=name, alertname=FAILING_ALERT)
