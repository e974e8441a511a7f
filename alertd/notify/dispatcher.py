"""Group flushes: from alert state to notifications in the outbox.

Groups are due in the `{p}groups:due` sorted set. A replica claims a due
group by pushing its due time a lease ahead (atomically), so exactly one
replica flushes it; if that replica dies the lease runs out and another
takes over. A flush applies, per channel, Alertmanager's pipeline:

    mute (time intervals) -> silence/inhibit filter -> dedup (notification log) -> outbox

The notification log entry and the outbox entry are written in one MULTI,
so a crash can neither send without remembering nor remember without sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from redis.exceptions import RedisError

from alertd.alerts import AlertStore
from alertd.channels.base import ChannelConfig
from alertd.inhibit import Inhibitor, InhibitRule
from alertd.model import Alert, Notification, NotifyReason, new_id
from alertd.notify.outbox import Outbox
from alertd.notify.routing import RoutePolicy, Router
from alertd.settings import Config
from alertd.silences import SilenceStore, silenced_by
from alertd.timeintervals import TimeInterval, muted

log = structlog.get_logger("alertd.dispatch")

LEASE_S = 30.0
NFLOG_TTL_S = 8 * 86400

CLAIM_LUA = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) <= tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
return 0
"""

# Drop told resolved alerts from a group; delete the alert once no group holds it.
FORGET_LUA = """
local alerts, members, fp, raw = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
redis.call('SREM', members, fp)
for i = 3, #ARGV do
  if redis.call('SISMEMBER', ARGV[i], fp) == 1 then return 0 end
end
if redis.call('HGET', alerts, fp) == raw then redis.call('HDEL', alerts, fp) end
return 1
"""


@dataclass(frozen=True)
class Runtime:
    """What a flush reads from the loaded config (swapped whole on reload)."""

    config: Config
    router: Router
    inhibit_rules: list[InhibitRule]
    intervals: dict[str, TimeInterval]

    @classmethod
    def build(cls, config: Config) -> Runtime:
        return cls(
            config=config,
            router=Router(config),
            inhibit_rules=[InhibitRule.from_settings(s) for s in config.settings.inhibit],
            intervals={t.name: TimeInterval(t) for t in config.settings.time_intervals},
        )


def _firing_key(a: Alert) -> str:
    return f"{a.fingerprint}:{a.severity}"


def decide(
    entry: dict[str, Any] | None,
    firing: list[Alert],
    resolved: list[Alert],
    send_resolved: bool,
    repeat_s: float,
    now: float,
) -> NotifyReason | None:
    """Alertmanager's dedup decision, with severity part of an alert's firing identity."""
    firing_now = {_firing_key(a) for a in firing}
    if entry is None:
        return NotifyReason.FIRST if firing else None
    told_firing = set(entry.get("firing", []))
    if not firing_now <= told_firing:
        told_fps = {k.rsplit(":", 1)[0] for k in told_firing}
        if {a.fingerprint for a in firing} <= told_fps:
            return NotifyReason.SEVERITY_CHANGED
        return NotifyReason.CHANGED
    if not firing:
        return NotifyReason.RESOLVED if told_firing else None
    if send_resolved and not {a.fingerprint for a in resolved} <= set(entry.get("resolved", [])):
        return NotifyReason.RESOLVED
    if now - float(entry.get("ts", 0)) >= repeat_s:
        return NotifyReason.REPEAT
    return None


