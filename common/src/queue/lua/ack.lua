-- Finish a task the worker still holds, count its outcome in its iteration, and update the
-- ledger in the same step, so only the current lease holder can ever write the ledger.
-- ARGV[1] rule key prefix  ARGV[2] worker id  ARGV[3] task id  ARGV[4] lease token
-- ARGV[5] outcome name (e.g. copied)  ARGV[6] bytes moved
-- ARGV[7] ledger op: '' (none), 'put' or 'del'  ARGV[8] ledger bucket  ARGV[9] field
-- ARGV[10] entry (for 'put')  ARGV[11] multipart upload record to forget ('' = none)
-- Returns 1, or 0 when the lease was lost (then nothing is changed).
local prefix, id = ARGV[1], ARGV[3]
if not holds(id, ARGV[2], ARGV[4]) then return 0 end
intent_drop(slot_of(redis.call('HGET', KEYS[1], id)), ARGV[4])
finish(prefix, id, ARGV[5], tonumber(ARGV[6]))
local ledger = prefix .. ':l:' .. (ARGV[8] or '')
if ARGV[7] == 'put' then
  redis.call('HSET', ledger, ARGV[9], ARGV[10])
elseif ARGV[7] == 'del' then
  redis.call('HDEL', ledger, ARGV[9])
end
drop_upload(prefix, ARGV[11])
return 1
