-- Record the ETag of an uploaded part and find out, atomically, whether it was the last one.
-- ARGV[1] rule key prefix  ARGV[2] worker id  ARGV[3] task id  ARGV[4] lease token
-- ARGV[5] upload record id  ARGV[6] part number  ARGV[7] part ETag  ARGV[8] parts in all
-- ARGV[9] bytes in the part
-- Returns {'lost'} (nothing changed), {'cancelled'} (the upload was abandoned; the task is
-- finished), {'more'} (the task is finished), or {'last', number, etag, ...}: every part is
-- in, the caller still holds the task and completes the upload, then acks.
local prefix, id, rid = ARGV[1], ARGV[3], ARGV[5]
if not holds(id, ARGV[2], ARGV[4]) then return {'lost'} end
-- A part is not an object write (a stray part upload makes the completion fail, and the
-- object starts over), so a finished part forgets its intent; the last part keeps it until
-- the completion is acked.
local slot = slot_of(redis.call('HGET', KEYS[1], id))
if redis.call('HEXISTS', prefix .. ':uploads', rid) == 0 then
  intent_drop(slot, ARGV[4])
  finish(prefix, id, 'cancelled', 0)
  return {'cancelled'}
end
local parts = prefix .. ':up:' .. rid
redis.call('HSET', parts, ARGV[6], ARGV[7])
if redis.call('HLEN', parts) < tonumber(ARGV[8]) then
  intent_drop(slot, ARGV[4])
  finish(prefix, id, 'part', tonumber(ARGV[9]))
  return {'more'}
end
local out = {'last'}
for _, v in ipairs(redis.call('HGETALL', parts)) do out[#out + 1] = v end
return out
