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

from typing import Any

import orjson
from redis.asyncio import Redis

from alertd.model import Alert
from alertd.notify.routing import GroupTarget

APPLY_CHUNK = 500  # changes per Lua call: long enough to pay off, short enough not to stall Redis

# Many compare-and-set changes in one call (one atomic step each; the whole call is one
# command, so a batch of a thousand costs Redis one round trip). ARGV: prefix, and the
# changes as one JSON array (thousands of separate arguments cost the client more to pack
# than cjson costs Redis). Per change: [fp, expected, new, now, new_state, the window key
# and the newest sample time the change was judged on ('' for none), when the clock must
# next judge the alert ('' for never: it is no longer live), targets], each target
# [gid, group key, group labels JSON, route, group_wait, group_interval, immediate].
# Every value is a string.
APPLY_LUA = """
local alerts, due, clock, prefix = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local gone, version = prefix .. 'alerts:gone', prefix .. 'alerts:ver'
local out = {}
for _, c in ipairs(cjson.decode(ARGV[2])) do
  local fp, expected, new, now_s, new_state = c[1], c[2], c[3], c[4], c[5]
  local wkey, judged, clock_at, targets = c[6], c[7], c[8], c[9]
  local now = tonumber(now_s)
  local cur = redis.call('HGET', alerts, fp) or ''
  -- Judged on a window another replica has merged newer samples into since: that
  -- replica judges them (or this one again, on a fresh read). Never apply the older view.
  local newer = wkey ~= '' and tonumber(redis.call('HGET', wkey, 'T') or '-1') > tonumber(judged)
  if cur ~= expected or newer then
    out[#out + 1] = 0
  else
    out[#out + 1] = 1
    local ag = prefix .. 'ag:' .. fp
    if new == '' then redis.call('HDEL', alerts, fp) else redis.call('HSET', alerts, fp, new) end
    if clock_at == '' then
      redis.call('ZREM', clock, fp)
    else
      redis.call('ZADD', clock, clock_at, fp)
    end
    if new_state == 'firing' then
      redis.call('HDEL', gone, fp)
    elseif new_state ~= 'resolved' and cur ~= '' and redis.call('EXISTS', ag) == 1 then
      -- A resolved alert going pending (or away) before its groups told receivers:
      -- keep the resolved version for them.
      local ok, old = pcall(cjson.decode, cur)
      if ok and type(old) == 'table' and old['state'] == 'resolved' then
        redis.call('HSET', gone, fp, cur)
      end
    end
    if #targets > 0 then redis.call('INCR', version) end
    for _, t in ipairs(targets) do
      local gid, gkey, glabels, route = t[1], t[2], t[3], t[4]
      local wait, interval, immediate = tonumber(t[5]), tonumber(t[6]), t[7]
      local g = prefix .. 'group:' .. gid
      if redis.call('HSETNX', g, 'key', gkey) == 1 then
        redis.call('HSET', g, 'labels', glabels, 'route', route, 'created', now_s)
      end
      redis.call('SADD', prefix .. 'gm:' .. gid, fp)
      redis.call('SADD', ag, gid)
      local lease_until = tonumber(redis.call('HGET', g, 'lease_until') or '0')
      if lease_until > now then
        -- A flush holds the group and reschedules it when done: leave word of the change.
        redis.call('HSET', g, immediate == '1' and 'rush' or 'dirty', '1')
      else
        local lf = redis.call('HGET', g, 'last_flush')
        local at
        if immediate == '1' and lf then at = now
        elseif not lf then at = now + wait
        else at = math.max(tonumber(lf) + interval, now) end
        redis.call('ZADD', due, 'LT', at, gid)
      end
    end
  end
end
return out
"""

# The live alerts the clock must judge by ARGV[1] (at most ARGV[2]): {fingerprints, alerts}.
DUE_LUA = """
local fps = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #fps == 0 then return {{}, {}} end
return {fps, redis.call('HMGET', KEYS[2], unpack(fps))}
"""
DUE_LIMIT = 5000  # per clock evaluation (Lua's unpack takes at most ~8000)


class AlertStore:
    def __init__(self, redis: Redis, key_prefix: str) -> None:
        self.redis = redis
        self.prefix = key_prefix
        self.alerts_key = f"{key_prefix}alerts"
        self.gone_key = f"{key_prefix}alerts:gone"
        self.version_key = f"{key_prefix}alerts:ver"
        self.due_key = f"{key_prefix}groups:due"
        self.clock_key = f"{key_prefix}alerts:clock"
        self._apply = redis.register_script(APPLY_LUA)
        self._due = redis.register_script(DUE_LUA)

    def group_key(self, gid: str) -> str:
        return f"{self.prefix}group:{gid}"

    def members_key(self, gid: str) -> str:
        return f"{self.prefix}gm:{gid}"

    def alert_groups_key(self, fp: str) -> str:
        return f"{self.prefix}ag:{fp}"

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
    ) -> list[Any]:
        """One change's part of an `apply_many` call (opaque to callers).

        `window` (key, newest sample time): the change is refused, like a lost
        compare-and-set, when that window has received newer samples since.
        `clock_at`: when the clock must next judge the alert (None: not live).
        """
        return [
            fp,
            expected.decode(errors="replace"),  # as stored: JSON text
            "" if new is None else orjson.dumps(new.to_dict()).decode(),
            repr(now),
            "" if new is None else new.state,
            *((window[0], repr(window[1])) if window is not None else ("", "")),
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
                ]
                for t in targets
            ],
        ]

    async def apply_many(self, changes: list[list[Any]]) -> list[bool]:
        """Run compare-and-set changes, a few hundred per call, in one round trip.

        True where each took.
        """
        if not changes:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for start in range(0, len(changes), APPLY_CHUNK):
            chunk = orjson.dumps(changes[start : start + APPLY_CHUNK])
            await self._apply(
                keys=[self.alerts_key, self.due_key, self.clock_key],
                args=[self.prefix, chunk],
                client=pipe,
            )
        return [bool(r) for taken in await pipe.execute() for r in taken]