class Dispatcher:
    def __init__(
        self,
        store: AlertStore,
        outbox: Outbox,
        silences: SilenceStore,
        runtime: Callable[[], Runtime],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.redis = store.redis
        self.prefix = store.prefix
        self.outbox = outbox
        self.silences = silences
        self.runtime = runtime
        self.clock = clock
        self.wake = asyncio.Event()
        self._claim = self.redis.register_script(CLAIM_LUA)
        self._forget = self.redis.register_script(FORGET_LUA)
        self.notifications_created = 0

    def nflog_key(self, channel: str, gid: str) -> str:
        return f"{self.prefix}nflog:{channel}:{gid}"

    async def run(self, stopping: asyncio.Event) -> None:
        """Flush due groups until `stopping` is set; wake early when poked."""
        backoff_s = 0.1
        while not stopping.is_set():
            self.wake.clear()  # before the flush: a poke during it must not be lost
            try:
                wait_s = await self.flush_due()
                backoff_s = 0.1
            except RedisError as exc:
                log.warning("dispatcher cannot reach redis", error=type(exc).__name__)
                wait_s = backoff_s
                backoff_s = min(backoff_s * 2, 5.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=max(0.005, wait_s))

    async def flush_due(self) -> float:
        """Flush every due group; seconds until the next one is due (at most 1 s)."""
        while True:
            now = self.clock()
            due = await self.redis.zrangebyscore(self.store.due_key, "-inf", now, start=0, num=500)
            if not due:
                break
            ctx = await self._flush_context(now)
            claimed = []
            for raw_gid in due:
                gid = raw_gid.decode()
                if await self._claim(keys=[self.store.due_key], args=[gid, now, now + LEASE_S]):
                    claimed.append(gid)
            await asyncio.gather(*(self.flush_group(gid, now, ctx) for gid in claimed))
            if len(due) < 500:
                break
        nxt = await self.redis.zrange(self.store.due_key, 0, 0, withscores=True)
        if not nxt:
            return 1.0
        return min(1.0, max(0.0, float(nxt[0][1]) - self.clock()))

    async def _flush_context(self, now: float) -> dict[str, Any]:
        rt = self.runtime()
        ctx: dict[str, Any] = {"rt": rt, "silences": await self.silences.active(now)}
        if rt.inhibit_rules:
            ctx["inhibitor"] = Inhibitor(
                rt.inhibit_rules, [a for a in await self.store.all() if a.state == "firing"]
            )
        return ctx

    async def flush_group(self, gid: str, now: float, ctx: dict[str, Any]) -> None:
        rt: Runtime = ctx["rt"]
        gkey = self.store.group_key(gid)
        mkey = self.store.members_key(gid)
        group = await self.redis.hgetall(gkey)
        fps = [m.decode() for m in await self.redis.smembers(mkey)]
        if not group or not fps:
            await self._drop_group(gid)
            return
        raws = await self.store.get_raw(fps)
        alerts: list[tuple[Alert, bytes]] = []
        for fp, raw in zip(fps, raws, strict=True):
            if raw is None:
                await self.redis.srem(mkey, fp)
            else:
                alerts.append((Alert.from_dict(orjson.loads(raw)), raw))
        route_id = group.get(b"route", b"default").decode()
        policy = rt.router.by_id.get(route_id, rt.router.default)
        group_key = group[b"key"].decode()
        group_labels = orjson.loads(group.get(b"labels", b"{}"))

        if not muted(policy.mute_during, rt.intervals, now):
            for channel in policy.channels:
                cfg = rt.config.channels.get(channel)
                if cfg is not None and cfg.enabled:
                    await self._notify_channel(
                        channel,
                        cfg,
                        policy,
                        gid,
                        group_key,
                        group_labels,
                        [a for a, _ in alerts],
                        now,
                        ctx,
                    )

        # Resolved alerts have now been told (or were never to be): forget them here.
        for alert, raw in alerts:
            if alert.state == "resolved":
                others = [
                    self.store.members_key(t.gid) for t in rt.router.groups(alert) if t.gid != gid
                ]
                await self._forget(
                    keys=[self.store.alerts_key, mkey], args=[alert.fingerprint, raw, *others]
                )
        remaining = await self.redis.scard(mkey)
        if remaining:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(gkey, "last_flush", repr(now))
                pipe.zadd(
                    self.store.due_key, {gid: now + policy.group_interval.total_seconds()}, xx=True
                )
                await pipe.execute()
        else:
            await self._drop_group(gid)

    async def _drop_group(self, gid: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.store.group_key(gid), self.store.members_key(gid))
            pipe.zrem(self.store.due_key, gid)
            await pipe.execute()

    async def _notify_channel(
        self,
        channel: str,
        cfg: ChannelConfig,
        policy: RoutePolicy,
        gid: str,
        group_key: str,
        group_labels: dict[str, str],
        alerts: list[Alert],
        now: float,
        ctx: dict[str, Any],
    ) -> None:
        rt: Runtime = ctx["rt"]
        nkey = self.nflog_key(channel, gid)
        raw_entry = await self.redis.get(nkey)
        entry = orjson.loads(raw_entry) if raw_entry else None
        told = {k.rsplit(":", 1)[0] for k in (entry or {}).get("firing", [])}
        inhibitor: Inhibitor | None = ctx.get("inhibitor")
        resolve_silenced = rt.config.settings.notify.resolve_silenced

        firing: list[Alert] = []
        resolved: list[Alert] = []
        for a in alerts:
            if a.state == "pending":
                continue
            muted_now = bool(silenced_by(a.labels, ctx["silences"], now)) or bool(
                inhibitor and inhibitor.inhibited_by(a)
            )
            if a.state == "firing" and not muted_now:
                firing.append(a)
            elif a.state == "resolved" and (
                not muted_now or (resolve_silenced and a.fingerprint in told)
            ):
                resolved.append(a)
        send_resolved = cfg.send_resolved if cfg.send_resolved is not None else policy.send_resolved
        reason = decide(
            entry, firing, resolved, send_resolved, policy.repeat_interval.total_seconds(), now
        )
        if reason is None:
            return
        payload = firing + (resolved if send_resolved else [])
        new_entry = orjson.dumps(
            {
                "firing": sorted(_firing_key(a) for a in firing),
                "resolved": sorted(a.fingerprint for a in resolved),
                "ts": now,
            }
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(nkey, new_entry, ex=NFLOG_TTL_S)
            if payload:
                n = Notification(
                    id=new_id(now),
                    receiver=channel,
                    status="firing" if firing else "resolved",
                    alerts=sorted(payload, key=lambda a: (a.state == "resolved", a.starts_at)),
                    group_labels=group_labels,
                    group_key=group_key,
                    reason=reason,
                    created_at=now,
                    changed_at=max(a.updated_at for a in payload),
                )
                await self.outbox.ensure_group(channel)
                self.outbox.add_to(pipe, n)
            await pipe.execute()
        if payload:
            self.notifications_created += 1
            log.info(
                "notification queued",
                channel=channel,
                notification_id=n.id,
                reason=reason.value,
                group=group_key,
                alerts=len(payload),
                status=n.status,
            )
