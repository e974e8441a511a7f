"""Group flushes: from alert state to notifications in the outbox.

Groups are due in `{p}groups:due` (alerts.py files changes into them). A
replica claims due groups in one Lua call that gives each a lease: a token
in the group's hash, and its due time pushed `lease_s` ahead. So exactly one
replica flushes a group; if that replica dies the lease runs out and another
takes over, and a late commit from the old holder is refused because its
token no longer matches. A change filed into a leased group leaves word in
it (`dirty`, or `rush` when due at once) and the holder reschedules by it.

While something may be left to tell (news not yet sent, a muted alert whose
silence or inhibition may end, a mute window) a group is looked at every
group_interval. Once every channel was told the group as it stands, it
sleeps until its next repeat; a change filed wakes it as group_interval
allows, and a reload (or a start on another routing than the last) makes
every group flushed before due at once.

A round of flushes costs two round trips per Redis client whatever its size (a
script call per partition in each):

    claim and read the groups (Lua) -> plan (pure, in slices) -> commit (Lua, each
    group atomically)

A round is short (`batch_groups` in all), and a critical alert's groups do not wait
for it: `flush_urgent` claims and flushes those alone, as soon as the change is filed.

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

from alertd.alerts import AlertStore, GroupSide
from alertd.channels.base import ChannelConfig
from alertd.inhibit import Inhibitor, InhibitRule
from alertd.logthrottle import ThrottledLog
from alertd.model import Alert, Notification, new_id
from alertd.notify.history import History
from alertd.notify.outbox import Outbox
from alertd.notify.pagehold import PageHold
from alertd.notify.routing import RoutePolicy, Router, routing_digest
from alertd.notify.stages import (
    NflogEntry,
    build_notification,
    decide,
    firing_key,
    select,
)
from alertd.settings import Config
from alertd.silences import Silence, SilenceStore, silenced_by
from alertd.storage import keys, scripts
from alertd.storage.scripts import lua
from alertd.timeintervals import TimeInterval, muted

log = structlog.get_logger("alertd.dispatch")
throttled = ThrottledLog(log)  # loops that fail alike each retry log once a minute

LEASE_S = 30.0
NFLOG_TTL_S = 8 * 86400
BATCH_GROUPS = 100
# A flush round takes `batch_groups` groups in all, shared by the partitions with some
# due, but at least this many of each: a round is short, so an urgent group filed
# meanwhile is claimed by the next one (claims take urgent groups first), and a storm
# spread over 16 partitions still goes out in rounds of a few hundred.
MIN_CLAIM_PER_PARTITION = 16
PLAN_SLICE = 16  # groups planned between two turns of the event loop
LOOK_ALL_EVERY_S = 1.0  # how often a flush reads every partition's first due time
INHIBIT_REFRESH_S = 1.0


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
    fingerprints: list[str] = field(default_factory=list)  # its members, as claimed
    members: list[Member] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # members whose alert no longer exists
    nflog: dict[str, bytes | None] = field(default_factory=dict)  # channel -> log entry read
    raws: dict[str, bytes | None] = field(default_factory=dict)  # fingerprint -> alert read


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
    interval_s: float  # group_interval: when to look again if something may be left to tell
    sleep_s: float  # when nothing is: until the next repeat (a change filed wakes it sooner)
    notices: list[Notice] = field(default_factory=list)
    forget: list[tuple[str, bytes]] = field(default_factory=list)  # (fingerprint, raw told)


def policy_of(snap: GroupSnapshot, rt: Runtime) -> RoutePolicy:
    return rt.router.by_id.get(snap.route, rt.router.default)


def plan_channel(
    channel: str,
    cfg: ChannelConfig,
    policy: RoutePolicy,
    snap: GroupSnapshot,
    muted_fps: set[str],
    ctx: FlushContext,
) -> tuple[Notice | None, NflogEntry | None]:
    """Silence/inhibit filter and dedup for one channel of one group.

    Returns what to write (if anything) and the channel's log entry after the flush.
    """
    raw_entry = snap.nflog.get(channel)
    entry = NflogEntry.from_json(raw_entry)
    keep_told = ctx.rt.config.settings.notify.resolve_silenced
    chosen = select([m.alert for m in snap.members], muted_fps, entry, keep_told)
    send_resolved = cfg.send_resolved if cfg.send_resolved is not None else policy.send_resolved
    repeat_s = policy.repeat_interval.total_seconds()
    reason = decide(
        entry, chosen.firing, chosen.resolved, send_resolved, repeat_s, ctx.now, chosen.carried
    )
    if reason is None:
        return None, entry
    new_entry = chosen.log_entry(ctx.now)
    notification = build_notification(
        channel, snap.labels, snap.key, chosen, reason, send_resolved, ctx.now
    )
    return Notice(channel, raw_entry or b"", new_entry, notification), new_entry


def sleep_s(
    policy: RoutePolicy, firing: frozenset[str], told: list[NflogEntry | None], now: float
) -> float:
    """How long a group may sleep once every channel was told `firing` (unmuted): until its
    next repeat. Any change filed into it wakes it earlier, as group_interval allows.
    """
    interval_s = policy.group_interval.total_seconds()
    repeat_s = policy.repeat_interval.total_seconds()
    if any((e.firing if e is not None else frozenset()) != firing for e in told):
        return interval_s
    stamps = [e.ts for e in told if e is not None and firing]
    wake = min(stamps) + repeat_s if stamps else now + repeat_s
    return max(interval_s, wake - now)


def plan_group(snap: GroupSnapshot, ctx: FlushContext) -> GroupPlan:
    """Mute, filter and dedup one group for each of its channels (pure but for ids)."""
    rt = ctx.rt
    policy = policy_of(snap, rt)
    interval_s = policy.group_interval.total_seconds()
    plan = GroupPlan(snap.gid, snap.key, interval_s, interval_s)
    plan.forget = [(fp, b"") for fp in snap.orphans]
    if muted(policy.mute_during, rt.intervals, ctx.now):
        return plan  # resolved alerts stay until the window ends and they can be told
    muted_fps = {m.alert.fingerprint for m in snap.members if ctx.muted(m.alert)}
    told: list[NflogEntry | None] = []
    for channel in policy.channels:
        cfg = rt.config.channels.get(channel)
        if cfg is not None and cfg.enabled:
            notice, entry = plan_channel(channel, cfg, policy, snap, muted_fps, ctx)
            told.append(entry)
            if notice is not None:
                plan.notices.append(notice)
    plan.forget += [
        (m.alert.fingerprint, m.raw) for m in snap.members if m.alert.state == "resolved"
    ]
    if not muted_fps:
        # While an alert is muted, its silence or inhibition may end: keep looking.
        firing = frozenset(firing_key(m.alert) for m in snap.members if m.alert.state == "firing")
        plan.sleep_s = sleep_s(policy, firing, told, ctx.now)
    return plan


def _decode(raw: bytes) -> Alert | None:
    try:
        return Alert.from_dict(orjson.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("alert unreadable; skipped", error=str(exc))
        return None


# --- the shell: Redis ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _InhibitorCache:
    rt: Runtime
    version: tuple[bytes | None, ...]  # every partition's alerts:ver when loaded
    at: float
    load_s: float
    inhibitor: Inhibitor


@dataclass(frozen=True, slots=True)
class Claim:
    """Groups one replica leased in one call (as they stood), and whether more were due;
    all in one partition's `side`."""

    token: str
    groups: list[GroupSnapshot]
    more: bool
    side: GroupSide

    @property
    def gids(self) -> list[str]:
        return [g.gid for g in self.groups]


