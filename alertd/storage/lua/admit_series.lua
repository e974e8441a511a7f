-- KEYS[1]: the rule's admitted series. ARGV: max, now, stale_before, ttl_s, fingerprints...
-- Returns {count after, 1/0 per fingerprint (admitted or not)}.
local key = KEYS[1]
local max = tonumber(ARGV[1])
local n = redis.call('ZCARD', key)
local pruned = false
local out = {0}
for i = 5, #ARGV do
  local fp = ARGV[i]
  if redis.call('ZSCORE', key, fp) then
    redis.call('ZADD', key, ARGV[2], fp)
    out[#out + 1] = 1
  else
    if n >= max and not pruned then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[3])
      pruned = true
      n = redis.call('ZCARD', key)
    end
    if n < max then
      redis.call('ZADD', key, ARGV[2], fp)
      n = n + 1
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  end
end
redis.call('EXPIRE', key, ARGV[4])
out[1] = n
return out
