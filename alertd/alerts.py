"""Alert state in Redis, and the groups each change is filed into.

Keys (prefix `p`):
    {p}alerts            hash  fingerprint -> Alert JSON (pending, firing, resolved-not-yet-told)
    {p}alerts:gone       hash  fingerprint -> the resolved Alert JSON a pending one replaced
                               while groups still owed receivers its resolution
    {p}alerts:ver        int   bumped on every change filed into groups (firing set changed)
    {p}alerts:clock      zset  fingerprint -> when the clock must next judge the live alert
                               (its `for` ends, a bucket leaves its window, ...): the clock
                               reads only what is due, not every alert
    {p}ag:{fp}           set   group ids still holding the alert
    {p}groups:due        zset  group id -> when the group must next be flushed (or its lease ends)
    {p}group:{gid}       hash  key, labels, route, created, last_flush; while a flush holds
                               it: lease, lease_until, and what changed meanwhile: dirty
                               (flush again after group_interval) or rush (again at once)
    {p}gm:{gid}          set   fingerprints in the group

A change is written with compare-and-set (Lua): the alert moves only if
nobody else moved it since we read it, and its groups are scheduled in the
same atomic step, so replicas never lose or double a transition. An alert
leaves a group only when that group's flush has told its resolution
(dispatcher.py), and leaves Redis only when no group holds it any more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from alertd.model import Alert
from alertd.notify.routing import GroupTarget
from alertd.storage import keys, scripts
from alertd.storage.scripts import lua

APPLY_CHUNK = 500  # changes per Lua call: long enough to pay off, short enough not to stall Redis


DUE_LIMIT = 5000  # per clock evaluation (Lua's unpack takes at most ~8000)

# Where apply_alert_changes.lua reads the places in KEYS of a change's keys.
_WINDOW, _TARGETS, _ALERT_GROUPS = 5, 8, 10
_GROUP, _MEMBERS = 7, 8  # of a target


@dataclass(slots=True)
class AlertChange:
    """One change's part of an `apply_many` call (AlertStore.apply_args): its entry in
    apply_alert_changes.lua's JSON, and the keys it touches, whose places in the call's
    KEYS `apply_many` writes into the entry.
    """

    args: list[Any]
    alert_groups: str
    window: str | None
    groups: list[tuple[str, str]]  # per target: its group's hash and members

    def place(self, call: keys.ScriptKeys) -> list[Any]:
        args = self.args
        args[_WINDOW] = 0 if self.window is None else call.at(self.window)
        args[_ALERT_GROUPS] = call.at(self.alert_groups)
        for target, (group, members) in zip(args[_TARGETS], self.groups, strict=True):
            target[_GROUP] = call.at(group)
            target[_MEMBERS] = call.at(members)
        return args


class AlertStore:
    def __init__(self, redis: Redis, key_prefix: str) -> None:
        self.redis = redis
        self.prefix = key_prefix
        self.alerts_key = keys.alerts(key_prefix)
        self.gone_key = keys.alerts_gone(key_prefix)
        self.version_key = keys.alerts_version(key_prefix)
        self.due_key = keys.groups_due(key_prefix)
        self.clock_key = keys.alerts_clock(key_prefix)
        self.urgent_key = keys.groups_urgent(key_prefix)
        self._apply = redis.register_script(lua("apply_alert_changes"))
        self._apply_keys = (
            self.alerts_key,
            self.due_key,
            self.clock_key,
            self.urgent_key,
            self.gone_key,
            self.version_key,
        )
        self._due = redis.register_script(lua("due_alerts"))

    def group_key(self, gid: str) -> str:
        return keys.group(self.prefix, gid)

    def members_key(self, gid: str) -> str:
        return keys.group_members(self.prefix, gid)

    def alert_groups_key(self, fp: str) -> str:
        return keys.alert_groups(self.prefix, fp)

    async def get_raw(self, fingerprints: list[str]) -> list[bytes | None]:
        if not fingerprints:
            return []
        values: list[bytes | None] = await self.redis.hmget(self.alerts_key, fingerprints)
        return values

    async def get_gone(self, fingerprints: list[str]) -> list[bytes | None]:
        if not fingerprints:
            return []
        values: list[bytes | None] = await self.redis.hmget(self.gone_key, fingerprints)
        return values

    async def all(self) -> list[Alert]:
        raw = await self.redis.hgetall(self.alerts_key)
        return [Alert.from_dict(orjson.loads(v)) for v in raw.values()]

    async def due(self, now: float, limit: int = DUE_LIMIT) -> list[Alert]:
        """The live alerts whose next clock judgement is due by `now`, oldest due first.

        Entries of alerts that are gone or resolved are dropped from the index.
        """
        fps, raws = await self._due(keys=[self.clock_key, self.alerts_key], args=[now, limit])
        alerts: list[Alert] = []
        stale: list[bytes] = []
        for fp, raw in zip(fps, raws, strict=True):
            alert = Alert.from_dict(orjson.loads(raw)) if raw else None
            if alert is None or alert.state == "resolved":
                stale.append(fp)
            else:
                alerts.append(alert)
        if stale:
            await self.redis.zrem(self.clock_key, *stale)
        return alerts

    async def reschedule(self, clock: dict[str, float]) -> None:
        """When the clock must next judge these alerts (judged, but not changed)."""
        if clock:
            await self.redis.zadd(self.clock_key, clock)

    def apply_args(
        self,
        fp: str,
        expected: bytes,
        new: Alert | None,
        targets: list[GroupTarget],
        immediate: bool,
        now: float,
        window: tuple[str, float] | None = None,
        clock_at: float | None = None,
    ) -> AlertChange:
        """One change's part of an `apply_many` call (opaque to callers).

        `window` (key, newest sample time): the change is refused, like a lost
        compare-and-set, when that window has received newer samples since.
        `clock_at`: when the clock must next judge the alert (None: not live).
        A critical alert that fires marks its groups urgent (flushed first).
        """
        page = new is not None and new.pages
        args = [
            fp,
            expected.decode(errors="replace"),  # as stored: JSON text
            "" if new is None else orjson.dumps(new.to_dict()).decode(),
            repr(now),
            "" if new is None else new.state,
            0,  # the window's place in KEYS (apply_many)
            "" if window is None else repr(window[1]),
            "" if clock_at is None else repr(clock_at),
            [
                [
                    t.gid,
                    t.group_key,
                    orjson.dumps(t.labels).decode(),
                    t.policy.route_id,
                    repr(t.policy.group_wait.total_seconds()),
                    repr(t.policy.group_interval.total_seconds()),
                    "1" if immediate else "0",
                    0,  # the places in KEYS of its group and members (apply_many)
                    0,
                ]
                for t in targets
            ],
            "1" if page else "0",
            0,  # the place in KEYS of the alert's groups (apply_many)
        ]
        return AlertChange(
            args,
            keys.alert_groups(self.prefix, fp),
            None if window is None else window[0],
            [
                (keys.group(self.prefix, t.gid), keys.group_members(self.prefix, t.gid))
                for t in targets
            ],
        )

    async def apply_many(self, changes: list[AlertChange]) -> list[bool]:
        """Run compare-and-set changes, a few hundred per call, in one round trip.

        True where each took.
        """
        if not changes:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for start in range(0, len(changes), APPLY_CHUNK):
            call = keys.ScriptKeys(self._apply_keys)
            chunk = [c.place(call) for c in changes[start : start + APPLY_CHUNK]]
            scripts.queue(pipe, self._apply, call.keys, [orjson.dumps(chunk)])
        return [bool(r) for taken in await scripts.execute(pipe) for r in taken]