def _snapshot(
    gid: bytes,
    flat: list[bytes],
    members: list[bytes],
    raws: list[bytes | None],
    logs: list[bytes | None],
) -> GroupSnapshot:
    h = dict(zip(flat[::2], flat[1::2], strict=True))
    fps = [m.decode() for m in members]
    return GroupSnapshot(
        gid.decode(),
        h.get(b"key", b"").decode(),
        orjson.loads(h.get(b"labels", b"{}")),
        h.get(b"route", b"default").decode(),
        sorted(fps),
        raws=dict(zip(fps, raws, strict=True)),
        nflog={logs[i].decode(): logs[i + 1] for i in range(0, len(logs), 2)},  # type: ignore[union-attr]
    )


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
        self.urgent = asyncio.Event()  # page_filed
        self._claim = self.redis.register_script(lua("claim_groups"))
        self._commit = self.redis.register_script(lua("commit_groups"))
        self._reschedule = self.redis.register_script(lua("reschedule_groups"))
        self._runtime_seen: Runtime | None = None
        self._tokens = (f"{new_id()}:{n}" for n in itertools.count())
        self._inhibitor: _InhibitorCache | None = None
        self._routes: tuple[Runtime, bytes] | None = None  # the claim's route -> channels
        self.notifications_created = 0
        self.history: History | None = None
        self.page_hold: PageHold | None = None
        # Each partition's first due time as last read: a flush claims only where
        # something is due by then, or where this daemon filed since (a claim is a
        # script per partition: most partitions have nothing due at a given moment).
        self._next_due: dict[int, float] = {}
        self._look_all_at = 0.0

    def nflog_key(self, channel: str, gid: str) -> str:
        return self.store.side_of(gid).nflog_key(channel, gid)

    def page_filed(self) -> None:
        """A critical alert fired and was filed: flush its groups now, beside the round
        in progress (a storm's rounds follow one another for seconds)."""
        self.urgent.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Flush due groups until `stopping` is set, waking early when poked; and the
        groups a critical alert fired in as soon as it is filed."""
        await asyncio.gather(self._run_rounds(stopping), self._run_urgent(stopping))

    async def _run_urgent(self, stopping: asyncio.Event) -> None:
        """What `page_filed` asks for. A failure leaves the groups to the rounds: they
        stay marked urgent, and a round claims those first."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.urgent.wait(), timeout=1.0)
            if not self.urgent.is_set():
                continue
            self.urgent.clear()
            try:
                await self.flush_urgent()
            except RedisError as exc:
                throttled.warning(
                    "redis", "dispatcher cannot reach redis", error=type(exc).__name__
                )
            except Exception:
                throttled.exception("bug", "urgent flush failed")

    async def flush_urgent(self) -> int:
        """Flush the groups marked urgent in the partitions this daemon filed a page into
        since; how many notifications were queued. The leases keep each group to one
        flush at a time (a round may have claimed it first)."""
        paged, self.store.paged_into = self.store.paged_into, set()
        now = self.clock()
        sides = [self.store.sides[p] for p in sorted(paged)]
        claims = await self.claim_many(now, sides, urgent_only=True) if sides else []
        return await self.flush_round(claims, now)

    async def _run_rounds(self, stopping: asyncio.Event) -> None:
        backoff_s = 0.1
        while not stopping.is_set():
            # Cleared before flushing, so a change filed during the flush wakes the next one.
            self.wake.clear()
            try:
                wait_s = await self.flush_due()
                backoff_s = 0.1
            except RedisError as exc:
                throttled.warning(
                    "redis", "dispatcher cannot reach redis", error=type(exc).__name__
                )
                wait_s = backoff_s
                backoff_s = min(backoff_s * 2, 5.0)
            except Exception:
                # A bug must not stop every later notification; the lease retries the groups.
                throttled.exception("bug", "flush failed")
                wait_s = backoff_s
                backoff_s = min(backoff_s * 2, 5.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=max(0.005, wait_s))

    async def flush_due(self) -> float:
        """Flush every due group, of every partition; seconds until the next one is due
        (at most 1 s). Any daemon flushes any partition's groups: a group's flush lease
        keeps each flush to one daemon at a time, and a page whose partition's owner
        died does not wait for `takeover`."""
        rt = self.runtime()
        if rt is not self._runtime_seen:
            await self._routing_changed(rt)
        sides = self.store.sides
        now = self.clock()
        filed, self.store.filed_into = self.store.filed_into, set()
        todo = [
            side
            for side in sides
            if side.partition in filed or self._next_due.get(side.partition, 0.0) <= now
        ]
        looked = {side.partition for side in todo}
        while todo:
            if self.page_hold is not None:
                await self.page_hold.wait()  # a page fired here: its flush and delivery first
            now = self.clock()
            share = max(MIN_CLAIM_PER_PARTITION, -(-self.batch_groups // len(todo)))
            claims = await self.claim_many(now, todo, min(share, self.batch_groups))
            await self.flush_round(claims, now)
            todo = [claim.side for claim in claims if claim.more]
        if not sides:
            return 1.0
        # The first due time of the partitions just flushed; of every partition now and
        # then, for the groups other daemons filed or left (a flush held by one that died).
        if self.clock() >= self._look_all_at:
            self._look_all_at = self.clock() + LOOK_ALL_EVERY_S
            looked = {side.partition for side in sides}
        if looked:
            answers = await self.store.per_partition(
                looked,
                lambda pipe, p: pipe.zrange(self.store.sides[p].due_key, 0, 0, withscores=True),
            )
            never = float("inf")
            for p, (nxt,) in answers.items():
                self._next_due[p] = float(nxt[0][1]) if nxt else never
        first = min(self._next_due.get(side.partition, 0.0) for side in sides)
        return min(1.0, max(0.0, first - self.clock()))

    async def _routing_changed(self, rt: Runtime) -> None:
        """After a reload, or a start on another routing than the last: look at every group
        again now, so channels a route newly leads to hear about what already fires.
        """
        digest = routing_digest(rt.config)
        old = await self.redis.set(keys.routing_digest(self.prefix), digest, get=True)
        reloaded = self._runtime_seen is not None
        if reloaded or (old is not None and old.decode() != digest):
            log.info("configuration changed; every notified group is looked at again")
            await self.reschedule_all(self.clock())
        self._runtime_seen = rt

    async def reschedule_all(self, now: float) -> None:
        """Make every group flushed before due now, in every partition (after a reload:
        routes may have changed)."""
        for side in self.store.sides:
            gids = await side.redis.zrange(side.due_key, 0, -1)
            if not gids:
                continue
            pipe = side.redis.pipeline(transaction=False)
            for start in range(0, len(gids), 1000):
                chunk = [gid.decode() for gid in gids[start : start + 1000]]
                groups = [side.group_key(gid) for gid in chunk]
                scripts.queue(pipe, self._reschedule, [side.due_key, *groups], [repr(now), *chunk])
            await scripts.execute(pipe)

    async def claim(self, now: float, side: GroupSide | None = None) -> Claim:
        """Lease up to `batch_groups` due groups of a partition (the home one by default)
        to this replica, reading them as it does."""
        (claim,) = await self.claim_many(now, [side or self.store.sides[keys.HOME]])
        return claim

    async def claim_many(
        self,
        now: float,
        sides: list[GroupSide],
        limit: int | None = None,
        urgent_only: bool = False,
    ) -> list[Claim]:
        """`claim` in each of these partitions, up to `limit` groups each (`batch_groups`
        by default; with `urgent_only`, of the groups marked urgent alone), one round
        trip per client."""
        limit = limit or self.batch_groups
        token = next(self._tokens)
        routes = self._route_channels()

        def queue(pipe: Any, p: int) -> None:
            side = self.store.sides[p]
            scripts.queue(
                pipe,
                self._claim,
                [side.due_key, side.copies_key, side.urgent_key],
                [
                    side.prefix,
                    repr(now),
                    repr(now + self.lease_s),
                    token,
                    limit,
                    routes,
                    int(urgent_only),
                ],
            )

        answers = await self.store.per_partition([side.partition for side in sides], queue)
        claims = []
        for side in sides:
            ((count, rows),) = answers[side.partition]
            groups = [_snapshot(*rows[i : i + 5]) for i in range(0, len(rows), 5)]
            claims.append(Claim(token, groups, int(count) >= limit, side))
        return claims

    def _route_channels(self) -> bytes:
        """{route id: its channels} of the current config, as claim_groups.lua reads it."""
        rt = self.runtime()
        if self._routes is None or self._routes[0] is not rt:
            routes = {rid: p.channels for rid, p in rt.router.by_id.items()}
            routes[""] = rt.router.default.channels
            self._routes = (rt, orjson.dumps(routes))
        return self._routes[1]

    async def flush(self, claim: Claim, now: float) -> int:
        """Flush leased groups; how many notifications were queued."""
        return await self.flush_round([claim], now)

    async def flush_round(self, claims: list[Claim], now: float) -> int:
        """Flush what a round leased, in every partition: plan in slices, letting the
        event loop run other steps between them (a storm's round is seconds of planning
        in all: a page's ingest must not wait for it), then commit each partition's
        plans, in one round trip per client. How many notifications were queued."""
        claims = [claim for claim in claims if claim.groups]
        if not claims:
            return 0
        ctx = await self.context(now)
        planned: list[tuple[Claim, list[GroupPlan]]] = []
        for claim in claims:
            snaps = await self.read(claim, ctx.rt)
            plans: list[GroupPlan] = []
            for start in range(0, len(snaps), PLAN_SLICE):
                plans += [plan_group(snap, ctx) for snap in snaps[start : start + PLAN_SLICE]]
                await asyncio.sleep(0)
            planned.append((claim, plans))
        return await self.commit_many(planned, now)

    async def context(self, now: float) -> FlushContext:
        rt = self.runtime()
        inhibitor = await self._inhibitor_for(rt, now)
        return FlushContext(rt, now, await self.silences.active(now), inhibitor)

    async def _inhibitor_for(self, rt: Runtime, now: float) -> Inhibitor | None:
        """Firing sources from Redis: reloaded when a change was filed since, at most every
        second (as silences), and less often when the load itself takes long.
        """
        if not rt.inhibit_rules:
            return None
        version = await self.store.versions()
        cached = self._inhibitor
        if cached is not None and cached.rt is rt:
            fresh = 0 <= now - cached.at < max(INHIBIT_REFRESH_S, 4 * cached.load_s)
            if cached.version == version or fresh:
                return cached.inhibitor
        started = time.monotonic()
        firing = [a for a in await self.store.all() if a.state == "firing"]
        inhibitor = Inhibitor(rt.inhibit_rules, firing)
        self._inhibitor = _InhibitorCache(rt, version, now, time.monotonic() - started, inhibitor)
        return inhibitor

    async def read(self, claim: Claim, rt: Runtime) -> list[GroupSnapshot]:
        """The claimed groups' alerts (the claim read them) and channel logs, with what
        the claim could not read: logs of channels a reload added since. Usually no
        round trip at all."""
        snaps = claim.groups
        raws: dict[str, bytes | None] = {}
        for snap in snaps:
            raws.update(snap.raws)
        log_keys = [
            (snap, ch, claim.side.nflog_key(ch, snap.gid))
            for snap in snaps
            for ch in policy_of(snap, rt).channels
            if ch not in snap.nflog
        ]
        if log_keys:
            entries = await claim.side.redis.mget([k for _, _, k in log_keys])
            for (snap, ch, _), entry in zip(log_keys, entries, strict=True):
                snap.nflog[ch] = entry
        fps = sorted(raws)
        found, missing = self._members(fps, [raws[fp] for fp in fps])
        for snap in snaps:
            snap.members = [found[fp] for fp in snap.fingerprints if fp in found]
            snap.orphans = [fp for fp in snap.fingerprints if fp in missing]
        return snaps

    @staticmethod
    def _members(fps: list[str], raws: list[bytes | None]) -> tuple[dict[str, Member], set[str]]:
        """What groups report for each fingerprint (its copy as last filed: firing, or
        resolved and owed), and which alerts are gone entirely; an unreadable one is
        left be."""
        found: dict[str, Member] = {}
        for fp, raw in zip(fps, raws, strict=True):
            alert = _decode(raw) if raw is not None else None
            if raw is not None and alert is not None:
                found[fp] = Member(alert, raw)
        missing = {fp for fp, raw in zip(fps, raws, strict=True) if raw is None}
        return found, missing

    async def commit(
        self, token: str, plans: Iterable[GroupPlan], now: float, side: GroupSide | None = None
    ) -> int:
        """Write every group's plan (all of one partition, the home one by default), each
        atomically, in one call; notifications queued."""
        side = side or self.store.sides[keys.HOME]
        claim = Claim(token, [], False, side)
        return await self.commit_many([(claim, list(plans))], now)

    async def commit_many(self, planned: list[tuple[Claim, list[GroupPlan]]], now: float) -> int:
        """`commit` for each claim's plans, a script call per partition, one round trip
        per client; notifications queued."""
        planned = [(claim, plans) for claim, plans in planned if plans]
        lanes = {
            (n.receiver, n.urgent, claim.side.partition): n
            for claim, plans in planned
            for p in plans
            for notice in p.notices
            if (n := notice.notification) is not None
        }
        for (_, _, partition), n in lanes.items():
            await self.outbox.ensure_group_of(n, partition)
        calls = {
            claim.side.partition: self._commit_call(claim, plans, now) for claim, plans in planned
        }

        def queue(pipe: Any, p: int) -> None:
            scripts.queue(pipe, self._commit, *calls[p])

        answers = await self.store.per_partition(calls, queue)
        queued = sum(
            self._committed(plans, answers[claim.side.partition][0]) for claim, plans in planned
        )
        self.notifications_created += queued
        return queued

    def _commit_call(
        self, claim: Claim, plans: list[GroupPlan], now: float
    ) -> tuple[list[str], list[Any]]:
        """commit_groups.lua's keys and arguments for one partition's plans."""
        side = claim.side
        call = keys.ScriptKeys(
            (side.due_key, side.urgent_key, side.copies_key, side.copies_seq_key)
        )
        groups = orjson.dumps([self._commit_args(p, call, side) for p in plans])
        return call.keys, [claim.token, repr(now), NFLOG_TTL_S, groups]

    def _committed(self, plans: list[GroupPlan], results: list[Any]) -> int:
        """Log and record what one partition's commit queued; how many."""
        queued = 0
        told: list[Notification] = []
        for i, p in enumerate(plans):
            status, n = results[2 * i], results[2 * i + 1]
            if status == -1:
                log.warning("flush lease lost; another replica has the group", group=p.group_key)
            elif status == 2:
                log.info("notification log moved during the flush; again", group=p.group_key)
            else:
                queued += int(n)
                for notice in p.notices:
                    if notice.notification is not None:
                        self._log_queued(notice.notification)
                        told.append(notice.notification)
        if self.history is not None:
            self.history.queued_soon(told)
        return queued

    def _commit_args(self, p: GroupPlan, call: keys.ScriptKeys, side: GroupSide) -> list[Any]:
        """One group's part of commit_groups.lua's JSON argument; its keys go in `call`."""
        notices = []
        for notice in p.notices:
            n = notice.notification
            notices.append(
                [
                    call.at(side.nflog_key(notice.channel, p.gid)),
                    notice.expected.decode(errors="replace"),  # as stored: JSON text
                    notice.entry.to_json().decode(),
                    call.at(self.outbox.stream_of(n, side.partition)) if n is not None else 0,
                    orjson.dumps(n.to_dict()).decode() if n is not None else "",
                ]
            )
        forgets = [
            [fp, raw.decode(errors="replace"), call.at(side.alert_groups_key(fp))]
            for fp, raw in p.forget
        ]
        group = call.at(side.group_key(p.gid))
        members = call.at(side.members_key(p.gid))
        return [p.gid, repr(p.interval_s), repr(p.sleep_s), notices, forgets, group, members]

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
