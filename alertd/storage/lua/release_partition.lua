-- Give a partition's lease up, only if ARGV[1] (owner:token) still holds it.
-- KEYS[1]: the lease. Returns 1 when released.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
