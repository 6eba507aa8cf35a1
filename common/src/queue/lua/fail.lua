-- Record a failed attempt of a task the worker holds: retry it later, or bury it.
-- KEYS: the nine task keys (see claim.lua).
-- ARGV[1] rule key prefix  ARGV[2] worker id  ARGV[3] task id  ARGV[4] lease token
-- ARGV[5] error text  ARGV[6] retry delay ms  ARGV[7] max attempts  ARGV[8] '1' = permanent
-- Returns 'retry', 'dead', or 'lost' when the lease was lost (then nothing is changed).
local id = ARGV[3]
if redis.call('HGET', KEYS[5], id) ~= ARGV[2] .. '|' .. ARGV[4] then return 'lost' end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[4], id)
redis.call('HDEL', KEYS[5], id)
local attempts = redis.call('HINCRBY', KEYS[2], id, 1)
redis.call('HSET', KEYS[3], id, ARGV[5])
if ARGV[8] == '1' or attempts >= tonumber(ARGV[7]) then
  redis.call('ZADD', KEYS[7], now, id)
  local iter = string.match(id, '^(%d+):')
  redis.call('HINCRBY', ARGV[1] .. ':it:' .. iter, 'dead', 1)
  return 'dead'
end
redis.call('ZADD', KEYS[6], now + tonumber(ARGV[6]), id)
return 'retry'
