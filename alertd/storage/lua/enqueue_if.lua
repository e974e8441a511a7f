-- Delete KEYS[1] if it holds ARGV[1] and, only then, queue ARGV[2..] on KEYS[2..].
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
for i = 2, #KEYS do redis.call('XADD', KEYS[i], '*', 'n', ARGV[i]) end
return 1
