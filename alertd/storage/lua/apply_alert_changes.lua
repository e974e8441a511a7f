-- Many compare-and-set changes of alerts of one series partition in one call (one
-- atomic step each; the whole call is one command, so a batch of a thousand costs Redis
-- one round trip). KEYS: alerts, alerts:clock, alerts:ver (the partition's filing
-- counter), filings, then every window the changes were judged on, each once. ARGV[1]:
-- the changes as one JSON array (thousands of separate arguments cost the client more to
-- pack than cjson costs Redis). Per change: [fp, expected, new ('' to delete), the
-- window judged on (its place in KEYS, 0 for none) and its newest sample time then ('' for
-- none), when the clock must next judge the alert ('' for never: it is no longer live),
-- filing ('' for none: the JSON its groups are told, file_alerts.lua)]. ARGV[2]: JSON
-- [[fp, seq], ...] of filings done since: each is removed while it is still that one.
-- A change with a filing takes the next `seq` of alerts:ver and stays in `filings` (seq,
-- tab, filing) until its groups hold it: a daemon that dies in between leaves it for the
-- partition's owner to file again (alerts.py). A refresh (a firing alert's value moved)
-- over a filing still there keeps what that one tells its groups (a fired alert whose
-- filing failed is still filed as fired). Every other value is a string.
-- Returns {taken (1 or 0 per change), seq per change (0: no filing), per change the
-- filing kept when it is not the one given (else '')}.
local alerts, clock, version, filings = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
for _, d in ipairs(cjson.decode(ARGV[2])) do
  local cur = redis.call('HGET', filings, d[1])
  if cur and string.match(cur, '^(%d+)\t') == tostring(d[2]) then
    redis.call('HDEL', filings, d[1])
  end
end
local taken, seqs, kept = {}, {}, {}
for _, c in ipairs(cjson.decode(ARGV[1])) do
  local fp, expected, new = c[1], c[2], c[3]
  local window, judged, clock_at, filing = c[4], c[5], c[6], c[7]
  local cur = redis.call('HGET', alerts, fp) or ''
  -- Judged on a window another replica has merged newer samples into since: that
  -- replica judges them (or this one again, on a fresh read). Never apply the older view.
  local newer = window ~= 0
    and tonumber(redis.call('HGET', KEYS[window], 'T') or '-1') > tonumber(judged)
  local seq, merged = 0, ''
  if cur ~= expected or newer then
    taken[#taken + 1] = 0
  else
    taken[#taken + 1] = 1
    if new == '' then redis.call('HDEL', alerts, fp) else redis.call('HSET', alerts, fp, new) end
    if clock_at == '' then
      redis.call('ZREM', clock, fp)
    else
      redis.call('ZADD', clock, clock_at, fp)
    end
    if filing ~= '' then
      seq = redis.call('INCR', version)
      local left = redis.call('HGET', filings, fp)
      if left then
        local f = cjson.decode(filing)
        if f[9] == '1' then
          local old = cjson.decode(string.match(left, '^%d+\t(.*)$'))
          f[5], f[6], f[7], f[9] = old[5], old[6], old[7], old[9]
          filing = cjson.encode(f)
          merged = filing
        end
      end
      redis.call('HSET', filings, fp, seq .. '\t' .. filing)
    end
  end
  seqs[#seqs + 1] = seq
  kept[#kept + 1] = merged
end
return {taken, seqs, kept}
