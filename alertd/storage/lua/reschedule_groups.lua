-- After a reload: every group flushed before is looked at again now (routes may lead
-- to new channels); groups still in group_wait keep it.
-- KEYS: groups:due, then group:<gid> of each group. ARGV: now, then the gids, in the
-- order of their keys.
local due, now = KEYS[1], ARGV[1]
for i = 2, #KEYS do
  if redis.call('HEXISTS', KEYS[i], 'last_flush') == 1 then
    redis.call('ZADD', due, 'LT', now, ARGV[i])
  end
end
return 0
