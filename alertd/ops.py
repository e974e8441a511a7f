"""Operations the CLI and the HTTP API share, so both take the same code path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from redis.asyncio import Redis

from alertd.alerts import AlertStore
from alertd.channels import CHANNEL_TYPES, Channel, ChannelConfig, ChannelContext
from alertd.deadletters import DeadLetters
from alertd.errors import NotFoundError
from alertd.inhibit import Inhibitor, InhibitRule
from alertd.matchers import Matcher, matches_all, parse_matcher
from alertd.model import Alert, Event, Notification, NotifyReason, fingerprint, new_id, rfc3339
from alertd.notify.delivery import DeliveryResult, deliver
from alertd.notify.outbox import Outbox
from alertd.notify.routing import Router
from alertd.settings import Config
from alertd.silences import SilenceStore, silenced_by
from alertd.storage import keys
from alertd.storage.partitions import Partitions
from alertd.timeintervals import TimeInterval

TEST_SEVERITIES = ("info", "warning", "critical")


def event_fields(ev: Event) -> dict[str, bytes]:
    """The JSON stream form of an event."""
    return {
        "data": orjson.dumps({"name": ev.name, "value": ev.value, "labels": ev.labels, "ts": ev.ts})
    }


async def publish(redis: Redis, stream: str, events: list[Event]) -> list[str]:
    """Add events to the stream (one entry each, one round trip)."""
    async with redis.pipeline(transaction=False) as pipe:
        for ev in events:
            pipe.xadd(stream, event_fields(ev))
        ids = await pipe.execute()
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


def parse_filters(items: Iterable[str]) -> tuple[Matcher, ...]:
    """`label=value` filters in the config's matcher syntax (`~regex`, `!value`, `!~regex`)."""
    out = []
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(
                f"{item!r} is not label=value (write e.g. service=billing or service=~bill.*)"
            )
        out.append(parse_matcher(name.strip(), spec))
    return tuple(out)


def alert_groups(
    router: Router, intervals: Mapping[str, TimeInterval], a: Alert, now: float
) -> list[dict[str, Any]]:
    """The groups the alert is notified in, and the time intervals muting each one now."""
    return [
        {
            "groupKey": g.group_key,
            "groupLabels": g.labels,
            "channels": list(g.policy.channels),
            "mutedBy": [
                n for n in g.policy.mute_during if n in intervals and intervals[n].contains(now)
            ],
        }
        for g in router.groups(a)
    ]


def alert_view(
    a: Alert,
    silenced: list[str],
    inhibited: list[str],
    groups: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "labels": a.labels,
        "annotations": a.annotations,
        "state": a.state,
        "severity": a.severity,
        "value": a.value,
        "startsAt": rfc3339(a.starts_at),
        "fingerprint": a.fingerprint,
        "rule": a.rule,
        "silencedBy": silenced,
        "inhibitedBy": inhibited,
        "mutedBy": sorted({n for g in groups for n in g["mutedBy"]}),
        "groups": groups,
    }


async def list_alerts(
    partitions: Partitions,
    config: Config,
    now: float,
    state: str | None = None,
    severity: str | None = None,
    filters: Mapping[str, str] | tuple[Matcher, ...] | None = None,
) -> list[dict[str, Any]]:
    """Current (pending and firing) alerts with silencedBy / inhibitedBy, filtered.

    `filters` are matchers, or label -> value in the config's matcher syntax.
    """
    if isinstance(filters, Mapping):
        filters = parse_filters(f"{k}={v}" for k, v in filters.items())
    alerts = [a for a in await AlertStore(partitions).all() if a.state != "resolved"]
    silences = await SilenceStore(partitions.home, partitions.home_prefix).active(now)
    rules = [InhibitRule.from_settings(s) for s in config.settings.inhibit]
    inhibitor = Inhibitor(rules, [a for a in alerts if a.state == "firing"]) if rules else None
    router = Router(config)
    intervals = {t.name: TimeInterval(t) for t in config.settings.time_intervals}
    out = []
    for a in sorted(alerts, key=lambda a: (a.rule, a.starts_at)):
        if state and a.state != state:
            continue
        if severity and a.severity != severity:
            continue
        if filters and not matches_all(filters, a.labels):
            continue
        out.append(
            alert_view(
                a,
                silenced_by(a.labels, silences, now),
                inhibitor.inhibited_by(a) if inhibitor else [],
                alert_groups(router, intervals, a, now),
            )
        )
    return out


