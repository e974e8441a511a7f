-- Many compare-and-set changes in one call (one atomic step each; the whole call is one
-- command, so a batch of a thousand costs Redis one round trip). KEYS: alerts,
-- groups:due, alerts:clock, groups:urgent, alerts:gone, alerts:ver, then every other key
-- the changes touch, each once (a group many changes share is sent once): the changes
-- say where in KEYS theirs are. ARGV[1]: the changes as one JSON array (thousands of
-- separate arguments cost the client more to pack than cjson costs Redis). Per change:
-- [fp, expected, new, now, new_state, the window judged on (its place in KEYS, 0 for
-- none) and its newest sample time then ('' for none), when the clock must next judge
-- the alert ('' for never: it is no longer live), targets, urgent ('1': a critical alert
-- fires: its groups are also indexed in groups:urgent, which flushes read first), the
-- place of its ag:<fp> in KEYS], each target [gid, group key, group labels JSON, route,
-- group_wait, group_interval, immediate, the places of group:<gid> and gm:<gid> in
-- KEYS]. Every other value is a string. Returns 1 per change that took, 0 per refusal.
local alerts, due, clock, urgent = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local gone, version = KEYS[5], KEYS[6]
local out = {}
for _, c in ipairs(cjson.decode(ARGV[1])) do
  local fp, expected, new, now_s, new_state = c[1], c[2], c[3], c[4], c[5]
  local window, judged, clock_at, targets, page = c[6], c[7], c[8], c[9], c[10] == '1'
  local now = tonumber(now_s)
  local cur = redis.call('HGET', alerts, fp) or ''
  -- Judged on a window another replica has merged newer samples into since: that
  -- replica judges them (or this one again, on a fresh read). Never apply the older view.
  local newer = window ~= 0
    and tonumber(redis.call('HGET', KEYS[window], 'T') or '-1') > tonumber(judged)
  if cur ~= expected or newer then
    out[#out + 1] = 0
  else
    out[#out + 1] = 1
    local ag = KEYS[c[11]]
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
      local g = KEYS[t[8]]
      if redis.call('HSETNX', g, 'key', gkey) == 1 then
        redis.call('HSET', g, 'labels', glabels, 'route', route, 'created', now_s)
      end
      redis.call('SADD', KEYS[t[9]], fp)
      redis.call('SADD', ag, gid)
      local lease_until = tonumber(redis.call('HGET', g, 'lease_until') or '0')
      if lease_until > now then
        -- A flush holds the group and reschedules it when done: leave word of the change.
        redis.call('HSET', g, immediate == '1' and 'rush' or 'dirty', '1')
        if page then redis.call('ZADD', urgent, 'LT', now, gid) end
      else
        local lf = redis.call('HGET', g, 'last_flush')
        local at
        if immediate == '1' and lf then at = now
        elseif not lf then at = now + wait
        else at = math.max(tonumber(lf) + interval, now) end
        redis.call('ZADD', due, 'LT', at, gid)
        if page then redis.call('ZADD', urgent, 'LT', at, gid) end
      end
    end
  end
end
return out
