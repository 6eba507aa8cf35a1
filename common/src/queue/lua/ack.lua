-- Finish a task the worker still holds, count its outcome in its iteration, and update the
-- ledger in the same step, so only the current lease holder can ever write the ledger.
-- KEYS: the nine task keys (see claim.lua).
-- ARGV[1] rule key prefix  ARGV[2] worker id  ARGV[3] task id  ARGV[4] lease token
-- ARGV[5] outcome name (e.g. copied)  ARGV[6] bytes moved
-- ARGV[7] ledger op: '' (none), 'put' or 'del'  ARGV[8] ledger bucket  ARGV[9] field
-- ARGV[10] entry (for 'put')
-- Returns 1, or 0 when the lease was lost (then nothing is changed).
local id = ARGV[3]
if redis.call('HGET', KEYS[5], id) ~= ARGV[2] .. '|' .. ARGV[4] then return 0 end
redis.call('ZREM', KEYS[4], id)
redis.call('HDEL', KEYS[5], id)
redis.call('HDEL', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
redis.call('HDEL', KEYS[3], id)
local iter = string.match(id, '^(%d+):')
local record = ARGV[1] .. ':it:' .. iter
redis.call('HINCRBY', record, 'done', 1)
redis.call('HINCRBY', record, ARGV[5], 1)
local bytes = tonumber(ARGV[6])
if bytes > 0 then
  redis.call('HINCRBY', record, ARGV[5] .. '_bytes', string.format('%d', bytes))
end
local ledger = ARGV[1] .. ':l:' .. (ARGV[8] or '')
if ARGV[7] == 'put' then
  redis.call('HSET', ledger, ARGV[9], ARGV[10])
elseif ARGV[7] == 'del' then
  redis.call('HDEL', ledger, ARGV[9])
end
return 1
