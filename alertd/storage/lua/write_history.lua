-- Write records only forward (see `rank`, computed the same way here): a queued write
-- landing after the worker's outcome must not turn "delivered" back to "pending".
-- KEYS: records hash, index zset; ARGV: per record member, score, rank, JSON.
local ranks = {pending = 0, held = 1, delivered = 2}
ranks['dead-lettered'] = 2
local function rank(rec)
  local at, err = rec['delivered_at'], rec['last_error']
  local settled = (at ~= nil and at ~= cjson.null) or (type(err) == 'string' and err ~= '')
  return (ranks[rec['outcome']] or 0) * 2 + (settled and 1 or 0)
end
for i = 1, #ARGV, 4 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  local ok = true
  if cur then
    local okd, rec = pcall(cjson.decode, cur)
    if okd and type(rec) == 'table' and rank(rec) > tonumber(ARGV[i + 2]) then
      ok = false
    end
  end
  if ok then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 3])
    redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i])
  end
end
return 0
