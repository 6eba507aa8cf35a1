-- Extend the leases a worker still holds.
-- KEYS: the nine task keys (see claim.lua); uses KEYS[4] leases and KEYS[5] owners.
-- ARGV[1] rule key prefix  ARGV[2] worker id  ARGV[3] lease ms  ARGV[4..] id, token pairs
-- Returns the ids whose lease this worker no longer holds (it must stop and not commit).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_until = now + tonumber(ARGV[3])
local lost = {}
for i = 4, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', KEYS[5], id) == ARGV[2] .. '|' .. token then
    redis.call('ZADD', KEYS[4], 'XX', lease_until, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
