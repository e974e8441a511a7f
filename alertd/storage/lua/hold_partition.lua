-- Take or keep a partition's lease. KEYS[1]: the lease ("owner:token"), KEYS[2]: its
-- fencing counter. ARGV[1]: the daemon asking, ARGV[2]: the lease's time to live (ms).
-- Returns the fencing token while ARGV[1] holds the lease (renewed), else 0. A new
-- holder gets a larger token than every holder before it.
local cur = redis.call('GET', KEYS[1])
if cur then
  local owner, token = string.match(cur, '^(.*):(%d+)$')
  if owner == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(token)
  end
  return 0
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
return token
