-- Set KEYS[1] unless it exists (ex ARGV[2] s) and, only then, queue ARGV[3..] on KEYS[2..].
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
for i = 2, #KEYS do redis.call('XADD', KEYS[i], '*', 'n', ARGV[i + 1]) end
return 1
