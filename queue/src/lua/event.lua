-- Apply a batch of S3 event notifications of one rule: per key, a compare-and-set on the
-- event's sequencer, and the copy or delete task the coordinator decided, in one step. An
-- event whose sequencer is not newer than the last one applied for its key is stale and
-- enqueues nothing, so a duplicate (or a redelivery after its task was enqueued) is dropped,
-- while a redelivery whose first delivery never got this far is applied.
-- Event tasks belong to iteration 0, the rule's events record, and carry the event's time in
-- place of their enqueue time, so the copy's ack can measure the lag from the event.
-- KEYS[1] tasks hash  KEYS[2] shards set  KEYS[3] seq counter  KEYS[4] events record (it:0)
-- KEYS[5] sequencers hash (ledger slot -> SEQUENCER@ms applied)
-- ARGV[1] rule key prefix, then groups of five: ledger slot, sequencer ('' = none), event
-- time (ms), shard ('' = no task), task payload
-- Returns one number per group: 1 enqueued, 0 applied with no task, -1 stale.
local prefix = ARGV[1]
if (#ARGV - 1) % 5 ~= 0 then return redis.error_reply('ERR bad event groups') end
local now = now_ms()
local out = {}
local function padded(s, width) return s .. string.rep('0', width - #s) end
for i = 2, #ARGV, 5 do
  local slot, seq, at, shard, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if not string.match(at, '^%d+$') then return redis.error_reply('ERR bad event time') end
  local stale = false
  if seq ~= '' then
    local held = redis.call('HGET', KEYS[5], slot)
    local last = held and string.match(held, '^(%x+)@')
    if last then
      local width = math.max(#last, #seq)
      stale = padded(seq, width) <= padded(last, width)
    end
    if not stale then
      redis.call('HSET', KEYS[5], slot, seq .. '@' .. string.format('%d', now))
    end
  end
  if stale then
    out[#out + 1] = -1
  elseif shard == '' then
    out[#out + 1] = 0
  else
    if not string.match(shard, '^%d+$') then return redis.error_reply('ERR bad shard') end
    local n = redis.call('INCR', KEYS[3])
    local id = '0:' .. shard .. ':' .. string.format('%d', n) .. ':' .. at
    redis.call('HSET', KEYS[1], id, payload)
    redis.call('LPUSH', prefix .. ':q:' .. shard, id)
    redis.call('SADD', KEYS[2], shard)
    redis.call('HINCRBY', KEYS[4], 'planned', 1)
    out[#out + 1] = 1
  end
end
return out
