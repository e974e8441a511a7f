"""A change stored in its series' partition but never filed into its groups (its daemon
died in between) is filed by the partition's owner, and receivers hear of it."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from alertd.model import Alert
from alertd.storage import keys
from tests.conftest import DaemonFactory, Receiver, apply_unfiled, wait_for
from tests.test_e2e import ROUTE, RULES, hook


async def leave_unfiled(redis: aioredis.Redis, app: object, alert: Alert) -> None:
    """What a daemon leaves when it dies right after step 1 (apply_alert_changes)."""
    store = app.store  # type: ignore[attr-defined]
    targets = app.runtime.router.groups(alert)  # type: ignore[attr-defined]
    change = store.apply_args(alert.fingerprint, b"", alert, targets, False, time.time() - 60)
    await apply_unfiled(store, change)


class TestUnfiledChange:
    async def test_owner_files_it_and_receivers_hear(
        self, daemons: DaemonFactory, redis: aioredis.Redis, receiver: Receiver
    ) -> None:
        daemons.write(RULES, hook(receiver), ROUTE)
        app = await daemons.start()
        labels = {"alertname": "QueueBacklog", "service": "b", "queue": "q"}
        alert = Alert(
            "fp-unfiled",
            "QueueBacklog",
            labels,
            {},
            "firing",
            "warning",
            7000.0,
            starts_at=time.time() - 60,
            updated_at=time.time() - 60,
        )
        await leave_unfiled(redis, app, alert)
        await wait_for(lambda: receiver.bodies("/hook"), timeout_s=10)
        [body] = receiver.bodies("/hook")
        assert ["fp-unfiled"] == [a["fingerprint"] for a in body["alerts"]]
        filings = keys.filings(app.partitions.prefix(app.partitions.of_series("fp-unfiled")))

        async def removed() -> bool:
            return 0 == await redis.hlen(filings)

        await wait_for(removed)
