-- After a reload: every group flushed before is looked at again now (routes may lead
-- to new channels); groups still in group_wait keep it.
local due, prefix, now = KEYS[1], ARGV[1], ARGV[2]
for i = 3, #ARGV do
  if redis.call('HEXISTS', prefix .. 'group:' .. ARGV[i], 'last_flush') == 1 then
    redis.call('ZADD', due, 'LT', now, ARGV[i])
  end
end
return 0
