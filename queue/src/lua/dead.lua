-- Retry or purge dead letters. A retried task goes back on its shard's queue, at the
-- claiming end, as a new task of the rule's latest iteration with no attempts counted.
-- ARGV[1] rule key prefix  ARGV[2] 'retry' or 'purge'
-- ARGV[3..] pairs: task id, payload to retry instead ('' = its own)
-- Returns how many dead letters were retried or purged.
local prefix = ARGV[1]
local iter = redis.call('GET', prefix .. ':current') or '0'
local now = string.format('%d', now_ms())
local n = 0
for i = 3, #ARGV, 2 do
  local id, replacement = ARGV[i], ARGV[i + 1]
  if redis.call('ZREM', KEYS[7], id) == 1 then
    local payload = redis.call('HGET', KEYS[1], id)
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    if ARGV[2] == 'retry' and payload then
      local suffix = ''
      if replacement ~= '' then
        payload = replacement
      elseif string.sub(id, -2) == ':p' then
        suffix = ':p'
      end
      local shard = string.match(id, '^%d+:(%d+):')
      local seq = redis.call('INCR', prefix .. ':seq')
      local new = iter .. ':' .. shard .. ':' .. string.format('%d', seq) .. ':' .. now .. suffix
      redis.call('HSET', KEYS[1], new, payload)
      redis.call('RPUSH', prefix .. ':q:' .. shard, new)
      redis.call('SADD', KEYS[8], shard)
      redis.call('HINCRBY', prefix .. ':it:' .. iter, 'planned', 1)
    end
    n = n + 1
  end
end
return n
