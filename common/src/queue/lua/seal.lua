-- Mark an iteration sealed: every one of its tasks is enqueued. Fenced by the leader lease.
-- KEYS[1] leader lease  KEYS[2] iteration record
-- ARGV[1] leader token
local fenced = fence(KEYS[1], ARGV[1])
if fenced then return fenced end
if redis.call('HGET', KEYS[2], 'state') ~= 'running' then
  return redis.error_reply('STALE the iteration is not running')
end
redis.call('HSET', KEYS[2], 'sealed', 1)
return 1
