-- Extend the leases a worker still holds.
-- ARGV[1] rule key prefix  ARGV[2] worker id  ARGV[3] lease ms  ARGV[4..] id, token pairs
-- Returns the ids whose lease this worker no longer holds (it must stop and not commit).
local lease_until = now_ms() + tonumber(ARGV[3])
local lost = {}
for i = 4, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if holds(id, ARGV[2], token) then
    redis.call('ZADD', KEYS[4], 'XX', lease_until, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
