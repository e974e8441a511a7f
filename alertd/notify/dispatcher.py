"""Group flushes: from alert state to notifications in the outbox.

Groups are due in `{p}groups:due` (alerts.py files changes into them). A
replica claims due groups in one Lua call that gives each a lease: a token
in the group's hash, and its due time pushed `lease_s` ahead. So exactly one
replica flushes a group; if that replica dies the lease runs out and another
takes over, and a late commit from the old holder is refused because its
token no longer matches. A change filed into a group while it is leased
does not make it due (the holder reschedules it when done; a change due at
once leaves a `rush` mark so the holder reschedules it for now).

A flush of a batch of groups costs a handful of round trips whatever its size:

    claim (Lua) -> groups and members (pipeline) -> alerts and notification logs
    (one pipeline) -> plan (pure) -> commit (one Lua call per group, pipelined)

Planning applies, per group and channel, Alertmanager's stages:

    mute (time intervals) -> silence/inhibit filter -> dedup (notification log) -> outbox

A group's commit writes its notification log entries and outbox entries,
forgets the resolved alerts it told and reschedules the group, in one atomic
step: a crash can neither send without remembering nor remember without
sending, and a resolved alert leaves a group only once that group told it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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
from alertd.silences import Silence, SilenceStore, silenced_by
from alertd.timeintervals import TimeInterval, muted

log = structlog.get_logger("alertd.dispatch")

LEASE_S = 30.0
NFLOG_TTL_S = 8 * 86400
BATCH_GROUPS = 500

# Take up to `limit` due groups, leasing each to `token` until `lease_until`.
CLAIM_LUA = """
local due, prefix = KEYS[1], ARGV[1]
local now, lease_until, token, limit = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local gids = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, limit)
local out = {}
for _, gid in ipairs(gids) do
  local g = prefix .. 'group:' .. gid
  if redis.call('EXISTS', g) == 1 then
    redis.call('ZADD', due, lease_until, gid)
    redis.call('HSET', g, 'lease', token, 'lease_until', lease_until)
    out[#out + 1] = gid
  else
    redis.call('ZREM', due, gid)
  end
end
return {#gids, out}
"""

# One group's flush, all or nothing, only while `token` holds its lease:
# notification log entries (compare-and-set) with their outbox entries, told
# resolved alerts forgotten, the group rescheduled or dropped once empty.
# Returns {status, notifications queued}: -1 lease lost, 0 dropped, 1 rescheduled,
# 2 a notification log moved under us (nothing written; flushed again at once).
COMMIT_LUA = """
local prefix, gid, token = ARGV[1], ARGV[2], ARGV[3]
local now, interval_s, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local n_notices, n_forgets = tonumber(ARGV[7]), tonumber(ARGV[8])
local g, gm = prefix .. 'group:' .. gid, prefix .. 'gm:' .. gid
local alerts, gone, due = prefix .. 'alerts', prefix .. 'alerts:gone', prefix .. 'groups:due'
if redis.call('HGET', g, 'lease') ~= token then return {-1, 0} end
local forgets_at = 9 + 5 * n_notices
local stale = false
for i = 9, forgets_at - 1, 5 do
  if (redis.call('GET', ARGV[i]) or '') ~= ARGV[i + 1] then stale = true end
end
local queued = 0
if not stale then
  for i = 9, forgets_at - 1, 5 do
    redis.call('SET', ARGV[i], ARGV[i + 2], 'EX', ttl)
    if ARGV[i + 3] ~= '' then
      redis.call('XADD', ARGV[i + 3], '*', 'n', ARGV[i + 4])
      queued = queued + 1
    end
  end
  for i = forgets_at, forgets_at + 2 * n_forgets - 1, 2 do
    local fp, raw = ARGV[i], ARGV[i + 1]
    local cur, old = redis.call('HGET', alerts, fp), redis.call('HGET', gone, fp)
    -- Told, unless the alert moved on since it was read: then this group still owes it.
    if cur == raw or old == raw or (raw == '' and not cur and not old) then
      local ag = prefix .. 'ag:' .. fp
      redis.call('SREM', gm, fp)
      redis.call('SREM', ag, gid)
      if redis.call('SCARD', ag) == 0 then
        if cur == raw then redis.call('HDEL', alerts, fp) end
        if old then redis.call('HDEL', gone, fp) end
      end
    end
  end
end
redis.call('HDEL', g, 'lease', 'lease_until')
if redis.call('SCARD', gm) == 0 then
  redis.call('DEL', g, gm)
  redis.call('ZREM', due, gid)
  return {0, queued}
end
local at = now + interval_s
if stale or redis.call('HEXISTS', g, 'rush') == 1 then
  at = now
  redis.call('HDEL', g, 'rush')
end
if not stale then redis.call('HSET', g, 'last_flush', ARGV[4]) end
redis.call('ZADD', due, at, gid)
if stale then return {2, 0} end
return {1, queued}
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


# --- the pure core: what receivers were told, and whether to tell them again ------


def firing_key(a: Alert) -> str:
    """An alert's firing identity in the notification log: severity is part of it."""
    return f"{a.fingerprint}:{a.severity}"


def _fp_of(key: str) -> str:
    return key.rsplit(":", 1)[0]


@dataclass(frozen=True, slots=True)
class NflogEntry:
    """What one channel was last told about one group (the notification log)."""

    firing: frozenset[str]  # firing keys receivers believe are firing
    resolved: frozenset[str]  # fingerprints they were told resolved
    ts: float  # when

    @property
    def firing_fingerprints(self) -> frozenset[str]:
        return frozenset(_fp_of(k) for k in self.firing)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"firing": sorted(self.firing), "resolved": sorted(self.resolved), "ts": self.ts}
        )

    @classmethod
    def from_json(cls, raw: bytes | None) -> NflogEntry | None:
        if not raw:
            return None
        try:
            d = orjson.loads(raw)
            return cls(frozenset(d["firing"]), frozenset(d["resolved"]), float(d["ts"]))
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: as if never told, so receivers hear at worst twice


