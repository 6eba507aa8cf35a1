-- Replace a held task by new tasks on the same shard, in the same iteration, at once:
-- an object task by its part tasks (split), or a part task by a fresh object task (the
-- source changed, so the upload is abandoned and the object re-planned).
-- ARGV[1] rule key prefix  ARGV[2] worker id  ARGV[3] task id  ARGV[4] lease token
-- ARGV[5] outcome counted for the replaced task  ARGV[6] upload record to forget ('' = none)
-- ARGV[7] suffix of the new ids (':p' marks part tasks)  ARGV[8..] payloads, in claim order
-- Returns 1, or 0 when the lease was lost (then nothing is changed).
local prefix, id = ARGV[1], ARGV[3]
if not holds(id, ARGV[2], ARGV[4]) then return 0 end
-- a split or a re-plan wrote no object
intent_drop(slot_of(redis.call('HGET', KEYS[1], id)), ARGV[4])
finish(prefix, id, ARGV[5], 0)
drop_upload(prefix, ARGV[6])
local iter, shard = string.match(id, '^(%d+):(%d+):')
local n = #ARGV - 7
if n > 0 then
  local last = redis.call('INCRBY', prefix .. ':seq', n)
  local now = string.format('%d', now_ms())
  -- an event's parts keep the event's time, so the copy's lag is measured from the event
  if iter == '0' then now = string.match(id, '^%d+:%d+:%d+:(%d+)') or now end
  local queue = prefix .. ':q:' .. shard
  -- to the claiming end, first payload claimed first: an object under way finishes before
  -- the shard's backlog, which bounds the uploads open at once
  for j = n, 1, -1 do
    local new = iter .. ':' .. shard .. ':' .. string.format('%d', last - n + j) .. ':' .. now
      .. ARGV[7]
    redis.call('HSET', KEYS[1], new, ARGV[7 + j])
    redis.call('RPUSH', queue, new)
  end
  redis.call('HINCRBY', prefix .. ':it:' .. iter, 'planned', n)
end
return 1
