-- Record a failed attempt of a task the worker holds: retry it later, or bury it.
-- ARGV[1] rule key prefix  ARGV[2] worker id  ARGV[3] task id  ARGV[4] lease token
-- ARGV[5] error text  ARGV[6] retry delay ms  ARGV[7] max attempts  ARGV[8] '1' = permanent
-- If it is buried: ARGV[9] multipart upload record to forget ('' = none; the worker aborted
-- the upload), ARGV[10] payload the dead letter keeps instead ('' = the task's own).
-- ARGV[11] '1' when the attempt may have written to the destination (its intent stays).
-- Returns 'retry', 'dead', or 'lost' when the lease was lost (then nothing is changed).
local prefix, id = ARGV[1], ARGV[3]
if not holds(id, ARGV[2], ARGV[4]) then return 'lost' end
if ARGV[11] ~= '1' then intent_drop(slot_of(redis.call('HGET', KEYS[1], id)), ARGV[4]) end
local now = now_ms()
flow_event(id, 'ended', now)
redis.call('ZREM', KEYS[4], id)
redis.call('HDEL', KEYS[5], id)
local attempts = redis.call('HINCRBY', KEYS[2], id, 1)
redis.call('HSET', KEYS[3], id, ARGV[5])
if ARGV[8] == '1' or attempts >= tonumber(ARGV[7]) then
  redis.call('ZADD', KEYS[7], now, id)
  local iter = string.match(id, '^(%d+):')
  redis.call('HINCRBY', prefix .. ':it:' .. iter, 'dead', 1)
  drop_upload(prefix, ARGV[9])
  if ARGV[10] and ARGV[10] ~= '' then redis.call('HSET', KEYS[1], id, ARGV[10]) end
  return 'dead'
end
redis.call('ZADD', KEYS[6], now + tonumber(ARGV[6]), id)
return 'retry'
