-- Close a running iteration as succeeded or failed, add it to the history, and keep at most
-- the last H there. Run again after a lost reply, it finds the iteration closed and changes
-- nothing. Fenced by the leader lease.
-- KEYS[1] leader lease  KEYS[2] iteration record  KEYS[3] history list  KEYS[4] last success
-- ARGV[1] leader token  ARGV[2] iteration number  ARGV[3] 'succeeded' or 'failed'  ARGV[4] H
-- Returns the numbers of the iterations dropped from the history (their records are to be
-- deleted).
local fenced = fence(KEYS[1], ARGV[1])
if fenced then return fenced end
if redis.call('HGET', KEYS[2], 'state') ~= 'running' then return {} end
redis.call('HSET', KEYS[2], 'ended_ms', string.format('%d', now_ms()), 'state', ARGV[3])
redis.call('LPUSH', KEYS[3], ARGV[2])
if ARGV[3] == 'succeeded' then
  redis.call('SET', KEYS[4], redis.call('HGET', KEYS[2], 'started_ms'))
end
local keep = tonumber(ARGV[4])
local old = redis.call('LRANGE', KEYS[3], keep, -1)
redis.call('LTRIM', KEYS[3], 0, keep - 1)
return old