def test_notification(channel: str, severity: str, now: float) -> Notification:
    labels = {"alertname": "AlertdTestAlert", "severity": severity, "source": "alertd test-alert"}
    alert = Alert(
        fingerprint(labels),
        "AlertdTestAlert",
        labels,
        {
            "summary": "Test alert from alertd: if you read this, the channel works.",
            "description": "Sent by `alertd test-alert`; nothing is wrong.",
        },
        "firing",
        severity,
        1.0,
        now,
        updated_at=now,
    )
    return Notification(
        id=new_id(now),
        receiver=channel,
        status="firing",
        alerts=[alert],
        group_labels={"alertname": "AlertdTestAlert"},
        group_key='{}:{alertname="AlertdTestAlert"}',
        reason=NotifyReason.TEST,
        created_at=now,
        changed_at=now,
    )


def build_channels(
    configs: Mapping[str, ChannelConfig], ctx: ChannelContext
) -> dict[str, Channel[Any]]:
    return {name: CHANNEL_TYPES[cfg.type](name, cfg, ctx) for name, cfg in configs.items()}


async def test_alert(
    config: Config,
    channels: Mapping[str, Channel[Any]],
    names: list[str] | None,
    severity: str = "critical",
) -> dict[str, DeliveryResult]:
    """A synthetic alert through the real delivery path to the named (default: enabled) channels.

    Retries are capped (3 attempts, 1 s backoff) so the answer comes while someone waits for it.
    """
    if severity not in TEST_SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(TEST_SEVERITIES)}")
    if names:
        unknown = [n for n in names if n not in channels]
        if unknown:
            raise NotFoundError(
                f"unknown channel '{unknown[0]}' (configured: {', '.join(sorted(channels))})"
            )
        chosen = list(dict.fromkeys(names))
    else:
        chosen = [n for n, ch in channels.items() if ch.config.enabled]
    now = time.time()

    async def one(name: str) -> DeliveryResult:
        ch = channels[name]
        r = ch.config.retry
        capped = r.model_copy(
            update={
                "attempts": min(r.attempts, 3),
                "initial_backoff": min(r.initial_backoff, r.initial_backoff.__class__(seconds=0.5)),
                "max_backoff": min(r.max_backoff, r.max_backoff.__class__(seconds=1)),
            }
        )
        return await deliver(ch, test_notification(name, severity, now), retry=capped)

    results = await asyncio.gather(*(one(n) for n in chosen))
    return dict(zip(chosen, results, strict=True))


async def replay_dead_letters(
    redis: Redis, config: Config, ids: list[str] | None
) -> dict[str, Any]:
    """Re-queue dead notifications (same id) and re-add dead events to the stream."""
    s = config.settings.redis
    dead = DeadLetters(redis, s.dead_letter_stream)
    outbox = Outbox(Partitions.single(redis, keys.state_prefix(s.key_prefix)))
    if ids:
        entries = await dead.get(ids)
        missing = sorted(set(ids) - {eid for eid, _ in entries})
    else:
        # Oldest first: a group's firing message must not reach receivers after its resolved one.
        entries = [
            (d["id"], {k: v for k, v in d.items() if k != "id"})
            for d in reversed(await dead.list(10_000))
        ]
        missing = []
    replayed: list[str] = []
    failed: list[dict[str, str]] = []
    for eid, fields in entries:
        try:
            if fields.get("source") == "notification":
                n = Notification.from_dict(orjson.loads(fields["payload"]))
                n.attempts = 0
                cfg = config.channels.get(n.receiver)
                if cfg is None or not cfg.enabled:
                    raise ValueError(f"channel '{n.receiver}' is not configured or enabled")
                await outbox.enqueue(n)
            else:
                payload = orjson.loads(fields.get("payload", "{}"))
                if not isinstance(payload, dict) or not payload:
                    raise ValueError("no payload to replay")
                # Back to the stream it came from, if alertd still reads it.
                stream = fields.get("stream", s.stream)
                stream = stream if stream in s.streams else s.stream
                await redis.xadd(stream, {str(k): str(v) for k, v in payload.items()})
        except (ValueError, KeyError, TypeError) as exc:
            failed.append({"id": eid, "error": str(exc)[:200]})
            continue
        await dead.delete([eid])
        replayed.append(eid)
    return {"replayed": replayed, "failed": failed, "not_found": missing}