def decide(
    entry: NflogEntry | None,
    firing: list[Alert],
    resolved: list[Alert],
    send_resolved: bool,
    repeat_s: float,
    now: float,
    carried: frozenset[str] = frozenset(),
) -> NotifyReason | None:
    """Alertmanager's dedup decision, with severity part of an alert's firing identity.

    `firing` are the alerts to report firing, `resolved` those to report resolved;
    `carried` are logged firing keys receivers keep believing (muted after being told,
    with resolve_silenced), which are not news and not gone.
    """
    keys = {firing_key(a) for a in firing}
    told = entry.firing if entry is not None else frozenset()
    if entry is None or not told:
        return NotifyReason.FIRST if keys else None
    news = keys - told
    if news:
        if {_fp_of(k) for k in news} <= entry.firing_fingerprints:
            return NotifyReason.SEVERITY_CHANGED
        return NotifyReason.CHANGED
    if send_resolved and {a.fingerprint for a in resolved} - entry.resolved:
        return NotifyReason.RESOLVED
    if not keys and told - carried:
        return NotifyReason.RESOLVED  # nothing fires any more: clear the log
    if keys and now - entry.ts >= repeat_s:
        return NotifyReason.REPEAT
    return None


@dataclass(frozen=True, slots=True)
class Member:
    """An alert as one flush read it; `raw` is the stored version (forgotten only if unchanged)."""

    alert: Alert
    raw: bytes


@dataclass(slots=True)
class GroupSnapshot:
    """One claimed group as read from Redis."""

    gid: str
    key: str
    labels: dict[str, str]
    route: str
    members: list[Member] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # members whose alert no longer exists
    nflog: dict[str, bytes | None] = field(default_factory=dict)  # channel -> log entry read


@dataclass(frozen=True, slots=True)
class FlushContext:
    """What every group of one flush is judged against."""

    rt: Runtime
    now: float
    silences: list[Silence]
    inhibitor: Inhibitor | None

    def muted(self, alert: Alert) -> bool:
        """Silenced or inhibited: tracked, not notified."""
        if silenced_by(alert.labels, self.silences, self.now):
            return True
        return self.inhibitor is not None and bool(self.inhibitor.inhibited_by(alert))


@dataclass(slots=True)
class Notice:
    """One channel's outcome of a flush: its new log entry, and maybe a notification."""

    channel: str
    expected: bytes  # the log entry read ("" if none): written only if still so
    entry: NflogEntry
    notification: Notification | None


