-- Enqueue a batch of tasks on one shard of one rule, for one iteration.
-- KEYS[1] tasks hash   KEYS[2] shards set   KEYS[3] seq counter
-- ARGV[1] rule key prefix   ARGV[2] iteration   ARGV[3] shard   ARGV[4..] payloads
-- Returns the number of tasks enqueued.
local prefix, iter, shard = ARGV[1], ARGV[2], ARGV[3]
local n = #ARGV - 3
if n <= 0 then return 0 end
if not string.match(iter, '^%d+$') or not string.match(shard, '^%d+$') then
  return redis.error_reply('ERR bad iteration or shard')
end
local last = redis.call('INCRBY', KEYS[3], n)
local first = last - n + 1
local queue = prefix .. ':q:' .. shard
for i = 1, n do
  local id = iter .. ':' .. shard .. ':' .. string.format('%d', first + i - 1)
  redis.call('HSET', KEYS[1], id, ARGV[3 + i])
  redis.call('LPUSH', queue, id)
end
redis.call('SADD', KEYS[2], shard)
redis.call('HINCRBY', prefix .. ':it:' .. iter, 'planned', n)
return n
