-- The live alerts the clock must judge by ARGV[1] (at most ARGV[2]): {fingerprints, alerts}.
local fps = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #fps == 0 then return {{}, {}} end
return {fps, redis.call('HMGET', KEYS[2], unpack(fps))}
