-- A task refused with 503 SlowDown or 429: cut its shard's limit (the flow rules in lib.lua),
-- and give the task back without counting an attempt, for a claim once the shard admits it
-- again. A throttle is not a failure: it never brings a task nearer to dead letters.
-- ARGV[1] rule key prefix  ARGV[2] worker id  ARGV[3] task id  ARGV[4] lease token
-- ARGV[5] error text  ARGV[6] delay ms before it may be claimed again
-- ARGV[7] '1' when the attempt may have written to the destination (its intent stays)
-- Returns {limit, probing (0/1), throttle answers in all}, or {} when the lease was lost.
local id = ARGV[3]
if not holds(id, ARGV[2], ARGV[4]) then return {} end
local now = now_ms()
if ARGV[7] ~= '1' then intent_drop(slot_of(redis.call('HGET', KEYS[1], id)), ARGV[4]) end
flow_event(id, 'throttled', now)
redis.call('ZREM', KEYS[4], id)
redis.call('HDEL', KEYS[5], id)
redis.call('HSET', KEYS[3], id, ARGV[5])
redis.call('ZADD', KEYS[6], now + tonumber(ARGV[6]), id)
local f = flow_get(shard_of(id))
return {f.l, f.p and 1 or 0, f.t}
