-- Take up to `limit` due groups, leasing each to `token` until `lease_until`, and read
-- what their flush needs: {number due, {gid, group hash (flat), members, their alerts,
-- {channel, notification log entry, ...}, gid, ...}} for the ones taken. ARGV[6]: JSON
-- {route id: [channels]} ('' for a route not in it), whose logs are read. Groups a
-- critical alert fired in (KEYS[3], urgent) are taken first, so a page does not wait
-- for a storm of other groups due before it. ARGV[7] '1': take only those (the
-- dispatcher's urgent flush, which runs beside a storm's rounds).
-- KEYS: groups:due, ga (copies of the filed alerts), groups:urgent. The one script that
-- builds keys: it finds the due group ids itself, so it names their group:<gid>, gm:<gid> and nflog:<ch>:<gid>
-- from the state prefix (ARGV[1]). Declaring them would take a round trip more (read the
-- due ids, then claim them) on the path of every page. The prefix carries the
-- partition's hash tag, so every key built here is in the slot of the declared ones.
local due, copies, urgent, prefix = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local now, lease_until, token, limit = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local routes, urgent_only = cjson.decode(ARGV[6]), ARGV[7] == '1'
local gids = redis.call('ZRANGEBYSCORE', urgent, '-inf', now, 'LIMIT', 0, limit)
local first = {}
for _, gid in ipairs(gids) do first[gid] = true end
if #gids < limit and not urgent_only then
  for _, gid in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, limit)) do
    if #gids == limit then break end
    if not first[gid] then gids[#gids + 1] = gid end
  end
end
local out = {}
for _, gid in ipairs(gids) do
  local g = prefix .. 'group:' .. gid
  local h = redis.call('HGETALL', g)
  local held_until, route = 0, 'default'
  for i = 1, #h, 2 do
    if h[i] == 'lease_until' then held_until = tonumber(h[i + 1]) end
    if h[i] == 'route' then route = h[i + 1] end
  end
  if #h == 0 then
    redis.call('ZREM', due, gid)
    redis.call('ZREM', urgent, gid)
  elseif held_until > tonumber(now) then
    -- Someone else's flush: theirs until then. An urgent mark waits as long (their
    -- commit brings it forward, commit_groups.lua).
    redis.call('ZADD', due, held_until, gid)
    redis.call('ZADD', urgent, 'XX', held_until, gid)
  else
    redis.call('ZREM', urgent, gid)
    redis.call('ZADD', due, lease_until, gid)
    redis.call('HSET', g, 'lease', token, 'lease_until', lease_until)
    local members = redis.call('SMEMBERS', prefix .. 'gm:' .. gid)
    local raws = {}
    for i = 1, #members, 1000 do  -- unpack takes a few thousand at most
      local part = redis.call('HMGET', copies, unpack(members, i, math.min(i + 999, #members)))
      for j = 1, #part do raws[#raws + 1] = part[j] end
    end
    local logs = {}
    for _, ch in ipairs(routes[route] or routes['']) do
      logs[#logs + 1] = ch
      logs[#logs + 1] = redis.call('GET', prefix .. 'nflog:' .. ch .. ':' .. gid)
    end
    out[#out + 1] = gid
    out[#out + 1] = h
    out[#out + 1] = members
    out[#out + 1] = raws
    out[#out + 1] = logs
  end
end
return {#gids, out}