@dataclass(slots=True)
class GroupPlan:
    """Everything one group's commit writes."""

    gid: str
    group_key: str
    interval_s: float
    notices: list[Notice] = field(default_factory=list)
    forget: list[tuple[str, bytes]] = field(default_factory=list)  # (fingerprint, raw told)


def policy_of(snap: GroupSnapshot, rt: Runtime) -> RoutePolicy:
    return rt.router.by_id.get(snap.route, rt.router.default)


def plan_channel(
    channel: str,
    cfg: ChannelConfig,
    policy: RoutePolicy,
    snap: GroupSnapshot,
    quiet: set[str],
    ctx: FlushContext,
) -> Notice | None:
    """Silence/inhibit filter and dedup for one channel of one group."""
    raw_entry = snap.nflog.get(channel)
    entry = NflogEntry.from_json(raw_entry)
    told = entry.firing if entry is not None else frozenset()
    told_by_fp: dict[str, set[str]] = {}
    for k in told:
        told_by_fp.setdefault(_fp_of(k), set()).add(k)
    keep_told = ctx.rt.config.settings.notify.resolve_silenced
    firing: list[Alert] = []
    resolved: list[Alert] = []
    carried: set[str] = set()
    for m in snap.members:
        a = m.alert
        is_quiet = a.fingerprint in quiet
        was_told = keep_told and a.fingerprint in told_by_fp
        if a.state == "firing":
            if not is_quiet:
                firing.append(a)
            elif was_told:
                carried |= told_by_fp[a.fingerprint]
        elif a.state == "resolved" and (not is_quiet or was_told):
            resolved.append(a)
    send_resolved = cfg.send_resolved if cfg.send_resolved is not None else policy.send_resolved
    repeat_s = policy.repeat_interval.total_seconds()
    reason = decide(entry, firing, resolved, send_resolved, repeat_s, ctx.now, frozenset(carried))
    if reason is None:
        return None
    new_entry = NflogEntry(
        frozenset(firing_key(a) for a in firing) | carried,
        frozenset(a.fingerprint for a in resolved),
        ctx.now,
    )
    payload = firing + (resolved if send_resolved else [])
    notification = None
    if payload:
        notification = Notification(
            id=new_id(ctx.now),
            receiver=channel,
            status="firing" if firing else "resolved",
            alerts=sorted(payload, key=lambda a: (a.state == "resolved", a.starts_at)),
            group_labels=snap.labels,
            group_key=snap.key,
            reason=reason,
            created_at=ctx.now,
            changed_at=max(a.updated_at for a in payload),
        )
    return Notice(channel, raw_entry or b"", new_entry, notification)


def plan_group(snap: GroupSnapshot, ctx: FlushContext) -> GroupPlan:
    """Mute, filter and dedup one group for each of its channels (pure but for ids)."""
    rt = ctx.rt
    policy = policy_of(snap, rt)
    plan = GroupPlan(snap.gid, snap.key, policy.group_interval.total_seconds())
    plan.forget = [(fp, b"") for fp in snap.orphans]
    if muted(policy.mute_during, rt.intervals, ctx.now):
        return plan  # resolved alerts stay until the window ends and they can be told
    quiet = {m.alert.fingerprint for m in snap.members if ctx.muted(m.alert)}
    for channel in policy.channels:
        cfg = rt.config.channels.get(channel)
        if cfg is not None and cfg.enabled:
            notice = plan_channel(channel, cfg, policy, snap, quiet, ctx)
            if notice is not None:
                plan.notices.append(notice)
    plan.forget += [
        (m.alert.fingerprint, m.raw) for m in snap.members if m.alert.state == "resolved"
    ]
    return plan


