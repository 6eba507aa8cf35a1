-- Enqueue one batch of planned tasks, count what the batch listed and skipped, and move the
-- iteration's listing checkpoint, all at once: a coordinator that dies between two batches
-- resumes after the checkpoint and never enqueues or counts anything twice.
-- It is also a compare-and-set on the checkpoint, so the same batch sent again (its reply was
-- lost in a Redis outage) is not applied twice, and it is fenced by the leader lease, so a
-- former leader cannot plan.
-- KEYS[1] tasks hash  KEYS[2] shards set  KEYS[3] seq counter  KEYS[4] iteration record
-- KEYS[5] write intents  KEYS[6] leader lease
-- ARGV[1] rule key prefix  ARGV[2] iteration  ARGV[3] listed  ARGV[4] skipped: the total,
-- then ';FIELD:N' for each reason counted (e.g. '7;skipped_unchanged:5;skipped_unmanaged:2')
-- ARGV[5] checkpoint prefix index + 1 ('0' = leave unchanged, no compare)  ARGV[6] its key
-- ARGV[7] the checkpoint this batch follows (prefix index + 1, '0' = none)  ARGV[8] its key
-- A batch of one key range of a prefix gives 'P:R' (prefix index + 1, range index) in
-- ARGV[5] and ARGV[7]: its checkpoint is the range's own, field 'rckpt:P:R'.
-- ARGV[9] leader token ('' = not fenced)
-- ARGV[10] prune cutoff (ms)  ARGV[11] number P of slots whose intents made before the
-- cutoff are forgotten (the planner saw their keys consistent with the ledger)
-- ARGV[12] bytes the batch's tasks move (for progress: bytes planned)
-- ARGV[13] changes planned that no event announced (rules with events; see planner.rs)
-- ARGV[14..13+P] slots, then groups: shard, count, then count payloads; a group whose shard
-- is 'r' holds report lines, appended to the iteration's report list (PREFIX:rp:ITERATION)
-- Returns the number of tasks enqueued, or -1 when this batch was applied already.
local prefix, iter = ARGV[1], ARGV[2]
if not string.match(iter, '^%d+$') then return redis.error_reply('ERR bad iteration') end
local fenced = fence(KEYS[6], ARGV[9])
if fenced then return fenced end
local lane = nil
if string.match(ARGV[5], '^%d+:%d+$') then lane = 'rckpt:' .. ARGV[5] end
if ARGV[5] ~= '0' then
  local at = redis.call('HMGET', KEYS[4], 'state', 'ckpt_prefix', 'ckpt_key')
  -- Gone or closed: a Redis restart lost the record's last writes (AOF fsyncs every second).
  if at[1] ~= 'running' then
    return redis.error_reply('STALE iteration ' .. iter .. ' is not running')
  end
  local p, k = at[2] or '0', at[3] or ''
  if lane then p, k = ARGV[5], redis.call('HGET', KEYS[4], lane) or '' end
  if p == ARGV[5] and k == ARGV[6] then return -1 end
  -- Behind: batches this coordinator saw applied were lost in a Redis restart. Ahead cannot
  -- happen (only the lease holder plans). Either way the caller lists again from here.
  if (not lane and p ~= ARGV[7]) or k ~= ARGV[8] then
    return redis.error_reply('STALE the checkpoint is not the one this batch follows')
  end
end
local now = string.format('%d', now_ms())
local cutoff, prunes = tonumber(ARGV[10]), tonumber(ARGV[11])
if not cutoff or not prunes or not tonumber(ARGV[12]) or not tonumber(ARGV[13]) then return redis.error_reply('ERR bad prune list') end
local skipped = tonumber(string.match(ARGV[4], '^(%d+)'))
if not skipped then return redis.error_reply('ERR bad skipped count') end
for j = 14, 13 + prunes do intent_prune(KEYS[5], ARGV[j], cutoff) end
local total = 0
local i = 14 + prunes
while i <= #ARGV do
  local shard, n = ARGV[i], tonumber(ARGV[i + 1])
  if shard == 'r' and n then
    for j = 1, n do redis.call('RPUSH', prefix .. ':rp:' .. iter, ARGV[i + 1 + j]) end
  elseif not string.match(shard, '^%d+$') or not n then return redis.error_reply('ERR bad group')
  elseif n > 0 then
    local last = redis.call('INCRBY', KEYS[3], n)
    local queue = prefix .. ':q:' .. shard
    for j = 1, n do
      local id = iter .. ':' .. shard .. ':' .. string.format('%d', last - n + j) .. ':' .. now
      redis.call('HSET', KEYS[1], id, ARGV[i + 1 + j])
      redis.call('LPUSH', queue, id)
    end
    redis.call('SADD', KEYS[2], shard)
    total = total + n
  end
  i = i + 2 + n
end
if total > 0 then redis.call('HINCRBY', KEYS[4], 'planned', total) end
if tonumber(ARGV[12]) > 0 then redis.call('HINCRBY', KEYS[4], 'planned_bytes', ARGV[12]) end
if tonumber(ARGV[13]) > 0 then redis.call('HINCRBY', KEYS[4], 'missed', ARGV[13]) end
if tonumber(ARGV[3]) > 0 then redis.call('HINCRBY', KEYS[4], 'listed', ARGV[3]) end
if skipped > 0 then redis.call('HINCRBY', KEYS[4], 'skipped', skipped) end
for field, n in string.gmatch(ARGV[4], ';(skipped_[%a_]+):(%d+)') do
  redis.call('HINCRBY', KEYS[4], field, n)
end
if lane then
  redis.call('HSET', KEYS[4], lane, ARGV[6])
elseif ARGV[5] ~= '0' then
  redis.call('HSET', KEYS[4], 'ckpt_prefix', ARGV[5], 'ckpt_key', ARGV[6])
end
return total
