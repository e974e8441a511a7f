-- KEYS: slots, held, outbox stream. ARGV: now_ms, period_ms, limit, slot member, count,
-- first and last held entry read, digest JSON. Queue the digest for the first `count`
-- held entries, if the window has room and they are still the ones read.
-- 1: queued; 0: no room yet; -1: the held list moved (another replica sent them).
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
local n = tonumber(ARGV[5])
local first, last = redis.call('LINDEX', KEYS[2], 0), redis.call('LINDEX', KEYS[2], n - 1)
if first ~= ARGV[6] or last ~= ARGV[7] then return -1 end
redis.call('LTRIM', KEYS[2], n, -1)
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[3], '*', 'n', ARGV[8])
return 1
