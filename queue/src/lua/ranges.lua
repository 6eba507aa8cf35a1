-- Record, once per iteration and listing prefix, the key ranges the prefix is listed in, so a
-- coordinator that resumes the iteration lists the same ranges, each from its own checkpoint.
-- Fenced by the leader lease.
-- KEYS[1] leader lease  KEYS[2] iteration record
-- ARGV[1] leader token  ARGV[2] prefix index + 1  ARGV[3] the ranges' boundaries (JSON)
-- Returns the boundaries on record: these, or those an earlier attempt recorded.
local refused = fence_running(KEYS[1], ARGV[1], KEYS[2])
if refused then return refused end
if not string.match(ARGV[2], '^%d+$') then return redis.error_reply('ERR bad prefix index') end
local field = 'ranges:' .. ARGV[2]
if redis.call('HEXISTS', KEYS[2], field) == 0 then
  redis.call('HSET', KEYS[2], field, ARGV[3])
end
return redis.call('HGET', KEYS[2], field)
