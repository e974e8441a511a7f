-- Each group's flush, all or nothing, only while `token` holds its lease: notification
-- log entries (compare-and-set) with their outbox entries, told resolved alerts
-- forgotten, the group rescheduled or dropped once empty.
-- KEYS: groups:due, groups:urgent (a group marked urgent keeps the mark, due with it),
-- ga (copies of the filed alerts), ga:seq, then every other key the groups touch, each
-- once (an outbox many groups write to is sent once): the groups say where in KEYS
-- theirs are.
-- ARGV: token, now, ttl, and the groups as one JSON array (cheaper to pack than
-- thousands of arguments), each [gid, interval_s, sleep_s (when nothing is left to tell:
-- until the next repeat), notices, forgets, the places of group:<gid> and gm:<gid> in
-- KEYS]; a notice is [its nflog key's place in KEYS, expected, new, its outbox stream's
-- place (0 for none), payload], a forget [fingerprint, alert as told, its ag:<fp>'s
-- place]. Every other value a string.
-- Returns per group: status (-1 lease lost, 0 dropped, 1 rescheduled, 2 a log moved
-- under us: nothing written, flushed again at once) and notifications queued.
local token, now_s, ttl = ARGV[1], ARGV[2], ARGV[3]
local now = tonumber(now_s)
local due, urgent, copies, copies_seq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

local function forget(gid, gm, fp, raw, ag)
  local cur = redis.call('HGET', copies, fp)
  -- Told, unless a newer change was filed since it was read: then this group still owes it.
  if cur == raw or (raw == '' and not cur) then
    redis.call('SREM', gm, fp)
    redis.call('SREM', ag, gid)
    if redis.call('SCARD', ag) == 0 and cur then
      redis.call('HDEL', copies, fp)
      redis.call('HDEL', copies_seq, fp)
    end
  end
end

local function commit(gid, interval_s, sleep_s, notices, forgets, g, gm)
  local held = redis.call('HMGET', g, 'lease', 'rush', 'dirty')
  if held[1] ~= token then return -1, 0 end
  local stale = false
  for _, n in ipairs(notices) do
    if (redis.call('GET', KEYS[n[1]]) or '') ~= n[2] then stale = true end
  end
  local queued = 0
  if not stale then
    for _, n in ipairs(notices) do
      redis.call('SET', KEYS[n[1]], n[3], 'EX', ttl)
      if n[4] ~= 0 then
        redis.call('XADD', KEYS[n[4]], '*', 'n', n[5])
        queued = queued + 1
      end
    end
    for _, f in ipairs(forgets) do
      forget(gid, gm, f[1], f[2], KEYS[f[3]])
    end
  end
  if redis.call('SCARD', gm) == 0 then
    redis.call('DEL', g, gm)
    redis.call('ZREM', due, gid)
    redis.call('ZREM', urgent, gid)
    if stale then return 2, 0 end  -- nothing was written: not "dropped after telling"
    return 0, queued
  end
  redis.call('HDEL', g, 'lease', 'lease_until', 'rush', 'dirty')
  local at = now + sleep_s
  if held[3] then at = math.min(at, now + interval_s) end
  if stale or held[2] then at = now end
  if not stale then redis.call('HSET', g, 'last_flush', now_s) end
  redis.call('ZADD', due, at, gid)
  redis.call('ZADD', urgent, 'XX', at, gid)
  if stale then return 2, 0 end
  return 1, queued
end

local out = {}
for _, p in ipairs(cjson.decode(ARGV[4])) do
  local g, gm = KEYS[p[6]], KEYS[p[7]]
  local status, queued = commit(p[1], tonumber(p[2]), tonumber(p[3]), p[4], p[5], g, gm)
  out[#out + 1] = status
  out[#out + 1] = queued
end
return out
