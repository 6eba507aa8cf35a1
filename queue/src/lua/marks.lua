-- Record the marks of a prefix's listing in iteration n (its quantile keys, which the next
-- iteration cuts into key ranges), and drop those of iteration n-1, now outdated. Fenced by
-- the leader lease.
-- KEYS[1] leader lease  KEYS[2] iteration record  KEYS[3] the previous iteration's record
-- ARGV[1] leader token  ARGV[2] prefix index + 1  ARGV[3] the marks (JSON)
local refused = fence_running(KEYS[1], ARGV[1], KEYS[2])
if refused then return refused end
if not string.match(ARGV[2], '^%d+$') then return redis.error_reply('ERR bad prefix index') end
local field = 'marks:' .. ARGV[2]
redis.call('HSET', KEYS[2], field, ARGV[3])
redis.call('HDEL', KEYS[3], field)
return 1
