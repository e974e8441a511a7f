-- KEYS: slots, held. ARGV: now_ms, period_ms, limit, slot member, notification JSON.
-- 1: a slot was taken, deliver; 0: held.
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
if redis.call('LLEN', KEYS[2]) == 0 and redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
redis.call('RPUSH', KEYS[2], ARGV[5])
return 0
