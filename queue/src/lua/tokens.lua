-- Take tokens from a rule's shared budget (a token bucket refilled at RATE per second, up to
-- CAPACITY), on the Redis clock, so that every worker of every machine draws from one budget.
-- KEYS[1] bucket hash (tokens, ms)
-- ARGV[1] rate per second  ARGV[2] capacity  ARGV[3] tokens wanted
-- Returns {granted, ms to wait before asking again (0 when granted)}.
local rate, capacity, wanted = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ms')
local tokens = tonumber(state[1] or capacity)
local last = tonumber(state[2] or now)
tokens = math.min(capacity, tokens + math.max(0, now - last) * rate / 1000)
local granted = math.min(wanted, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ms', tostring(now))
redis.call('PEXPIRE', KEYS[1], 60000)
local wait = 0
if granted == 0 then wait = math.ceil((1 - tokens) * 1000 / rate) end
return {granted, wait}
