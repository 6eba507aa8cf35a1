-- Start iteration N of a rule: move the current number from N - 1 to N and create N's record,
-- stamped with the Redis clock. Run again after a lost reply, it finds N begun and changes
-- nothing, so a Redis hiccup never creates two iterations.
-- KEYS[1] current iteration number  KEYS[2] record of iteration N  KEYS[3] leader lease
-- ARGV[1] N  ARGV[2] leader token
-- Returns N, or an error when the current number is neither N - 1 nor N, or the caller does
-- not lead the rule (FENCED).
local fenced = fence(KEYS[3], ARGV[2])
if fenced then return fenced end
local n = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current == n and redis.call('EXISTS', KEYS[2]) == 1 then return n end
if current ~= n - 1 then
  return redis.error_reply('ERR iteration ' .. current .. ' is current, not ' .. (n - 1))
end
redis.call('SET', KEYS[1], n)
redis.call('HSET', KEYS[2], 'started_ms', string.format('%d', now_ms()), 'state', 'running')
return n
