-- Merge (ARGV[1] ttl > 0) or just read (ttl 0) several series of one rule, and answer each
-- with its window folded into one bucket. KEYS: [age index,] [alerts hash,] one hash per
-- series. ARGV: ttl_ms, first bucket in the window, storage, has index (1/0), reads alerts
-- (1/0), and to merge, one line per series: "newest_ts<TAB>fingerprint<TAB>labels
-- JSON<TAB>ops" (one argument: packing a hundred small ones costs the client more than
-- the script's split). With the alerts hash, a merge also answers each series' stored
-- alert, as it stands right after the merge (the evaluator's compare-and-set reads it).
local ttl, first, storage = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local off = (ARGV[4] == '1') and 1 or 0
local index = (off == 1) and KEYS[1] or nil
local alerts = (ARGV[5] == '1') and KEYS[off + 1] or nil
if alerts then off = off + 1 end
local function num(v) return string.format('%.17g', v) end
-- Field names, bucket indices and counts repeat across the series of one call (they
-- share their buckets): each is made or parsed once per call, as Lua strings cost.
local ints = {}
local function int(v)
  local s = ints[v]
  if s == nil then
    s = string.format('%d', v)
    ints[v] = s
  end
  return s
end
local names = {}
local function name(p, letter)
  local byp = names[p]
  if byp == nil then
    byp = {}
    names[p] = byp
  end
  local f = byp[letter]
  if f == nil then
    f = p .. letter
    byp[letter] = f
  end
  return f
end

local function merge(key, packed)
  local newest, fp, labels, ops = string.match(packed, '^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$')
  for b in string.gmatch(ops, '[^;]+') do
    local p, c, x, y = string.match(b, '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
    redis.call('HINCRBY', key, name(p, 'c'), c)
    if storage == 's' then
      local f = name(p, 's')
      local cur = tonumber(redis.call('HGET', key, f)) or 0
      redis.call('HSET', key, f, num(cur + tonumber(x)))
    elseif storage == 'n' then
      local f = name(p, 'n')
      local cur = redis.call('HGET', key, f)
      if (not cur) or tonumber(x) < tonumber(cur) then redis.call('HSET', key, f, x) end
    elseif storage == 'x' then
      local f = name(p, 'x')
      local cur = redis.call('HGET', key, f)
      if (not cur) or tonumber(x) > tonumber(cur) then redis.call('HSET', key, f, x) end
    elseif storage == 't' then
      local f = name(p, 't')
      local cur = redis.call('HGET', key, f)
      if (not cur) or tonumber(x) >= tonumber(cur) then
        redis.call('HSET', key, f, x, name(p, 'v'), y)
      end
    elseif storage == 'q' then
      for k, n in string.gmatch(x, '([^:,]+):(%d+)') do
        redis.call('HINCRBY', key, p .. 'q' .. k, n)
      end
    end
  end
  local t = redis.call('HGET', key, 'T')
  if not t then  -- a new window (every merge sets T): its labels, once
    redis.call('HSET', key, 'T', newest, 'L', labels)
  elseif tonumber(newest) > tonumber(t) then
    redis.call('HSET', key, 'T', newest)
  end
  redis.call('PEXPIRE', key, ttl)
  if index then redis.call('ZADD', index, 'GT', newest, fp) end
  return fp
end

-- Field names repeat across the series of one call (same buckets): parsed once each.
local parsed = {}
local function parse(f)
  local e = parsed[f]
  if e == nil then
    local idx, den, letter, rest = string.match(f, '^(%d+)(D?)(%a)(.*)$')
    e = idx and {idx, tonumber(idx), den == 'D', letter, rest} or false
    parsed[f] = e
  end
  return e
end

local function fold(key)
  local all = redis.call('HGETALL', key)
  if #all == 0 then return {} end
  local labels, newest = '', ''
  local c, s, dc, ds = 0, 0, 0, 0
  local mn, mns, mx, mxs, lt, lts, lvs
  local last, sketch, drop = {}, {}, {}
  local oldest
  for i = 1, #all, 2 do
    local f, v = all[i], all[i + 1]
    local e = parse(f)
    if not e then
      if f == 'L' then labels = v elseif f == 'T' then newest = v end
    elseif e[2] < first then
      drop[#drop + 1] = f
    else
      local idx, at, letter, rest = e[1], e[2], e[4], e[5]
      if (not oldest) or at < oldest then oldest = at end
      if e[3] then
        if letter == 'c' then dc = dc + tonumber(v)
        elseif letter == 's' then ds = ds + tonumber(v) end
      elseif letter == 'c' then c = c + tonumber(v)
      elseif letter == 's' then s = s + tonumber(v)
      elseif letter == 'n' then
        local n = tonumber(v)
        if (not mn) or n < mn then mn, mns = n, v end
      elseif letter == 'x' then
        local n = tonumber(v)
        if (not mx) or n > mx then mx, mxs = n, v end
      elseif letter == 't' or letter == 'v' then
        local e = last[idx] or {}
        e[letter] = v
        last[idx] = e
      elseif letter == 'q' then
        sketch[rest] = (sketch[rest] or 0) + tonumber(v)
      end
    end
  end
  for _, e in pairs(last) do
    local n = tonumber(e.t)
    if n and ((not lt) or n > lt) then lt, lts, lvs = n, e.t, e.v end
  end
  for j = 1, #drop, 500 do
    redis.call('HDEL', key, unpack(drop, j, math.min(j + 499, #drop)))
  end
  -- Only what the storage kind keeps, after labels (read only), newest, the oldest
  -- bucket in the window (when the value can next change by itself), count.
  local out = {ttl > 0 and '' or labels, newest, oldest and int(oldest) or '', int(c)}
  if storage == 's' then
    out[5], out[6], out[7] = num(s), int(dc), num(ds)
  elseif storage == 'n' then out[5] = mns or ''
  elseif storage == 'x' then out[5] = mxs or ''
  elseif storage == 't' then out[5], out[6] = lts or '', lvs or ''
  elseif storage == 'q' then
    for k, n in pairs(sketch) do
      out[#out + 1] = k
      out[#out + 1] = int(n)
    end
  end
  return out
end

local answers, stored = {}, {}
local lines = string.gmatch(ARGV[6] or '', '[^\n]+')
for j = 1 + off, #KEYS do
  if ttl > 0 then
    local fp = merge(KEYS[j], lines())
    if alerts then stored[#answers + 1] = redis.call('HGET', alerts, fp) end
  end
  answers[#answers + 1] = fold(KEYS[j])
end
if index and ttl > 0 then redis.call('PEXPIRE', index, ttl) end
if alerts then return {answers, stored} end
return answers
