-- Mark an iteration sealed: every one of its tasks is enqueued. Fenced by the leader lease.
-- KEYS[1] leader lease  KEYS[2] iteration record
-- ARGV[1] leader token
local refused = fence_running(KEYS[1], ARGV[1], KEYS[2])
if refused then return refused end
redis.call('HSET', KEYS[2], 'sealed', 1)
return 1