def _decode(raw: bytes) -> Alert | None:
    try:
        return Alert.from_dict(orjson.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("alert unreadable; skipped", error=str(exc))
        return None


# --- the shell: Redis ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    """Groups one replica leased in one call, and whether more were due."""

    token: str
    gids: list[str]
    more: bool


class Dispatcher:
    def __init__(
        self,
        store: AlertStore,
        outbox: Outbox,
        silences: SilenceStore,
        runtime: Callable[[], Runtime],
        clock: Callable[[], float] = time.time,
        lease_s: float = LEASE_S,
        batch_groups: int = BATCH_GROUPS,
    ) -> None:
        self.store = store
        self.redis = store.redis
        self.prefix = store.prefix
        self.outbox = outbox
        self.silences = silences
        self.runtime = runtime
        self.clock = clock
        self.lease_s = lease_s
        self.batch_groups = batch_groups
        self.wake = asyncio.Event()
        self._claim = self.redis.register_script(CLAIM_LUA)
        self._commit = self.redis.register_script(COMMIT_LUA)
        self._tokens = (f"{new_id()}:{n}" for n in itertools.count())
        self._inhibitor: tuple[Runtime, bytes | None, Inhibitor] | None = None
        self.notifications_created = 0

    def nflog_key(self, channel: str, gid: str) -> str:
        return f"{self.prefix}nflog:{channel}:{gid}"

    async def run(self, stopping: asyncio.Event) -> None:
        """Flush due groups until `stopping` is set; wake early when poked."""
        backoff_s = 0.1
        while not stopping.is_set():
            # Cleared before flushing, so a change filed during the flush wakes the next one.
            self.wake.clear()
            try:
                wait_s = await self.flush_due()
                backoff_s = 0.1
            except RedisError as exc:
                log.warning("dispatcher cannot reach redis", error=type(exc).__name__)
                wait_s = backoff_s
                backoff_s = min(backoff_s * 2, 5.0)
            except Exception:
                # A bug must not stop every later notification; the lease retries the groups.
                log.exception("flush failed")
                wait_s = backoff_s
                backoff_s = min(backoff_s * 2, 5.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=max(0.005, wait_s))

    async def flush_due(self) -> float:
        """Flush every due group; seconds until the next one is due (at most 1 s)."""
        while True:
            now = self.clock()
            claim = await self.claim(now)
            if claim.gids:
                await self.flush(claim, now)
            if not claim.more:
                break
        nxt = await self.redis.zrange(self.store.due_key, 0, 0, withscores=True)
        if not nxt:
            return 1.0
        return min(1.0, max(0.0, float(nxt[0][1]) - self.clock()))

    async def claim(self, now: float) -> Claim:
        """Lease up to `batch_groups` due groups to this replica."""
        token = next(self._tokens)
        count, gids = await self._claim(
            keys=[self.store.due_key],
            args=[self.prefix, repr(now), repr(now + self.lease_s), token, self.batch_groups],
        )
        return Claim(token, [g.decode() for g in gids], int(count) >= self.batch_groups)

    async def flush(self, claim: Claim, now: float) -> int:
        """Flush leased groups; how many notifications were queued."""
        ctx = await self.context(now)
        snaps = await self.read(claim.gids, ctx.rt)
        return await self.commit(claim.token, [plan_group(s, ctx) for s in snaps], now)

    async def context(self, now: float) -> FlushContext:
        rt = self.runtime()
        return FlushContext(rt, now, await self.silences.active(now), await self._inhibitor_for(rt))

    async def _inhibitor_for(self, rt: Runtime) -> Inhibitor | None:
        """Firing sources from Redis, reloaded only when a change was filed since."""
        if not rt.inhibit_rules:
            return None
        version: bytes | None = await self.redis.get(self.store.version_key)
        cached = self._inhibitor
        if cached is not None and cached[0] is rt and cached[1] == version:
            return cached[2]
        firing = [a for a in await self.store.all() if a.state == "firing"]
        inhibitor = Inhibitor(rt.inhibit_rules, firing)
        self._inhibitor = (rt, version, inhibitor)
        return inhibitor

    async def read(self, gids: list[str], rt: Runtime) -> list[GroupSnapshot]:
        """Groups, their members' alerts and their channels' logs, in two or three round trips."""
        pipe = self.redis.pipeline(transaction=False)
        for gid in gids:
            pipe.hgetall(self.store.group_key(gid))
            pipe.smembers(self.store.members_key(gid))
        res = await pipe.execute()
        snaps: list[GroupSnapshot] = []
        members: list[list[str]] = []
        for i, gid in enumerate(gids):
            h: dict[bytes, bytes] = res[2 * i]
            snaps.append(
                GroupSnapshot(
                    gid,
                    h.get(b"key", b"").decode(),
                    orjson.loads(h.get(b"labels", b"{}")),
                    h.get(b"route", b"default").decode(),
                )
            )
            members.append(sorted(m.decode() for m in res[2 * i + 1]))
        fps = sorted({fp for ms in members for fp in ms})
        log_keys = [
            (snap, ch, self.nflog_key(ch, snap.gid))
            for snap in snaps
            for ch in policy_of(snap, rt).channels
        ]
        pipe = self.redis.pipeline(transaction=False)
        if fps:
            pipe.hmget(self.store.alerts_key, fps)
        if log_keys:
            pipe.mget([k for _, _, k in log_keys])
        res = await pipe.execute() if fps or log_keys else []
        raw_alerts: list[bytes | None] = res.pop(0) if fps else []
        raw_logs: list[bytes | None] = res.pop(0) if log_keys else []
        for (snap, ch, _), entry in zip(log_keys, raw_logs, strict=True):
            snap.nflog[ch] = entry
        found, missing = await self._members(fps, raw_alerts)
        for snap, ms in zip(snaps, members, strict=True):
            snap.members = [found[fp] for fp in ms if fp in found]
            snap.orphans = [fp for fp in ms if fp in missing]
        return snaps

    async def _members(
        self, fps: list[str], raws: list[bytes | None]
    ) -> tuple[dict[str, Member], set[str]]:
        """What groups report for each fingerprint, and which alerts are gone entirely.

        A pending alert is not reported, unless it replaced a resolved one its groups
        still owe receivers (then that one is); an unreadable one is left be.
        """
        found: dict[str, Member] = {}
        owed: list[str] = []
        for fp, raw in zip(fps, raws, strict=True):
            alert = _decode(raw) if raw is not None else None
            if raw is None or (alert is not None and alert.state == "pending"):
                owed.append(fp)
            elif alert is not None:
                found[fp] = Member(alert, raw)
        missing = {fp for fp, raw in zip(fps, raws, strict=True) if raw is None}
        for fp, raw in zip(owed, await self.store.get_gone(owed), strict=True):
            old = _decode(raw) if raw is not None else None
            if raw is not None and old is not None:
                found[fp] = Member(old, raw)
                missing.discard(fp)
        return found, missing

    async def commit(self, token: str, plans: Iterable[GroupPlan], now: float) -> int:
        """Write each group's plan atomically (one Lua call each, one round trip in all)."""
        plans = list(plans)
        if not plans:
            return 0
        for ch in {n.channel for p in plans for n in p.notices if n.notification is not None}:
            await self.outbox.ensure_group(ch)
        pipe = self.redis.pipeline(transaction=False)
        for p in plans:
            await self._commit(keys=[], args=self._commit_args(token, p, now), client=pipe)
        results = await pipe.execute()
        queued = 0
        for p, (status, n) in zip(plans, results, strict=True):
            if status == -1:
                log.warning(
                    "flush lease lost; another replica flushes the group", group=p.group_key
                )
                continue
            if status == 2:
                log.info(
                    "notification log moved during the flush; flushing again", group=p.group_key
                )
                continue
            queued += int(n)
            for notice in p.notices:
                if notice.notification is not None:
                    self._log_queued(notice.notification)
        self.notifications_created += queued
        return queued

    def _commit_args(self, token: str, p: GroupPlan, now: float) -> list[Any]:
        args: list[Any] = [
            self.prefix,
            p.gid,
            token,
            repr(now),
            repr(p.interval_s),
            NFLOG_TTL_S,
            len(p.notices),
            len(p.forget),
        ]
        for notice in p.notices:
            n = notice.notification
            args += [
                self.nflog_key(notice.channel, p.gid),
                notice.expected,
                notice.entry.to_json(),
                self.outbox.stream(notice.channel) if n is not None else "",
                orjson.dumps(n.to_dict()) if n is not None else "",
            ]
        for fp, raw in p.forget:
            args += [fp, raw]
        return args

    @staticmethod
    def _log_queued(n: Notification) -> None:
        log.info(
            "notification queued",
            channel=n.receiver,
            notification_id=n.id,
            reason=n.reason.value,
            group=n.group_key,
            alerts=len(n.alerts),
            status=n.status,
        )
