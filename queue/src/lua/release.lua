-- Give a task back without counting an attempt: to be claimed next (on shutdown), or after a
-- delay (a task this worker cannot work on, say one written by a newer ferry).
-- ARGV[1] rule key prefix  ARGV[2] worker id  ARGV[3] task id  ARGV[4] lease token
-- ARGV[5] '1' when the attempt may have written to the destination (its intent stays)
-- ARGV[6] delay ms ('0' = back to the claiming end of its queue now)
-- Returns 1, or 0 when the lease was already lost.
local id = ARGV[3]
if not holds(id, ARGV[2], ARGV[4]) then return 0 end
if ARGV[5] ~= '1' then intent_drop(slot_of(redis.call('HGET', KEYS[1], id)), ARGV[4]) end
flow_event(id, 'ended', now_ms())
redis.call('ZREM', KEYS[4], id)
redis.call('HDEL', KEYS[5], id)
local delay = tonumber(ARGV[6]) or 0
if delay > 0 then
  redis.call('ZADD', KEYS[6], now_ms() + delay, id)
  return 1
end
local shard = string.match(id, '^%d+:(%d+):')
redis.call('RPUSH', ARGV[1] .. ':q:' .. shard, id)
return 1
