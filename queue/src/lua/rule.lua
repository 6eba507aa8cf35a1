-- Record a rule's state for `ferry status`: running, waiting, stopped or failed, why it
-- failed, since when, and when it last met its stop condition (a standby that takes over
-- later must not iterate again). Fenced by the leader lease.
-- KEYS[1] leader lease  KEYS[2] rule state hash
-- ARGV[1] leader token  ARGV[2] state  ARGV[3] reason ('' = none)
-- ARGV[4] '1' when the rule has met its stop condition
local fenced = fence(KEYS[1], ARGV[1])
if fenced then return fenced end
local now = string.format('%d', now_ms())
if redis.call('HGET', KEYS[2], 'state') ~= ARGV[2] then
  redis.call('HSET', KEYS[2], 'since_ms', now)
end
redis.call('HSET', KEYS[2], 'state', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], 'reason', ARGV[3])
else
  redis.call('HDEL', KEYS[2], 'reason')
end
if ARGV[4] == '1' then redis.call('HSET', KEYS[2], 'stopped_ms', now) end
return 1
