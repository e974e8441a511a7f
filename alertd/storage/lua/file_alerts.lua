-- File alert changes into the groups of the home partition, each once and in order: a
-- filing whose `seq` is not newer than the one the partition's copy of the alert was
-- filed with is skipped (a daemon filing again what another already filed, or late).
-- KEYS: groups:due, groups:urgent, ga (copies of filed alerts), ga:seq, then every other
-- key the filings touch, each once: the filings say where in KEYS theirs are. ARGV[1]:
-- the filings as one JSON array, each [fp, seq, alert JSON, now, targets, immediate
-- ('1': reschedule the groups now), urgent ('1': a critical alert fires: its groups are
-- also indexed in groups:urgent, which flushes read first), the place of its ag:<fp> in
-- KEYS, refresh ('1': only the copy is brought up to date, where there is one: a firing
-- alert's value moved)], each target [gid, group key, group labels JSON, route, group_wait,
-- group_interval, the places of group:<gid> and gm:<gid> in KEYS]. Every other value is a
-- string. Returns 1 per filing that took, 0 per one skipped.
local due, urgent, copies, copies_seq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local out = {}
for _, f in ipairs(cjson.decode(ARGV[1])) do
  local fp, seq, alert, now_s, targets = f[1], tonumber(f[2]), f[3], f[4], f[5]
  local immediate, page, ag, refresh = f[6] == '1', f[7] == '1', KEYS[f[8]], f[9] == '1'
  local now = tonumber(now_s)
  local filed = redis.call('HGET', copies_seq, fp)
  if tonumber(filed or '0') >= seq or (refresh and not filed) then
    out[#out + 1] = 0
  else
    out[#out + 1] = 1
    redis.call('HSET', copies, fp, alert)
    redis.call('HSET', copies_seq, fp, seq)
    if refresh then targets = {} end
    for _, t in ipairs(targets) do
      local gid, gkey, glabels, route = t[1], t[2], t[3], t[4]
      local wait, interval = tonumber(t[5]), tonumber(t[6])
      local g = KEYS[t[7]]
      if redis.call('HSETNX', g, 'key', gkey) == 1 then
        redis.call('HSET', g, 'labels', glabels, 'route', route, 'created', now_s)
      end
      redis.call('SADD', KEYS[t[8]], fp)
      redis.call('SADD', ag, gid)
      local lease_until = tonumber(redis.call('HGET', g, 'lease_until') or '0')
      if lease_until > now then
        -- A flush holds the group and reschedules it when done: leave word of the change.
        redis.call('HSET', g, immediate and 'rush' or 'dirty', '1')
        if page then redis.call('ZADD', urgent, 'LT', now, gid) end
      else
        local lf = redis.call('HGET', g, 'last_flush')
        local at
        if immediate and lf then at = now
        elseif not lf then at = now + wait
        else at = math.max(tonumber(lf) + interval, now) end
        redis.call('ZADD', due, 'LT', at, gid)
        if page then redis.call('ZADD', urgent, 'LT', at, gid) end
      end
    end
  end
end
return out
