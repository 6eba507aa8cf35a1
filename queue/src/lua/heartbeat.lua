-- A worker's heartbeat: record what it reports and when (Redis clock), and forget workers
-- silent for too long.
-- KEYS[1] workers hash  KEYS[2] heartbeat zset
-- ARGV[1] worker id  ARGV[2] encoded worker info  ARGV[3] forget after (ms)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3]))) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
return 1
