-- Shared by the task scripts (prepended to each when it is loaded).
-- KEYS of every task script: [1] tasks  [2] attempts  [3] errors  [4] leases  [5] owners
-- [6] delayed  [7] dead  [8] shards  [9] fence.

-- Redis server time in milliseconds.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Whether `worker` still holds task `id` under lease `token` (the fencing check).
local function holds(id, worker, token)
  return redis.call('HGET', KEYS[5], id) == worker .. '|' .. token
end

-- Removes a held task and counts `outcome` (and its bytes) in the task's iteration.
local function finish(prefix, id, outcome, bytes)
  redis.call('ZREM', KEYS[4], id)
  redis.call('HDEL', KEYS[5], id)
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  local record = prefix .. ':it:' .. string.match(id, '^(%d+):')
  redis.call('HINCRBY', record, 'done', 1)
  redis.call('HINCRBY', record, outcome, 1)
  if bytes > 0 then
    redis.call('HINCRBY', record, outcome .. '_bytes', string.format('%d', bytes))
  end
  -- per-second throughput, kept two minutes, for `ferry queues`
  local tp = prefix .. ':tp:' .. string.format('%d', math.floor(now_ms() / 1000))
  redis.call('HINCRBY', tp, 'n', 1)
  if bytes > 0 then redis.call('HINCRBY', tp, 'b', string.format('%d', bytes)) end
  redis.call('EXPIRE', tp, 120)
end

-- Forgets a multipart upload's record and its part ETags.
local function drop_upload(prefix, rid)
  if rid and rid ~= '' then
    redis.call('HDEL', prefix .. ':uploads', rid)
    redis.call('DEL', prefix .. ':up:' .. rid)
  end
end

